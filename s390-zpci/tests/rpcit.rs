//! RPCIT: every row of the result table (A.7.2), with this model's deviations.

mod common;

use common::*;
use viommu_s390_zpci::format::{PTE_INVALID, level};
use viommu_s390_zpci::insn::mpcifc::oc;
use viommu_s390_zpci::{
    Cc, Config, Designation, ExhaustionPolicy, Fh, Fib, FunctionState, Pec, ProgramCheck, status,
};
use viommu_shared::Perm;
use viommu_shared::host::SimHostConfig;

const PAL: u64 = SDMA + (64 << 20) - 1;

/// Enabled function with tables registered over [SDMA, PAL] and `n` pages mapped from SDMA.
fn registered(env: &Env, n: u64) -> (Fh, viommu_s390_zpci::testing::ZpciTables) {
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    for p in 0..n {
        t.map(SDMA + p * 0x1000, DATA + p * 0x2000, Perm::RW)
            .unwrap();
    }
    let c = env.cpu().register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    assert_eq!(c.cc, Cc::Ok);
    (fh, t)
}

#[test]
fn unknown_handle_is_cc3() {
    let env = env_limit(100);
    let fh = env.enable();
    let mut cpu = env.cpu();
    assert_eq!(
        cpu.rpcit(Fh(0x8000_0099), SDMA, 0x1000).unwrap().cc,
        Cc::InvalidHandle
    );
    // The disabled handle of an enabled function no longer names it.
    assert_eq!(
        cpu.rpcit(env.fh0, SDMA, 0x1000).unwrap().cc,
        Cc::InvalidHandle
    );
    assert_eq!(cpu.rpcit(fh, SDMA, 0x1000).unwrap().cc, Cc::Error); // enabled, no IOAT
}

#[test]
fn disabled_and_standby_are_cc3() {
    let env = env_limit(100);
    let mut cpu = env.cpu();
    assert_eq!(
        cpu.rpcit(env.fh0, SDMA, 0x1000).unwrap().cc,
        Cc::InvalidHandle
    );
    env.zpci.deconfigure(FID).unwrap();
    assert_eq!(
        env.zpci.function(FID).unwrap().state,
        FunctionState::Standby
    );
    assert_eq!(
        cpu.rpcit(env.fh0, SDMA, 0x1000).unwrap().cc,
        Cc::InvalidHandle
    );
    assert!(env.zpci.take_events().is_empty());
}

#[test]
fn odd_register_pair_is_a_specification_exception() {
    let env = env_limit(100);
    let fh = env.enable();
    let mut regs = [0u64; 16];
    regs[1] = u64::from(fh.0) << 32;
    assert_eq!(
        env.zpci.rpcit(1, 3, &regs),
        Err(ProgramCheck::Specification)
    );
}

#[test]
fn error_state_is_status_40() {
    let env = env_limit(100);
    let (fh, _t) = registered(&env, 1);
    env.zpci.inject_error(FID, Pec::SYSTEM_ERROR, 0).unwrap();
    let before = env.zpci.function(FID).unwrap().counters.rpcits;
    let mut cpu = env.cpu();
    let c = cpu.rpcit(fh, SDMA, 0x1000).unwrap();
    assert_eq!((c.cc, c.status), (Cc::Error, Some(status::ERROR_RECOVERY)));
    assert_eq!(cpu.status(1), 40);
    // The handle in R1 is preserved around the status.
    assert_eq!(cpu.regs[1] >> 32, u64::from(fh.0));
    assert_eq!(env.zpci.function(FID).unwrap().counters.rpcits, before);
}

#[test]
fn no_address_space_is_status_8_and_error_event_1() {
    let env = env_limit(100);
    let fh = env.enable();
    let c = env.cpu().rpcit(fh, SDMA, 0x1000).unwrap();
    assert_eq!((c.cc, c.status), (Cc::Error, Some(status::FUNC_IN_ERROR)));
    let info = env.zpci.function(FID).unwrap();
    assert_eq!(info.state, FunctionState::Error);
    let ev = env.zpci.take_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].pec, ev[0].faddr, ev[0].fid),
        (Pec::INVALID_ADDRESS_SPACE, SDMA, FID)
    );
    assert_eq!(env.msi.take().len(), 1, "doorbell rung once");
}

#[test]
fn range_outside_the_dma_range_is_status_8_and_event_2() {
    let env = env_limit(100);
    let (fh, _t) = registered(&env, 2);
    assert_eq!(env.host_count(), 2);
    // Ends exactly at pba: outside (the end is exclusive).
    let c = env.cpu().rpcit(fh, SDMA - 0x2000, 0x2000).unwrap();
    assert_eq!((c.cc, c.status), (Cc::Error, Some(status::FUNC_IN_ERROR)));
    let ev = env.zpci.take_events();
    assert_eq!((ev[0].pec, ev[0].faddr), (Pec::OUT_OF_RANGE, SDMA - 0x2000));
    // The error state blocks DMA: the host holds nothing any more.
    assert_eq!(env.host_count(), 0);
    // Beyond pal.
    let env = env_limit(100);
    let (fh, _t) = registered(&env, 2);
    let c = env.cpu().rpcit(fh, PAL + 1, 0x1000).unwrap();
    assert_eq!(c.status, Some(status::FUNC_IN_ERROR));
    assert_eq!(env.zpci.take_events()[0].pec, Pec::OUT_OF_RANGE);
}

#[test]
fn range_reaching_into_the_dma_range_is_clipped() {
    let env = env_limit(100);
    let (fh, mut t) = registered(&env, 0);
    t.map(SDMA, DATA, Perm::RW).unwrap();
    let c = env.cpu().rpcit(fh, SDMA - 0x10_0000, 0x10_1000).unwrap();
    assert_eq!(c.cc, Cc::Ok);
    assert_eq!(env.host_mappings(), vec![(SDMA, DATA, 0x1000, Perm::RW)]);
}

/// Writes a raw entry for `iova` at `lvl` after the tables exist.
fn corrupt(t: &mut viommu_s390_zpci::testing::ZpciTables, lvl: u8, iova: u64, value: u64) {
    let ea = t.find(lvl, iova).unwrap().expect("entry exists");
    t.store(ea, value).unwrap();
}

#[test]
fn table_errors_are_status_8_with_their_event() {
    // (level, entry value, expected PEC)
    let cases = [
        (level::PAGE, 0u64, Pec::INVALID_TABLE_ENTRY),
        (level::SEGMENT, 0, Pec::INVALID_TABLE_ENTRY),
        (level::REGION_THIRD, 0, Pec::INVALID_TABLE_ENTRY),
        // Region-third entry with TL 2.
        (
            level::REGION_THIRD,
            0x80_0000 | 0x4 | 0x2,
            Pec::INVALID_TABLE_LENGTH,
        ),
        // Region-third entry with a table offset.
        (
            level::REGION_THIRD,
            0x80_0000 | 0x4 | 0x3 | 0x40,
            Pec::INVALID_TABLE_LENGTH,
        ),
        // Region-third entry typed as a segment entry.
        (level::REGION_THIRD, 0x80_0000 | 0x3, Pec::TABLE_TYPE),
        // Segment entry typed as a region-third entry.
        (level::SEGMENT, 0x80_0000 | 0x4, Pec::TABLE_TYPE),
    ];
    for (lvl, value, pec) in cases {
        let env = env_limit(100);
        let (fh, mut t) = registered(&env, 4);
        assert_eq!(env.host_count(), 4);
        let target = SDMA + 0x2000;
        corrupt(&mut t, lvl, target, value);
        let before = env.zpci.function(FID).unwrap().counters.rpcits;
        let c = env.cpu().rpcit(fh, target, 0x1000).unwrap();
        assert_eq!(
            (c.cc, c.status),
            (Cc::Error, Some(status::FUNC_IN_ERROR)),
            "level {lvl} value {value:#x}"
        );
        let info = env.zpci.function(FID).unwrap();
        assert_eq!(info.state, FunctionState::Error);
        assert_eq!(info.counters.rpcits, before, "errors are not counted");
        let ev = env.zpci.take_events();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].pec, pec, "level {lvl} value {value:#x}");
        assert_eq!(env.host_count(), 0, "error state empties the host");
    }
}

#[test]
fn malformed_entry_outside_the_range_is_not_an_error() {
    let env = env_limit(100);
    let (fh, mut t) = registered(&env, 0);
    t.map(SDMA, DATA, Perm::RW).unwrap();
    t.map(SDMA + 0x10_0000, DATA + 0x10_0000, Perm::RW).unwrap();
    // Zero PTE in another segment.
    corrupt(&mut t, level::PAGE, SDMA + 0x10_1000, 0);
    let c = env.cpu().rpcit(fh, SDMA, 0x1000).unwrap();
    assert_eq!(c.cc, Cc::Ok);
    assert!(env.zpci.take_events().is_empty());
}

#[test]
fn completed_is_cc0_and_counted_in_the_measurement_block() {
    let env = env_limit(100);
    let (fh, mut t) = registered(&env, 0);
    let mut cpu = env.cpu();
    let fib = Fib {
        fmb_addr: FMB,
        ..Fib::default()
    };
    assert_eq!(cpu.mpcifc(fh, oc::SET_MEASURE, 0, &fib).unwrap().cc, Cc::Ok);
    t.map(SDMA + 0x5000, DATA, Perm::RW).unwrap();
    let c = cpu.rpcit(fh, SDMA + 0x5000, 0x1000).unwrap();
    assert_eq!((c.cc, c.status, c.host_error.clone()), (Cc::Ok, None, None));
    assert!(c.writes.is_empty(), "CC 0 leaves R1 alone");
    assert_eq!(
        env.host_mappings(),
        vec![(SDMA + 0x5000, DATA, 0x1000, Perm::RW)]
    );
    let rpcit_count = |mem: &vm_memory::GuestMemoryMmap| -> u64 {
        use vm_memory::{Bytes, GuestAddress};
        u64::from_be(mem.read_obj(GuestAddress(FMB + 0x28)).unwrap())
    };
    assert_eq!(rpcit_count(&env.mem), 1);
    cpu.rpcit(fh, SDMA, 0x1000).unwrap();
    assert_eq!(rpcit_count(&env.mem), 2);
}

#[test]
fn exhaustion_is_status_16_only_when_a_map_failed() {
    // Non-contiguous pages: one host entry each. Limit 8.
    let env = env_limit(8);
    let (fh, mut t) = registered(&env, 0);
    let mut cpu = env.cpu();
    for p in 0..8u64 {
        t.map(SDMA + p * 0x1000, DATA + p * 0x2000, Perm::RW)
            .unwrap();
        let c = cpu.rpcit(fh, SDMA + p * 0x1000, 0x1000).unwrap();
        // The 8th map uses the last entry and succeeds: CC 0 (QEMU answers 16 here).
        assert_eq!(c.cc, Cc::Ok, "page {p}");
    }
    assert_eq!(env.zpci.function(FID).unwrap().host_remaining, Some(0));
    t.map(SDMA + 0x8000, DATA + 0x10000, Perm::RW).unwrap();
    let c = cpu.rpcit(fh, SDMA + 0x8000, 0x1000).unwrap();
    assert_eq!(
        (c.cc, c.status),
        (Cc::Error, Some(status::INSUFFICIENT_RESOURCES))
    );
    assert_eq!(cpu.status(1), 16);
    assert!(matches!(
        c.host_error,
        Some(viommu_s390_zpci::ModelError::HostOutOfResources {
            runs: 1,
            bytes: 0x1000,
            ..
        })
    ));
    // Counted like a completed RPCIT; the function stays enabled.
    let info = env.zpci.function(FID).unwrap();
    assert_eq!(info.state, FunctionState::Enabled);
    assert_eq!(info.stats.insufficient_resources, 1);
    assert_eq!(env.zpci.stats().insufficient_resources, 1);
    // A refresh that needs no new entry still succeeds at zero budget, and a remap to
    // read-only is applied (errata 2).
    t.map(SDMA + 0x3000, DATA + 0x6000, Perm::READ).unwrap();
    assert_eq!(cpu.rpcit(fh, SDMA + 0x3000, 0x1000).unwrap().cc, Cc::Ok);
    assert!(
        env.host_mappings()
            .contains(&(SDMA + 0x3000, DATA + 0x6000, 0x1000, Perm::READ))
    );
    // An unmap and the failed map in one range: the unmap frees the entry first.
    t.unmap(SDMA + 0x7000).unwrap();
    let c = cpu.rpcit(fh, SDMA + 0x7000, 0x2000).unwrap();
    assert_eq!(c.cc, Cc::Ok);
    assert!(
        env.host_mappings()
            .contains(&(SDMA + 0x8000, DATA + 0x10000, 0x1000, Perm::RW))
    );
}

#[test]
fn reclaim_then_signal_policy_frees_lazy_invalidations_itself() {
    let config = Config {
        aperture: viommu_s390_zpci::AperturePolicy::Full,
        exhaustion: ExhaustionPolicy::ReclaimThenSignal,
        ..Config::default()
    };
    let env = env_with(
        config,
        Some(SimHostConfig::s390(HOST_APERTURE).with_entry_limit(4)),
    );
    let (fh, mut t) = registered(&env, 0);
    let mut cpu = env.cpu();
    for p in 0..4u64 {
        t.map(SDMA + p * 0x1000, DATA + p * 0x2000, Perm::RW)
            .unwrap();
        assert_eq!(cpu.rpcit(fh, SDMA + p * 0x1000, 0x1000).unwrap().cc, Cc::Ok);
    }
    // Lazy unmap without RPCIT, then a new map: the model re-syncs everything itself.
    t.unmap(SDMA).unwrap();
    t.map(SDMA + 0x10_0000, DATA + 0x100_000, Perm::RW).unwrap();
    assert_eq!(cpu.rpcit(fh, SDMA + 0x10_0000, 0x1000).unwrap().cc, Cc::Ok);
    assert!(!env.host_mappings().iter().any(|m| m.0 == SDMA));
    // Live mappings beyond the limit: 16 even after the reclaim.
    t.map(SDMA + 0x20_0000, DATA + 0x200_000, Perm::RW).unwrap();
    let c = cpu.rpcit(fh, SDMA + 0x20_0000, 0x1000).unwrap();
    assert_eq!(c.status, Some(status::INSUFFICIENT_RESOURCES));
}

#[test]
fn invalidation_through_segment_and_region_entries_unmaps_on_the_host() {
    let env = env_limit(100);
    let (fh, mut t) = registered(&env, 0);
    let mut cpu = env.cpu();
    for p in 0..3u64 {
        t.map(SDMA + p * 0x10_0000, DATA + p * 0x2000, Perm::RW)
            .unwrap();
    }
    assert_eq!(cpu.rpcit(fh, SDMA, 0x30_0000).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_count(), 3);
    // Invalidate the segment entry of the second page; refresh a range covering it.
    t.invalidate_table_entry(level::SEGMENT, SDMA + 0x10_0000)
        .unwrap();
    assert_eq!(cpu.rpcit(fh, SDMA + 0xf_f000, 0x2000).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_count(), 2);
    // Invalidate the whole region-third entry.
    t.invalidate_table_entry(level::REGION_THIRD, SDMA).unwrap();
    assert_eq!(cpu.rpcit(fh, SDMA, 0x1000).unwrap().cc, Cc::Ok);
    // Only the refreshed range is synced; the rest follows with its own refresh.
    assert_eq!(env.host_count(), 1);
    assert_eq!(cpu.rpcit(fh, SDMA + 0x20_0000, 0x1000).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_count(), 0);
    assert!(env.zpci.take_events().is_empty());
}

#[test]
fn blocked_state_checks_but_keeps_the_host_empty() {
    let env = env_limit(100);
    let (fh, mut t) = registered(&env, 2);
    env.zpci.inject_error(FID, Pec::SYSTEM_ERROR, 0).unwrap();
    assert_eq!(env.host_count(), 0);
    let mut cpu = env.cpu();
    assert_eq!(
        cpu.mpcifc(fh, oc::RESET_BLOCK, 0, &Fib::default())
            .unwrap()
            .cc,
        Cc::Ok
    );
    assert_eq!(
        env.zpci.function(FID).unwrap().state,
        FunctionState::Blocked
    );
    t.map(SDMA + 0x9000, DATA, Perm::RW).unwrap();
    assert_eq!(cpu.rpcit(fh, SDMA + 0x9000, 0x1000).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_count(), 0);
    // Reset error: the shadow is rebuilt from the tables.
    assert_eq!(
        cpu.mpcifc(fh, oc::RESET_ERROR, 0, &Fib::default())
            .unwrap()
            .cc,
        Cc::Ok
    );
    assert_eq!(
        env.host_mappings(),
        vec![
            (SDMA, DATA, 0x1000, Perm::RW),
            (SDMA + 0x1000, DATA + 0x2000, 0x1000, Perm::RW),
            (SDMA + 0x9000, DATA, 0x1000, Perm::RW),
        ]
    );
    // A zero entry in range while blocked is still an error.
    let env = env_limit(100);
    let (fh, t) = registered(&env, 2);
    env.zpci.inject_error(FID, Pec::SYSTEM_ERROR, 0).unwrap();
    env.zpci.take_events();
    let mut cpu = env.cpu();
    cpu.mpcifc(fh, oc::RESET_BLOCK, 0, &Fib::default()).unwrap();
    let ea = t.find(level::PAGE, SDMA).unwrap().unwrap();
    t.store(ea, 0).unwrap();
    assert_eq!(
        cpu.rpcit(fh, SDMA, 0x1000).unwrap().status,
        Some(status::FUNC_IN_ERROR)
    );
    assert_eq!(env.zpci.take_events()[0].pec, Pec::INVALID_TABLE_ENTRY);
}

#[test]
fn emulated_only_function_checks_tables_too() {
    let env = env_with(Config::default(), None);
    let (fh, t) = registered(&env, 1);
    let mut cpu = env.cpu();
    assert_eq!(cpu.rpcit(fh, SDMA, 0x1000).unwrap().cc, Cc::Ok);
    let ea = t.find(level::PAGE, SDMA).unwrap().unwrap();
    t.store(ea, 0).unwrap();
    assert_eq!(
        cpu.rpcit(fh, SDMA, 0x1000).unwrap().status,
        Some(status::FUNC_IN_ERROR)
    );
    // An invalid (not zero) entry is fine.
    let env = env_with(Config::default(), None);
    let (fh, t) = registered(&env, 1);
    let ea = t.find(level::PAGE, SDMA).unwrap().unwrap();
    t.store(ea, PTE_INVALID).unwrap();
    assert_eq!(env.cpu().rpcit(fh, SDMA, 0x1000).unwrap().cc, Cc::Ok);
}
