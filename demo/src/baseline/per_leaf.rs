//! QEMU's x86 shadowing: one host call per guest leaf (`anchors-x86.md` §1.10 for VT-d,
//! §2.8 for AMD-Vi).

use std::collections::BTreeMap;
use viommu_shared::host::HostDma;
use viommu_shared::pt::Leaf;
use viommu_shared::shadow::GuestView;
use viommu_shared::{AddrRange, Perm};

/// What the per-leaf shadow did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerLeafStats {
    /// Walks of an invalidated range.
    pub syncs: u64,
    /// MAP events (one host map call each).
    pub map_events: u64,
    /// UNMAP events (one host unmap call each).
    pub unmap_events: u64,
    /// Maps the host refused with `ENOSPC`. QEMU only logs them ("VFIO_MAP_DMA failed: No
    /// space left on device"): the record keeps the leaf, the host lacks it.
    pub dropped_out_of_resources: u64,
    /// Maps refused for other reasons (also only logged).
    pub dropped_other: u64,
    /// Guest pages behind the dropped maps.
    pub dropped_pages: u64,
}

/// One recorded leaf (the `iova_tree` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Recorded {
    size: u64,
    gpa: u64,
    perm: Perm,
}

impl Recorded {
    fn of(leaf: &Leaf) -> Recorded {
        Recorded {
            size: leaf.size,
            gpa: leaf.addr,
            perm: leaf.perm & Perm::RW,
        }
    }
}

enum Event {
    Unmap(u64, Recorded),
    Map(Leaf),
}

/// The per-leaf shadow of one device address space into `host`.
#[derive(Debug)]
pub struct PerLeafShadow<H: HostDma> {
    host: H,
    tree: BTreeMap<u64, Recorded>,
    system_memory: Option<AddrRange>,
    stats: PerLeafStats,
}

impl<H: HostDma> PerLeafShadow<H> {
    /// A shadow over `host` (empty).
    pub fn new(host: H) -> Self {
        PerLeafShadow {
            host,
            tree: BTreeMap::new(),
            system_memory: None,
            stats: PerLeafStats::default(),
        }
    }

    /// The host backend.
    pub fn host(&self) -> &H {
        &self.host
    }

    /// Counters.
    pub fn stats(&self) -> PerLeafStats {
        self.stats
    }

    /// Leaves recorded (mapped, or believed mapped after a dropped map).
    pub fn recorded(&self) -> usize {
        self.tree.len()
    }

    /// Translation off: the device's address space is system memory, which VFIO's memory
    /// listener maps as one host mapping per RAM section.
    pub fn map_system_memory(&mut self, ram: AddrRange) {
        if self.system_memory.is_none()
            && self
                .host
                .map(ram.start, ram.start, ram.len(), Perm::RW)
                .is_ok()
        {
            self.system_memory = Some(ram);
        }
    }

    /// Translation on (or a translated device entry): the system-memory mapping goes.
    pub fn unmap_system_memory(&mut self) {
        if let Some(ram) = self.system_memory.take() {
            let _ = self.host.unmap(ram.start, ram.len());
        }
    }

    fn map(&mut self, leaf: &Leaf) {
        // A MAP over a different recorded translation: UNMAP then MAP.
        let end = leaf.iova.saturating_add(leaf.size);
        let lo = self
            .tree
            .range(..leaf.iova)
            .next_back()
            .filter(|(s, r)| s.saturating_add(r.size) > leaf.iova)
            .map_or(leaf.iova, |(&s, _)| s);
        let overlapping: Vec<(u64, Recorded)> =
            self.tree.range(lo..end).map(|(&s, &r)| (s, r)).collect();
        for (s, r) in overlapping {
            self.unmap(s, r);
        }
        let rec = Recorded::of(leaf);
        self.stats.map_events += 1;
        if let Err(e) = self.host.map(leaf.iova, rec.gpa, rec.size, rec.perm) {
            if e == viommu_shared::host::HostError::OutOfResources {
                self.stats.dropped_out_of_resources += 1;
            } else {
                self.stats.dropped_other += 1;
            }
            self.stats.dropped_pages += rec.size / 4096;
        }
        self.tree.insert(leaf.iova, rec);
    }

    fn unmap(&mut self, iova: u64, rec: Recorded) {
        self.stats.unmap_events += 1;
        // The host answers 0 bytes for a leaf it never got; QEMU ignores the result.
        let _ = self.host.unmap(iova, rec.size);
        self.tree.remove(&iova);
    }

    /// Processes an invalidation of `range`: walks it and sends one MAP per new or changed
    /// leaf and one UNMAP per recorded leaf that is gone or changed, in IOVA order. Identical
    /// leaves are skipped (the record says they are mapped).
    pub fn sync(&mut self, view: &dyn GuestView, range: AddrRange) {
        self.stats.syncs += 1;
        let mut leaves: Vec<Leaf> = Vec::new();
        // Unreadable or reserved entries are skipped silently, as QEMU's walk does.
        let _ = view.leaves(range, &mut |l| leaves.push(l), &mut |_| {});
        leaves.retain(|l| !(l.perm & Perm::RW).is_empty());
        let lo = self
            .tree
            .range(..range.start)
            .next_back()
            .filter(|(s, r)| s.saturating_add(r.size) > range.start)
            .map_or(range.start, |(&s, _)| s);
        let recorded: Vec<(u64, Recorded)> = self
            .tree
            .range(lo..range.end)
            .map(|(&s, &r)| (s, r))
            .collect();
        let mut events = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < recorded.len() || j < leaves.len() {
            match (recorded.get(i), leaves.get(j)) {
                (Some(&(s, r)), Some(l)) if s == l.iova && r == Recorded::of(l) => {
                    i += 1;
                    j += 1;
                }
                (Some(&(s, r)), Some(l)) if s <= l.iova => {
                    events.push((s, 0, Event::Unmap(s, r)));
                    i += 1;
                }
                (_, Some(l)) => {
                    events.push((l.iova, 1, Event::Map(*l)));
                    j += 1;
                }
                (Some(&(s, r)), None) => {
                    events.push((s, 0, Event::Unmap(s, r)));
                    i += 1;
                }
                (None, None) => break,
            }
        }
        events.sort_by_key(|&(iova, order, _)| (iova, order));
        for (_, _, e) in events {
            match e {
                Event::Unmap(s, r) => {
                    // An earlier MAP may have replaced it already.
                    if self.tree.get(&s) == Some(&r) {
                        self.unmap(s, r);
                    }
                }
                Event::Map(l) => self.map(&l),
            }
        }
    }

    /// Device unplug: every recorded leaf and the system-memory mapping are unmapped.
    pub fn teardown(&mut self) {
        self.unmap_system_memory();
        let all: Vec<(u64, Recorded)> = self.tree.iter().map(|(&s, &r)| (s, r)).collect();
        for (s, r) in all {
            self.unmap(s, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::host::{SharedSimHost, SimHostConfig};
    use viommu_shared::pt::{ByteOrder, TableBuilder, Walker};
    use viommu_shared::testing::{RadixFormat, guest_memory};

    #[test]
    fn one_call_per_leaf_and_dropped_maps_are_lost() {
        let mem = guest_memory(&[(0x100_0000, 1 << 20)]);
        let fmt = RadixFormat::x86_like(4, ByteOrder::Little);
        let mut b = TableBuilder::new(&fmt, &mem, 0x100_0000, 0x110_0000).unwrap();
        b.map_range(0x10_0000, 0x4000_0000, 0x8000, Perm::RW)
            .unwrap();
        let host = SharedSimHost::new(SimHostConfig::vtd().with_entry_limit(6));
        let mut s = PerLeafShadow::new(host.clone());
        let view = Walker::new(&fmt, &mem, b.root());
        s.sync(&view, AddrRange::from_len(0x10_0000, 0x8000));
        // Eight contiguous pages: eight host calls (no coalescing), two refused.
        assert_eq!(s.stats().map_events, 8);
        assert_eq!(s.stats().dropped_out_of_resources, 2);
        assert_eq!(host.with(|h| h.mapping_count()), 6);
        // Nothing changed: nothing is sent.
        s.sync(&view, AddrRange::from_len(0x10_0000, 0x8000));
        assert_eq!(s.stats().map_events, 8);
        // One page unmapped, one remapped elsewhere.
        b.unmap_page(0x10_0000).unwrap();
        b.map_page(0, 0x10_1000, 0x5000_0000, Perm::READ).unwrap();
        s.sync(&view, AddrRange::from_len(0x10_0000, 0x2000));
        let st = s.stats();
        assert_eq!((st.unmap_events, st.map_events), (2, 9));
        let maps = host.with(|h| h.mappings());
        assert!(
            maps.iter()
                .any(|m| m.iova == 0x10_1000 && m.gpa == 0x5000_0000)
        );
        assert!(!maps.iter().any(|m| m.iova == 0x10_0000));
        s.teardown();
        assert_eq!(host.with(|h| h.mapping_count()), 0);
    }
}
