//! One test per legacy-mode fault reason the unit produces (VT-d spec "Legacy Mode Fault
//! Conditions"; anchors-x86.md §1.5, §1.6, §1.8), each checking the record, the DMA result,
//! and FPD qualification where it applies.

mod common;

use common::*;
use viommu_shared::Perm;
use viommu_shared::dma::DmaFaultKind;
use viommu_vtd::format::{SL_PS, SL_SNP};
use viommu_vtd::regs::*;
use viommu_vtd::testing::{GuestDriver, entry};
use viommu_vtd::{Config, FaultReason};

const SID: u16 = 0x0310; // 03:02.0
const DID: u16 = 9;
const IOVA: u64 = 0x7654_3000;

/// Root table set, translation enabled, no context yet.
fn boot(fx: &Fixture) -> GuestDriver<'_> {
    let mut drv = fx.driver();
    drv.set_root_table(false).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    drv
}

fn expect(fx: &Fixture, reason: FaultReason, is_read: bool, iova: u64) {
    let r = take_fault(&fx.vtd);
    assert_eq!(r.reason, reason.code(), "{r:?}");
    assert_eq!(r.source_id, SID);
    assert_eq!(r.is_read, is_read);
    assert_eq!(r.address, iova & !0xfff);
    assert_eq!(r.pasid, None);
}

/// A context for SID over a fresh 4-level table with one RW page at IOVA.
fn translated(fx: &Fixture, drv: &mut GuestDriver<'_>) -> u64 {
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_range(IOVA, DATA, 0x1000, RW).unwrap();
    drv.write_context(SID, entry::context(tb.root(), 2, DID, 0, false))
        .unwrap();
    tb.root()
}

#[test]
fn fault_01_root_entry_not_present_is_always_reported() {
    let fx = Fixture::new(Config::default());
    let _drv = boot(&fx);
    let e = dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    assert_eq!(e.kind, DmaFaultKind::NotPresent);
    expect(&fx, FaultReason::RootNotPresent, true, IOVA);
}

#[test]
fn fault_02_context_not_present_and_fpd() {
    let fx = Fixture::new(Config::default());
    let mut drv = boot(&fx);
    let addr = drv.write_context(SID, [0, 0]).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::WRITE).unwrap_err();
    expect(&fx, FaultReason::ContextNotPresent, false, IOVA);
    // FPD is honoured in a not-present context entry: the fault is qualified.
    drv.write(addr, &[1 << 1, 0]).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::WRITE).unwrap_err();
    assert!(fx.vtd.fault_records().is_empty());
    assert_eq!(fx.vtd.stats().faults_suppressed, 1);
    // The suppressed fault is still visible to the VMM through last_fault.
    let f = fx.vtd.last_fault().unwrap();
    assert_eq!(f.reason, FaultReason::ContextNotPresent);
    assert_eq!((f.source_id, f.address, f.is_read), (SID, IOVA, false));
    // A fault collapsed into a pending record of the same source shows there too.
    drv.write(addr, &[0, 0]).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    dma(&fx.vtd, SID, None, IOVA + 0x1000, Perm::WRITE).unwrap_err();
    assert_eq!(fx.vtd.stats().faults_compressed, 1);
    let f = fx.vtd.last_fault().unwrap();
    assert_eq!((f.address, f.is_read), (IOVA + 0x1000, false));
    assert_eq!(fx.vtd.fault_records().len(), 1);
    assert!(fx.vtd.fault_records()[0].is_read);
    // System reset forgets it.
    fx.vtd.reset().unwrap();
    assert_eq!(fx.vtd.last_fault(), None);
}

#[test]
fn fault_03_invalid_context_programming() {
    let cases: [(Config, u64, u64); 4] = [
        // AW=3 (5-level) is not in SAGAW of a 48-bit unit.
        (Config::default(), 3, 0),
        // TT=11b is reserved.
        (Config::default(), 2, 3),
        // TT=01b needs ECAP.DT.
        (Config::default(), 2, 1),
        // TT=10b needs ECAP.PT.
        (
            Config {
                pass_through: false,
                ..Config::default()
            },
            2,
            2,
        ),
    ];
    for (config, aw, tt) in cases {
        let fx = Fixture::new(config);
        let mut drv = boot(&fx);
        let root = translated(&fx, &mut drv);
        drv.write_context(SID, entry::context(root, aw, DID, tt, false))
            .unwrap();
        let e = dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
        assert_eq!(e.kind, DmaFaultKind::Malformed);
        expect(&fx, FaultReason::ContextInvalid, true, IOVA);
    }
}

#[test]
fn fault_04_address_beyond_agaw() {
    let fx = Fixture::new(Config::default());
    let mut drv = boot(&fx);
    let root = translated(&fx, &mut drv);
    // AW=1: a 3-level table, 39-bit input.
    drv.write_context(SID, entry::context(root, 1, DID, 0, false))
        .unwrap();
    let e = dma(&fx.vtd, SID, None, 1 << 39, Perm::READ).unwrap_err();
    assert_eq!(e.kind, DmaFaultKind::NotPresent);
    expect(&fx, FaultReason::AddressBeyondAgaw, true, 1 << 39);
    // Pass-through contexts are bounded by AW too.
    drv.write_context(SID, entry::context(0, 1, DID, 2, false))
        .unwrap();
    assert_eq!(dma(&fx.vtd, SID, None, 0x5000, Perm::READ).unwrap().addr, 0);
    dma(&fx.vtd, SID, None, (1 << 39) + 0x5000, Perm::READ).unwrap_err();
    expect(
        &fx,
        FaultReason::AddressBeyondAgaw,
        true,
        (1 << 39) + 0x5000,
    );
}

#[test]
fn fault_05_write_without_permission() {
    let fx = Fixture::new(Config::default());
    let mut drv = boot(&fx);
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_range(IOVA, DATA, 0x1000, Perm::READ).unwrap();
    drv.write_context(SID, entry::context(tb.root(), 2, DID, 0, false))
        .unwrap();
    assert!(dma(&fx.vtd, SID, None, IOVA, Perm::READ).is_ok());
    let e = dma(&fx.vtd, SID, None, IOVA + 8, Perm::WRITE).unwrap_err();
    assert_eq!(e.kind, DmaFaultKind::Permission);
    expect(&fx, FaultReason::Write, false, IOVA);
    // A read-only table entry above a writable leaf denies writes too.
    let pde = tb.entry_for(1, IOVA + 0x20_0000).unwrap();
    tb.map_range(IOVA + 0x20_0000, DATA, 0x1000, RW).unwrap();
    let raw: u64 = vm_memory::Bytes::read_obj(&fx.mem, vm_memory::GuestAddress(pde)).unwrap();
    tb.store(pde, raw & !2).unwrap();
    dma(&fx.vtd, SID, None, IOVA + 0x20_0000, Perm::WRITE).unwrap_err();
    expect(&fx, FaultReason::Write, false, IOVA + 0x20_0000);
}

#[test]
fn fault_06_read_of_not_present_page() {
    let fx = Fixture::new(Config::default());
    let mut drv = boot(&fx);
    translated(&fx, &mut drv);
    let e = dma(&fx.vtd, SID, None, IOVA + 0x1000, Perm::READ).unwrap_err();
    assert_eq!(e.kind, DmaFaultKind::NotPresent);
    expect(&fx, FaultReason::Read, true, IOVA + 0x1000);
}

#[test]
fn fault_07_paging_entry_access() {
    let fx = Fixture::new(Config::default());
    let mut drv = boot(&fx);
    // The table pointer is below HAW but outside guest RAM.
    drv.write_context(SID, entry::context(RAM + 0x1000_0000, 2, DID, 0, false))
        .unwrap();
    let e = dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    assert_eq!(e.kind, DmaFaultKind::Malformed);
    expect(&fx, FaultReason::PagingEntryAccess, true, IOVA);
}

#[test]
fn fault_08_root_table_access() {
    let fx = Fixture::new(Config::default());
    let mut drv = fx.driver();
    fx.vtd.mmio_write(RTADDR, 8, RAM + 0x10_0000).unwrap();
    drv.gcmd(GCMD_SRTP, true).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, FaultReason::RootTableAccess, true, IOVA);
}

#[test]
fn fault_09_context_table_access() {
    let fx = Fixture::new(Config::default());
    let drv = boot(&fx);
    let slot = drv.root() + u64::from(SID >> 8) * 16;
    drv.write(slot, &entry::root(RAM + 0x20_0000)).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, FaultReason::ContextTableAccess, true, IOVA);
}

#[test]
fn fault_0a_root_entry_reserved() {
    let fx = Fixture::new(Config::default());
    let mut drv = boot(&fx);
    translated(&fx, &mut drv);
    let slot = drv.root() + u64::from(SID >> 8) * 16;
    let ctp = fx.vtd.device_space(u32::from(SID)).map(|_| ());
    assert!(ctp.is_some());
    let lo: u64 = vm_memory::Bytes::read_obj(&fx.mem, vm_memory::GuestAddress(slot)).unwrap();
    for (l, h) in [(lo | 0x10, 0), (lo, 1u64 << 40), (lo | (1 << 50), 0)] {
        drv.write(slot, &[l, h]).unwrap();
        dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
        expect(&fx, FaultReason::RootReserved, true, IOVA);
    }
}

#[test]
fn fault_0b_context_entry_reserved_ignores_fpd() {
    let fx = Fixture::new(Config::default());
    let mut drv = boot(&fx);
    let root = translated(&fx, &mut drv);
    let [lo, hi] = entry::context(root, 2, DID, 0, true);
    for (l, h) in [
        (lo | 0x10, hi),
        (lo, hi | 0x80),
        (lo, hi | (1 << 24)),
        (lo | (1 << 49), hi),
    ] {
        drv.write_context(SID, [l, h]).unwrap();
        let e = dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
        assert_eq!(e.kind, DmaFaultKind::Malformed);
        // Not qualified: reported even though FPD is set.
        expect(&fx, FaultReason::ContextReserved, true, IOVA);
    }
}

#[test]
fn fault_0c_paging_entry_reserved() {
    let fx = Fixture::new(Config::default());
    let mut drv = boot(&fx);
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    drv.write_context(SID, entry::context(tb.root(), 2, DID, 0, false))
        .unwrap();
    // SNP in a leaf without snoop control.
    let pte = tb.entry_for(0, IOVA).unwrap();
    tb.store(pte, DATA | SL_SNP | 3).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, FaultReason::PagingEntryReserved, true, IOVA);
    // A 2 MiB leaf with address bits 20:12 set.
    let pde = tb.entry_for(1, 0x4000_0000).unwrap();
    tb.store(pde, 0x20_1000 | SL_PS | 3).unwrap();
    dma(&fx.vtd, SID, None, 0x4000_0000, Perm::READ).unwrap_err();
    expect(&fx, FaultReason::PagingEntryReserved, true, 0x4000_0000);
    // PS in a PML4 entry.
    let root = tb.root();
    tb.store(root + 8 * 5, 0x8000_0000 | SL_PS | 3).unwrap();
    dma(&fx.vtd, SID, None, 5 << 39, Perm::READ).unwrap_err();
    expect(&fx, FaultReason::PagingEntryReserved, true, 5 << 39);

    // With snoop control SNP is accepted.
    let fx = Fixture::new(Config {
        snoop_control: true,
        ..Config::default()
    });
    let mut drv = boot(&fx);
    let mut tb = builder(&format, &fx.mem);
    drv.write_context(SID, entry::context(tb.root(), 2, DID, 0, false))
        .unwrap();
    let pte = tb.entry_for(0, IOVA).unwrap();
    tb.store(pte, DATA | SL_SNP | 3).unwrap();
    assert_eq!(
        dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap().addr,
        DATA
    );
}

#[test]
fn fault_0c_large_pages_only_when_advertised() {
    let fx = Fixture::new(Config {
        large_pages: viommu_vtd::LargePages {
            two_mib: true,
            one_gib: false,
        },
        ..Config::default()
    });
    let mut drv = boot(&fx);
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    drv.write_context(SID, entry::context(tb.root(), 2, DID, 0, false))
        .unwrap();
    let pde = tb.entry_for(1, 0x4000_0000).unwrap();
    tb.store(pde, 0x20_0000 | SL_PS | 3).unwrap();
    let t = dma(&fx.vtd, SID, None, 0x4000_5000, Perm::READ).unwrap();
    assert_eq!(
        (t.iova, t.addr, t.size),
        (0x4000_0000, 0x20_0000, 0x20_0000)
    );
    let pdpe = tb.entry_for(2, 0x8000_0000).unwrap();
    tb.store(pdpe, 0x4000_0000 | SL_PS | 3).unwrap();
    dma(&fx.vtd, SID, None, 0x8000_0000, Perm::READ).unwrap_err();
    expect(&fx, FaultReason::PagingEntryReserved, true, 0x8000_0000);
}

#[test]
fn fault_0e_interrupt_address_output() {
    let fx = Fixture::new(Config::default());
    let mut drv = boot(&fx);
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    drv.write_context(SID, entry::context(tb.root(), 2, DID, 0, false))
        .unwrap();
    tb.map_page(0, IOVA, 0xfee0_0000, RW).unwrap();
    let e = dma(&fx.vtd, SID, None, IOVA, Perm::WRITE).unwrap_err();
    assert_eq!(e.kind, DmaFaultKind::Blocked);
    expect(&fx, FaultReason::InterruptAddress, false, IOVA);
    // A 1 GiB leaf covering the range: pages outside it translate, as 4 KiB pieces.
    tb.map_page(2, 0xc000_0000, 0xc000_0000, RW).unwrap();
    let t = dma(&fx.vtd, SID, None, 0xc010_0000, Perm::READ).unwrap();
    assert_eq!((t.iova, t.addr, t.size), (0xc010_0000, 0xc010_0000, 0x1000));
    // An input address in 0xFEEx_xxxx without PASID is an interrupt request, never
    // DMA-remapped (spec 3.14; QEMU overlays its interrupt region there too): the read is
    // discarded and no DMA-remapping fault is recorded.
    let e = dma(&fx.vtd, SID, None, 0xfee0_1000, Perm::READ).unwrap_err();
    assert_eq!(e.kind, DmaFaultKind::Blocked);
    assert!(fx.vtd.fault_records().is_empty());
    // Through the same leaf, an output address in the range still faults 0xE.
    tb.map_page(0, IOVA + 0x1000, 0xfee0_1000, RW).unwrap();
    dma(&fx.vtd, SID, None, IOVA + 0x1000, Perm::READ).unwrap_err();
    expect(&fx, FaultReason::InterruptAddress, true, IOVA + 0x1000);
}

#[test]
fn fault_31_pasid_request_in_legacy_mode() {
    let fx = Fixture::new(Config::default());
    let mut drv = boot(&fx);
    translated(&fx, &mut drv);
    let e = dma(&fx.vtd, SID, Some(7), IOVA, Perm::READ).unwrap_err();
    assert_eq!(e.kind, DmaFaultKind::Blocked);
    let r = take_fault(&fx.vtd);
    assert_eq!(r.reason, FaultReason::PasidInLegacyMode.code());
    assert_eq!(r.pasid, Some(7));
}

#[test]
fn no_fault_and_identity_while_translation_is_off() {
    let fx = Fixture::new(Config::default());
    let t = dma(&fx.vtd, SID, None, 0x1234_5678, Perm::RW).unwrap();
    assert_eq!(t.addr, t.iova);
    assert!(t.iova <= 0x1234_5678 && 0x1234_5678 - t.iova < t.size);
    assert!(fx.vtd.fault_records().is_empty());
}
