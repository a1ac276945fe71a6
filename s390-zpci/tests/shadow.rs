//! Host shadowing (protection, coalescing, every teardown path) and emulated DMA.

mod common;

use common::*;
use viommu_s390_zpci::format::{PROTECTED, level};
use viommu_s390_zpci::insn::mpcifc::oc;
use viommu_s390_zpci::{
    Cc, Config, Designation, Fib, FunctionState, GroupConfig, Iota, Pec, status,
};
use viommu_shared::Perm;
use viommu_shared::dma::{DmaFaultKind, DmaRequest, DmaTranslate};
use viommu_shared::host::{HostCall, SimHostConfig};
use vm_memory::iommu::IommuMemory;
use vm_memory::{Bytes, GuestAddress};

const PAL: u64 = SDMA + (64 << 20) - 1;

#[test]
fn protection_bits_make_read_only_host_mappings() {
    let env = env_limit(100);
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    let mut cpu = env.cpu();
    // PTE protection.
    t.map(SDMA, DATA, Perm::READ).unwrap();
    t.map(SDMA + 0x1000, DATA + 0x1000, Perm::RW).unwrap();
    // Segment protection over a whole segment.
    t.map(SDMA + 0x10_0000, DATA + 0x10_0000, Perm::RW).unwrap();
    let seg = t.find(level::SEGMENT, SDMA + 0x10_0000).unwrap().unwrap();
    let raw = t.load(seg).unwrap();
    t.store(seg, raw | PROTECTED).unwrap();
    cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    assert_eq!(
        env.host_mappings(),
        vec![
            (SDMA, DATA, 0x1000, Perm::READ),
            (SDMA + 0x1000, DATA + 0x1000, 0x1000, Perm::RW),
            (SDMA + 0x10_0000, DATA + 0x10_0000, 0x1000, Perm::READ),
        ]
    );
    // Write → read-only change of a live page is applied by its RPCIT.
    t.map(SDMA + 0x1000, DATA + 0x1000, Perm::READ).unwrap();
    assert_eq!(cpu.rpcit(fh, SDMA + 0x1000, 0x1000).unwrap().cc, Cc::Ok);
    assert_eq!(
        env.host_mappings()[..1],
        [(SDMA, DATA, 0x2000, Perm::READ)],
        "now contiguous and equal: coalesced"
    );
    // The anchor's protection bit makes everything read-only (its origin is still found,
    // errata 4).
    cpu.deregister_ioat(fh).unwrap();
    let iota = Iota(t.iota().0 | Iota::PROTECTED | (5 << 5));
    assert_eq!(cpu.register_ioat(fh, SDMA, PAL, iota.0).unwrap().cc, Cc::Ok);
    assert!(env.host_mappings().iter().all(|m| m.3 == Perm::READ));
    assert_eq!(env.host_count(), 2);
}

#[test]
fn contiguous_pages_and_segment_frames_are_coalesced() {
    let env = env_limit(100);
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    let mut cpu = env.cpu();
    cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    for p in 0..256u64 {
        t.map(SDMA + p * 0x1000, DATA + p * 0x1000, Perm::RW)
            .unwrap();
        assert_eq!(cpu.rpcit(fh, SDMA + p * 0x1000, 0x1000).unwrap().cc, Cc::Ok);
    }
    assert_eq!(env.host_mappings(), vec![(SDMA, DATA, 0x10_0000, Perm::RW)]);
    // A 1 MiB segment frame right after continues the run (max_run 2 MiB).
    t.map_segment_frame(SDMA + 0x10_0000, DATA + 0x10_0000, Perm::RW)
        .unwrap();
    assert_eq!(
        cpu.rpcit(fh, SDMA + 0x10_0000, 0x10_0000).unwrap().cc,
        Cc::Ok
    );
    assert_eq!(env.host_mappings(), vec![(SDMA, DATA, 0x20_0000, Perm::RW)]);
    // Unmapping one page in the middle splits it; the survivors stay mapped.
    t.unmap(SDMA + 0x8_0000).unwrap();
    assert_eq!(cpu.rpcit(fh, SDMA + 0x8_0000, 0x1000).unwrap().cc, Cc::Ok);
    assert_eq!(
        env.host_mappings(),
        vec![
            (SDMA, DATA, 0x8_0000, Perm::RW),
            (SDMA + 0x8_1000, DATA + 0x8_1000, 0x17_f000, Perm::RW),
        ]
    );
}

fn registered_with_pages(env: &Env) -> viommu_s390_zpci::Fh {
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    t.map_range(SDMA, DATA, 3, Perm::RW).unwrap();
    t.map(SDMA + 0x40_0000, DATA + 0x40_0000, Perm::RW).unwrap();
    env.cpu().register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    assert_eq!(env.host_count(), 2);
    fh
}

#[test]
fn every_teardown_path_empties_the_host() {
    // CLP disable.
    let env = env_limit(100);
    let fh = registered_with_pages(&env);
    env.cpu().disable(fh).unwrap();
    assert_eq!(env.host_count(), 0);
    assert_eq!(env.zpci.function(FID).unwrap().host_remaining, Some(100));
    assert!(env.zpci.function(FID).unwrap().ioat.is_none());
    // Deconfigure.
    let env = env_limit(100);
    registered_with_pages(&env);
    env.zpci.deconfigure(FID).unwrap();
    assert_eq!(env.host_count(), 0);
    // Error state (emulated DMA error), then reset error rebuilds.
    let env = env_limit(100);
    let fh = registered_with_pages(&env);
    let req = DmaRequest {
        requester_id: FID.0,
        pasid: None,
        iova: SDMA + 0x10_0000,
        perm: Perm::READ,
    };
    let f = env.zpci.translate(&req).unwrap_err();
    assert_eq!(f.kind, DmaFaultKind::NotPresent);
    assert_eq!(env.zpci.function(FID).unwrap().state, FunctionState::Error);
    assert_eq!(env.host_count(), 0);
    env.cpu()
        .mpcifc(fh, oc::RESET_ERROR, 0, &Fib::default())
        .unwrap();
    assert_eq!(env.host_count(), 2);
    // Detach host.
    env.zpci.detach_host(FID).unwrap();
    assert_eq!(env.host_count(), 0);
    assert!(!env.zpci.function(FID).unwrap().has_host);
    // Remove function.
    let env = env_limit(100);
    registered_with_pages(&env);
    env.zpci.remove_function(FID).unwrap();
    assert_eq!(env.host_count(), 0);
    assert!(env.zpci.function(FID).is_err());
    // Every host call the model made was accepted.
    let calls = env.host.as_ref().unwrap().with(|h| h.take_calls());
    assert!(calls.iter().all(|c| match c {
        HostCall::Map { result, .. } => result.is_ok(),
        HostCall::Unmap { result, .. } => result.is_ok(),
        HostCall::UnmapAll { result } => result.is_ok(),
    }));
}

#[test]
fn attach_after_registration_maps_at_once() {
    let env = env_with(Config::default(), None);
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    t.map(SDMA, DATA, Perm::RW).unwrap();
    env.cpu().register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    let host = viommu_shared::host::SharedSimHost::new(SimHostConfig::s390(HOST_APERTURE));
    env.zpci.attach_host(FID, Box::new(host.clone())).unwrap();
    assert_eq!(host.with(|h| h.mapping_count()), 1);
    assert!(env.zpci.attach_host(FID, Box::new(host.clone())).is_err());
    assert_eq!(env.zpci.host_mappings(FID).unwrap().len(), 1);
}

#[test]
fn emulated_dma_through_the_tables() {
    let env = env_with(Config::default(), None);
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    t.map(SDMA, DATA, Perm::RW).unwrap();
    t.map(SDMA + 0x1000, DATA + 0x5000, Perm::READ).unwrap();
    let mut cpu = env.cpu();
    cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    let dev = IommuMemory::new(
        env.mem.clone(),
        env.zpci.device_iommu(FID).unwrap(),
        true,
        (),
    );
    dev.write_slice(b"zpci", GuestAddress(SDMA + 0x10)).unwrap();
    let mut b = [0u8; 4];
    env.mem
        .read_slice(&mut b, GuestAddress(DATA + 0x10))
        .unwrap();
    assert_eq!(&b, b"zpci");
    // Stale until the RPCIT: the guest invalidates the PTE, the cached translation still
    // serves; after the RPCIT it does not.
    t.unmap(SDMA).unwrap();
    dev.read_slice(&mut b, GuestAddress(SDMA + 0x10)).unwrap();
    assert_eq!(cpu.rpcit(fh, SDMA, 0x1000).unwrap().cc, Cc::Ok);
    assert!(dev.read_slice(&mut b, GuestAddress(SDMA + 0x10)).is_err());
    let ev = env.zpci.take_events();
    assert_eq!(
        (ev[0].pec, ev[0].faddr),
        (Pec::INVALID_TABLE_ENTRY, SDMA + 0x10)
    );
    assert_eq!(env.zpci.function(FID).unwrap().state, FunctionState::Error);
    // Blocked while in error: no further event.
    assert!(dev.read_slice(&mut b, GuestAddress(SDMA + 0x1000)).is_err());
    assert!(env.zpci.take_events().is_empty());
    cpu.mpcifc(fh, oc::RESET_ERROR, 0, &Fib::default()).unwrap();
    // Read-only page: reads work, a write is a protection error (PEC 0x4).
    dev.read_slice(&mut b, GuestAddress(SDMA + 0x1000)).unwrap();
    assert!(dev.write_slice(b"x", GuestAddress(SDMA + 0x1000)).is_err());
    assert_eq!(env.zpci.take_events()[0].pec, Pec::TRANSLATION_PROTECTION);
    cpu.mpcifc(fh, oc::RESET_ERROR, 0, &Fib::default()).unwrap();
    // Outside [pba, pal]: PEC 0x2.
    assert!(dev.read_slice(&mut b, GuestAddress(PAL + 1)).is_err());
    assert_eq!(env.zpci.take_events()[0].pec, Pec::OUT_OF_RANGE);
    cpu.mpcifc(fh, oc::RESET_ERROR, 0, &Fib::default()).unwrap();
    // No address space: PEC 0x1.
    cpu.deregister_ioat(fh).unwrap();
    assert!(dev.read_slice(&mut b, GuestAddress(SDMA)).is_err());
    assert_eq!(env.zpci.take_events()[0].pec, Pec::INVALID_ADDRESS_SPACE);
    // Unknown function: blocked, nothing recorded.
    let req = DmaRequest {
        requester_id: 0x999,
        pasid: None,
        iova: SDMA,
        perm: Perm::READ,
    };
    assert_eq!(
        env.zpci.translate(&req).unwrap_err().kind,
        DmaFaultKind::Blocked
    );
    let s = env.zpci.function(FID).unwrap().stats;
    assert_eq!(s.dma_faults, 4);
}

#[test]
fn emulated_dma_with_relaxed_translation() {
    let config = Config {
        groups: vec![GroupConfig {
            relaxed_translation: true,
            ..GroupConfig::default()
        }],
        ..Config::default()
    };
    let env = env_with(config, None);
    let fh = env.enable();
    let mut cpu = env.cpu();
    assert_eq!(cpu.register_ioat(fh, SDMA, PAL, 0).unwrap().cc, Cc::Ok);
    let dev = IommuMemory::new(
        env.mem.clone(),
        env.zpci.device_iommu(FID).unwrap(),
        true,
        (),
    );
    dev.write_slice(b"rtr", GuestAddress(SDMA + 0x12_3456))
        .unwrap();
    let mut b = [0u8; 3];
    env.mem.read_slice(&mut b, GuestAddress(0x12_3456)).unwrap();
    assert_eq!(&b, b"rtr");
    let req = DmaRequest {
        requester_id: FID.0,
        pasid: None,
        iova: SDMA + 0x12_3456,
        perm: Perm::WRITE,
    };
    let tr = env.zpci.translate(&req).unwrap();
    assert!(tr.is_well_formed(req.iova));
    assert_eq!(tr.addr + (req.iova - tr.iova), 0x12_3456);
    // Beyond RAM (but inside [pba, pal]): an error.
    assert!(dev.read_slice(&mut b, GuestAddress(SDMA + RAM)).is_err());
    assert_eq!(env.zpci.take_events()[0].pec, Pec::OUT_OF_RANGE);
}

#[test]
fn events_ring_the_doorbell() {
    let env = env_limit(10);
    let fh = env.enable();
    let c = env.cpu().rpcit(fh, SDMA, 0x1000).unwrap();
    assert_eq!(c.status, Some(status::FUNC_IN_ERROR));
    let msis = env.msi.take();
    assert_eq!(msis.len(), 1);
    assert_eq!(msis[0].address, viommu_s390_zpci::EVENT_DOORBELL_ADDRESS);
    assert_eq!(msis[0].data, FID.0);
    let s = env.zpci.stats();
    assert_eq!((s.functions, s.events_pending), (1, 1));
    let info = env.zpci.function(FID).unwrap();
    assert_eq!(info.last_error.unwrap().pec, Pec::INVALID_ADDRESS_SPACE);
}

#[test]
fn relayout_damage_is_repaired_by_the_next_rpcit() {
    // Host of 2 entries: a coalesced 4-page run and one unrelated page fill it.
    let env = env_limit(2);
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    let mut cpu = env.cpu();
    cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    t.map_range(SDMA, DATA, 4, Perm::RW).unwrap();
    t.map(SDMA + 0x10_0000, DATA + 0x10_0000, Perm::RW).unwrap();
    assert_eq!(cpu.rpcit(fh, SDMA, 0x10_1000).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_count(), 2);
    // Unmapping page 1 splits the run into two pieces: one more entry than exists. The
    // first survivor is re-mapped, the second cannot be: status 16, and the model knows
    // a live mapping outside the refreshed range is missing.
    t.unmap(SDMA + 0x1000).unwrap();
    let c = cpu.rpcit(fh, SDMA + 0x1000, 0x1000).unwrap();
    assert_eq!(c.status, Some(status::INSUFFICIENT_RESOURCES));
    assert!(env.zpci.function(FID).unwrap().full_sync_pending);
    assert!(!env.host_mappings().iter().any(|m| m.0 == SDMA + 0x2000));
    // The guest frees the unrelated page; its RPCIT re-syncs everything and the survivor
    // comes back.
    t.unmap(SDMA + 0x10_0000).unwrap();
    assert_eq!(cpu.rpcit(fh, SDMA + 0x10_0000, 0x1000).unwrap().cc, Cc::Ok);
    assert_eq!(
        env.host_mappings(),
        vec![
            (SDMA, DATA, 0x1000, Perm::RW),
            (SDMA + 0x2000, DATA + 0x2000, 0x2000, Perm::RW),
        ]
    );
    assert!(!env.zpci.function(FID).unwrap().full_sync_pending);
}

#[test]
fn model_is_send_and_sync() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<viommu_s390_zpci::Zpci>();
}

#[test]
fn concurrent_dma_and_rpcit() {
    let env = env_with(Config::default(), None);
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    t.map_range(SDMA, DATA, 64, Perm::RW).unwrap();
    env.cpu().register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    let zpci = env.zpci.clone();
    let mem = env.mem.clone();
    std::thread::scope(|s| {
        let dma = s.spawn(|| {
            let dev = IommuMemory::new(mem.clone(), zpci.device_iommu(FID).unwrap(), true, ());
            let mut buf = [0u8; 64];
            for i in 0..2000u64 {
                dev.read_slice(&mut buf, GuestAddress(SDMA + (i % 64) * 0x1000))
                    .unwrap();
            }
        });
        let mut cpu = env.cpu();
        for i in 0..500u64 {
            let c = cpu.rpcit(fh, SDMA + (i % 64) * 0x1000, 0x1000).unwrap();
            assert_eq!(c.cc, Cc::Ok);
        }
        dma.join().unwrap();
    });
    assert_eq!(
        env.zpci.function(FID).unwrap().state,
        FunctionState::Enabled
    );
}

/// A host whose unmaps can be made to fail (a misbehaving backend).
#[derive(Clone)]
struct FlakyHost {
    inner: viommu_shared::host::SharedSimHost,
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
            return Err(viommu_shared::host::HostError::Errno(5));
        }
        self.inner.unmap(iova, size)
    }
    fn unmap_all(&mut self) -> Result<u64, viommu_shared::host::HostError> {
        self.inner.unmap_all()
    }
    fn remaining_entries(&self) -> Option<u32> {
        self.inner.remaining_entries()
    }
    fn iova_ranges(&self) -> Vec<viommu_shared::AddrRange> {
        self.inner.iova_ranges()
    }
    fn page_sizes(&self) -> u64 {
        self.inner.page_sizes()
    }
}

#[test]
fn refused_host_unmaps_are_reported_and_recovered() {
    use std::sync::atomic::Ordering;
    let env = env_with(Config::default(), None);
    let sim = viommu_shared::host::SharedSimHost::new(SimHostConfig::s390(HOST_APERTURE));
    let flaky = FlakyHost {
        inner: sim.clone(),
        fail_unmap: Default::default(),
    };
    env.zpci.attach_host(FID, Box::new(flaky.clone())).unwrap();
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    t.map(SDMA, DATA, Perm::RW).unwrap();
    t.map(SDMA + 0x2000, DATA + 0x8000, Perm::RW).unwrap();
    let mut cpu = env.cpu();
    cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    assert_eq!(sim.with(|h| h.mapping_count()), 2);
    // The host refuses the unmap the guest's RPCIT needs: the function goes to the error
    // state (system error) and the VMM gets the typed host error.
    flaky.fail_unmap.store(true, Ordering::SeqCst);
    t.unmap(SDMA).unwrap();
    let c = cpu.rpcit(fh, SDMA, 0x1000).unwrap();
    assert_eq!(c.status, Some(status::FUNC_IN_ERROR));
    assert!(matches!(
        c.host_error,
        Some(viommu_s390_zpci::ModelError::HostUnmap {
            iova: SDMA,
            size: 0x1000,
            ..
        })
    ));
    assert_eq!(env.zpci.take_events()[0].pec, Pec::SYSTEM_ERROR);
    // What could not be unmapped is still recorded, not forgotten.
    assert_eq!(
        env.zpci.host_mappings(FID).unwrap().len(),
        sim.with(|h| h.mapping_count())
    );
    // The host recovers; resetting the error rebuilds exactly the guest view.
    flaky.fail_unmap.store(false, Ordering::SeqCst);
    let c = cpu.mpcifc(fh, oc::RESET_ERROR, 0, &Fib::default()).unwrap();
    assert_eq!((c.cc, c.host_error), (Cc::Ok, None));
    assert_eq!(
        sim.with(|h| h.mappings())
            .iter()
            .map(|m| (m.iova, m.gpa))
            .collect::<Vec<_>>(),
        vec![(SDMA + 0x2000, DATA + 0x8000)]
    );
    // Detach with a refusing host: reported, and the backend is emptied anyway.
    flaky.fail_unmap.store(true, Ordering::SeqCst);
    assert!(matches!(
        env.zpci.detach_host(FID),
        Err(viommu_s390_zpci::ModelError::HostUnmap { .. })
    ));
    assert_eq!(sim.with(|h| h.mapping_count()), 0);
}
