//! A Linux-like boot and runtime sequence (anchors-x86.md §3.1) driven through MMIO, with a
//! passthrough device shadowed into a simulated host and an emulated device doing DMA.

mod common;

use common::*;
use viommu_shared::Perm;
use viommu_shared::dma::{DmaFaultKind, DmaRequest, DmaTranslate};
use viommu_shared::regs::Msi;
use viommu_vtd::regs::*;
use viommu_vtd::testing::entry;
use viommu_vtd::{Config, FaultReason, Space};
use vm_memory::iommu::IommuMemory;
use vm_memory::{Bytes, GuestAddress};

const PASSTHROUGH: u16 = 0x0018; // 00:03.0
const EMULATED: u16 = 0x0020; // 00:04.0
const DID: u16 = 5;

#[test]
fn linux_boot_map_unmap_fault() {
    let fx = Fixture::new(Config::default());
    let host = sim_host();

    // The VMM attaches the passthrough device before the guest boots: untranslated DMA,
    // so the host maps guest RAM identity, coalesced at 2 MiB.
    fx.vtd
        .attach_host(u32::from(PASSTHROUGH), Box::new(host.clone()))
        .unwrap();
    let maps = host_maps(&host);
    assert_eq!(maps.len() as u64, RAM >> 21);
    assert!(maps.iter().all(|&(i, g, s)| i == g && s == 2 << 20));
    take_calls(&host);

    // Boot (§3.1 steps 1-7).
    let mut drv = fx.driver();
    assert_eq!(drv.service_faults().unwrap(), vec![]);
    drv.enable_qi(false).unwrap();
    assert_ne!(fx.vtd.mmio_read(GSTS, 4) & GCMD_QIE, 0);
    drv.set_root_table(false).unwrap();
    assert_ne!(fx.vtd.mmio_read(GSTS, 4) & GCMD_SRTP, 0);
    drv.enable_fault_interrupt(FAULT_MSI.0, FAULT_MSI.1)
        .unwrap();

    // Attach both devices to domain 5 (one table), the caching-mode way: write the context
    // entry, then device-selective context flush with DID 0 and a domain IOTLB flush.
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    for sid in [PASSTHROUGH, EMULATED] {
        drv.write_context(sid, entry::context(tb.root(), 2, DID, 0, false))
            .unwrap();
        drv.flush_context_present(sid, DID).unwrap();
    }
    // Translation is still off: nothing changed on the host yet.
    assert_eq!(take_calls(&host), vec![]);
    assert_eq!(
        fx.vtd.shadow_space(u32::from(PASSTHROUGH)),
        Some(Space::Untranslated)
    );

    // Enable translation: the device now sees its (empty) domain.
    drv.gcmd(GCMD_TE, true).unwrap();
    assert!(fx.vtd.translation_enabled());
    assert!(matches!(
        fx.vtd.shadow_space(u32::from(PASSTHROUGH)),
        Some(Space::Translated { did: DID, .. })
    ));
    assert_eq!(host_maps(&host), vec![]);
    let calls = take_calls(&host);
    assert_eq!(calls.len() as u64, RAM >> 21);
    assert!(calls.iter().all(|c| c.0 == "unmap"));

    // dma_map of 64 KiB: 16 PTEs, then one PSI (AM=4) as iotlb_sync_map does under CM.
    let iova = 0x10_0000;
    tb.map_range(iova, DATA, 0x1_0000, RW).unwrap();
    drv.flush_range(DID, iova, 0x1_0000, false).unwrap();
    assert_eq!(take_calls(&host), vec![("map", iova, 0x1_0000)]);
    assert_eq!(host_maps(&host), vec![(iova, DATA, 0x1_0000)]);

    // A second, adjacent map grows the coalesced host mapping.
    tb.map_range(iova + 0x1_0000, DATA + 0x1_0000, 0x1000, RW)
        .unwrap();
    drv.flush_range(DID, iova + 0x1_0000, 0x1000, false)
        .unwrap();
    assert_eq!(
        take_calls(&host),
        vec![("unmap", iova, 0x1_0000), ("map", iova, 0x1_1000)]
    );

    // Repeating the flush changes nothing on the host.
    drv.flush_range(DID, iova, 0x1_1000, false).unwrap();
    assert_eq!(take_calls(&host), vec![]);

    // dma_unmap of 8 KiB in the middle, flushed with IH=1.
    tb.unmap_page(iova + 0x4000).unwrap();
    tb.unmap_page(iova + 0x5000).unwrap();
    drv.flush_range(DID, iova + 0x4000, 0x2000, true).unwrap();
    assert_eq!(
        take_calls(&host),
        vec![
            ("unmap", iova, 0x1_1000),
            ("map", iova, 0x4000),
            ("map", iova + 0x6000, 0xb000),
        ]
    );
    assert_eq!(
        host_maps(&host),
        vec![(iova, DATA, 0x4000), (iova + 0x6000, DATA + 0x6000, 0xb000)]
    );

    // The emulated device DMAs through the same domain.
    let dev_mem = IommuMemory::new(
        fx.mem.clone(),
        fx.vtd.device_iommu(u32::from(EMULATED)),
        true,
        (),
    );
    dev_mem
        .write_slice(b"vt-d!", GuestAddress(iova + 0x123))
        .unwrap();
    let mut buf = [0u8; 5];
    fx.mem
        .read_slice(&mut buf, GuestAddress(DATA + 0x123))
        .unwrap();
    assert_eq!(&buf, b"vt-d!");

    // A DMA read of the unmapped hole faults: recorded, and the fault event fires.
    assert!(
        dev_mem
            .read_slice(&mut buf, GuestAddress(iova + 0x4010))
            .is_err()
    );
    assert_eq!(
        fx.msi.take(),
        vec![Msi {
            address: FAULT_MSI.0,
            data: FAULT_MSI.1
        }]
    );
    let faults = drv.service_faults().unwrap();
    assert_eq!(
        faults,
        vec![(EMULATED, FaultReason::Read.code(), iova + 0x4000, true)]
    );
    assert_eq!(fx.vtd.mmio_read(FSTS, 4) & FSTS_PPF, 0);
    assert_eq!(fx.vtd.stats().faults_recorded, 1);

    // Same through the DmaTranslate seam, for a write: fault 0x5, T=0.
    let err = fx
        .vtd
        .translate(&DmaRequest {
            requester_id: u32::from(EMULATED),
            pasid: None,
            iova: iova + 0x5000,
            perm: Perm::WRITE,
        })
        .unwrap_err();
    assert_eq!(err.kind, DmaFaultKind::NotPresent);
    let faults = drv.service_faults().unwrap();
    assert_eq!(
        faults,
        vec![(EMULATED, FaultReason::Write.code(), iova + 0x5000, false)]
    );

    // The VMM detaches the device: every host mapping is removed.
    fx.vtd.detach_host(u32::from(PASSTHROUGH)).unwrap();
    assert_eq!(host_maps(&host), vec![]);
    assert_eq!(fx.vtd.stats().host_out_of_resources, 0);
}

#[test]
fn invalidation_is_a_barrier_for_emulated_dma() {
    let fx = Fixture::new(Config::default());
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    drv.set_root_table(false).unwrap();
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    drv.write_context(EMULATED, entry::context(tb.root(), 2, DID, 0, false))
        .unwrap();
    drv.flush_context_present(EMULATED, DID).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    tb.map_range(0x2000, DATA, 0x1000, RW).unwrap();
    drv.flush_range(DID, 0x2000, 0x1000, false).unwrap();

    let iommu = fx.vtd.device_iommu(u32::from(EMULATED));
    let tlb = iommu.tlb().clone();
    let dev_mem = IommuMemory::new(fx.mem.clone(), iommu, true, ());
    let mut v = [0u8; 4];
    dev_mem.read_slice(&mut v, GuestAddress(0x2000)).unwrap();
    assert_eq!(tlb.domain(), Some(u64::from(DID)));
    assert!(tlb.entries() > 0);

    // Unmap without flushing: the cached translation may still be used (caching allowed).
    tb.unmap_page(0x2000).unwrap();
    assert!(dev_mem.read_slice(&mut v, GuestAddress(0x2000)).is_ok());
    // After the PSI and its wait descriptor, no DMA can use it.
    drv.flush_range(DID, 0x2000, 0x1000, true).unwrap();
    assert!(dev_mem.read_slice(&mut v, GuestAddress(0x2000)).is_err());
}
