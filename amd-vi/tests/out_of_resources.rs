//! Host out of DMA mappings: reclaim and retry, then a typed error from the tail write that
//! processed the invalidation, nothing dropped silently, and recovery once the guest frees
//! entries.

mod common;

use common::*;
use viommu_amd_vi::{AmdViError, Config, Dte};
use viommu_shared::host::{HostCall, PinBudget, SharedSimHost, SimHostConfig};
use viommu_shared::pt::Run;
use viommu_shared::{AddrRange, Perm};

const DEV: u16 = 0x0020;
const PEER: u16 = 0x0028;
const PAGE: u64 = 0x1000;

fn mapped_iovas(h: &SharedSimHost) -> Vec<u64> {
    h.with(|h| h.mappings().iter().map(|m| m.iova).collect())
}

/// The device and runs of a `HostOutOfResources` error.
fn out_of_resources(err: &AmdViError) -> (u16, &[Run]) {
    match err {
        AmdViError::HostOutOfResources {
            device_id,
            not_mapped,
        } => (*device_id, not_mapped),
        other => panic!("not out of resources: {other:?}"),
    }
}

#[test]
fn tiny_host_limit() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    let h = SharedSimHost::new(SimHostConfig::amd_vi().with_entry_limit(3));
    g.iommu.attach_host(DEV, Box::new(h.clone())).unwrap();
    let pt = g.new_tables(3);
    g.attach(DEV, Dte::translated(1, pt.root, 3, Perm::RW))
        .unwrap();
    // Five pages that cannot coalesce (discontiguous IOVAs).
    let pages = [0x1000u64, 0x3000, 0x5000, 0x7000, 0x9000];
    for (i, &iova) in pages.iter().enumerate() {
        pt.map(
            &mut g,
            iova,
            0x80_0000 + ((i as u64) << 16),
            0x1000,
            Perm::RW,
        );
    }
    let err = g
        .flush_pages(1, AddrRange::new(0x1000, 0xa000))
        .unwrap_err();
    // The guest's completion wait still completed (flush_pages checks the semaphore).
    let (device_id, not_mapped) = out_of_resources(&err);
    assert_eq!(device_id, DEV);
    assert!(!not_mapped.is_empty());
    assert!(
        not_mapped
            .iter()
            .all(|r| r.size == 0x1000 && pages.contains(&r.iova))
    );
    assert_eq!(mapped_iovas(&h), vec![0x1000, 0x3000, 0x5000]);
    // A refused map was answered by a reclaim (full re-sync) before giving up.
    let calls = h.with(|h| h.take_calls());
    let refused = calls
        .iter()
        .filter(|c| matches!(c, HostCall::Map { result: Err(_), .. }))
        .count();
    assert!(refused >= 2, "{calls:?}");
    let s = g.iommu.stats();
    assert!(s.host_out_of_resources >= 1 && s.host_reclaims >= 1);
    assert_eq!(g.iommu.take_host_errors().first(), Some(&err));
    assert!(g.iommu.take_host_errors().is_empty());
    assert_eq!(
        g.iommu.unmapped_range(DEV),
        Some(AddrRange::new(0x7000, 0xa000))
    );

    // The guest unmaps one page: the freed entry goes to a missing page right away.
    pt.unmap(&mut g, 0x1000, 0x1000);
    g.flush_pages(1, AddrRange::from_len(0x1000, 0x1000))
        .unwrap();
    assert_eq!(mapped_iovas(&h), vec![0x3000, 0x5000, 0x7000]);
    assert_eq!(
        g.iommu.unmapped_range(DEV),
        Some(AddrRange::new(0x9000, 0xa000))
    );
    pt.unmap(&mut g, 0x3000, 0x1000);
    g.flush_pages(1, AddrRange::from_len(0x3000, 0x1000))
        .unwrap();
    assert_eq!(mapped_iovas(&h), vec![0x5000, 0x7000, 0x9000]);
    assert_eq!(g.iommu.unmapped_range(DEV), None);

    // Attaching while the IOMMU is off needs the whole of RAM (32 host mappings).
    let mut g2 = Guest::new(Config::default());
    let h2 = SharedSimHost::new(SimHostConfig::amd_vi().with_entry_limit(4));
    let err = g2.iommu.attach_host(DEV, Box::new(h2.clone())).unwrap_err();
    assert!(matches!(
        err,
        AmdViError::HostOutOfResources { device_id: DEV, .. }
    ));
    assert_eq!(h2.with(|h| h.mapping_count()), 4);
    assert_eq!(g2.iommu.attached_devices(), vec![DEV]);
    // Enabling the IOMMU with Linux's blocking entries frees everything.
    g2.linux_init();
    assert_eq!(h2.with(|h| h.mapping_count()), 0);
    assert_eq!(g2.iommu.unmapped_range(DEV), None);
}

/// A host whose unmaps can be made to fail (e.g. a device reset racing with the VMM).
struct FlakyHost {
    inner: SharedSimHost,
    fail_unmap: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl viommu_shared::host::HostDma for FlakyHost {
    fn map(
        &mut self,
        iova: u64,
        gpa: u64,
        size: u64,
        perm: Perm,
    ) -> Result<(), viommu_shared::host::HostError> {
        self.inner.map(iova, gpa, size, perm)
    }
    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64, viommu_shared::host::HostError> {
        if self.fail_unmap.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(viommu_shared::host::HostError::Errno(16));
        }
        self.inner.unmap(iova, size)
    }
    fn unmap_all(&mut self) -> Result<u64, viommu_shared::host::HostError> {
        self.inner.unmap_all()
    }
    fn remaining_entries(&self) -> Option<u32> {
        self.inner.remaining_entries()
    }
    fn iova_ranges(&self) -> Vec<AddrRange> {
        self.inner.iova_ranges()
    }
    fn page_sizes(&self) -> u64 {
        self.inner.page_sizes()
    }
}

#[test]
fn host_unmap_refusal_is_reported() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    let h = SharedSimHost::new(SimHostConfig::amd_vi());
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flaky = FlakyHost {
        inner: h.clone(),
        fail_unmap: fail.clone(),
    };
    g.iommu.attach_host(DEV, Box::new(flaky)).unwrap();
    let pt = g.new_tables(3);
    g.attach(DEV, Dte::translated(1, pt.root, 3, Perm::RW))
        .unwrap();
    pt.map(&mut g, 0x1000, 0x80_0000, 0x1000, Perm::RW);
    g.flush_pages(1, AddrRange::from_len(0x1000, 0x1000))
        .unwrap();
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    pt.unmap(&mut g, 0x1000, 0x1000);
    let err = g
        .flush_pages(1, AddrRange::from_len(0x1000, 0x1000))
        .unwrap_err();
    assert_eq!(
        err,
        AmdViError::HostUnmap {
            device_id: DEV,
            run: viommu_shared::pt::Run {
                iova: 0x1000,
                addr: 0x80_0000,
                size: 0x1000,
                perm: Perm::RW
            },
            error: viommu_shared::host::HostError::Errno(16),
        }
    );
    // Still mapped on the host, and the model knows it.
    assert_eq!(mapped_iovas(&h), vec![0x1000]);
    assert_eq!(g.iommu.host_mappings(DEV).unwrap().len(), 1);
    assert_eq!(g.iommu.stats().host_unmap_errors, 1);
    // Detaching cannot remove it either: the device stays attached until it can.
    assert!(matches!(
        g.iommu.detach_host(DEV),
        Err(AmdViError::HostUnmap { .. })
    ));
    assert_eq!(g.iommu.attached_devices(), vec![DEV]);
    assert_eq!(g.iommu.take_host_errors().len(), 2);
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    g.iommu.detach_host(DEV).unwrap();
    assert!(mapped_iovas(&h).is_empty());
    assert!(g.iommu.attached_devices().is_empty());
}

fn host_maps(h: &SharedSimHost) -> Vec<(u64, u64)> {
    h.with(|h| h.mappings().iter().map(|m| (m.iova, m.size)).collect())
}

/// DEV (domain 1) and PEER (domain 2) behind hosts that share a pin budget of `pages`;
/// PEER's container holds one entry. PEER maps three contiguous pages (one host mapping),
/// DEV the pages at `dev_pages`.
fn two_devices_sharing_a_budget(
    pages: u64,
    dev_pages: &[u64],
) -> (
    Guest,
    PageTables,
    PageTables,
    SharedSimHost,
    SharedSimHost,
    PinBudget,
) {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    let budget = PinBudget::new(pages * PAGE);
    let hd = SharedSimHost::new(SimHostConfig::amd_vi().with_pin_budget(budget.clone()));
    let hp = SharedSimHost::new(
        SimHostConfig::amd_vi()
            .with_entry_limit(1)
            .with_pin_budget(budget.clone()),
    );
    g.iommu.attach_host(DEV, Box::new(hd.clone())).unwrap();
    g.iommu.attach_host(PEER, Box::new(hp.clone())).unwrap();
    let (ptd, ptp) = (g.new_tables(3), g.new_tables(3));
    g.attach(DEV, Dte::translated(1, ptd.root, 3, Perm::RW))
        .unwrap();
    g.attach(PEER, Dte::translated(2, ptp.root, 3, Perm::RW))
        .unwrap();
    for i in 0..3 {
        ptp.map(
            &mut g,
            0x10000 + i * PAGE,
            0x90_0000 + i * PAGE,
            PAGE,
            Perm::RW,
        );
    }
    g.flush_pages(2, AddrRange::from_len(0x10000, 3 * PAGE))
        .unwrap();
    for (i, &iova) in dev_pages.iter().enumerate() {
        ptd.map(&mut g, iova, 0x80_0000 + ((i as u64) << 16), PAGE, Perm::RW);
    }
    g.flush_pages(1, AddrRange::new(0, 0x10_0000)).unwrap();
    assert_eq!(host_maps(&hp), vec![(0x10000, 3 * PAGE)]);
    assert_eq!(budget.used(), (3 + dev_pages.len() as u64) * PAGE);
    (g, ptd, ptp, hd, hp, budget)
}

#[test]
fn a_peers_stale_mappings_are_reclaimed_when_the_pin_budget_runs_out() {
    let (mut g, ptd, ptp, hd, hp, budget) = two_devices_sharing_a_budget(5, &[0x1000, 0x3000]);
    // PEER's guest unmaps its last page without invalidating (yet).
    ptp.unmap(&mut g, 0x12000, PAGE);
    // DEV needs one more page: its own reclaim frees nothing; reclaiming PEER drops the
    // stale page (PEER is re-mapped as one two-page run) and the retry fits.
    ptd.map(&mut g, 0x5000, 0x82_0000, PAGE, Perm::RW);
    g.flush_pages(1, AddrRange::from_len(0x5000, PAGE)).unwrap();
    assert_eq!(
        host_maps(&hd),
        vec![(0x1000, PAGE), (0x3000, PAGE), (0x5000, PAGE)]
    );
    assert_eq!(host_maps(&hp), vec![(0x10000, 2 * PAGE)]);
    assert_eq!(budget.used(), 5 * PAGE);
    let s = g.iommu.stats();
    // DEV's own reclaim and the peers' one.
    assert_eq!((s.host_reclaims, s.host_out_of_resources), (2, 0));
    assert!(g.iommu.take_host_errors().is_empty());
    assert_eq!(g.dma(DEV, 0x5000, Perm::READ).unwrap().addr, 0x82_0000);

    // Nothing stale is left anywhere: the next page does not fit, nothing else is lost.
    ptd.map(&mut g, 0x7000, 0x83_0000, PAGE, Perm::RW);
    let err = g
        .flush_pages(1, AddrRange::from_len(0x7000, PAGE))
        .unwrap_err();
    assert!(matches!(
        err,
        AmdViError::HostOutOfResources { device_id: DEV, .. }
    ));
    assert_eq!(host_maps(&hp), vec![(0x10000, 2 * PAGE)]);
    assert_eq!(g.iommu.unmapped_range(PEER), None);

    // Teardown gives the whole budget back.
    g.iommu.detach_host(DEV).unwrap();
    g.iommu.detach_host(PEER).unwrap();
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_peer_left_short_by_its_reclaim_is_reported_and_mapped_back_later() {
    let (mut g, ptd, ptp, hd, hp, budget) = two_devices_sharing_a_budget(4, &[0x1000]);
    // PEER's guest unmaps its middle page lazily: re-laying out PEER needs two entries.
    ptp.unmap(&mut g, 0x11000, PAGE);
    ptd.map(&mut g, 0x3000, 0x81_0000, PAGE, Perm::RW);
    let err = g
        .flush_pages(1, AddrRange::from_len(0x3000, PAGE))
        .unwrap_err();
    // DEV got its page; PEER's container could take only one of its two pieces, and the
    // call that caused it says so.
    assert_eq!(host_maps(&hd), vec![(0x1000, PAGE), (0x3000, PAGE)]);
    assert_eq!(host_maps(&hp), vec![(0x10000, PAGE)]);
    let (device_id, not_mapped) = out_of_resources(&err);
    assert_eq!(device_id, PEER);
    assert_eq!(
        not_mapped
            .iter()
            .map(|r| (r.iova, r.size))
            .collect::<Vec<_>>(),
        vec![(0x12000, PAGE)]
    );
    assert_eq!(g.iommu.take_host_errors(), vec![err.clone()]);
    assert_eq!(g.iommu.stats().host_out_of_resources, 1);
    assert_eq!(
        g.iommu.unmapped_range(PEER),
        Some(AddrRange::from_len(0x12000, PAGE))
    );
    assert_eq!(budget.used(), 3 * PAGE);

    // PEER's guest frees its first page: the entry goes to the missing one.
    ptp.unmap(&mut g, 0x10000, PAGE);
    g.flush_pages(2, AddrRange::from_len(0x10000, 2 * PAGE))
        .unwrap();
    assert_eq!(host_maps(&hp), vec![(0x12000, PAGE)]);
    assert_eq!(g.iommu.unmapped_range(PEER), None);
    assert!(g.iommu.take_host_errors().is_empty());
}
