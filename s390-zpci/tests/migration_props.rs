//! The migration property (`viommu_s390_zpci::fuzz_support::migration`): random hostile
//! scenarios, saved mid-way (with error events pending, the function in any state, with or
//! without an address space, measuring or not), restored into a fresh model with a fresh
//! `SimHost`, continue exactly like the unmigrated run: same architectural state and the
//! same condition codes after every step, same guest memory, same host mappings after a
//! global RPCIT. And a destination host too small for what the guest maps answers the next
//! RPCIT with CC 1 status 16.

use proptest::prelude::*;
use viommu_s390_zpci::fuzz_support::migration::{Migration, run_migrated};
use viommu_s390_zpci::fuzz_support::model::{FID, Input, Op, PAL, SDMA, Setup, World};
use viommu_s390_zpci::{Cc, ModelError, status};
use viommu_shared::fuzz_support::migration::every_split_of_random_inputs;

/// A Linux-like guest: the registered setup, and only table edits, RPCITs, DMA,
/// re-registration and host changes (hostile inputs keep everything).
fn linux_like(mut input: Input) -> Input {
    input.setup.blank = false;
    input
        .ops
        .retain(|op| !matches!(op, Op::Insn { .. } | Op::Entry { .. }));
    input
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn migrated_run_matches(data in proptest::collection::vec(any::<u8>(), 0..700),
                            split in 0usize..64, attach_after: bool, hostile: bool) {
        if let Some(input) = Input::decode(&data) {
            let input = if hostile { input } else { linux_like(input) };
            let m = Migration { split, attach_after, limit: None };
            if let Err(e) = run_migrated(&input, m) {
                prop_assert!(false, "{e}\n{input:#?}\n{m:?}");
            }
        }
    }
}

fn setup() -> Setup {
    Setup {
        designation: 0,
        limit: 0, // 65535 entries
        reclaim: false,
        relaxed: false,
        blank: false,
    }
}

/// Migration with an error event pending (a DMA fault put the function in the error state,
/// the guest recovers after the migration) and with mappings registered.
#[test]
fn pending_error_event_and_mappings_survive() {
    let ops = vec![
        Op::Map {
            at: 0,
            pages: 40,
            gpa: 3,
            ro: false,
        },
        Op::Rpcit {
            at: 0,
            pages: 40,
            skew: 0,
        },
        Op::Map {
            at: 100,
            pages: 10,
            gpa: 9,
            ro: true,
        },
        // --- migration here (split 3): pages 100..110 mapped, not yet refreshed ---
        Op::Rpcit {
            at: 100,
            pages: 10,
            skew: 0,
        },
        // A write through a read-only page: error event, error state, guest recovery.
        Op::Dma {
            iova: SDMA + 100 * 0x1000,
            write: true,
        },
        Op::Dma {
            iova: SDMA + 0x1000,
            write: true,
        },
    ];
    let input = Input {
        setup: setup(),
        ops,
    };
    for split in 0..=6 {
        for attach_after in [false, true] {
            let m = Migration {
                split,
                attach_after,
                limit: None,
            };
            run_migrated(&input, m).unwrap_or_else(|e| panic!("split {split}: {e}"));
        }
    }
}

/// A destination host with a smaller entry limit than the guest's mappings need: the
/// restore reports the exhaustion (the function keeps its registration and a full re-sync
/// pending), the guest's next RPCIT answers CC 1 status 16 (A.7.3), and once the guest
/// unmaps enough, a global RPCIT succeeds and the host holds exactly what fits.
#[test]
fn smaller_destination_host_answers_status_16() {
    for attach_after in [false, true] {
        let mut w = World::new(setup()).unwrap();
        // 8 separate runs (non-contiguous guest frames): 8 host entries.
        for i in 0..8u16 {
            // `pages % 48 + 1` = 4 pages.
            w.step(&Op::Map {
                at: i * 64,
                pages: 3,
                gpa: i * 7,
                ro: false,
            })
            .unwrap();
        }
        w.step(&Op::Rpcit {
            at: 0,
            pages: 599,
            skew: 0,
        })
        .unwrap();
        assert_eq!(w.host.with(|h| h.mapping_count()), 8);
        let oor = w
            .migrate(Migration {
                split: 0,
                attach_after,
                limit: Some(3),
            })
            .unwrap();
        assert!(oor, "a 3-entry host cannot hold 8 runs");
        let info = w.zpci.function(FID).unwrap();
        assert!(info.full_sync_pending);
        assert!(info.ioat.is_some());
        assert!(w.host.with(|h| h.mapping_count()) <= 3);
        // The next RPCIT, whatever its range: CC 1 status 16.
        let c = w.cpu().rpcit(w.fh(), SDMA, 0x1000).unwrap();
        assert_eq!(
            (c.cc, c.status),
            (Cc::Error, Some(status::INSUFFICIENT_RESOURCES))
        );
        // The guest unmaps all but two runs; a global RPCIT then fits.
        for i in 2..8u16 {
            // `pages % 64 + 1` = 4 pages.
            w.step(&Op::Unmap {
                at: i * 64,
                pages: 3,
            })
            .unwrap();
        }
        let c = w.cpu().rpcit(w.fh(), SDMA, PAL - SDMA + 1).unwrap();
        assert_eq!(c.cc, Cc::Ok, "{c:?}");
        assert_eq!(w.host.with(|h| h.mapping_count()), 2);
        assert!(!w.zpci.function(FID).unwrap().full_sync_pending);
        w.finish().unwrap();
    }
}

/// A restore that does not fit the destination's plugged functions is refused with a typed
/// error and leaves every function reset.
#[test]
fn restore_onto_other_functions_is_refused() {
    let w = World::new(setup()).unwrap();
    let bytes = w.zpci.save_bytes();
    let other = viommu_s390_zpci::Zpci::new(
        w.zpci.config().clone(),
        w.mem.clone(),
        std::sync::Arc::new(viommu_shared::regs::RecordingMsiSink::new()),
    );
    let e = other.restore_bytes(&bytes).unwrap_err();
    assert!(matches!(e, ModelError::Snapshot(_)), "{e:?}");
}

/// Migration at every fifth split point of pseudo-random inputs, including destinations
/// whose host holds fewer entries.
#[test]
fn every_split_and_smaller_destination_hosts() {
    every_split_of_random_inputs(12, Input::decode, linux_like, |i| i.ops.len(), run_migrated);
}

/// Streams naming a function twice, or a handle index twice, are refused and leave the
/// plugged functions as they were plugged.
#[test]
fn duplicate_functions_or_handles_are_refused() {
    use std::sync::Arc;
    use viommu_s390_zpci::{Config, Fid, FunctionConfig, NoDevice, Zpci};
    use viommu_shared::regs::RecordingMsiSink;
    use viommu_shared::snapshot::SnapshotError;
    let mem = viommu_shared::testing::guest_memory(&[(0, 1 << 20)]);
    let z = Zpci::new(Config::default(), mem, Arc::new(RecordingMsiSink::new()));
    for fid in [1, 2] {
        z.add_function(FunctionConfig::new(Fid(fid), fid), Box::new(NoDevice))
            .unwrap();
    }
    let fresh = z.save();
    let mut dup_fid = fresh.clone();
    dup_fid.functions[1] = dup_fid.functions[0].clone();
    dup_fid.functions[1].fh = 7;
    let mut dup_fh = fresh.clone();
    dup_fh.functions[1].fh = dup_fh.functions[0].fh;
    for (bad, field) in [(dup_fid, "functions"), (dup_fh, "fh")] {
        assert_eq!(
            z.restore(&bad),
            Err(ModelError::Snapshot(SnapshotError::Invalid { field }))
        );
        assert_eq!(z.save(), fresh);
        assert_eq!(z.fids(), vec![Fid(1), Fid(2)]);
    }
    // A valid stream round-trips.
    z.restore_bytes(&fresh.to_bytes()).unwrap();
    assert_eq!(z.save(), fresh);
}
