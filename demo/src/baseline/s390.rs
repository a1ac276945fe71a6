//! QEMU's RPCIT intercept shadowing for s390 zPCI (`anchors-s390-vfio.md` A.7.3, A.7.4, A.15).

use std::collections::HashMap;
use viommu_shared::host::HostDma;
use viommu_shared::pt::{PageTableFormat, WalkFault, Walker};
use viommu_shared::{AddrRange, Perm};
use vm_memory::GuestMemory;

const PAGE: u64 = 4096;
/// Bound on QEMU's "second pass" retries (QEMU loops without a bound; each pass can only
/// consume budget, so this is never reached in practice).
const MAX_PASSES: u32 = 64;

/// QEMU's answer to one RPCIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcitAnswer {
    /// CC 0.
    Ok,
    /// CC 1 status 16: the DMA-available counter is 0 at the end (also when the last map
    /// used the final entry, A.7.3 observation 1).
    InsufficientResources,
    /// CC 1 status 8: a table error (the function enters the error state).
    TableError,
}

/// What the RPCIT handler did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RpcitStats {
    /// RPCITs handled.
    pub rpcits: u64,
    /// Of which global (the whole aperture).
    pub global_rpcits: u64,
    /// Answered CC 1 status 16.
    pub insufficient_resources: u64,
    /// Second passes after running out of budget mid-walk.
    pub second_passes: u64,
    /// Table-walk steps (one walk from the root each).
    pub walk_steps: u64,
    /// Cache lookups (one per 4 KiB page of every walked entry).
    pub cache_lookups: u64,
    /// Host maps VFIO refused (only logged by QEMU).
    pub host_map_errors: u64,
}

/// One translation entry as QEMU's table walk returns it.
#[derive(Clone, Copy, Debug)]
struct Entry {
    iova: u64,
    len: u64,
    addr: u64,
    perm: Perm,
}

/// QEMU's per-function RPCIT state: the 4 KiB page cache and the DMA-available counter.
#[derive(Debug)]
pub struct QemuRpcit<H: HostDma> {
    host: H,
    iotlb: HashMap<u64, (u64, Perm)>,
    avail: u32,
    aperture: AddrRange,
    stats: RpcitStats,
}

/// `dma_aligned_pow2_mask(start, end, bits)` of QEMU's `include/exec/memory.h`: the mask of
/// the largest naturally aligned power-of-two block at `start` inside `[start, end]`.
pub fn dma_aligned_pow2_mask(start: u64, end: u64, max_addr_bits: u32) -> u64 {
    let max_mask = if max_addr_bits >= 64 {
        u64::MAX
    } else {
        (1u64 << max_addr_bits) - 1
    };
    let addr_mask = end.wrapping_sub(start);
    let alignment_mask = if start == 0 {
        max_mask
    } else {
        ((start & start.wrapping_neg()) - 1).min(max_mask)
    };
    let size_mask = addr_mask.min(max_mask);
    if alignment_mask <= size_mask {
        return alignment_mask;
    }
    // The largest power of two not above size_mask + 1, minus one.
    match size_mask.checked_add(1) {
        Some(n) => (1u64 << (63 - n.leading_zeros())) - 1,
        None => u64::MAX,
    }
}

impl<H: HostDma> QemuRpcit<H> {
    /// The state of a function plugged with `host` whose registered DMA range is `aperture`:
    /// the counter is read once from the host (`VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`, A.15), or 1
    /// when the host reports no limit.
    pub fn new(host: H, aperture: AddrRange) -> Self {
        let avail = host.remaining_entries().unwrap_or(1);
        QemuRpcit {
            host,
            iotlb: HashMap::new(),
            avail,
            aperture,
            stats: RpcitStats::default(),
        }
    }

    /// The host backend.
    pub fn host(&self) -> &H {
        &self.host
    }

    /// Counters.
    pub fn stats(&self) -> RpcitStats {
        self.stats
    }

    /// QEMU's DMA-available counter.
    pub fn avail(&self) -> u32 {
        self.avail
    }

    fn entry<F, M>(
        &mut self,
        format: &F,
        walker: &Walker<'_, F, M>,
        cur: u64,
    ) -> Result<Entry, WalkFault>
    where
        F: PageTableFormat,
        M: GuestMemory,
    {
        self.stats.walk_steps += 1;
        match walker.lookup(cur) {
            Ok(leaf) => {
                let page = cur & !(PAGE - 1);
                Ok(Entry {
                    iova: page,
                    len: PAGE,
                    addr: leaf.translate(page),
                    perm: leaf.perm & Perm::RW,
                })
            }
            Err(WalkFault::NotPresent { level, .. }) => {
                // Aligned to the entry's span (A.7.3 observation 4; equal to QEMU's own
                // stepping for Linux's ranges).
                let span = 1u64 << format.level_shift(level).min(63);
                Ok(Entry {
                    iova: cur & !(span - 1),
                    len: span,
                    addr: 0,
                    perm: Perm::empty(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `s390_pci_update_iotlb` for the page at `page` of `entry`.
    fn update(&mut self, page: u64, entry: &Entry) {
        self.stats.cache_lookups += 1;
        if entry.perm.is_empty() {
            // Dropped from the cache; the host unmap comes with the coalesced batch.
            if self.iotlb.remove(&page).is_some() {
                self.avail = self.avail.saturating_add(1);
            }
            return;
        }
        let gpa = entry.addr + (page - entry.iova);
        match self.iotlb.get(&page) {
            Some(&cached) if cached == (gpa, entry.perm) => return,
            Some(_) => {
                let _ = self.host.unmap(page, PAGE);
            }
            None => {}
        }
        if self.host.map(page, gpa, PAGE, entry.perm).is_err() {
            self.stats.host_map_errors += 1;
        }
        self.iotlb.insert(page, (gpa, entry.perm));
        // A remap takes an entry without giving one back (A.7.3 observation 2).
        self.avail = self.avail.saturating_sub(1);
    }

    /// `s390_pci_batch_unmap`: power-of-two aligned host unmaps covering the run.
    fn batch_unmap(&mut self, start: u64, len: u64) {
        let last = start + len - 1;
        let mut s = start;
        let mut remain = len;
        while remain >= PAGE {
            let size = dma_aligned_pow2_mask(s, last, 64).wrapping_add(1);
            let _ = self.host.unmap(s, size);
            s = s.wrapping_add(size);
            remain = remain.saturating_sub(size);
        }
    }

    /// RPCIT over `[start, start + len)` of the tables `walker` reads.
    pub fn rpcit<F, M>(
        &mut self,
        format: &F,
        walker: &Walker<'_, F, M>,
        start: u64,
        len: u64,
    ) -> RpcitAnswer
    where
        F: PageTableFormat,
        M: GuestMemory,
    {
        let range = AddrRange::from_len(start, len).intersect(&self.aperture);
        self.stats.rpcits += 1;
        if range == self.aperture {
            self.stats.global_rpcits += 1;
        }
        for pass in 0..MAX_PASSES {
            if pass > 0 {
                self.stats.second_passes += 1;
            }
            let mut again = false;
            let mut coalesce: Option<(u64, u64)> = None;
            let mut cur = range.start & !(PAGE - 1);
            while cur < range.end {
                let entry = match self.entry(format, walker, cur) {
                    Ok(e) => e,
                    Err(_) => return RpcitAnswer::TableError,
                };
                if entry.perm.is_empty() && entry.len == PAGE {
                    let c = coalesce.get_or_insert((entry.iova, 0));
                    c.1 += PAGE;
                } else if let Some((s, l)) = coalesce.take() {
                    self.batch_unmap(s, l);
                }
                let end = entry.iova.saturating_add(entry.len);
                let mut page = cur.max(entry.iova);
                while page < end && page < range.end {
                    if self.avail > 0 || entry.perm.is_empty() {
                        self.update(page, &entry);
                        page += PAGE;
                    } else {
                        again = true;
                        break;
                    }
                }
                cur = end;
            }
            if let Some((s, l)) = coalesce {
                self.batch_unmap(s, l);
            }
            if !(again && self.avail > 0) {
                break;
            }
        }
        if self.avail == 0 {
            self.stats.insufficient_resources += 1;
            RpcitAnswer::InsufficientResources
        } else {
            RpcitAnswer::Ok
        }
    }

    /// Device unplug: every cached page is unmapped.
    pub fn teardown(&mut self) {
        let pages: Vec<u64> = self.iotlb.keys().copied().collect();
        for p in pages {
            let _ = self.host.unmap(p, PAGE);
            self.avail = self.avail.saturating_add(1);
        }
        self.iotlb.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_s390_zpci::Designation;
    use viommu_s390_zpci::testing::ZpciTables;
    use viommu_shared::host::{SharedSimHost, SimHostConfig};
    use viommu_shared::testing::guest_memory;

    #[test]
    fn global_rpcit_looks_up_every_page_and_signals_one_entry_early() {
        let mem = guest_memory(&[(0, 16 << 20)]);
        let mut t = ZpciTables::new(&mem, Designation::RegionThird, 0x10_0000, 0x80_0000).unwrap();
        let ap = AddrRange::from_len(1 << 32, 64 << 20);
        let host = SharedSimHost::new(SimHostConfig::s390(ap).with_entry_limit(4));
        let mut q = QemuRpcit::new(host.clone(), ap);
        for p in 0..3 {
            t.map(ap.start + p * 0x2000, 0x20_0000 + p * 0x1000, Perm::RW)
                .unwrap();
        }
        let fmt = *t.format();
        let w = Walker::new(&fmt, &mem, t.root());
        assert_eq!(q.rpcit(&fmt, &w, ap.start, ap.len()), RpcitAnswer::Ok);
        // One cache lookup per 4 KiB page of the aperture, mapped or not.
        assert_eq!(q.stats().cache_lookups, ap.len() / 4096);
        assert_eq!((host.with(|h| h.mapping_count()), q.avail()), (3, 1));
        // The mapping that takes the last entry is made, yet answered CC 1 status 16.
        t.map(ap.start + 0x10_0000, 0x30_0000, Perm::RW).unwrap();
        assert_eq!(
            q.rpcit(&fmt, &w, ap.start + 0x10_0000, 0x1000),
            RpcitAnswer::InsufficientResources
        );
        assert_eq!(host.with(|h| h.mapping_count()), 4);
        // A lazily unmapped page is only found by a global RPCIT, which frees its entry and
        // makes the new mapping in the same pass.
        t.unmap(ap.start).unwrap();
        t.map(ap.start + 0x20_0000, 0x40_0000, Perm::READ).unwrap();
        assert_eq!(
            q.rpcit(&fmt, &w, ap.start + 0x20_0000, 0x1000),
            RpcitAnswer::InsufficientResources
        );
        assert_eq!(host.with(|h| h.mapping_count()), 4);
        q.rpcit(&fmt, &w, ap.start, ap.len());
        let maps = host.with(|h| h.mappings());
        assert!(!maps.iter().any(|m| m.iova == ap.start));
        assert!(
            maps.iter()
                .any(|m| m.iova == ap.start + 0x20_0000 && m.perm == Perm::READ)
        );
        q.teardown();
        assert_eq!(host.with(|h| h.mapping_count()), 0);
    }

    #[test]
    fn pow2_mask_matches_qemu() {
        assert_eq!(dma_aligned_pow2_mask(0x1000, 0x1fff, 64), 0xfff);
        assert_eq!(dma_aligned_pow2_mask(0x1000, 0x4fff, 64), 0xfff);
        assert_eq!(dma_aligned_pow2_mask(0x4000, 0x4fff + 0x3000, 64), 0x3fff);
        assert_eq!(dma_aligned_pow2_mask(0x4000, 0x6fff, 64), 0x1fff);
        assert_eq!(dma_aligned_pow2_mask(0, u64::MAX, 64), u64::MAX);
        assert_eq!(dma_aligned_pow2_mask(0, 0x2fff, 64), 0x1fff);
    }
}
