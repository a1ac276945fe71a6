//! The one walker every format shares: single-address lookup and in-order leaf enumeration.
//!
//! Guest input is hostile. Termination is guaranteed because every table pointer must go down
//! at least one level (so a table that points to itself faults instead of looping) and because
//! enumeration reads at most [`WalkLimits::max_entries`] entries. Every arithmetic step on
//! guest-supplied addresses is checked or done in 128 bits.

use super::fault::WalkFault;
use super::format::{Decoded, PageTableFormat};
use crate::addr::AddrRange;
use crate::perm::Perm;
use std::sync::atomic::Ordering;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// One translation found in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// IOVA of the start of the page.
    pub iova: u64,
    /// Guest-physical address of the start of the page.
    pub addr: u64,
    /// Page size in bytes (a power of two).
    pub size: u64,
    /// Effective permissions (the leaf's ANDed with every table entry above it).
    pub perm: Perm,
    /// Level of the table holding the leaf entry.
    pub level: u8,
}

impl Leaf {
    /// Output address for `iova`, which must lie in this page.
    pub fn translate(&self, iova: u64) -> u64 {
        self.addr.wrapping_add(iova.wrapping_sub(self.iova))
    }

    /// IOVA range covered by the page.
    pub fn iova_range(&self) -> AddrRange {
        AddrRange::from_len(self.iova, self.size)
    }
}

/// Bounds on the work one enumeration may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkLimits {
    /// Maximum table entries read by one enumeration before it stops with
    /// [`WalkFault::WorkLimit`].
    pub max_entries: u64,
}

impl Default for WalkLimits {
    fn default() -> Self {
        // 4 Mi entries: 16 GiB of 4 KiB leaves, far beyond any real invalidation, and a few
        // tens of milliseconds of work for a hostile all-aliasing table.
        WalkLimits {
            max_entries: 1 << 22,
        }
    }
}

/// What an enumeration did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Table entries read.
    pub entries_read: u64,
    /// Leaves reported.
    pub leaves: u64,
    /// Malformed subtrees skipped (each reported to the fault callback).
    pub faults: u64,
}

/// A page table in guest memory seen through its format.
pub struct Walker<'a, F: ?Sized, M: ?Sized> {
    format: &'a F,
    mem: &'a M,
    root: u64,
    limits: WalkLimits,
}

/// 2^bits as a 128-bit value, saturating at 2^64 (the whole IOVA space).
fn span(bits: u32) -> u128 {
    1u128 << bits.min(64)
}

impl<'a, F: PageTableFormat + ?Sized, M: GuestMemory + ?Sized> Walker<'a, F, M> {
    /// The table rooted at guest-physical `root`, read from `mem`.
    pub fn new(format: &'a F, mem: &'a M, root: u64) -> Self {
        Walker {
            format,
            mem,
            root,
            limits: WalkLimits::default(),
        }
    }

    /// Replaces the enumeration limits.
    pub fn with_limits(mut self, limits: WalkLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Reads the entry at `addr` in a table of `level`.
    fn read(&self, level: u8, addr: u64) -> Result<u64, WalkFault> {
        if !addr.is_multiple_of(8) {
            return Err(WalkFault::TableOutsideRam { level, addr });
        }
        let native: u64 = self
            .mem
            .load(GuestAddress(addr), Ordering::Acquire)
            .map_err(|_| WalkFault::TableOutsideRam { level, addr })?;
        Ok(self.format.byte_order().decode(native))
    }

    /// Address of the entry indexing `iova` in the table at `table` of `level`.
    fn entry_addr(&self, level: u8, table: u64, iova: u128) -> u64 {
        let shift = self.format.level_shift(level);
        let mask = (span(self.format.index_bits(level)) - 1) as u64;
        let idx = if shift >= 128 {
            0
        } else {
            (iova >> shift) as u64 & mask
        };
        table.wrapping_add(idx.wrapping_mul(8))
    }

    /// Validates a leaf decoded at `level` for `iova` and builds it.
    fn make_leaf(
        &self,
        level: u8,
        raw: u64,
        iova: u64,
        addr: u64,
        size_log2: u8,
        perm: Perm,
    ) -> Result<Leaf, WalkFault> {
        let shift = self.format.level_shift(level);
        if u32::from(size_log2) < shift.min(63) || size_log2 > 63 {
            return Err(WalkFault::Reserved {
                level,
                entry: raw,
                iova,
            });
        }
        let size = 1u64 << size_log2;
        Ok(Leaf {
            iova: iova & !(size - 1),
            addr: addr & !(size - 1),
            size,
            perm,
            level,
        })
    }

    /// A page larger than its slot, decoded from `raw` at the slot of `iova` in the table at
    /// `table` of `level`, is valid only if the first slot it covers holds the same entry
    /// (AMD-Vi NextLevel-7 pages: every slot a page covers must hold the same PTE, spec
    /// 2.2.3). Checking the first slot in both `lookup` and enumeration keeps them
    /// consistent and enumerated leaves disjoint: a page met at a later slot than its first
    /// (whose slot held something else) is reported as [`WalkFault::Reserved`] for that
    /// slot rather than whole over slots that say otherwise.
    fn check_first_slot(
        &self,
        level: u8,
        table: u64,
        raw: u64,
        iova: u64,
        leaf: Leaf,
    ) -> Result<Leaf, WalkFault> {
        let slot = span(self.format.level_shift(level));
        if u128::from(leaf.iova) >= u128::from(iova) & !(slot - 1) {
            return Ok(leaf);
        }
        match self.read(level, self.entry_addr(level, table, u128::from(leaf.iova))) {
            Ok(first) if first == raw => Ok(leaf),
            _ => Err(WalkFault::Reserved {
                level,
                entry: raw,
                iova,
            }),
        }
    }

    /// Translates one IOVA: the page containing it, or the first fault on the way.
    pub fn lookup(&self, iova: u64) -> Result<Leaf, WalkFault> {
        let bits = self.format.iova_bits();
        if u128::from(iova) >= span(bits) {
            return Err(WalkFault::IovaTooWide { iova, bits });
        }
        let mut level = self.format.top_level();
        let mut table = self.root;
        let mut perm = Perm::all();
        loop {
            let raw = self.read(level, self.entry_addr(level, table, u128::from(iova)))?;
            match self.format.decode(level, raw) {
                Decoded::Empty => return Err(WalkFault::NotPresent { level, iova }),
                Decoded::Reserved => {
                    return Err(WalkFault::Reserved {
                        level,
                        entry: raw,
                        iova,
                    });
                }
                Decoded::Table {
                    addr,
                    level: next,
                    perm: p,
                } => {
                    if next >= level {
                        return Err(WalkFault::Reserved {
                            level,
                            entry: raw,
                            iova,
                        });
                    }
                    // A skipped level (AMD-Vi) only reaches IOVAs whose skipped index bits
                    // are zero.
                    let child_bits = self.format.level_shift(next) + self.format.index_bits(next);
                    let slot_bits = self.format.level_shift(level);
                    let slot_off = u128::from(iova) & (span(slot_bits) - 1);
                    if slot_off >= span(child_bits) {
                        return Err(WalkFault::NotPresent { level, iova });
                    }
                    perm &= p;
                    table = addr;
                    level = next;
                }
                Decoded::Leaf {
                    addr,
                    size_log2,
                    perm: p,
                } => {
                    let leaf = self.make_leaf(level, raw, iova, addr, size_log2, perm & p)?;
                    return self.check_first_slot(level, table, raw, iova, leaf);
                }
            }
        }
    }

    /// Translates `iova` for an access needing `need`: the output address and the page.
    pub fn translate(&self, iova: u64, need: Perm) -> Result<(u64, Leaf), WalkFault> {
        let leaf = self.lookup(iova)?;
        if !leaf.perm.allows(need) {
            return Err(WalkFault::Permission {
                iova,
                needed: need,
                granted: leaf.perm,
            });
        }
        Ok((leaf.translate(iova), leaf))
    }

    /// Calls `on_leaf` for every page intersecting `range`, in IOVA order, each exactly once
    /// (a page larger than its slot, replicated across slots, is reported once; pages may
    /// start before `range.start` or end after `range.end` — callers clip). A page larger
    /// than its slot whose first slot holds another entry is [`WalkFault::Reserved`] (in
    /// [`lookup`](Self::lookup) too), and so is one met at a later slot than the first this
    /// enumeration visited in its table (an earlier visited slot held something else), so
    /// enumerated leaves never overlap.
    ///
    /// Empty subtrees are skipped without reading their lower levels. A malformed entry is
    /// reported to `on_fault` and its subtree treated as unmapped. IOVAs beyond the format's
    /// width are unmapped. Stops with [`WalkFault::WorkLimit`] after
    /// [`WalkLimits::max_entries`] reads; leaves reported until then are valid.
    pub fn for_each_leaf(
        &self,
        range: AddrRange,
        on_leaf: &mut dyn FnMut(Leaf),
        on_fault: &mut dyn FnMut(WalkFault),
    ) -> Result<WalkStats, WalkFault> {
        let mut st = WalkStats::default();
        let top = self.format.top_level();
        let end = u128::from(range.end).min(span(self.format.iova_bits()));
        let start = u128::from(range.start);
        if start < end {
            let mut cursor = start;
            self.walk_table(
                top,
                self.root,
                Perm::all(),
                &mut cursor,
                end,
                &mut st,
                on_leaf,
                on_fault,
            )?;
        }
        Ok(st)
    }

    /// Enumerates the table at `table` of `level` from `*cursor` up to `end` (both inside the
    /// table's span), advancing `*cursor`.
    #[allow(clippy::too_many_arguments)]
    fn walk_table(
        &self,
        level: u8,
        table: u64,
        perm: Perm,
        cursor: &mut u128,
        end: u128,
        st: &mut WalkStats,
        on_leaf: &mut dyn FnMut(Leaf),
        on_fault: &mut dyn FnMut(WalkFault),
    ) -> Result<(), WalkFault> {
        let shift = self.format.level_shift(level);
        let slot = span(shift);
        let mask = span(self.format.index_bits(level)) - 1;
        let index = |iova: u128| -> u64 {
            if shift >= 128 {
                0
            } else {
                ((iova >> shift) & mask) as u64
            }
        };
        // Fast path: the entries this call visits, as one slice of guest memory, so each
        // entry is one atomic load without a region lookup. Falls back to per-entry reads
        // (and their faults) when the table is not inside one RAM region.
        let first = index(*cursor);
        let last = index(end - 1);
        let slice = (last >= first)
            .then(|| {
                let base = table.checked_add(first.checked_mul(8)?)?;
                let bytes = usize::try_from((last - first + 1) * 8).ok()?;
                if !base.is_multiple_of(8) {
                    return None;
                }
                let s = self
                    .mem
                    .get_slices(GuestAddress(base), bytes, vm_memory::Permissions::Read)
                    .ok()?
                    .next()?
                    .ok()?;
                (s.len() == bytes).then_some(s)
            })
            .flatten();
        let order = self.format.byte_order();
        // The first slot this call visits: the only one at which a page starting in an
        // earlier slot may be met (see `check_first_slot`).
        let visited_from = *cursor & !(slot - 1);
        while *cursor < end {
            let iova = *cursor;
            let slot_base = iova & !(slot - 1);
            let slot_end = slot_base + slot;
            if st.entries_read >= self.limits.max_entries {
                return Err(WalkFault::WorkLimit {
                    entries_read: st.entries_read,
                });
            }
            st.entries_read += 1;
            let iova64 = iova as u64;
            let idx = index(iova);
            let loaded = match &slice {
                Some(s) if idx >= first => s
                    .load::<u64>(((idx - first) * 8) as usize, Ordering::Acquire)
                    .map(|native| order.decode(native))
                    .map_err(|_| WalkFault::TableOutsideRam {
                        level,
                        addr: table.wrapping_add(idx.wrapping_mul(8)),
                    }),
                _ => self.read(level, table.wrapping_add(idx.wrapping_mul(8))),
            };
            let raw = match loaded {
                Ok(raw) => raw,
                Err(fault) => {
                    // The whole table is unreadable: report once, skip the rest of it.
                    st.faults += 1;
                    on_fault(fault);
                    *cursor = end;
                    return Ok(());
                }
            };
            let mut next = slot_end;
            match self.format.decode(level, raw) {
                Decoded::Empty => {}
                Decoded::Reserved => {
                    st.faults += 1;
                    on_fault(WalkFault::Reserved {
                        level,
                        entry: raw,
                        iova: iova64,
                    });
                }
                Decoded::Table {
                    addr,
                    level: child,
                    perm: p,
                } => {
                    if child >= level {
                        st.faults += 1;
                        on_fault(WalkFault::Reserved {
                            level,
                            entry: raw,
                            iova: iova64,
                        });
                    } else {
                        let child_span =
                            span(self.format.level_shift(child) + self.format.index_bits(child));
                        let child_end = end.min(slot_end).min(slot_base + child_span);
                        let mut c = iova;
                        if c < child_end {
                            self.walk_table(
                                child,
                                addr,
                                perm & p,
                                &mut c,
                                child_end,
                                st,
                                on_leaf,
                                on_fault,
                            )?;
                        }
                    }
                }
                Decoded::Leaf {
                    addr,
                    size_log2,
                    perm: p,
                } => match self
                    .make_leaf(level, raw, iova64, addr, size_log2, perm & p)
                    .and_then(|leaf| {
                        // A page starting in an earlier slot that this walk visited (and that
                        // held something else, or the page would have been reported there and
                        // skipped) would overlap what was reported for that slot.
                        if u128::from(leaf.iova) < slot_base && slot_base != visited_from {
                            return Err(WalkFault::Reserved {
                                level,
                                entry: raw,
                                iova: iova64,
                            });
                        }
                        self.check_first_slot(level, table, raw, iova64, leaf)
                    }) {
                    Ok(leaf) => {
                        st.leaves += 1;
                        next = next.max(u128::from(leaf.iova) + u128::from(leaf.size));
                        on_leaf(leaf);
                    }
                    Err(fault) => {
                        st.faults += 1;
                        on_fault(fault);
                    }
                },
            }
            *cursor = next;
        }
        Ok(())
    }
}
