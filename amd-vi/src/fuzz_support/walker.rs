//! Fuzz target `walker_amd`: the shared walker over hostile AMD-Vi v1 page tables
//! ([`AmdV1Format`], 1–6 levels): table pointers that skip levels, default-size leaves at
//! every level, NextLevel-7 pages of every size (in one slot, or replicated across all the
//! slots they cover as Linux writes them), raw values, in 16 pages of RAM with a hole above;
//! any root, IOVA range and lookups.
//!
//! Oracles ([`check_walk`]): never panics; every leaf is a page the format can map (at least
//! its slot, at most half its table's span, never at the top of a 6-level table, aligned,
//! below 2^52); the enumeration is sorted and non-overlapping ([`check_enumeration`]); a
//! lookup finds every enumerated leaf at its first slot; every successful lookup contains
//! its address and, in a completely enumerated range, was enumerated, or lies inside an
//! enumerated NextLevel-7 page (whose other slots the enumeration skips), or is a
//! NextLevel-7 page looked up at a later slot than its first (refused by an enumeration
//! that visited a disagreeing slot before).
//!
//! A NextLevel-7 page is valid only where its first slot holds the same entry (the spec
//! asks for the entry in every slot it covers, 2.2.3): the shared walker checks that slot in
//! lookups and enumerations alike, and an enumeration takes such a page at a later slot only
//! at the first slot it visits in that table, so a page replicated inconsistently is a
//! `Reserved` fault there and enumerated leaves never overlap. Slots in the
//! middle of a valid page that hold something else are not read by the enumeration (it
//! skips the page's other slots): the page covers them.

use crate::pagetable::{AmdV1Format, MAX_LEVELS, PTE_ADDR_MASK};
use arbitrary::Arbitrary;
use viommu_shared::fuzz_support::check_enumeration;
use viommu_shared::fuzz_support::walker::{enumerate, masked_range, store_entry};
use viommu_shared::pt::{ByteOrder, Leaf, PageTableFormat, WalkLimits, Walker};
use viommu_shared::testing::guest_memory;
use viommu_shared::{AddrRange, Perm};
use vm_memory::GuestMemoryMmap;

/// Guest RAM of the target: 16 pages at 0; everything above is a hole.
pub const RAM: u64 = 16 * 4096;
/// Most table entries one enumeration reads: enough for every table of the RAM pages to be
/// visited several times over through aliases (and for the work limit to be reached), small
/// enough that one input costs microseconds.
pub const WALK_ENTRIES: u64 = 1 << 12;
/// Most entry writes one input makes.
pub const MAX_WRITES: usize = 256;

/// The table's depth and where the walk looks.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Depth (DTE Mode): 1 + `levels % 6`.
    pub levels: u8,
    /// Root page (`% 18`: pages 16 and 17 are outside RAM).
    pub root_page: u8,
    /// Range start (reduced modulo the input width).
    pub start: u64,
    /// Range length: `len` masked to `len_bits % 65` bits.
    pub len: u64,
    /// See `len`.
    pub len_bits: u8,
    /// Addresses looked up.
    pub lookups: [u64; 4],
}

/// One entry written into guest memory.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryWrite {
    /// Entry slot (`× 8`, modulo RAM).
    pub slot: u16,
    /// What to write (`% 6`): table pointer (to page `(hint & 0xff) % 17`, NextLevel
    /// `(hint >> 8 & 0xff) % level + 1`), default-size leaf, NextLevel-7 leaf of
    /// 2^(`hint >> 8 & 7` + 1) slots in one slot, the same replicated over its slots, raw
    /// `hint`, zero.
    pub kind: u8,
    /// Level the entry is encoded for (`% 6`).
    pub level: u8,
    /// Address, size, permission and noise bits.
    pub hint: u64,
}

fn perm(hint: u64) -> Perm {
    [Perm::READ, Perm::WRITE, Perm::RW][((hint >> 60) % 3) as usize]
}

/// The value `w` writes, and in how many consecutive slots.
pub fn entry_value(fmt: &AmdV1Format, w: &EntryWrite) -> (u64, u64) {
    let level = w.level % MAX_LEVELS;
    let h = w.hint;
    match w.kind % 6 {
        0 => {
            let page = ((h & 0xff) % 17) * 4096;
            let next = (((h >> 8) & 0xff) % u64::from(level.max(1))) as u8;
            let e = fmt.encode_table_to(level.max(1), page, next, perm(h));
            (e.unwrap_or(h), 1)
        }
        kind @ 1..=3 => {
            let slot = fmt.level_shift(level);
            let size_log2 = if kind == 1 {
                slot
            } else {
                slot + 1 + ((h >> 8) & 7) as u32
            };
            let addr = h & PTE_ADDR_MASK & !((1u64 << size_log2.min(63)) - 1);
            match fmt.encode_sized_leaf(level, addr, size_log2, perm(h)) {
                Some(e) if kind == 3 => (e, 1 << (size_log2 - slot)),
                Some(e) => (e, 1),
                None => (h, 1),
            }
        }
        4 => (h, 1),
        _ => (0, 1),
    }
}

/// A decoded input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Depth and walk.
    pub header: Header,
    /// Entry writes, in order.
    pub writes: Vec<EntryWrite>,
}

impl Input {
    /// Decodes the header, then entry writes until the data runs out.
    pub fn decode(data: &[u8]) -> Option<Input> {
        let (header, writes) = viommu_shared::fuzz_support::decode_steps(data, MAX_WRITES)?;
        Some(Input { header, writes })
    }

    /// The format.
    pub fn format(&self) -> AmdV1Format {
        AmdV1Format::new(1 + self.header.levels % MAX_LEVELS).expect("1 to 6 levels")
    }

    /// The IOVA range walked.
    pub fn range(&self, fmt: &AmdV1Format) -> AddrRange {
        let h = &self.header;
        masked_range(h.start, h.len, h.len_bits, fmt.iova_bits())
    }

    /// Encodes the input so that [`decode`](Self::decode) gives it back.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = super::Encoder::new();
        let h = &self.header;
        e.u8(h.levels)
            .u8(h.root_page)
            .u64(h.start)
            .u64(h.len)
            .u8(h.len_bits);
        for l in h.lookups {
            e.u64(l);
        }
        for w in &self.writes {
            e.u16(w.slot).u8(w.kind).u8(w.level).u64(w.hint);
        }
        e.into_bytes()
    }
}

/// Guest memory holding `input`'s writes.
pub fn memory(input: &Input, fmt: &AmdV1Format) -> GuestMemoryMmap {
    let mem = guest_memory(&[(0, RAM as usize)]);
    for w in &input.writes {
        let (value, count) = entry_value(fmt, w);
        let first = u64::from(w.slot);
        for i in 0..count {
            // Replicas stay inside the table page of the first slot.
            let slot = (first & !511) | ((first + i) & 511);
            store_entry(&mem, RAM, slot, ByteOrder::Little, value);
        }
    }
    mem
}

/// Runs `input`; the first oracle failure is returned.
pub fn run(input: &Input) -> Result<(), String> {
    let fmt = input.format();
    let mem = memory(input, &fmt);
    let root = u64::from(input.header.root_page % 18) * 4096;
    let w = Walker::new(&fmt, &mem, root).with_limits(WalkLimits {
        max_entries: WALK_ENTRIES,
    });
    let range = input.range(&fmt);
    let (leaves, complete) = enumerate(&w, range);
    check_walk(&fmt, &w, range, &leaves, complete, &input.header.lookups)
}

/// The oracles over one enumeration `leaves` of `range` (`complete` if it did not stop at
/// the work limit) and lookups of `lookups`.
pub fn check_walk(
    fmt: &AmdV1Format,
    w: &Walker<'_, AmdV1Format, GuestMemoryMmap>,
    range: AddrRange,
    leaves: &[Leaf],
    complete: bool,
    lookups: &[u64],
) -> Result<(), String> {
    let slot = |l: &Leaf| 1u64 << fmt.level_shift(l.level);
    for l in leaves {
        check_enumeration(std::slice::from_ref(l), range)
            .map_err(|e| format!("enumeration: {e}"))?;
        let top_of_six = fmt.levels() == MAX_LEVELS && l.level == MAX_LEVELS - 1;
        let too_big = u128::from(l.size) > u128::from(slot(l)) << 8;
        if l.size < slot(l) || too_big || top_of_six || l.addr & !PTE_ADDR_MASK != 0 {
            return Err(format!("leaf {l:?} is not a page {fmt:?} can map"));
        }
    }
    // Sorted and non-overlapping, NextLevel-7 pages included: the walker checks a page's
    // first slot wherever it meets the page (see the module documentation).
    check_enumeration(leaves, range).map_err(|e| format!("enumeration: {e}"))?;
    for l in leaves.iter().take(64) {
        // Found at its first slot, which holds the same entry.
        match w.lookup(l.iova) {
            Ok(found) if found == *l => {}
            other => {
                return Err(format!(
                    "lookup({:#x}) = {other:?}, enumeration said {l:?}",
                    l.iova
                ));
            }
        }
    }
    for &a in lookups {
        if let Ok(found) = w.lookup(a) {
            if !found.iova_range().contains(a) {
                return Err(format!("lookup({a:#x}) = {found:?} does not contain it"));
            }
            // Inside an enumerated NextLevel-7 page (whose other slots the enumeration
            // skips), or a NextLevel-7 page met at a later slot than its first: the
            // enumeration refuses it when a slot it visited before disagreed.
            let covered = leaves
                .iter()
                .any(|l| l.size > slot(l) && l.iova_range().contains(a))
                || (found.size > slot(&found) && a & !(slot(&found) - 1) != found.iova);
            if complete && range.contains(a) && !leaves.contains(&found) && !covered {
                return Err(format!(
                    "lookup({a:#x}) = {found:?} but the complete enumeration missed it"
                ));
            }
        }
    }
    Ok(())
}

/// The fuzz target: decodes `data` and runs it; panics when an oracle fails.
pub fn walker(data: &[u8]) {
    let Some(input) = Input::decode(data) else {
        return;
    };
    if let Err(e) = run(&input) {
        panic!("walker_amd oracle: {e}\n{input:?}");
    }
}
