//! MPCIFC and STPCIFC (A.8, A.9).

mod common;

use common::*;
use viommu_s390_zpci::fib::fc;
use viommu_s390_zpci::insn::mpcifc::oc;
use viommu_s390_zpci::{
    Cc, Config, Designation, Fh, Fib, FunctionState, GroupConfig, Iota, ModelError, Pec,
    ProgramCheck, status,
};
use viommu_shared::Perm;
use viommu_shared::host::SimHostConfig;
use vm_memory::{Bytes, GuestAddress};

const PAL: u64 = SDMA + (16 << 20) - 1;

#[test]
fn register_maps_existing_and_deregister_empties_the_host() {
    let env = env_limit(100);
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    // Mappings present before registration (a re-attached domain).
    t.map_range(SDMA, DATA, 4, Perm::RW).unwrap();
    t.map(SDMA + 0x10_000, DATA + 0x10_0000, Perm::READ)
        .unwrap();
    let mut cpu = env.cpu();
    let c = cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    assert_eq!(c.cc, Cc::Ok);
    assert_eq!(
        env.host_mappings(),
        vec![
            (SDMA, DATA, 0x4000, Perm::RW),
            (SDMA + 0x10_000, DATA + 0x10_0000, 0x1000, Perm::READ),
        ]
    );
    let info = env.zpci.function(FID).unwrap();
    let ioat = info.ioat.unwrap();
    assert_eq!((ioat.pba, ioat.pal, ioat.relaxed), (SDMA, PAL, false));
    // Registered twice: sequence error.
    let c = cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    assert_eq!((c.cc, c.status), (Cc::Error, Some(status::SEQUENCE)));
    // Deregister: every host mapping is gone and the budget is back.
    assert_eq!(cpu.deregister_ioat(fh).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_count(), 0);
    assert_eq!(env.zpci.function(FID).unwrap().host_remaining, Some(100));
    assert!(env.zpci.function(FID).unwrap().ioat.is_none());
    // Deregistered twice: sequence error.
    let c = cpu.deregister_ioat(fh).unwrap();
    assert_eq!(c.status, Some(status::SEQUENCE));
    // Re-registering maps again (QEMU leaked its counter here, errata 1).
    assert_eq!(
        cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap().cc,
        Cc::Ok
    );
    assert_eq!(env.host_count(), 2);
}

#[test]
fn register_operand_checks() {
    let env = env_limit(100);
    let fh = env.enable();
    let t = env.tables(Designation::RegionThird);
    let mut cpu = env.cpu();
    let iota = t.iota().0;
    // Outside the advertised range, pba > pal.
    for (pba, pal) in [(SDMA - 0x1000, PAL), (SDMA, SDMA - 1), (PAL, SDMA)] {
        assert_eq!(
            cpu.register_ioat(fh, pba, pal, iota),
            Err(ProgramCheck::Operand),
            "{pba:#x}..{pal:#x}"
        );
    }
    // Region-second and region-first tables are not offered by the default group.
    let rs = Iota::tables(Designation::RegionSecond, t.root()).0;
    assert_eq!(
        cpu.register_ioat(fh, SDMA, PAL, rs),
        Err(ProgramCheck::Operand)
    );
    // Segment-table designation, and relaxed translation without RTR.
    assert_eq!(
        cpu.register_ioat(fh, SDMA, PAL, t.root() | 0x800),
        Err(ProgramCheck::Operand)
    );
    assert_eq!(
        cpu.register_ioat(fh, SDMA, PAL, 0),
        Err(ProgramCheck::Operand)
    );
    // DMA address space 1.
    let fib = Fib {
        pba: SDMA,
        pal: PAL,
        iota,
        ..Fib::default()
    };
    let c = cpu.mpcifc(fh, oc::REG_IOAT, 1, &fib).unwrap();
    assert_eq!(c.status, Some(status::DMAAS_INVALID));
    // FIB format 1, unknown and directed-interrupt operation controls.
    let f1 = Fib { fmt: 1, ..fib };
    assert_eq!(
        cpu.mpcifc(fh, oc::REG_IOAT, 0, &f1),
        Err(ProgramCheck::Operand)
    );
    for bad in [0u8, 1, 8, 11, 16, 17, 0xff] {
        assert_eq!(
            cpu.mpcifc(fh, bad, 0, &fib),
            Err(ProgramCheck::Operand),
            "oc {bad}"
        );
    }
    // Misaligned FIB.
    cpu.regs[1] = (u64::from(fh.0) << 32) | u64::from(oc::REG_IOAT);
    assert_eq!(
        env.zpci.mpcifc(&env.mem, 1, SCRATCH + 4, &cpu.regs),
        Err(ProgramCheck::Specification)
    );
    // Nothing got registered; pba/pal are page-rounded on success.
    assert!(env.zpci.function(FID).unwrap().ioat.is_none());
    assert_eq!(
        cpu.register_ioat(fh, SDMA + 0x123, PAL - 0xfff, iota)
            .unwrap()
            .cc,
        Cc::Ok
    );
    let i = env.zpci.function(FID).unwrap().ioat.unwrap();
    assert_eq!((i.pba, i.pal), (SDMA, PAL));
}

#[test]
fn handle_and_state_checks() {
    let env = env_limit(100);
    let mut cpu = env.cpu();
    // Disabled function: CC 3.
    let c = cpu
        .mpcifc(env.fh0, oc::REG_INT, 0, &Fib::default())
        .unwrap();
    assert_eq!(c.cc, Cc::InvalidHandle);
    let fh = env.enable();
    let c = cpu
        .mpcifc(Fh(fh.0 ^ 0x0100_0000), oc::REG_INT, 0, &Fib::default())
        .unwrap();
    assert_eq!(c.cc, Cc::InvalidHandle);
}

#[test]
fn reregister_moves_the_host_with_fewest_changes() {
    let env = env_limit(100);
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    t.map_range(SDMA, DATA, 2, Perm::RW).unwrap();
    t.map(SDMA + 0x20_0000, DATA + 0x20_0000, Perm::RW).unwrap();
    let mut cpu = env.cpu();
    cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    assert_eq!(env.host_count(), 2);
    env.host.as_ref().unwrap().with(|h| h.take_calls());
    // Shrink the range so the second mapping falls outside.
    let fib = Fib {
        pba: SDMA,
        pal: SDMA + 0x1f_ffff,
        iota: t.iota().0,
        ..Fib::default()
    };
    assert_eq!(cpu.mpcifc(fh, oc::REREG_IOAT, 0, &fib).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_mappings(), vec![(SDMA, DATA, 0x2000, Perm::RW)]);
    let calls = env.host.as_ref().unwrap().with(|h| h.take_calls());
    assert_eq!(calls.len(), 1, "only the mapping that left: {calls:?}");
    // An invalid re-registration leaves the old one in place.
    let bad = Fib { pba: 0, ..fib };
    assert_eq!(
        cpu.mpcifc(fh, oc::REREG_IOAT, 0, &bad),
        Err(ProgramCheck::Operand)
    );
    assert_eq!(env.host_count(), 1);
    assert!(env.zpci.function(FID).unwrap().ioat.is_some());
    // Re-register without a registration: sequence error.
    cpu.deregister_ioat(fh).unwrap();
    assert_eq!(
        cpu.mpcifc(fh, oc::REREG_IOAT, 0, &fib).unwrap().status,
        Some(status::SEQUENCE)
    );
}

#[test]
fn registration_that_does_not_fit_fails_with_status_16() {
    let env = env_limit(3);
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    for p in 0..4u64 {
        t.map(SDMA + p * 0x1000, DATA + p * 0x2000, Perm::RW)
            .unwrap();
    }
    let c = env.cpu().register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    assert_eq!(
        (c.cc, c.status),
        (Cc::Error, Some(status::INSUFFICIENT_RESOURCES))
    );
    assert!(matches!(
        c.host_error,
        Some(ModelError::HostOutOfResources { .. })
    ));
    assert!(env.zpci.function(FID).unwrap().ioat.is_none());
    assert_eq!(env.host_count(), 0);
}

#[test]
fn reset_error_and_reset_blocked() {
    let env = env_limit(100);
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    t.map(SDMA, DATA, Perm::RW).unwrap();
    let mut cpu = env.cpu();
    cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    let none = Fib::default();
    // Not in error: sequence errors.
    assert_eq!(
        cpu.mpcifc(fh, oc::RESET_ERROR, 0, &none).unwrap().status,
        Some(24)
    );
    assert_eq!(
        cpu.mpcifc(fh, oc::RESET_BLOCK, 0, &none).unwrap().status,
        Some(24)
    );
    env.zpci.inject_error(FID, Pec::SYSTEM_ERROR, 0x42).unwrap();
    assert_eq!(env.host_count(), 0);
    // Loads and stores are blocked in the error state.
    assert_eq!(
        cpu.pcilg(fh, 15, 0, 4).unwrap().status,
        Some(status::BLOCKED)
    );
    assert_eq!(
        cpu.mpcifc(fh, oc::RESET_BLOCK, 0, &none).unwrap().cc,
        Cc::Ok
    );
    assert_eq!(
        env.zpci.function(FID).unwrap().state,
        FunctionState::Blocked
    );
    assert_eq!(cpu.pcilg(fh, 15, 0, 4).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_count(), 0, "DMA still blocked");
    assert_eq!(
        cpu.mpcifc(fh, oc::RESET_BLOCK, 0, &none).unwrap().status,
        Some(24)
    );
    assert_eq!(
        cpu.mpcifc(fh, oc::RESET_ERROR, 0, &none).unwrap().cc,
        Cc::Ok
    );
    assert_eq!(
        env.zpci.function(FID).unwrap().state,
        FunctionState::Enabled
    );
    assert_eq!(env.host_mappings(), vec![(SDMA, DATA, 0x1000, Perm::RW)]);
    let ev = env.zpci.take_events();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].pec, ev[0].faddr), (Pec::SYSTEM_ERROR, 0x42));
}

#[test]
fn interrupt_registration() {
    let env = env_limit(100);
    let fh = env.enable();
    let mut cpu = env.cpu();
    let fib = Fib {
        isc: 3,
        noi: 16,
        aibv: 0x5000,
        aibvo: 4,
        aisb: 0x6000,
        aisbo: 7,
        sum: true,
        ..Fib::default()
    };
    assert_eq!(cpu.mpcifc(fh, oc::REG_INT, 0, &fib).unwrap().cc, Cc::Ok);
    let irq = env.zpci.function(FID).unwrap().interrupts.unwrap();
    assert_eq!((irq.isc, irq.noi, irq.aibv, irq.aibvo), (3, 16, 0x5000, 4));
    assert_eq!(
        cpu.mpcifc(fh, oc::REG_INT, 0, &fib).unwrap().status,
        Some(24)
    );
    let (_, stored) = cpu.stpcifc(fh, 0).unwrap();
    let stored = stored.unwrap();
    assert_eq!(
        (
            stored.isc,
            stored.noi,
            stored.aisb,
            stored.aisbo,
            stored.sum
        ),
        (3, 16, 0x6000, 7, true)
    );
    assert_eq!(cpu.mpcifc(fh, oc::DEREG_INT, 0, &fib).unwrap().cc, Cc::Ok);
    assert_eq!(
        cpu.mpcifc(fh, oc::DEREG_INT, 0, &fib).unwrap().status,
        Some(24)
    );
    assert!(env.zpci.function(FID).unwrap().interrupts.is_none());
}

fn be64(env: &Env, a: u64) -> u64 {
    u64::from_be(env.mem.read_obj(GuestAddress(a)).unwrap())
}

#[test]
fn set_measurement() {
    let env = env_limit(100);
    let fh = env.enable();
    let mut cpu = env.cpu();
    // Key bits set: PEC 0x2c, CC 1 without status.
    let keyed = Fib {
        fmb_addr: FMB | 0x3,
        ..Fib::default()
    };
    let c = cpu.mpcifc(fh, oc::SET_MEASURE, 0, &keyed).unwrap();
    assert_eq!((c.cc, c.status), (Cc::Error, None));
    assert_eq!(env.zpci.take_events()[0].pec, Pec::FMB_PROTECTION);
    // Start: counters from zero, written big-endian.
    env.mem
        .write_slice(&[0xee; 0x40], GuestAddress(FMB))
        .unwrap();
    let fib = Fib {
        fmb_addr: FMB,
        ..Fib::default()
    };
    assert_eq!(cpu.mpcifc(fh, oc::SET_MEASURE, 0, &fib).unwrap().cc, Cc::Ok);
    assert_eq!(be64(&env, FMB + 0x10), 0);
    cpu.pcilg(fh, 15, 0, 4).unwrap();
    cpu.pcilg(fh, 15, 0, 2).unwrap();
    cpu.pcistg(fh, 0, 8, 8, 7).unwrap();
    cpu.pcistb(fh, 0, 0x100, &[1u8; 32]).unwrap();
    assert_eq!(be64(&env, FMB + 0x10), 2);
    assert_eq!(be64(&env, FMB + 0x18), 1);
    assert_eq!(be64(&env, FMB + 0x20), 1);
    env.zpci.update_measurements(0x1000);
    assert_eq!(be64(&env, FMB + 0x08), 0x2000);
    assert_eq!(be64(&env, FMB) & 0xffff_ffff, 1, "one sample");
    let info = env.zpci.function(FID).unwrap();
    assert_eq!(info.fmb_addr, Some(FMB));
    assert_eq!((info.counters.loads, info.counters.samples), (2, 1));
    // STPCIFC reports the block address.
    assert_eq!(cpu.stpcifc(fh, 0).unwrap().1.unwrap().fmb_addr, FMB);
    // A block outside RAM: PEC 0x2a, measurement stops.
    let out = Fib {
        fmb_addr: RAM + 0x1000,
        ..Fib::default()
    };
    assert_eq!(cpu.mpcifc(fh, oc::SET_MEASURE, 0, &out).unwrap().cc, Cc::Ok);
    assert_eq!(env.zpci.take_events()[0].pec, Pec::FMB_ADDRESS);
    assert_eq!(env.zpci.function(FID).unwrap().fmb_addr, None);
    // Address 0 stops.
    cpu.mpcifc(fh, oc::SET_MEASURE, 0, &fib).unwrap();
    cpu.mpcifc(fh, oc::SET_MEASURE, 0, &Fib::default()).unwrap();
    assert_eq!(env.zpci.function(FID).unwrap().fmb_addr, None);
}

#[test]
fn stpcifc_reports_state_and_registration() {
    let env = env_limit(100);
    let mut cpu = env.cpu();
    // Disabled, handle without the enable bit: zeroed FIB, CC 0.
    let (c, fib) = cpu.stpcifc(env.fh0, 0).unwrap();
    assert_eq!(c.cc, Cc::Ok);
    assert_eq!(fib.unwrap(), Fib::default());
    // Disabled, handle with the enable bit: CC 3.
    let (c, _) = cpu.stpcifc(env.fh0.with_enable(true), 0).unwrap();
    assert_eq!(c.cc, Cc::InvalidHandle);
    let fh = env.enable();
    let t = env.tables(Designation::RegionThird);
    cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    let (_, fib) = cpu.stpcifc(fh, 0).unwrap();
    let fib = fib.unwrap();
    assert_eq!(fib.fc, fc::ENABLED | fc::DMAAS_REGISTERED);
    assert_eq!((fib.pba, fib.pal, fib.iota), (SDMA, PAL, t.iota().0));
    // The old (disabled) handle of the enabled function: the enable bit comes back in R1.
    let (c, _) = cpu.stpcifc(env.fh0, 0).unwrap();
    assert_eq!(c.cc, Cc::Ok);
    assert_eq!(cpu.regs[1] >> 32, u64::from(fh.0));
    // Error and blocked states.
    env.zpci.inject_error(FID, Pec::SYSTEM_ERROR, 0).unwrap();
    let (_, fib) = cpu.stpcifc(fh, 0).unwrap();
    assert_eq!(
        fib.unwrap().fc,
        fc::ENABLED | fc::DMAAS_REGISTERED | fc::ERROR | fc::LS_BLOCKED
    );
    cpu.mpcifc(fh, oc::RESET_BLOCK, 0, &Fib::default()).unwrap();
    let (_, fib) = cpu.stpcifc(fh, 0).unwrap();
    assert_eq!(
        fib.unwrap().fc,
        fc::ENABLED | fc::DMAAS_REGISTERED | fc::ERROR
    );
    // DMA address space 1, misaligned FIB, standby.
    let (c, _) = cpu.stpcifc(fh, 1).unwrap();
    assert_eq!(c.status, Some(status::DMAAS_INVALID));
    cpu.regs[1] = u64::from(fh.0) << 32;
    assert_eq!(
        env.zpci.stpcifc(&env.mem, 1, SCRATCH + 1, &cpu.regs),
        Err(ProgramCheck::Specification)
    );
    env.zpci.deconfigure(FID).unwrap();
    assert_eq!(cpu.stpcifc(env.fh0, 0).unwrap().0.cc, Cc::InvalidHandle);
    // FIB outside guest memory: the access exception from the operand access.
    let f2 = env_limit(10);
    let mut cpu2 = f2.cpu();
    cpu2.regs[1] = u64::from(f2.fh0.0) << 32;
    assert_eq!(
        f2.zpci.stpcifc(&f2.mem, 1, RAM, &cpu2.regs),
        Err(ProgramCheck::Addressing)
    );
}

fn group_env(group: GroupConfig) -> Env {
    let config = Config {
        groups: vec![group],
        aperture: viommu_s390_zpci::AperturePolicy::Full,
        ..Config::default()
    };
    env_with(
        config,
        Some(SimHostConfig::s390(HOST_APERTURE).with_entry_limit(100)),
    )
}

#[test]
fn deeper_tables_when_the_group_offers_them() {
    for (d, iova) in [
        (Designation::RegionSecond, 1u64 << 45),
        (Designation::RegionFirst, 1u64 << 56),
    ] {
        let env = {
            let config = Config {
                groups: vec![GroupConfig {
                    max_designation: d,
                    ..GroupConfig::default()
                }],
                aperture: viommu_s390_zpci::AperturePolicy::Full,
                ..Config::default()
            };
            env_with(
                config,
                Some(
                    SimHostConfig::s390(viommu_shared::AddrRange::new(SDMA, u64::MAX))
                        .with_entry_limit(100),
                ),
            )
        };
        let fh = env.enable();
        let mut cpu = env.cpu();
        let q = cpu.query_function(fh).unwrap();
        assert!(q.edma > iova, "{d:?}: edma {:#x}", q.edma);
        let mut t = env.tables(d);
        t.map(iova, DATA, Perm::RW).unwrap();
        t.map(SDMA, DATA + 0x2000, Perm::READ).unwrap();
        let pal = iova + (1 << 20) - 1;
        assert_eq!(
            cpu.register_ioat(fh, SDMA, pal, t.iota().0).unwrap().cc,
            Cc::Ok
        );
        assert_eq!(
            env.host_mappings(),
            vec![
                (SDMA, DATA + 0x2000, 0x1000, Perm::READ),
                (iova, DATA, 0x1000, Perm::RW)
            ],
            "{d:?}"
        );
        t.unmap(iova).unwrap();
        assert_eq!(cpu.rpcit(fh, iova, 0x1000).unwrap().cc, Cc::Ok);
        assert_eq!(env.host_count(), 1);
    }
    // Region-second only: region-first anchors are refused.
    let env = group_env(GroupConfig {
        max_designation: Designation::RegionSecond,
        ..GroupConfig::default()
    });
    let fh = env.enable();
    let t = env.tables(Designation::RegionFirst);
    assert_eq!(
        env.cpu().register_ioat(fh, SDMA, PAL, t.iota().0),
        Err(ProgramCheck::Operand)
    );
}

#[test]
fn relaxed_translation_maps_ram_at_sdma_plus_gpa() {
    let env = group_env(GroupConfig {
        relaxed_translation: true,
        ..GroupConfig::default()
    });
    let fh = env.enable();
    let mut cpu = env.cpu();
    let g = cpu.query_group(0xff).unwrap();
    assert_eq!(g.flags & GroupConfig::FLAG_RTR, GroupConfig::FLAG_RTR);
    let pal = SDMA + (1 << 30) - 1;
    assert_eq!(cpu.register_ioat(fh, SDMA, pal, 0).unwrap().cc, Cc::Ok);
    // 64 MiB of RAM in one piece (relaxed mappings are up to 1 GiB).
    assert_eq!(env.host_mappings(), vec![(SDMA, 0, RAM, Perm::RW)]);
    assert!(env.zpci.function(FID).unwrap().ioat.unwrap().relaxed);
    // RPCIT is a no-op that succeeds.
    assert_eq!(cpu.rpcit(fh, SDMA, 0x1000).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_count(), 1);
    // Switching to tables (re-registration) replaces the identity map.
    let mut t = env.tables(Designation::RegionThird);
    t.map(SDMA, DATA, Perm::RW).unwrap();
    let fib = Fib {
        pba: SDMA,
        pal,
        iota: t.iota().0,
        ..Fib::default()
    };
    assert_eq!(cpu.mpcifc(fh, oc::REREG_IOAT, 0, &fib).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_mappings(), vec![(SDMA, DATA, 0x1000, Perm::RW)]);
    assert_eq!(cpu.deregister_ioat(fh).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_count(), 0);
}

#[test]
fn permanent_error_state() {
    let env = env_limit(100);
    let fh = env.enable();
    let mut t = env.tables(Designation::RegionThird);
    t.map(SDMA, DATA, Perm::RW).unwrap();
    let mut cpu = env.cpu();
    cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
    assert_eq!(env.host_count(), 1);
    env.zpci
        .set_permanent_error(FID, Pec::SYSTEM_ERROR)
        .unwrap();
    assert_eq!(env.host_count(), 0);
    assert_eq!(env.zpci.take_events()[0].pec, Pec::SYSTEM_ERROR);
    // STPCIFC: status 8; loads: blocked; RPCIT and MPCIFC: CC 3; CLP: permanent error.
    assert_eq!(
        cpu.stpcifc(fh, 0).unwrap().0.status,
        Some(status::FUNC_IN_ERROR)
    );
    assert_eq!(
        cpu.pcilg(fh, 15, 0, 4).unwrap().status,
        Some(status::BLOCKED)
    );
    assert_eq!(cpu.rpcit(fh, SDMA, 0x1000).unwrap().cc, Cc::InvalidHandle);
    assert_eq!(
        cpu.mpcifc(fh, oc::RESET_ERROR, 0, &Fib::default())
            .unwrap()
            .cc,
        Cc::InvalidHandle
    );
    assert_eq!(
        cpu.disable(fh),
        Err(viommu_s390_zpci::testing::ClpError::Response(
            viommu_s390_zpci::insn::clp::rc::SETPCIFN_ERR
        ))
    );
    // Only deconfiguring leaves it.
    env.zpci.deconfigure(FID).unwrap();
    env.zpci.configure(FID).unwrap();
    assert_eq!(
        env.zpci.function(FID).unwrap().state,
        FunctionState::Disabled
    );
    assert!(cpu.enable(env.fh0).is_ok());
}
