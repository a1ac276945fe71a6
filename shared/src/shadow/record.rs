//! The record of host mappings an engine created, indexed by IOVA and by guest-physical
//! address.

use crate::addr::AddrRange;
use crate::perm::Perm;
use crate::pt::Run;
use std::collections::BTreeMap;

/// One host mapping created by the shadow engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShadowMapping {
    /// First IOVA.
    pub iova: u64,
    /// First guest-physical address.
    pub gpa: u64,
    /// Bytes.
    pub size: u64,
    /// Permissions given to the host.
    pub perm: Perm,
}

impl ShadowMapping {
    /// IOVA range covered.
    pub fn iova_range(&self) -> AddrRange {
        AddrRange::from_len(self.iova, self.size)
    }

    /// Guest-physical range covered.
    pub fn gpa_range(&self) -> AddrRange {
        AddrRange::from_len(self.gpa, self.size)
    }

    /// The same mapping as a [`Run`].
    pub fn run(&self) -> Run {
        Run {
            iova: self.iova,
            addr: self.gpa,
            size: self.size,
            perm: self.perm,
        }
    }
}

impl From<Run> for ShadowMapping {
    fn from(r: Run) -> Self {
        ShadowMapping {
            iova: r.iova,
            gpa: r.addr,
            size: r.size,
            perm: r.perm,
        }
    }
}

/// Host mappings by IOVA, with a reverse index by guest-physical address.
#[derive(Clone, Debug, Default)]
pub struct Record {
    by_iova: BTreeMap<u64, ShadowMapping>,
    by_gpa: BTreeMap<(u64, u64), u64>,
    max_size: u64,
    bytes: u64,
}

impl Record {
    /// Adds a mapping the host accepted.
    pub fn insert(&mut self, m: ShadowMapping) {
        self.max_size = self.max_size.max(m.size);
        self.bytes += m.size;
        self.by_gpa.insert((m.gpa, m.iova), m.size);
        self.by_iova.insert(m.iova, m);
    }

    /// Removes the mapping starting at `iova`.
    pub fn remove(&mut self, iova: u64) -> Option<ShadowMapping> {
        let m = self.by_iova.remove(&iova)?;
        self.by_gpa.remove(&(m.gpa, m.iova));
        self.bytes -= m.size;
        Some(m)
    }

    /// Number of host mappings.
    pub fn len(&self) -> usize {
        self.by_iova.len()
    }

    /// True when nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.by_iova.is_empty()
    }

    /// Bytes mapped in total.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// All mappings in IOVA order.
    pub fn iter(&self) -> impl Iterator<Item = &ShadowMapping> + Clone {
        self.by_iova.values()
    }

    /// The mapping containing `iova`.
    pub fn containing(&self, iova: u64) -> Option<ShadowMapping> {
        let (_, m) = self.by_iova.range(..=iova).next_back()?;
        (iova - m.iova < m.size).then_some(*m)
    }

    /// The mapping that strictly spans the point `p` (starts before it and ends after it).
    pub fn spanning(&self, p: u64) -> Option<ShadowMapping> {
        let m = self.containing(p)?;
        (m.iova < p).then_some(m)
    }

    /// The mapping starting exactly at `iova`.
    pub fn starting_at(&self, iova: u64) -> Option<ShadowMapping> {
        self.by_iova.get(&iova).copied()
    }

    /// Mappings whose first IOVA lies in `r`, in IOVA order.
    pub fn starting_in(&self, r: AddrRange) -> Vec<ShadowMapping> {
        if r.is_empty() {
            return Vec::new();
        }
        self.by_iova
            .range(r.start..r.end)
            .map(|(_, m)| *m)
            .collect()
    }

    /// Mappings whose guest-physical range overlaps `r` (reverse index).
    pub fn overlapping_gpa(&self, r: AddrRange) -> Vec<ShadowMapping> {
        if r.is_empty() || self.max_size == 0 {
            return Vec::new();
        }
        // Every mapping is at most `max_size` long, so one overlapping `r` starts after
        // `r.start - max_size`.
        let lo = r.start.saturating_sub(self.max_size - 1);
        self.by_gpa
            .range((lo, 0)..(r.end, 0))
            .filter(|&(&(gpa, _), &size)| AddrRange::from_len(gpa, size).overlaps(&r))
            .filter_map(|(&(_, iova), _)| self.by_iova.get(&iova).copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(iova: u64, gpa: u64, size: u64) -> ShadowMapping {
        ShadowMapping {
            iova,
            gpa,
            size,
            perm: Perm::RW,
        }
    }

    #[test]
    fn indexes_agree() {
        let mut r = Record::default();
        r.insert(m(0x1000, 0x9000, 0x2000));
        r.insert(m(0x8000, 0x1000, 0x1000));
        assert_eq!(r.containing(0x2fff).unwrap().iova, 0x1000);
        assert!(r.containing(0x3000).is_none());
        assert!(r.spanning(0x1000).is_none());
        assert_eq!(r.spanning(0x2000).unwrap().iova, 0x1000);
        assert_eq!(r.overlapping_gpa(AddrRange::new(0xa000, 0xb000)).len(), 1);
        assert_eq!(r.overlapping_gpa(AddrRange::new(0xb000, 0xc000)).len(), 0);
        assert_eq!(r.overlapping_gpa(AddrRange::new(0, 0x2000)).len(), 1);
        assert_eq!(r.bytes(), 0x3000);
        r.remove(0x1000);
        assert!(r.overlapping_gpa(AddrRange::new(0x9000, 0xb000)).is_empty());
        assert_eq!(r.len(), 1);
    }
}
