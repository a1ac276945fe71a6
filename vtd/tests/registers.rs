//! Register semantics, command handshakes, register-based and queued invalidation, queue
//! errors, fault event masking (anchors-x86.md §1.2-§1.8, scenarios VTD-01..VTD-24).

mod common;

use common::*;
use viommu_shared::Perm;
use viommu_shared::regs::Msi;
use viommu_vtd::regs::*;
use viommu_vtd::testing::{GuestDriver, QI_DONE, desc, entry};
use viommu_vtd::{Config, caps};
use vm_memory::{Bytes, GuestAddress};

#[test]
fn reset_values_and_masks() {
    let fx = Fixture::new(Config::default());
    let v = &fx.vtd;
    assert_eq!(v.mmio_read(VER, 4), 0x10);
    assert_eq!(v.mmio_read(CAP, 8), caps::cap(&Config::default()));
    assert_eq!(v.mmio_read(CAP, 8), v.cap());
    assert_eq!(v.mmio_read(ECAP, 8), v.ecap());
    assert_eq!(v.mmio_read(CAP + 4, 4), v.cap() >> 32);
    assert_eq!(v.mmio_read(GSTS, 4), 0);
    assert_eq!(v.mmio_read(FECTL, 4), 0x8000_0000);
    assert_eq!(v.mmio_read(IECTL, 4), 0x8000_0000);
    // CAP is read-only; GCMD reads 0; RTADDR keeps 63:10 without side effects.
    v.mmio_write(CAP, 8, u64::MAX).unwrap();
    assert_eq!(v.mmio_read(CAP, 8), v.cap());
    v.mmio_write(GCMD, 4, 0x0080_0000).unwrap();
    assert_eq!(v.mmio_read(GCMD, 4), 0);
    v.mmio_write(RTADDR, 8, u64::MAX).unwrap();
    // TTM is reserved without scalable mode.
    assert_eq!(v.mmio_read(RTADDR, 8), 0xffff_ffff_ffff_f000);
    assert_eq!(v.mmio_read(GSTS, 4), 0);
    // IQA.DW is reserved without scalable mode.
    v.mmio_write(IQA, 8, u64::MAX).unwrap();
    assert_eq!(v.mmio_read(IQA, 8), 0xffff_ffff_ffff_f007);
    // Unsupported sizes, misaligned and unmapped offsets are ignored.
    for (off, len) in [(RTADDR, 2), (RTADDR, 1), (RTADDR + 2, 4), (RTADDR, 16)] {
        v.mmio_write(off, len, 0).unwrap();
        assert_eq!(v.mmio_read(off, len), 0);
    }
    assert_eq!(v.mmio_read(RTADDR, 8), 0xffff_ffff_ffff_f000);
    v.mmio_write(0x1f8, 8, u64::MAX).unwrap();
    assert_eq!(v.mmio_read(0x1f8, 8), 0);
    assert_eq!(v.mmio_read(u64::MAX - 3, 4), 0);
    v.mmio_write(u64::MAX - 7, 8, 1).unwrap();
    // The window covers the eight fault recording registers.
    assert_eq!(v.mmio_size(), 0x1000);
    // System reset restores everything.
    v.reset().unwrap();
    assert_eq!(v.mmio_read(RTADDR, 8), 0);
    assert_eq!(v.mmio_read(CAP, 8), v.cap());
}

#[test]
fn scalable_mode_registers() {
    let fx = Fixture::new(Config {
        scalable_mode: true,
        address_width: viommu_vtd::AddressWidth::Aw57,
        ..Config::default()
    });
    let v = &fx.vtd;
    let ecap = v.mmio_read(ECAP, 8);
    assert_ne!(ecap & caps::ECAP_SMTS, 0);
    assert_ne!(ecap & caps::ECAP_SLTS, 0);
    assert_eq!((v.cap() >> caps::CAP_SAGAW_SHIFT) & 0x1f, 0b1110);
    assert_eq!((v.cap() >> caps::CAP_MGAW_SHIFT) & 0x3f, 56);
    v.mmio_write(IQA, 8, 0x5000 | IQA_DW | 1).unwrap();
    assert_eq!(v.mmio_read(IQA, 8), 0x5000 | IQA_DW | 1);
    v.mmio_write(RTADDR, 8, 0x6000 | RTADDR_TTM_SCALABLE)
        .unwrap();
    assert_eq!(v.mmio_read(RTADDR, 8), 0x6000 | RTADDR_TTM_SCALABLE);
}

#[test]
fn command_handshakes_complete_at_once() {
    let fx = Fixture::new(Config {
        interrupt_remapping: true,
        extended_interrupt_mode: true,
        ..Config::default()
    });
    let mut drv = fx.driver();
    // IR first, as Linux does: IRTA, SIRTP, then IRE.
    fx.vtd
        .mmio_write(IRTA, 8, 0x20_0000 | (1 << 11) | 0xf)
        .unwrap();
    drv.gcmd(GCMD_SIRTP, true).unwrap();
    assert_eq!(
        fx.vtd.interrupt_remap_table(),
        Some(0x20_0000 | (1 << 11) | 0xf)
    );
    drv.submit_ok_without_queue();
    drv.gcmd(GCMD_IRE, true).unwrap();
    drv.enable_qi(false).unwrap();
    let root = drv.set_root_table(false).unwrap();
    assert_eq!(fx.vtd.root_pointer().addr, root);
    drv.gcmd(GCMD_TE, true).unwrap();
    let gsts = fx.vtd.mmio_read(GSTS, 4);
    assert_eq!(gsts, GCMD_TE | GCMD_SRTP | GCMD_QIE | GCMD_IRE | GCMD_SIRTP);
    // WBF is accepted and completes at once (WBFS reads 0).
    fx.vtd
        .mmio_write(GCMD, 4, gsts & !GCMD_SRTP & !GCMD_SIRTP | GCMD_WBF)
        .unwrap();
    assert_eq!(fx.vtd.mmio_read(GSTS, 4) & GCMD_WBF, 0);
    drv.gcmd(GCMD_TE, false).unwrap();
    assert!(!fx.vtd.translation_enabled());
    // Without IR support, IRE/SIRTP are ignored.
    let fx = Fixture::new(Config::default());
    fx.vtd.mmio_write(GCMD, 4, GCMD_IRE | GCMD_SIRTP).unwrap();
    assert_eq!(fx.vtd.mmio_read(GSTS, 4), 0);
}

trait NoQueue {
    fn submit_ok_without_queue(&mut self);
}

impl NoQueue for GuestDriver<'_> {
    /// Before QI is on, the interrupt entry cache flush after SIRTP is skipped by Linux
    /// thanks to ESIRTPS; nothing to do.
    fn submit_ok_without_queue(&mut self) {
        assert_ne!(self.vtd().cap() & caps::CAP_ESIRTPS, 0);
    }
}

#[test]
fn register_based_invalidation_reports_granularity() {
    let fx = Fixture::new(Config::default());
    let v = &fx.vtd;
    // Context cache: global, domain, device.
    for (cirg, caig) in [(1u64, 1u64), (2, 2), (3, 3), (0, 0)] {
        v.mmio_write(CCMD, 8, (1 << 63) | (cirg << 61) | 5).unwrap();
        let ccmd = v.mmio_read(CCMD, 8);
        assert_eq!(ccmd >> 63, 0, "ICC cleared");
        assert_eq!((ccmd >> 59) & 3, caig);
    }
    // 32-bit writes: low half stores, high half acts.
    v.mmio_write(CCMD, 4, 7).unwrap();
    v.mmio_write(CCMD + 4, 4, (1 << 31) | (1 << 29)).unwrap();
    assert_eq!((v.mmio_read(CCMD, 8) >> 59) & 3, 1);
    // IOTLB page-selective: IVA then IOTLB.
    v.mmio_write(IVA, 8, 0x1234_5000 | 3).unwrap();
    assert_eq!(v.mmio_read(IVA, 8), 0, "IVA is write-only");
    v.mmio_write(IOTLB, 8, (1 << 63) | (3 << 60) | (7 << 32))
        .unwrap();
    let iotlb = v.mmio_read(IOTLB, 8);
    assert_eq!((iotlb >> 63, (iotlb >> 57) & 3), (0, 3));
    // AM above MAMV: incorrect request, IAIG 0.
    v.mmio_write(IVA, 8, 19).unwrap();
    v.mmio_write(IOTLB, 8, (1 << 63) | (3 << 60)).unwrap();
    assert_eq!((v.mmio_read(IOTLB, 8) >> 57) & 3, 0);
    for (iirg, iaig) in [(1u64, 1u64), (2, 2)] {
        v.mmio_write(IOTLB, 8, (1 << 63) | (iirg << 60)).unwrap();
        assert_eq!((v.mmio_read(IOTLB, 8) >> 57) & 3, iaig);
    }
    assert_eq!(v.stats().register_invalidations, 7);
    // With QI on, register requests complete as refused (never left busy).
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    v.mmio_write(CCMD, 8, (1 << 63) | (1 << 61)).unwrap();
    let ccmd = v.mmio_read(CCMD, 8);
    assert_eq!((ccmd >> 63, (ccmd >> 59) & 3), (0, 0));
    v.mmio_write(IOTLB, 8, (1 << 63) | (1 << 60)).unwrap();
    let iotlb = v.mmio_read(IOTLB, 8);
    assert_eq!((iotlb >> 63, (iotlb >> 57) & 3), (0, 0));
    assert_eq!(v.stats().register_invalidations_refused, 4);
}

#[test]
fn wait_descriptor_status_and_interrupt() {
    let fx = Fixture::new(Config::default());
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    let status = drv.alloc(1).unwrap();
    // SW: 0x2 written, IQH advances, ICS untouched.
    drv.queue_descriptors(&[desc::wait(Some((status, 2)), false)])
        .unwrap();
    drv.ring().unwrap();
    let got: u32 = fx.mem.read_obj(GuestAddress(status)).unwrap();
    assert_eq!(got, 2);
    assert_eq!(fx.vtd.mmio_read(IQH, 8), 0x10);
    assert_eq!(fx.vtd.mmio_read(ICS, 4), 0);
    // IF with IECTL unmasked: IWC, MSI, IP cleared.
    fx.vtd.mmio_write(IEDATA, 4, 0x51).unwrap();
    fx.vtd.mmio_write(IEADDR, 4, 0xfee0_1000).unwrap();
    fx.vtd.mmio_write(IECTL, 4, 0).unwrap();
    drv.queue_descriptors(&[desc::wait(Some((status + 4, 9)), true)])
        .unwrap();
    drv.ring().unwrap();
    assert_eq!(fx.vtd.mmio_read(ICS, 4), 1);
    assert_eq!(
        fx.msi.take(),
        vec![Msi {
            address: 0xfee0_1000,
            data: 0x51
        }]
    );
    assert_eq!(fx.vtd.mmio_read(IECTL, 4), 0);
    // IWC still set: the next IF sends nothing.
    drv.queue_descriptors(&[desc::wait(None, true)]).unwrap();
    drv.ring().unwrap();
    assert!(fx.msi.is_empty());
    // Clear IWC, mask, IF: pending; unmask delivers it.
    fx.vtd.mmio_write(ICS, 4, 1).unwrap();
    fx.vtd.mmio_write(IECTL, 4, 1 << 31).unwrap();
    drv.queue_descriptors(&[desc::wait(None, true)]).unwrap();
    drv.ring().unwrap();
    assert!(fx.msi.is_empty());
    assert_eq!(fx.vtd.mmio_read(IECTL, 4), (1 << 31) | (1 << 30));
    fx.vtd.mmio_write(IECTL, 4, 0).unwrap();
    assert_eq!(fx.msi.take().len(), 1);
    assert_eq!(fx.vtd.mmio_read(IECTL, 4), 0);
    // SW with IF together (FreeBSD), and a fence-only wait.
    fx.vtd.mmio_write(ICS, 4, 1).unwrap();
    let mut both = desc::wait(Some((status + 8, 7)), true);
    both[0] |= 1 << 6;
    drv.queue_descriptors(&[both, [5 | (1 << 6), 0]]).unwrap();
    drv.ring().unwrap();
    let got: u32 = fx.mem.read_obj(GuestAddress(status + 8)).unwrap();
    assert_eq!(got, 7);
    assert_eq!(fx.msi.len(), 1);
    assert_eq!(fx.vtd.mmio_read(FSTS, 4) & FSTS_IQE, 0);
}

#[test]
fn invalid_descriptor_stops_the_queue_until_iqe_is_cleared() {
    let fx = Fixture::new(Config::default());
    let mut drv = fx.driver();
    drv.enable_fault_interrupt(FAULT_MSI.0, FAULT_MSI.1)
        .unwrap();
    drv.enable_qi(false).unwrap();
    let status = drv.alloc(1).unwrap();
    // A type-2 descriptor with reserved bit 8, then a wait.
    let bad = [2 | (1 << 4) | (1 << 8), 0];
    drv.queue_descriptors(&[
        desc::iotlb_global(),
        bad,
        desc::wait(Some((status, 1)), false),
    ])
    .unwrap();
    drv.ring().unwrap();
    assert_ne!(fx.vtd.mmio_read(FSTS, 4) & FSTS_IQE, 0);
    assert_eq!(fx.vtd.mmio_read(IQH, 8), 0x10, "IQH on the bad descriptor");
    let got: u32 = fx.mem.read_obj(GuestAddress(status)).unwrap();
    assert_eq!(got, 0, "wait not executed");
    assert_eq!(fx.msi.take().len(), 1, "fault event for IQE");
    // More IQT writes do nothing while IQE is set.
    drv.ring().unwrap();
    assert_eq!(fx.vtd.mmio_read(IQH, 8), 0x10);
    // Linux's recovery: overwrite the bad descriptor with the wait, clear IQE: fetching
    // resumes at IQH (spec 6.5.2.10).
    let queue = fx.vtd.mmio_read(IQA, 8) & !0xfff;
    drv.write(queue + 0x10, &desc::wait(Some((status, QI_DONE)), false))
        .unwrap();
    fx.vtd.mmio_write(FSTS, 4, FSTS_IQE).unwrap();
    assert_eq!(fx.vtd.mmio_read(FSTS, 4) & FSTS_IQE, 0);
    assert_eq!(fx.vtd.mmio_read(IQH, 8), 0x30);
    let got: u32 = fx.mem.read_obj(GuestAddress(status)).unwrap();
    assert_eq!(got, 1);
    assert_eq!(fx.vtd.mmio_read(FECTL, 4) & CTL_IP, 0);
    assert_eq!(fx.vtd.stats().queue_errors, 1);
}

#[test]
fn queue_errors_tail_width_and_memory() {
    // Tail beyond the queue.
    let fx = Fixture::new(Config::default());
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    fx.vtd.mmio_write(IQT, 8, 0x1000).unwrap();
    assert_ne!(fx.vtd.mmio_read(FSTS, 4) & FSTS_IQE, 0);
    assert_eq!(fx.vtd.mmio_read(IQH, 8), 0);

    // A 256-bit-only descriptor in a 128-bit queue.
    let fx = Fixture::new(Config {
        scalable_mode: true,
        ..Config::default()
    });
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    drv.queue_descriptors(&[desc::pasid_iotlb(1, 0, None)])
        .unwrap();
    drv.ring().unwrap();
    assert_ne!(fx.vtd.mmio_read(FSTS, 4) & FSTS_IQE, 0);

    // A 256-bit queue with IQT bit 4 set.
    let fx = Fixture::new(Config {
        scalable_mode: true,
        ..Config::default()
    });
    let mut drv = fx.driver();
    drv.enable_qi(true).unwrap();
    fx.vtd.mmio_write(IQT, 8, 0x10).unwrap();
    assert_ne!(fx.vtd.mmio_read(FSTS, 4) & FSTS_IQE, 0);

    // A queue outside guest RAM.
    let fx = Fixture::new(Config::default());
    let mut drv = fx.driver();
    fx.vtd.mmio_write(IQA, 8, RAM + 0x1000_0000).unwrap();
    drv.gcmd(GCMD_QIE, true).unwrap();
    fx.vtd.mmio_write(IQT, 8, 0x10).unwrap();
    assert_ne!(fx.vtd.mmio_read(FSTS, 4) & FSTS_IQE, 0);
}

#[test]
fn queue_size_wraps_and_disable_resets_head() {
    let fx = Fixture::new(Config::default());
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    // 300 submissions of two descriptors wrap the 256-entry queue.
    for _ in 0..300 {
        drv.submit(&[desc::iec_global()]).unwrap();
    }
    assert_eq!(fx.vtd.mmio_read(IQH, 8), ((600 % 256) << 4) as u64);
    assert_eq!(fx.vtd.stats().descriptors, 600);
    drv.gcmd(GCMD_QIE, false).unwrap();
    assert_eq!(fx.vtd.mmio_read(IQH, 8), 0);
    assert_eq!(fx.vtd.mmio_read(GSTS, 4) & GCMD_QIE, 0);
    // Descriptors queued while disabled run when QI is enabled (IQT != IQH then).
    let status = drv.alloc(1).unwrap();
    let queue = fx.vtd.mmio_read(IQA, 8) & !0xfff;
    drv.write(queue, &desc::wait(Some((status, 3)), false))
        .unwrap();
    fx.vtd.mmio_write(IQT, 8, 0x10).unwrap();
    fx.vtd.mmio_write(GCMD, 4, GCMD_QIE).unwrap();
    let got: u32 = fx.mem.read_obj(GuestAddress(status)).unwrap();
    assert_eq!(got, 3);
}

#[test]
fn fault_event_masking_overflow_and_service() {
    let fx = Fixture::new(Config {
        fault_records: 2,
        ..Config::default()
    });
    let mut drv = fx.driver();
    drv.set_root_table(false).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    fx.vtd.mmio_write(FEDATA, 4, 0x33).unwrap();
    fx.vtd.mmio_write(FEADDR, 4, 0xfee0_0000).unwrap();
    // Masked (reset state): IP pending, no MSI.
    dma(&fx.vtd, 0x10, None, 0x1000, Perm::READ).unwrap_err();
    assert!(fx.msi.is_empty());
    assert_eq!(fx.vtd.mmio_read(FECTL, 4), (1 << 31) | (1 << 30));
    fx.vtd.mmio_write(FECTL, 4, 0).unwrap();
    assert_eq!(fx.msi.take().len(), 1);
    assert_eq!(fx.vtd.mmio_read(FECTL, 4), 0);
    // Same SID again: compressed. Another SID: second record. A third: overflow.
    dma(&fx.vtd, 0x10, None, 0x2000, Perm::READ).unwrap_err();
    dma(&fx.vtd, 0x11, None, 0x3000, Perm::READ).unwrap_err();
    dma(&fx.vtd, 0x12, None, 0x4000, Perm::READ).unwrap_err();
    let st = fx.vtd.stats();
    assert_eq!(
        (
            st.faults_recorded,
            st.faults_compressed,
            st.faults_overflowed
        ),
        (2, 1, 1)
    );
    let fsts = fx.vtd.mmio_read(FSTS, 4);
    assert_eq!(fsts & (FSTS_PFO | FSTS_PPF), FSTS_PFO | FSTS_PPF);
    assert!(fx.msi.is_empty(), "no new event while one is pending");
    // While PFO is set every fault is dropped.
    dma(&fx.vtd, 0x13, None, 0x5000, Perm::READ).unwrap_err();
    assert_eq!(fx.vtd.stats().faults_overflowed, 2);
    // dmar_fault: read both, ack, clear status.
    let recs = drv.service_faults().unwrap();
    assert_eq!(
        recs.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![0x10, 0x11]
    );
    assert_eq!(fx.vtd.mmio_read(FSTS, 4) & 0xff, 0);
    // The next fault is recorded again and signalled.
    dma(&fx.vtd, 0x14, None, 0x6000, Perm::READ).unwrap_err();
    assert_eq!(fx.msi.take().len(), 1);
    // Disabling translation (IR off) resets the record index.
    drv.service_faults().unwrap();
    drv.gcmd(GCMD_TE, false).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    dma(&fx.vtd, 0x15, None, 0x6000, Perm::READ).unwrap_err();
    assert_eq!(fx.vtd.fault_records()[0].index, 0);
}

#[test]
fn device_tlb_descriptors_need_ecap_dt() {
    let fx = Fixture::new(Config {
        device_tlb: true,
        ..Config::default()
    });
    assert_ne!(fx.vtd.ecap() & caps::ECAP_DT, 0);
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    drv.set_root_table(false).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    // TT=01b is valid with DT.
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_range(0x1000, DATA, 0x1000, RW).unwrap();
    drv.write_context(0x30, entry::context(tb.root(), 2, 4, 1, false))
        .unwrap();
    assert_eq!(
        dma(&fx.vtd, 0x30, None, 0x1000, Perm::READ).unwrap().addr,
        DATA
    );
    // PFSID bits are accepted (QEMU rejects them).
    let mut d = desc::device_tlb(0x30, 0x7000, true);
    d[0] |= (0x3 << 12) | (0x1 << 52);
    drv.submit(&[d]).unwrap();
    assert_eq!(fx.vtd.mmio_read(FSTS, 4) & FSTS_IQE, 0);
}
