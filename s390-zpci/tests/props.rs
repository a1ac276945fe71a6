//! Property tests: after any guest table history and any RPCIT ranges, a global RPCIT leaves
//! the host equal to the coalesced guest truth with nothing leaked; hostile operands, FIBs
//! and CLP blocks never panic.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use viommu_s390_zpci::format::level;
use viommu_s390_zpci::insn::clp::{self, cmd};
use viommu_s390_zpci::testing::ZpciTables;
use viommu_s390_zpci::{Cc, Designation, Fh, Fib, FunctionState, status};
use viommu_shared::Perm;
use viommu_shared::dma::{DmaRequest, DmaTranslate};
use vm_memory::{Bytes, GuestAddress};

/// `default` cases, or `PROPTEST_CASES` when set (for long runs).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// DMA range exercised: 16 MiB = 16 segments of 256 pages.
const PAGES: u64 = 4096;
const PAL: u64 = SDMA + PAGES * 0x1000 - 1;
const MAX_RUN: u64 = 2 << 20;

#[derive(Clone, Debug)]
enum Op {
    /// Map `pages` pages from page `at` to guest page `gpa` onwards, contiguously.
    Map {
        at: u64,
        pages: u64,
        gpa: u64,
        perm: Perm,
    },
    /// Invalidate `pages` PTEs from page `at` (no RPCIT: lazy).
    Unmap { at: u64, pages: u64 },
    /// Set the invalid bit of segment entry `seg`.
    CutSegment { seg: u64 },
    /// Clear it again.
    RestoreSegment { seg: u64 },
    /// RPCIT over `pages` pages from page `at` (possibly unaligned bytes).
    Rpcit { at: u64, pages: u64, skew: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let perm = prop_oneof![Just(Perm::RW), Just(Perm::READ)];
    prop_oneof![
        5 => (0..PAGES, 1..48u64, 0..512u64, perm).prop_map(|(at, pages, g, perm)| Op::Map {
            at,
            pages,
            // Few frames so that neighbours are often contiguous.
            gpa: g * 8 + at % 8,
            perm,
        }),
        3 => (0..PAGES, 1..64u64).prop_map(|(at, pages)| Op::Unmap { at, pages }),
        1 => (0..PAGES / 256).prop_map(|seg| Op::CutSegment { seg }),
        1 => (0..PAGES / 256).prop_map(|seg| Op::RestoreSegment { seg }),
        4 => (0..PAGES, 1..600u64, 0..0x1000u64)
            .prop_map(|(at, pages, skew)| Op::Rpcit { at, pages, skew }),
    ]
}

/// The guest: tables plus the truth they encode.
struct Guest {
    t: ZpciTables,
    ptes: BTreeMap<u64, (u64, Perm)>,
    cut: BTreeSet<u64>,
}

impl Guest {
    fn truth(&self) -> BTreeMap<u64, (u64, Perm)> {
        self.ptes
            .iter()
            .filter(|(i, _)| !self.cut.contains(&((*i - SDMA) >> 20)))
            .map(|(i, v)| (*i, *v))
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Map {
                at,
                pages,
                gpa,
                perm,
            } => {
                for p in 0..pages.min(PAGES - at) {
                    let iova = SDMA + (at + p) * 0x1000;
                    let g = DATA + ((gpa + p) % 8192) * 0x1000;
                    self.t.map(iova, g, perm).unwrap();
                    self.ptes.insert(iova, (g, perm));
                    // Mapping through a cut segment entry makes it valid again.
                    self.cut.remove(&((iova - SDMA) >> 20));
                }
            }
            Op::Unmap { at, pages } => {
                for p in 0..pages.min(PAGES - at) {
                    let iova = SDMA + (at + p) * 0x1000;
                    self.t.unmap(iova).unwrap();
                    self.ptes.remove(&iova);
                }
            }
            Op::CutSegment { seg } => {
                let iova = SDMA + (seg << 20);
                self.t.entry_for(level::PAGE, iova).unwrap();
                self.t.invalidate_table_entry(level::SEGMENT, iova).unwrap();
                self.cut.insert(seg);
            }
            Op::RestoreSegment { seg } => {
                if self.cut.remove(&seg) {
                    self.t
                        .revalidate_table_entry(level::SEGMENT, SDMA + (seg << 20))
                        .unwrap();
                }
            }
            Op::Rpcit { .. } => {}
        }
    }
}

fn setup(limit: u32) -> (Env, Fh, Guest) {
    let env = env_limit(limit);
    let fh = env.enable();
    let t = env.tables(Designation::RegionThird);
    let mut cpu = env.cpu();
    assert_eq!(
        cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap().cc,
        Cc::Ok
    );
    let g = Guest {
        t,
        ptes: BTreeMap::new(),
        cut: BTreeSet::new(),
    };
    (env, fh, g)
}

/// Every host mapping is a piece of the truth: no stale translation survives.
fn host_within_truth(env: &Env, truth: &BTreeMap<u64, (u64, Perm)>) -> bool {
    env.host_mappings().iter().all(|&(iova, gpa, size, perm)| {
        (0..size / 0x1000)
            .all(|p| truth.get(&(iova + p * 0x1000)) == Some(&(gpa + p * 0x1000, perm)))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn global_rpcit_makes_host_equal_coalesced_truth(ops in prop::collection::vec(op(), 1..40)) {
        let (env, fh, mut g) = setup(65535);
        let mut cpu = env.cpu();
        for op in &ops {
            g.apply(op);
            if let Op::Rpcit { at, pages, skew } = *op {
                let start = SDMA + at * 0x1000 + skew;
                let c = cpu.rpcit(fh, start, pages * 0x1000).unwrap();
                prop_assert_eq!(c.cc, Cc::Ok);
            }
        }
        let c = cpu.rpcit(fh, SDMA, PAL - SDMA + 1).unwrap();
        prop_assert_eq!(c.cc, Cc::Ok);
        let truth = g.truth();
        prop_assert_eq!(env.host_mappings(), coalesce(&truth, MAX_RUN));
        let model: Vec<_> = env
            .zpci
            .host_mappings(FID)
            .unwrap()
            .iter()
            .map(|m| (m.iova, m.gpa, m.size, m.perm))
            .collect();
        prop_assert_eq!(model, env.host_mappings());
        prop_assert!(env.zpci.take_events().is_empty());
        // Nothing leaks: deregistration returns every entry.
        cpu.deregister_ioat(fh).unwrap();
        prop_assert_eq!(env.host_count(), 0);
        prop_assert_eq!(env.zpci.function(FID).unwrap().host_remaining, Some(65535));
    }

    #[test]
    fn small_host_never_keeps_stale_mappings(ops in prop::collection::vec(op(), 1..40)) {
        let (env, fh, mut g) = setup(24);
        let mut cpu = env.cpu();
        for op in &ops {
            g.apply(op);
            if let Op::Rpcit { at, pages, skew } = *op {
                let c = cpu.rpcit(fh, SDMA + at * 0x1000 + skew, pages * 0x1000).unwrap();
                prop_assert!(c.cc == Cc::Ok || c.status == Some(status::INSUFFICIENT_RESOURCES));
                if c.cc != Cc::Ok {
                    // Linux's recovery: a global RPCIT.
                    cpu.rpcit(fh, SDMA, PAL - SDMA + 1).unwrap();
                }
            }
        }
        let truth = g.truth();
        let want = coalesce(&truth, MAX_RUN);
        let c = cpu.rpcit(fh, SDMA, PAL - SDMA + 1).unwrap();
        // Status 16 exactly when the guest's live mappings need more entries than exist.
        prop_assert_eq!(c.cc == Cc::Ok, want.len() <= 24);
        prop_assert!(host_within_truth(&env, &truth));
        if c.cc == Cc::Ok {
            prop_assert_eq!(env.host_mappings(), want);
        }
        let info = env.zpci.function(FID).unwrap();
        prop_assert_eq!(info.host_remaining, Some((24 - env.host_count()) as u32));
        prop_assert_eq!(info.state, FunctionState::Enabled);
    }
}

/// One hostile instruction.
#[derive(Clone, Debug)]
enum Insn {
    Rpcit { r1: u8, r2: u8 },
    Pcilg { r1: u8, r2: u8 },
    Pcistg { r1: u8, r2: u8 },
    Pcistb { r1: u8, r3: u8, addr: u64 },
    Mpcifc { r1: u8, addr: u64, fib: Vec<u8> },
    Stpcifc { r1: u8, addr: u64 },
    Clp { r2: u8, lps: u8, block: Vec<u8> },
    Dma { iova: u64, write: bool },
    Entry { lvl: u8, iova_page: u64, value: u64 },
}

fn reg_value(fhs: Vec<u32>) -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (
            prop::sample::select(fhs),
            0..16u64,
            0..0x2000u64,
            any::<bool>()
        )
            .prop_map(|(fh, pcias, len, en)| {
                let fh = if en { fh | 0x8000_0000 } else { fh };
                (u64::from(fh) << 32) | (pcias << 16) | len
            }),
        (0..0x1000u64).prop_map(|p| SDMA + p * 0x1000),
        Just(SCRATCH),
        (0..16u64).prop_map(|oc| (u64::from(0x8000_0001u32) << 32) | oc),
    ]
}

fn insn() -> impl Strategy<Value = Insn> {
    let r = 0..16u8;
    let addr = prop_oneof![
        any::<u64>(),
        (0..0x4000u64).prop_map(|o| SCRATCH + o),
        Just(RAM - 8)
    ];
    let clp_block = (
        prop_oneof![Just(32u16), any::<u16>()],
        0..8u16,
        prop::collection::vec(any::<u8>(), 16),
        prop_oneof![
            Just(64u16),
            Just(4064u16),
            Just(48u16),
            Just(0x100u16),
            any::<u16>()
        ],
    )
        .prop_map(|(len, command, body, rsp)| {
            let mut b = vec![0u8; 48];
            b[0..2].copy_from_slice(&len.to_be_bytes());
            b[2..4].copy_from_slice(&command.to_be_bytes());
            b[16..32].copy_from_slice(&body);
            b[32..34].copy_from_slice(&rsp.to_be_bytes());
            b
        });
    let fib = prop::collection::vec(any::<u8>(), Fib::SIZE).prop_map(|mut f| {
        // Mostly format 0 so the operation is reached.
        if f[1] & 3 != 0 {
            f[0] = 0;
        }
        f
    });
    prop_oneof![
        3 => (r.clone(), r.clone()).prop_map(|(r1, r2)| Insn::Rpcit { r1, r2 }),
        2 => (r.clone(), r.clone()).prop_map(|(r1, r2)| Insn::Pcilg { r1, r2 }),
        2 => (r.clone(), r.clone()).prop_map(|(r1, r2)| Insn::Pcistg { r1, r2 }),
        1 => (r.clone(), r.clone(), addr.clone()).prop_map(|(r1, r3, addr)| Insn::Pcistb { r1, r3, addr }),
        3 => (r.clone(), addr.clone(), fib).prop_map(|(r1, addr, fib)| Insn::Mpcifc { r1, addr, fib }),
        1 => (r.clone(), addr.clone()).prop_map(|(r1, addr)| Insn::Stpcifc { r1, addr }),
        3 => (r.clone(), 0..4u8, clp_block).prop_map(|(r2, lps, block)| Insn::Clp { r2, lps, block }),
        2 => (prop_oneof![any::<u64>(), (0..0x1000u64).prop_map(|p| SDMA + p * 0x1000 + 8)], any::<bool>())
            .prop_map(|(iova, write)| Insn::Dma { iova, write }),
        2 => (0..3u8, 0..0x1000u64, any::<u64>()).prop_map(|(lvl, iova_page, value)| Insn::Entry { lvl, iova_page, value }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn hostile_operands_never_panic(
        seq in prop::collection::vec((insn(), prop::collection::vec(any::<u64>(), 16)), 1..30),
        picks in prop::collection::vec(0..5usize, 16),
    ) {
        // A host that, like VFIO, refuses guest-physical addresses outside RAM.
        let mut host = viommu_shared::host::SimHostConfig::s390(HOST_APERTURE).with_entry_limit(64);
        host.backed = Some(vec![viommu_shared::AddrRange::new(0, RAM)]);
        let config = viommu_s390_zpci::Config {
            aperture: viommu_s390_zpci::AperturePolicy::Full,
            ..viommu_s390_zpci::Config::default()
        };
        let env = env_with(config, Some(host));
        let fh = env.enable();
        let mut t = env.tables(Designation::RegionThird);
        t.map_range(SDMA, DATA, 16, Perm::RW).unwrap();
        env.cpu().register_ioat(fh, SDMA, PAL, t.iota().0).unwrap();
        let fhs = vec![fh.0, env.fh0.0, 0x8000_0002, 0];
        let interesting = reg_value(fhs);
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for (insn, raw) in seq {
            // Registers: a mix of raw values and interesting ones.
            let mut regs = [0u64; 16];
            for i in 0..16 {
                regs[i] = if picks[i] == 0 {
                    raw[i]
                } else {
                    interesting.new_tree(&mut runner).unwrap().current()
                };
            }
            let res = match insn {
                Insn::Rpcit { r1, r2 } => Some(env.zpci.rpcit(r1, r2, &regs)),
                Insn::Pcilg { r1, r2 } => Some(env.zpci.pcilg(r1, r2, &regs)),
                Insn::Pcistg { r1, r2 } => Some(env.zpci.pcistg(r1, r2, &regs)),
                Insn::Pcistb { r1, r3, addr } => Some(env.zpci.pcistb(&env.mem, r1, r3, addr, &regs)),
                Insn::Mpcifc { r1, addr, fib } => {
                    let _ = env.mem.write_slice(&fib, GuestAddress(addr));
                    Some(env.zpci.mpcifc(&env.mem, r1, addr, &regs))
                }
                Insn::Stpcifc { r1, addr } => Some(env.zpci.stpcifc(&env.mem, r1, addr, &regs)),
                Insn::Clp { r2, lps, block } => {
                    env.mem.write_slice(&block, GuestAddress(SCRATCH)).unwrap();
                    regs[usize::from(r2)] = SCRATCH;
                    Some(env.zpci.clp(&env.mem, r2, lps, &regs))
                }
                Insn::Dma { iova, write } => {
                    let perm = if write { Perm::WRITE } else { Perm::READ };
                    let req = DmaRequest { requester_id: FID.0, pasid: None, iova, perm };
                    if let Ok(tr) = env.zpci.translate(&req) {
                        prop_assert!(tr.is_well_formed(iova));
                        prop_assert!(tr.perm.allows(perm));
                    }
                    None
                }
                Insn::Entry { lvl, iova_page, value } => {
                    if let Ok(Some(ea)) = t.find(lvl, SDMA + iova_page * 0x1000) {
                        // Earlier garbage may point the walk outside RAM.
                        let _ = t.store(ea, value);
                    }
                    None
                }
            };
            if let Some(Ok(c)) = res {
                prop_assert!(c.writes.iter().all(|w| w.reg < 16));
                if c.status.is_some() {
                    prop_assert_eq!(c.cc, Cc::Error);
                }
            }
        }
        // The model is still consistent: every host mapping is backed by RAM and inside
        // the host aperture, and the host agrees with the model's record.
        let model = env.zpci.host_mappings(FID).unwrap();
        prop_assert_eq!(model.len(), env.host_count());
        for m in model {
            prop_assert!(m.gpa + m.size <= RAM);
            prop_assert!(HOST_APERTURE.contains(m.iova));
        }
        let _ = env.zpci.take_events();
        env.zpci.remove_function(FID).unwrap();
        prop_assert_eq!(env.host_count(), 0);
    }

    #[test]
    fn random_clp_blocks_never_panic(block in prop::collection::vec(any::<u8>(), 0..9000), hdr in (16u16..8200, 0..8u16, 0u16..8200)) {
        let env = env_with(viommu_s390_zpci::Config::default(), None);
        let mut block = block;
        block.resize(block.len().max(64), 0);
        let (len, command, rsp) = hdr;
        block[0..2].copy_from_slice(&(len & !7).to_be_bytes());
        block[2..4].copy_from_slice(&command.to_be_bytes());
        let at = usize::from(len & !7);
        if at + 2 <= block.len() {
            block[at..at + 2].copy_from_slice(&(rsp & !7).to_be_bytes());
        }
        env.mem.write_slice(&block, GuestAddress(SCRATCH)).unwrap();
        let mut regs = [0u64; 16];
        regs[2] = SCRATCH;
        let _ = env.zpci.clp(&env.mem, 2, clp::LPS_PCI, &regs);
        // A proper LIST PCI still works afterwards.
        let list = env.cpu().list_pci().unwrap();
        prop_assert_eq!(list.len(), 1);
    }
}

#[test]
fn clp_block_at_the_end_of_memory() {
    let env = env_with(viommu_s390_zpci::Config::default(), None);
    let block = clp::request(cmd::LIST_PCI, [0; 16], 4064);
    // The response runs past the end of RAM.
    let at = RAM - 64;
    env.mem.write_slice(&block[..64], GuestAddress(at)).unwrap();
    let mut regs = [0u64; 16];
    regs[2] = at;
    assert!(env.zpci.clp(&env.mem, 2, clp::LPS_PCI, &regs).is_err());
}
