//! Merging leaves into maximal runs: contiguous in IOVA and output address, same permissions.

use super::walker::Leaf;
use crate::addr::AddrRange;
use crate::perm::Perm;

/// A contiguous piece of a translation: `[iova, iova + size)` maps to `[addr, addr + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Run {
    /// First IOVA.
    pub iova: u64,
    /// First output (guest-physical) address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Permissions of every byte.
    pub perm: Perm,
}

impl Run {
    /// IOVA range covered.
    pub fn iova_range(&self) -> AddrRange {
        AddrRange::from_len(self.iova, self.size)
    }

    /// Output range covered.
    pub fn addr_range(&self) -> AddrRange {
        AddrRange::from_len(self.addr, self.size)
    }

    /// True when `next` starts where `self` ends in both spaces with equal permissions.
    pub fn continues_with(&self, next: &Run) -> bool {
        self.perm == next.perm
            && self.iova.checked_add(self.size) == Some(next.iova)
            && self.addr.checked_add(self.size) == Some(next.addr)
    }

    /// The part of this run inside the IOVA range `r`, if any.
    pub fn clip(&self, r: AddrRange) -> Option<Run> {
        let c = self.iova_range().intersect(&r);
        if c.is_empty() {
            return None;
        }
        Some(Run {
            iova: c.start,
            addr: self.addr.wrapping_add(c.start - self.iova),
            size: c.len(),
            perm: self.perm,
        })
    }
}

impl From<Leaf> for Run {
    fn from(l: Leaf) -> Run {
        Run {
            iova: l.iova,
            addr: l.addr,
            size: l.size,
            perm: l.perm,
        }
    }
}

/// Accumulates leaves (in IOVA order) into maximal runs, clipped to a window.
#[derive(Debug)]
pub struct RunMerger {
    window: AddrRange,
    current: Option<Run>,
    done: Vec<Run>,
}

impl RunMerger {
    /// A merger keeping only what lies inside `window`.
    pub fn new(window: AddrRange) -> Self {
        RunMerger {
            window,
            current: None,
            done: Vec::new(),
        }
    }

    /// Adds the next leaf (IOVA order, non-overlapping).
    pub fn push(&mut self, leaf: Leaf) {
        let Some(run) = Run::from(leaf).clip(self.window) else {
            return;
        };
        match &mut self.current {
            Some(cur) if cur.continues_with(&run) => cur.size += run.size,
            _ => {
                if let Some(prev) = self.current.replace(run) {
                    self.done.push(prev);
                }
            }
        }
    }

    /// The maximal runs, in IOVA order.
    pub fn finish(mut self) -> Vec<Run> {
        if let Some(cur) = self.current.take() {
            self.done.push(cur);
        }
        self.done
    }
}
