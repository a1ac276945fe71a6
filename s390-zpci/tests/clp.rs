//! CLP (A.4): block checks, LIST PCI, QUERY PCI FUNCTION, QUERY PCI FUNCTION GROUP, SET PCI
//! FUNCTION.

mod common;

use std::sync::Arc;

use common::*;
use viommu_s390_zpci::insn::clp::{self, cmd, rc, set_oc};
use viommu_s390_zpci::testing::{ClpError, MemFunction};
use viommu_s390_zpci::{
    AperturePolicy, Cc, Config, Fh, Fid, FunctionConfig, FunctionState, GroupConfig, NoDevice,
    ProgramCheck, RefreshPolicy, Zpci,
};
use viommu_shared::host::{SharedSimHost, SimHostConfig};
use viommu_shared::regs::NullMsiSink;
use viommu_shared::testing::guest_memory;
use vm_memory::{Bytes, GuestAddress};

/// Runs CLP on a raw block at SCRATCH; returns the result and the response bytes.
fn raw_clp(env: &Env, block: &[u8], lps: u8) -> (Result<Cc, ProgramCheck>, Vec<u8>) {
    env.mem.write_slice(block, GuestAddress(SCRATCH)).unwrap();
    let mut regs = [0u64; 16];
    regs[4] = SCRATCH;
    let r = env.zpci.clp(&env.mem, 4, lps, &regs).map(|c| c.cc);
    let mut out = vec![0u8; block.len()];
    env.mem.read_slice(&mut out, GuestAddress(SCRATCH)).unwrap();
    (r, out)
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

#[test]
fn block_length_checks_are_operand_exceptions() {
    let env = env_with(Config::default(), None);
    let body = [0u8; 16];
    // Request length 8, 12 (not multiple of 8), 8192.
    for req_len in [8u16, 12, 8192] {
        let mut b = clp::request(cmd::LIST_PCI, body, 64);
        b[0..2].copy_from_slice(&req_len.to_be_bytes());
        b.resize(9000, 0);
        let (r, _) = raw_clp(&env, &b, clp::LPS_PCI);
        assert_eq!(r, Err(ProgramCheck::Operand), "req len {req_len}");
    }
    // Response length 0, 12, 8184; request + response > 8192.
    for rsp_len in [0u16, 12, 8184, 8168] {
        let mut b = clp::request(cmd::LIST_PCI, body, 64);
        b[32..34].copy_from_slice(&rsp_len.to_be_bytes());
        if rsp_len == 8168 {
            b[0..2].copy_from_slice(&40u16.to_be_bytes());
            b[32..34].copy_from_slice(&0u16.to_be_bytes());
            b[40..42].copy_from_slice(&8160u16.to_be_bytes());
        }
        b.resize(9000, 0);
        let (r, _) = raw_clp(&env, &b, clp::LPS_PCI);
        assert_eq!(r, Err(ProgramCheck::Operand), "rsp len {rsp_len}");
    }
    // Block beyond guest memory: addressing exception from the operand access.
    let mut regs = [0u64; 16];
    regs[2] = RAM - 2;
    assert_eq!(
        env.zpci.clp(&env.mem, 2, clp::LPS_PCI, &regs),
        Err(ProgramCheck::Addressing)
    );
}

#[test]
fn request_length_format_and_command_codes() {
    let env = env_with(Config::default(), None);
    // A 40-byte request: response code LEN, CC 0.
    let mut b = vec![0u8; 40 + 64];
    b[0..2].copy_from_slice(&40u16.to_be_bytes());
    b[2..4].copy_from_slice(&cmd::LIST_PCI.to_be_bytes());
    b[40..42].copy_from_slice(&64u16.to_be_bytes());
    let (r, out) = raw_clp(&env, &b, clp::LPS_PCI);
    assert_eq!(r, Ok(Cc::Ok));
    assert_eq!(be16(&out, 42), rc::LEN);
    // Unknown command; wrong LPS; format 1.
    let (_, out) = raw_clp(&env, &clp::request(0x77, [0; 16], 64), clp::LPS_PCI);
    assert_eq!(be16(&out, 34), rc::CMD);
    let (_, out) = raw_clp(&env, &clp::request(cmd::LIST_PCI, [0; 16], 64), 0);
    assert_eq!(be16(&out, 34), rc::CMD);
    let mut b = clp::request(cmd::LIST_PCI, [0; 16], 64);
    b[7] = 1;
    let (_, out) = raw_clp(&env, &b, clp::LPS_PCI);
    assert_eq!(be16(&out, 34), rc::FMT);
    // The request is left untouched; the response length field is the guest's.
    assert_eq!(&out[..32], &b[..32]);
}

fn three_functions() -> (Env, Fh, Fh) {
    let env = env_with(Config::default(), None);
    let mut c2 = FunctionConfig::new(Fid(0x20), 2);
    c2.initial_state = FunctionState::Standby;
    let fh2 = env
        .zpci
        .add_function(
            c2,
            Box::new(MemFunction::new(0x1af4, 0x1041, [0; 6], [0; 6])),
        )
        .unwrap();
    let fh3 = env
        .zpci
        .add_function(FunctionConfig::new(Fid(0x30), 3), Box::new(NoDevice))
        .unwrap();
    (env, fh2, fh3)
}

#[test]
fn list_pci_lists_every_function_with_resume_tokens() {
    let (env, fh2, fh3) = three_functions();
    let mut cpu = env.cpu();
    let all = cpu.list_pci().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        (
            all[0].fid,
            all[0].vendor_id,
            all[0].device_id,
            all[0].configured,
            all[0].fh
        ),
        (FID.0, 0x1014, 0x04ed, true, env.fh0)
    );
    assert_eq!(
        (all[1].fid, all[1].configured, all[1].fh),
        (0x20, false, fh2)
    );
    assert_eq!(
        (all[2].fid, all[2].vendor_id, all[2].fh),
        (0x30, 0xffff, fh3)
    );
    // One entry per call: the resume token walks the list.
    let mut body = [0u8; 16];
    let (c, rsp) = cpu.clp(cmd::LIST_PCI, body, 48).unwrap();
    assert_eq!(c.cc, Cc::Ok);
    assert_eq!(clp::response_code(&rsp), rc::OK);
    assert_eq!(be16(&rsp, 0), 48);
    let token = u64::from_be_bytes(rsp[16..24].try_into().unwrap());
    assert_eq!(token, u64::from(fh2.index()));
    assert_eq!(be16(&rsp, 28), 4096);
    assert_eq!((rsp[30], rsp[31]), (1, 16));
    body[..8].copy_from_slice(&token.to_be_bytes());
    let (_, rsp) = cpu.clp(cmd::LIST_PCI, body, 48).unwrap();
    assert_eq!(u32::from_be_bytes(rsp[40..44].try_into().unwrap()), 0x20);
    // Bad resume token (checked before the length).
    body[..8].copy_from_slice(&0x999u64.to_be_bytes());
    let (_, rsp) = cpu.clp(cmd::LIST_PCI, body, 8).unwrap();
    assert_eq!(clp::response_code(&rsp), rc::LISTPCI_BADRT);
    // Too short for one entry: needs 8K.
    let (_, rsp) = cpu.clp(cmd::LIST_PCI, [0; 16], 40).unwrap();
    assert_eq!(clp::response_code(&rsp), rc::K8);
    // Not a whole number of entries: LEN and CC 3.
    let (c, rsp) = cpu.clp(cmd::LIST_PCI, [0; 16], 56).unwrap();
    assert_eq!(
        (c.cc, clp::response_code(&rsp)),
        (Cc::InvalidHandle, rc::LEN)
    );
    // Reserved request field.
    let mut b = clp::request(cmd::LIST_PCI, [0; 16], 64);
    b[9] = 1;
    let (_, out) = raw_clp(&env, &b, clp::LPS_PCI);
    assert_eq!(be16(&out, 34), rc::RESNOT0);
}

#[test]
fn set_pci_function_enable_disable() {
    let (env, fh2, _) = three_functions();
    let mut cpu = env.cpu();
    let fh = cpu.enable(env.fh0).unwrap();
    assert_eq!(fh, env.fh0.with_enable(true));
    assert_eq!(
        env.zpci.function(FID).unwrap().state,
        FunctionState::Enabled
    );
    // The old handle no longer names the function; enabling again is refused.
    assert_eq!(
        cpu.enable(env.fh0),
        Err(ClpError::Response(rc::SETPCIFN_FH))
    );
    assert_eq!(cpu.enable(fh), Err(ClpError::Response(rc::SETPCIFN_FHOP)));
    // A standby function cannot be enabled (errata 8).
    assert_eq!(cpu.enable(fh2), Err(ClpError::Response(rc::SETPCIFN_FHOP)));
    // ndas 0 and 2.
    let f3 = Fh::disabled(3);
    assert_eq!(
        cpu.set_pci_fn(f3, set_oc::ENABLE, 0),
        Err(ClpError::Response(rc::SETPCIFN_DMAAS))
    );
    assert_eq!(
        cpu.set_pci_fn(f3, set_oc::ENABLE, 2),
        Err(ClpError::Response(rc::SETPCIFN_RES))
    );
    // Unknown operation (enable MIO).
    assert_eq!(
        cpu.set_pci_fn(fh, 2, 1),
        Err(ClpError::Response(rc::SETPCIFN_FHOP))
    );
    // Disable resets the device and returns the disabled handle.
    let d = cpu.disable(fh).unwrap();
    assert_eq!(d, env.fh0);
    assert_eq!(env.dev.with(|s| s.resets), 1);
    assert_eq!(cpu.disable(d), Err(ClpError::Response(rc::SETPCIFN_FHOP)));
    // Configure the standby one, then it can be enabled.
    env.zpci.configure(Fid(0x20)).unwrap();
    assert_eq!(cpu.enable(fh2).unwrap(), fh2.with_enable(true));
}

#[test]
fn query_function_reports_identity_bars_and_dma_range() {
    let mut fcfg = FunctionConfig::new(FID, 0xabcd);
    fcfg.pchid = 0x1f0;
    fcfg.pft = 5;
    fcfg.util_str = b"NVMe".to_vec();
    let env = env_fn(
        Config::default(),
        Some(SimHostConfig::s390(HOST_APERTURE).with_entry_limit(1000)),
        fcfg,
    );
    let mut cpu = env.cpu();
    let q = cpu.query_function(env.fh0).unwrap();
    assert_eq!(
        (q.fid, q.uid, q.pfgid, q.pchid, q.pft),
        (FID.0, 0xabcd, 0xff, 0x1f0, 5)
    );
    assert_eq!(q.bar_size[0], 12);
    assert_eq!(q.bar_size[1], 0);
    // BAR 0 as config space holds it (little-endian), as Linux reads it.
    assert_eq!(q.bar[0], 0xc000_0004u32.to_le_bytes());
    assert_eq!(q.fmb_len, 16);
    assert_eq!(q.flags & 1, 1);
    assert_eq!(&q.util_str[..4], b"NVMe");
    // No relaxed translation: the range is shrunk to the host's 1000 entries (A.13).
    assert_eq!((q.sdma, q.edma), (SDMA, SDMA + 1000 * 0x1000 - 1));
    assert_eq!(env.zpci.function(FID).unwrap().dma_range, (q.sdma, q.edma));
    // Unknown handle.
    assert_eq!(
        cpu.query_function(Fh(0x1234)),
        Err(ClpError::Response(rc::SETPCIFN_FH))
    );
    // Response too short.
    let mut body = [0u8; 16];
    body[..4].copy_from_slice(&env.fh0.0.to_be_bytes());
    let (_, rsp) = cpu.clp(cmd::QUERY_PCI_FN, body, 0x40).unwrap();
    assert_eq!(clp::response_code(&rsp), rc::LEN);
}

#[test]
fn dma_range_without_host_or_with_full_policy() {
    let env = env_with(Config::default(), None);
    let q = env.cpu().query_function(env.fh0).unwrap();
    // Region-third tables reach 2^42.
    assert_eq!((q.sdma, q.edma), (SDMA, (1 << 42) - 1));
    let env = env_limit(1000);
    let q = env.cpu().query_function(env.fh0).unwrap();
    assert_eq!(
        (q.sdma, q.edma),
        (HOST_APERTURE.start, HOST_APERTURE.end - 1)
    );
    // Relaxed translation offered: not shrunk either.
    let config = Config {
        groups: vec![GroupConfig {
            relaxed_translation: true,
            ..GroupConfig::default()
        }],
        ..Config::default()
    };
    let env = env_with(
        config,
        Some(SimHostConfig::s390(HOST_APERTURE).with_entry_limit(10)),
    );
    let q = env.cpu().query_function(env.fh0).unwrap();
    assert_eq!(q.edma, HOST_APERTURE.end - 1);
}

#[test]
fn query_group_refresh_rtr_and_dtsm() {
    let mem = guest_memory(&[(0, RAM as usize)]);
    let config = Config {
        groups: vec![
            GroupConfig::default(),
            GroupConfig {
                pfgid: 0x10,
                relaxed_translation: true,
                max_designation: viommu_s390_zpci::Designation::RegionFirst,
                maxstbl: 0x1000,
                ..GroupConfig::default()
            },
            GroupConfig {
                pfgid: 0x11,
                refresh: RefreshPolicy::Always,
                ..GroupConfig::default()
            },
        ],
        aperture: AperturePolicy::Full,
        ..Config::default()
    };
    let zpci = Zpci::new(config, mem.clone(), Arc::new(NullMsiSink));
    let mut f = FunctionConfig::new(Fid(1), 1);
    f.pfgid = 0x10;
    zpci.add_function(f, Box::new(NoDevice)).unwrap();
    let mut bad = FunctionConfig::new(Fid(2), 2);
    bad.pfgid = 0x42;
    assert!(zpci.add_function(bad, Box::new(NoDevice)).is_err());
    let mut cpu = viommu_s390_zpci::testing::GuestCpu::new(&zpci, &mem, SCRATCH);
    let g = cpu.query_group(0xff).unwrap();
    assert_eq!(
        (g.noi, g.maxstbl, g.mui, g.dtsm, g.msia, g.flags),
        (128, 128, 4000, 0x40, 0xfe00_0000_0000_0000, 0)
    );
    // Emulated only: no refresh; RTR and deeper tables advertised.
    let g = cpu.query_group(0x10).unwrap();
    assert_eq!((g.flags, g.dtsm, g.maxstbl), (0x20, 0x4c, 0x1000));
    // A host attached to a function of the group turns refresh on.
    let host = SharedSimHost::new(SimHostConfig::s390(HOST_APERTURE));
    zpci.attach_host(Fid(1), Box::new(host)).unwrap();
    assert_eq!(cpu.query_group(0x10).unwrap().flags, 0x21);
    zpci.detach_host(Fid(1)).unwrap();
    assert_eq!(cpu.query_group(0x10).unwrap().flags, 0x20);
    assert_eq!(cpu.query_group(0x11).unwrap().flags, 0x01);
    assert_eq!(
        cpu.query_group(0x12),
        Err(ClpError::Response(rc::QUERYPCIFG_PFGID))
    );
}
