//! Scalable mode: translation through PASID entries, and one test per scalable-mode fault
//! reason the unit produces.

mod common;

use common::*;
use viommu_shared::Perm;
use viommu_shared::dma::DmaFaultKind;
use viommu_vtd::format::SL_PS;
use viommu_vtd::regs::*;
use viommu_vtd::testing::{GuestDriver, entry};
use viommu_vtd::{Config, FaultReason, Space};

const SID: u16 = 0x0108; // 01:01.0
const SID_HI: u16 = 0x0188; // 01:11.0, in the upper half of the root entry
const DID: u16 = 12;
const IOVA: u64 = 0x3_2100_0000;
const PASID: u32 = 0x1_0042;

fn sm() -> Config {
    Config {
        scalable_mode: true,
        ..Config::default()
    }
}

struct Sm<'a> {
    drv: GuestDriver<'a>,
    ctx: u64,
    dir: u64,
    table: u64,
    pt_root: u64,
}

/// Root table in scalable mode, translation on, SID's context with PASID enabled, PDTS 7
/// (2^14 directory entries), RID_PASID 0, and a second-stage PASID entry for RID_PASID and
/// for PASID mapping one RW page at IOVA.
fn setup(fx: &Fixture) -> Sm<'_> {
    let mut drv = fx.driver();
    drv.set_root_table(true).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_range(IOVA, DATA, 0x1000, RW).unwrap();
    let dir = drv.alloc(32).unwrap();
    let table = drv.alloc(1).unwrap();
    let ctx = drv
        .write_sm_context(SID, entry::sm_context(dir, 7, 0, true, false))
        .unwrap();
    drv.write(dir, &[entry::pasid_dir(table, false)]).unwrap();
    drv.write(table, &entry::pasid_second_stage(tb.root(), 2, DID, false))
        .unwrap();
    let ptable = drv.alloc(1).unwrap();
    drv.write(
        dir + 8 * u64::from(PASID >> 6),
        &[entry::pasid_dir(ptable, false)],
    )
    .unwrap();
    drv.write(
        ptable + 64 * u64::from(PASID & 0x3f),
        &entry::pasid_second_stage(tb.root(), 2, DID, false),
    )
    .unwrap();
    Sm {
        drv,
        ctx,
        dir,
        table,
        pt_root: tb.root(),
    }
}

fn expect(fx: &Fixture, sid: u16, reason: FaultReason, is_read: bool, pasid: Option<u32>) {
    let r = take_fault(&fx.vtd);
    assert_eq!(r.reason, reason.code(), "{r:?}");
    assert_eq!(r.source_id, sid);
    assert_eq!(r.is_read, is_read);
    assert_eq!(r.pasid, pasid);
}

#[test]
fn translates_with_and_without_pasid() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    let t = dma(&fx.vtd, SID, None, IOVA + 4, Perm::RW).unwrap();
    assert_eq!((t.iova, t.addr, t.domain), (IOVA, DATA, u64::from(DID)));
    let t = dma(&fx.vtd, SID, Some(PASID), IOVA, Perm::READ).unwrap();
    assert_eq!(t.addr, DATA);
    assert!(matches!(
        fx.vtd.device_space(u32::from(SID)),
        Some(Space::Translated {
            did: DID,
            pasid: Some(0),
            scalable: true,
            ..
        })
    ));
    // A pass-through PASID entry is the identity.
    s.drv.write(s.table, &entry::pasid_pass_through(3)).unwrap();
    let t = dma(&fx.vtd, SID, None, 0x12_3000, Perm::WRITE).unwrap();
    assert_eq!((t.addr, t.domain), (t.iova, 3));
    assert!(fx.vtd.fault_records().is_empty());
    let _ = s.pt_root;
}

#[test]
fn fault_30_reserved_translation_table_mode() {
    let fx = Fixture::new(sm());
    let mut drv = fx.driver();
    let root = drv.alloc(1).unwrap();
    fx.vtd
        .mmio_write(RTADDR, 8, root | RTADDR_TTM_MASK)
        .unwrap();
    drv.gcmd(GCMD_SRTP, true).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::SmInvalidRootTableAddress, true, None);
}

#[test]
fn fault_38_root_entry_access() {
    let fx = Fixture::new(sm());
    let mut drv = fx.driver();
    fx.vtd
        .mmio_write(RTADDR, 8, (RAM + 0x10_0000) | RTADDR_TTM_SCALABLE)
        .unwrap();
    drv.gcmd(GCMD_SRTP, true).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::SmRootAccess, true, None);
}

#[test]
fn fault_39_root_entry_half_not_present() {
    let fx = Fixture::new(sm());
    let _s = setup(&fx);
    // Only the lower half (devfn < 0x80) of bus 1's root entry is present.
    dma(&fx.vtd, SID_HI, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID_HI, FaultReason::SmRootNotPresent, true, None);
}

#[test]
fn fault_3a_root_entry_reserved() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    let slot = s.drv.root() + 16;
    let lo: u64 = vm_memory::Bytes::read_obj(&fx.mem, vm_memory::GuestAddress(slot)).unwrap();
    s.drv.write(slot, &[lo | 0x4, 0]).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::SmRootReserved, true, None);
}

#[test]
fn fault_40_context_entry_access() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    s.drv
        .write(
            s.drv.root() + 16,
            &entry::sm_root(Some(RAM + 0x30_0000), None),
        )
        .unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::SmContextAccess, true, None);
}

#[test]
fn fault_41_context_not_present_and_fpd() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    s.drv.write(s.ctx, &[0, 0, 0, 0]).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::SmContextNotPresent, true, None);
    s.drv.write(s.ctx, &[1 << 1]).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    assert!(fx.vtd.fault_records().is_empty());
}

#[test]
fn fault_42_context_entry_reserved() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    let mut ctx = entry::sm_context(s.dir, 7, 0, true, true);
    ctx[2] = 1;
    s.drv.write(s.ctx, &ctx).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::SmContextReserved, true, None);
}

#[test]
fn fault_45_pasid_request_with_pasid_disabled() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    s.drv
        .write(s.ctx, &entry::sm_context(s.dir, 7, 0, false, false))
        .unwrap();
    assert!(dma(&fx.vtd, SID, None, IOVA, Perm::READ).is_ok());
    let e = dma(&fx.vtd, SID, Some(PASID), IOVA, Perm::READ).unwrap_err();
    assert_eq!(e.kind, DmaFaultKind::Blocked);
    expect(&fx, SID, FaultReason::SmPasidDisabled, true, Some(PASID));
}

#[test]
fn fault_46_pasid_beyond_directory_size() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    // PDTS 0: 128 directory entries, PASIDs below 8192.
    s.drv
        .write(s.ctx, &entry::sm_context(s.dir, 0, 0, true, false))
        .unwrap();
    dma(&fx.vtd, SID, Some(PASID), IOVA, Perm::WRITE).unwrap_err();
    expect(&fx, SID, FaultReason::SmPasidTooLarge, false, Some(PASID));
}

#[test]
fn fault_50_pasid_directory_access() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    s.drv
        .write(
            s.ctx,
            &entry::sm_context(RAM + 0x40_0000, 7, 0, true, false),
        )
        .unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::PasidDirAccess, true, None);
}

#[test]
fn fault_51_pasid_directory_not_present() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    s.drv.write(s.dir, &[0]).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::PasidDirNotPresent, true, None);
}

#[test]
fn fault_52_pasid_directory_reserved() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    s.drv
        .write(s.dir, &[entry::pasid_dir(s.table, false) | 0x10])
        .unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::PasidDirReserved, true, None);
}

#[test]
fn fault_58_pasid_table_access() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    s.drv
        .write(s.dir, &[entry::pasid_dir(RAM + 0x50_0000, false)])
        .unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::PasidEntryAccess, true, None);
}

#[test]
fn fault_59_pasid_entry_not_present_and_directory_fpd() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    s.drv.write(s.table, &[0; 8]).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::PasidEntryNotPresent, true, None);
    // FPD in the directory entry suppresses qualified faults below it.
    s.drv
        .write(s.dir, &[entry::pasid_dir(s.table, true)])
        .unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    assert!(fx.vtd.fault_records().is_empty());
    assert_eq!(fx.vtd.stats().faults_suppressed, 1);
}

#[test]
fn fault_5a_pasid_entry_reserved() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    let mut pe = entry::pasid_second_stage(s.pt_root, 2, DID, false);
    pe[0] |= 1 << 10;
    s.drv.write(s.table, &pe).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::PasidEntryReserved, true, None);
}

#[test]
fn fault_5b_invalid_pasid_entry() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    // Nested (PGTT=011b) is not supported; neither is first-stage (001b) nor AW=3.
    let mut nested = entry::pasid_second_stage(s.pt_root, 2, DID, false);
    nested[0] = (nested[0] & !(7 << 6)) | (0b011 << 6);
    let mut first = nested;
    first[0] = (first[0] & !(7 << 6)) | (0b001 << 6);
    let aw5 = entry::pasid_second_stage(s.pt_root, 3, DID, false);
    for pe in [nested, first, aw5] {
        s.drv.write(s.table, &pe).unwrap();
        let e = dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
        assert_eq!(e.kind, DmaFaultKind::Malformed);
        expect(&fx, SID, FaultReason::PasidEntryInvalid, true, None);
    }
}

#[test]
fn fault_78_second_stage_access() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    s.drv
        .write(
            s.table,
            &entry::pasid_second_stage(RAM + 0x60_0000, 2, DID, false),
        )
        .unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::SmPagingEntryAccess, true, None);
}

#[test]
fn fault_7a_second_stage_reserved() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    let slot = s.pt_root + 8 * ((IOVA >> 39) & 0x1ff);
    s.drv.write(slot, &[0x8000_0000 | SL_PS | 3]).unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::SmPagingEntryReserved, true, None);
}

#[test]
fn fault_7b_table_pointer_beyond_haw() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    s.drv
        .write(s.table, &entry::pasid_second_stage(1 << 50, 2, DID, false))
        .unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::SmInvalidTablePointer, true, None);
}

#[test]
fn fault_83_address_beyond_address_width() {
    let fx = Fixture::new(sm());
    let _s = setup(&fx);
    dma(&fx.vtd, SID, None, 1 << 48, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::SmAddressBeyondAgaw, true, None);
}

#[test]
fn fault_85_86_permissions() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    dma(&fx.vtd, SID, None, IOVA + 0x1000, Perm::READ).unwrap_err();
    expect(&fx, SID, FaultReason::SmRead, true, None);
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_range(IOVA, DATA, 0x1000, Perm::READ).unwrap();
    s.drv
        .write(
            s.table,
            &entry::pasid_second_stage(tb.root(), 2, DID, false),
        )
        .unwrap();
    dma(&fx.vtd, SID, Some(PASID), IOVA + 0x1000, Perm::WRITE).unwrap_err();
    expect(&fx, SID, FaultReason::SmWrite, false, Some(PASID));
    dma(&fx.vtd, SID, None, IOVA, Perm::WRITE).unwrap_err();
    expect(&fx, SID, FaultReason::SmWrite, false, None);
}

#[test]
fn fault_87_interrupt_address() {
    let fx = Fixture::new(sm());
    let s = setup(&fx);
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_page(0, IOVA, 0xfee0_0000, RW).unwrap();
    s.drv
        .write(
            s.table,
            &entry::pasid_second_stage(tb.root(), 2, DID, false),
        )
        .unwrap();
    dma(&fx.vtd, SID, None, IOVA, Perm::WRITE).unwrap_err();
    expect(&fx, SID, FaultReason::SmInterruptAddress, false, None);
}
