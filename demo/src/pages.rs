//! Page maps (IOVA page → guest-physical page and permissions) of guest tables and host
//! mappings, and their comparison: the demo's "no lost mapping" verdict.

use std::collections::BTreeMap;
use viommu_shared::pt::Leaf;
use viommu_shared::shadow::GuestView;
use viommu_shared::{AddrRange, Perm};

const PAGE: u64 = 4096;

/// 4 KiB pages by IOVA. Permissions are reduced to read/write (what hosts keep).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageMap(BTreeMap<u64, (u64, Perm)>);

impl PageMap {
    /// An empty map.
    pub fn new() -> Self {
        PageMap::default()
    }

    /// Adds the pages of `[iova, iova + size)` → `[gpa, gpa + size)`.
    pub fn add_run(&mut self, iova: u64, gpa: u64, size: u64, perm: Perm) {
        let mut off = 0;
        while off < size {
            self.0.insert(iova + off, (gpa + off, perm & Perm::RW));
            off += PAGE;
        }
    }

    /// Number of pages.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The page at `iova`.
    pub fn get(&self, iova: u64) -> Option<(u64, Perm)> {
        self.0.get(&(iova & !(PAGE - 1))).copied()
    }

    /// Every page of `view` inside `range` (leaves clipped to it).
    pub fn of_view(view: &dyn GuestView, range: AddrRange) -> PageMap {
        let mut map = PageMap::new();
        let mut leaves: Vec<Leaf> = Vec::new();
        // A work-limit stop leaves the map short, which the comparison then reports.
        let _ = view.leaves(range, &mut |l| leaves.push(l), &mut |_| {});
        for l in leaves {
            let r = l.iova_range().intersect(&range);
            if !r.is_empty() {
                map.add_run(r.start, l.translate(r.start), r.len(), l.perm);
            }
        }
        map
    }
}

/// Guest tables against host mappings, page by page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Pages the guest tables map.
    pub guest_pages: u64,
    /// Pages the host maps.
    pub host_pages: u64,
    /// Pages the guest maps and the host does not (lost mappings: the device faults on them).
    pub missing: u64,
    /// Pages the host maps and the guest does not (stale: the device can still reach memory
    /// the guest took back).
    pub stale: u64,
    /// Pages both map, to different guest-physical pages or with different permissions.
    pub different: u64,
}

impl Comparison {
    /// Compares `guest` with `host`.
    pub fn of(guest: &PageMap, host: &PageMap) -> Comparison {
        let mut c = Comparison {
            guest_pages: guest.len() as u64,
            host_pages: host.len() as u64,
            ..Comparison::default()
        };
        for (iova, g) in &guest.0 {
            match host.0.get(iova) {
                None => c.missing += 1,
                Some(h) if h != g => c.different += 1,
                Some(_) => {}
            }
        }
        c.stale = host.0.keys().filter(|i| !guest.0.contains_key(i)).count() as u64;
        c
    }

    /// True when the host maps exactly what the guest tables map.
    pub fn equal(&self) -> bool {
        self.missing == 0 && self.stale == 0 && self.different == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_page_by_page() {
        let mut g = PageMap::new();
        g.add_run(0x1000, 0x8000, 0x3000, Perm::RW | Perm::EXEC);
        let mut h = PageMap::new();
        h.add_run(0x1000, 0x8000, 0x2000, Perm::RW);
        h.add_run(0x3000, 0x9000, 0x1000, Perm::RW);
        h.add_run(0x9000, 0x1000, 0x1000, Perm::READ);
        let c = Comparison::of(&g, &h);
        assert_eq!(
            (c.guest_pages, c.host_pages, c.missing, c.stale, c.different),
            (3, 4, 0, 1, 1)
        );
        assert!(!c.equal());
        assert!(Comparison::of(&g, &g).equal());
        assert_eq!(g.get(0x2abc), Some((0x9000, Perm::RW)));
    }
}
