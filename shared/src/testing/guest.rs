//! A guest that edits a page table the way a driver does, and the truth it encodes page by
//! page — plus the reference (independently written) canonical host layout of that truth.
//! Shared by the property tests, the fuzz targets and the benchmarks.

use crate::addr::AddrRange;
use crate::perm::Perm;
use crate::pt::{BuildError, EncodeFormat, TableBuilder};
use std::collections::{BTreeMap, BTreeSet};
use vm_memory::GuestMemory;

/// 4 KiB.
pub const PAGE: u64 = 4096;
/// The large-page size the guest uses (level-1 leaves).
pub const BIG: u64 = 2 << 20;

/// IOVA page → (guest-physical page, permissions).
pub type Truth = BTreeMap<u64, (u64, Perm)>;

/// A host mapping as a plain tuple `(iova, gpa, size, perm)`.
pub type Mapping = (u64, u64, u64, Perm);

/// One guest edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Map `pages` 4 KiB pages at page index `at` to guest page `gpa` (contiguous).
    Map {
        /// First IOVA page index.
        at: u64,
        /// Number of pages.
        pages: u64,
        /// First guest page index.
        gpa: u64,
        /// Permissions.
        perm: Perm,
    },
    /// Map a 2 MiB page at 2 MiB slot `slot` to 2 MiB frame `frame` above 1 GiB.
    MapBig {
        /// 2 MiB IOVA slot index.
        slot: u64,
        /// 2 MiB frame index.
        frame: u64,
        /// Permissions.
        perm: Perm,
    },
    /// Unmap `pages` pages at page index `at`.
    Unmap {
        /// First IOVA page index.
        at: u64,
        /// Number of pages.
        pages: u64,
    },
}

/// The guest: a table built in guest memory and the truth it encodes.
pub struct GuestTables<'a, F: ?Sized, M: ?Sized> {
    builder: TableBuilder<'a, F, M>,
    truth: Truth,
    big: BTreeSet<u64>,
    space_pages: u64,
}

impl<'a, F: EncodeFormat + ?Sized, M: GuestMemory + ?Sized> GuestTables<'a, F, M> {
    /// A guest with an empty table whose tables live in `[area_start, area_end)`, editing
    /// IOVAs `[0, space_pages * 4 KiB)`.
    pub fn new(
        fmt: &'a F,
        mem: &'a M,
        area: AddrRange,
        space_pages: u64,
    ) -> Result<Self, BuildError> {
        Ok(GuestTables {
            builder: TableBuilder::new(fmt, mem, area.start, area.end)?,
            truth: Truth::new(),
            big: BTreeSet::new(),
            space_pages,
        })
    }

    /// Root of the table.
    pub fn root(&self) -> u64 {
        self.builder.root()
    }

    /// What the table maps, page by page.
    pub fn truth(&self) -> &Truth {
        &self.truth
    }

    fn clear_page(&mut self, iova: u64) -> Result<AddrRange, BuildError> {
        let slot = iova / BIG;
        if self.big.remove(&slot) {
            self.builder.unmap_page(iova)?;
            for p in 0..BIG / PAGE {
                self.truth.remove(&(slot * BIG + p * PAGE));
            }
            return Ok(AddrRange::from_len(slot * BIG, BIG));
        }
        self.builder.unmap_page(iova)?;
        self.truth.remove(&iova);
        Ok(AddrRange::from_len(iova, PAGE))
    }

    /// Applies `e` (clamped to the space); returns the IOVA range the guest must invalidate.
    pub fn apply(&mut self, e: &Edit) -> Result<AddrRange, BuildError> {
        let space = self.space_pages;
        match *e {
            Edit::Map {
                at,
                pages,
                gpa,
                perm,
            } => {
                let at = at % space;
                let pages = pages.min(space - at);
                let mut inv = AddrRange::from_len(at * PAGE, pages * PAGE);
                for i in 0..pages {
                    let iova = (at + i) * PAGE;
                    inv = inv.union_hull(&self.clear_page(iova)?);
                    let addr = (gpa + i) * PAGE;
                    self.builder.map_page(0, iova, addr, perm)?;
                    self.truth.insert(iova, (addr, perm));
                }
                Ok(inv)
            }
            Edit::MapBig { slot, frame, perm } => {
                let slots = (space * PAGE / BIG).max(1);
                let base = (slot % slots) * BIG;
                if base + BIG > space * PAGE {
                    return Ok(AddrRange::default());
                }
                for p in 0..BIG / PAGE {
                    self.truth.remove(&(base + p * PAGE));
                }
                self.big.insert(base / BIG);
                let addr = (1 << 30) + frame * BIG;
                self.builder.map_page(1, base, addr, perm)?;
                for p in 0..BIG / PAGE {
                    self.truth.insert(base + p * PAGE, (addr + p * PAGE, perm));
                }
                Ok(AddrRange::from_len(base, BIG))
            }
            Edit::Unmap { at, pages } => {
                let at = at % space;
                let pages = pages.min(space - at);
                let mut inv = AddrRange::from_len(at * PAGE, pages * PAGE);
                for i in 0..pages {
                    inv = inv.union_hull(&self.clear_page((at + i) * PAGE)?);
                }
                Ok(inv)
            }
        }
    }
}

/// Reference layout of `truth`, written independently of the engine: merge contiguous pages
/// with equal permissions, cut at `max_run` multiples and at the edges of `holes` (host
/// reserved IOVA ranges, which are left out).
pub fn canonical(truth: &Truth, max_run: u64, holes: &[AddrRange]) -> BTreeSet<Mapping> {
    let mut out = BTreeSet::new();
    let mut cur: Option<Mapping> = None;
    let in_hole = |iova: u64| holes.iter().any(|h| h.contains(iova));
    let at_edge = |iova: u64| holes.iter().any(|h| h.start == iova || h.end == iova);
    for (&iova, &(gpa, perm)) in truth {
        if in_hole(iova) {
            continue;
        }
        if let Some((s, g, len, p)) = cur {
            if s + len == iova
                && g + len == gpa
                && p == perm
                && !iova.is_multiple_of(max_run)
                && !at_edge(iova)
            {
                cur = Some((s, g, len + PAGE, p));
                continue;
            }
            out.insert((s, g, len, p));
        }
        cur = Some((iova, gpa, PAGE, perm));
    }
    if let Some(c) = cur {
        out.insert(c);
    }
    out
}
