//! Property tests: after any guest table history and any RPCIT ranges, a global RPCIT leaves
//! the host equal to the coalesced guest truth with nothing leaked; with a small host, no
//! RPCIT leaves a stale mapping in its range and status 16 comes exactly when the truth does
//! not fit.
//!
//! The steps and oracles are those of the `zpci` fuzz target
//! ([`viommu_s390_zpci::fuzz_support::model`]), restricted here to structured table edits
//! and RPCITs (proptest shrinks failures). Hostile operands, FIBs and CLP blocks are the
//! fuzz target's `Insn` steps, replayed by `tests/fuzz_replay.rs`.

mod common;

use common::*;
use proptest::prelude::*;
use viommu_s390_zpci::fuzz_support::model::{Op, PAGES, Setup, World};
use viommu_s390_zpci::insn::clp::{self, cmd};
use viommu_shared::Perm;
use vm_memory::{Bytes, GuestAddress};

/// `default` cases, or `PROPTEST_CASES` when set (for long runs).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn op() -> impl Strategy<Value = Op> {
    let perm = prop_oneof![Just(Perm::RW), Just(Perm::READ)];
    let page = 0..PAGES as u16;
    prop_oneof![
        5 => (page.clone(), 0..48u8, 0..512u16, perm).prop_map(|(at, pages, gpa, perm)| Op::Map {
            at,
            pages,
            // Few frames so that neighbours are often contiguous.
            gpa,
            ro: perm == Perm::READ,
        }),
        3 => (page.clone(), 0..64u8).prop_map(|(at, pages)| Op::Unmap { at, pages }),
        1 => (0..16u8).prop_map(|seg| Op::CutSegment { seg }),
        1 => (0..16u8).prop_map(|seg| Op::RestoreSegment { seg }),
        4 => (page, 0..600u16, 0..0x1000u16)
            .prop_map(|(at, pages, skew)| Op::Rpcit { at, pages, skew }),
    ]
}

/// Runs `ops` on a host of the limit `setup.limit` selects, checks no error event was
/// raised, then the final global-RPCIT oracles.
fn check(limit: u8, ops: &[Op]) -> Result<(), TestCaseError> {
    let setup = Setup {
        designation: 0,
        limit,
        reclaim: false,
        relaxed: false,
        blank: false,
    };
    let fail = |e: String| TestCaseError::fail(e);
    let mut w = World::new(setup).map_err(fail)?;
    for (i, op) in ops.iter().enumerate() {
        w.step(op)
            .map_err(|e| fail(format!("step {i} {op:?}: {e}")))?;
    }
    prop_assert!(w.zpci.take_events().is_empty());
    w.finish().map_err(fail)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn global_rpcit_makes_host_equal_coalesced_truth(ops in prop::collection::vec(op(), 1..40)) {
        // Limit selector 0: 65535 entries, every RPCIT answers CC 0.
        check(0, &ops)?;
    }

    #[test]
    fn small_host_never_keeps_stale_mappings(ops in prop::collection::vec(op(), 1..40)) {
        // Limit selector 1: 24 entries.
        check(1, &ops)?;
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
