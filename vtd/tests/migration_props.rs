//! The migration property (`viommu_vtd::fuzz_support::migration`): random hostile
//! scenarios, saved mid-way (often with fault records set, descriptors queued behind an
//! invalidation queue error, translation and queued invalidation in any state), restored into
//! a fresh unit with a fresh `SimHost`, continue exactly like the unmigrated run: same
//! architectural state after every step, same guest memory, same host mappings after the
//! final flush.

use proptest::prelude::*;
use viommu_shared::fuzz_support::migration::every_split_of_random_inputs;
use viommu_vtd::fuzz_support::migration::{Migration, run_migrated};
use viommu_vtd::fuzz_support::model::{DEV, Desc, Input, Op, Setup};

/// A Linux-like guest: the booted setup, and only table updates, flushes, well-formed
/// descriptors, DMA, reads, resets and host changes (hostile inputs keep everything).
fn linux_like(mut input: Input) -> Input {
    input.setup.blank = false;
    input.ops.retain(|op| match op {
        Op::Descriptor { desc, .. } => matches!(desc, Desc::Valid { .. }),
        Op::Write { .. } | Op::Poke { .. } => false,
        _ => true,
    });
    input
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

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

/// A Linux-like run with the snapshot taken while a fault record is set and descriptors are
/// queued behind an invalidation queue error (a raw, invalid descriptor stops the queue; the
/// guest clears IQE after the migration and the queued flush runs on the destination).
#[test]
fn pending_fault_and_queued_invalidations_survive() {
    for scalable in [false, true] {
        let setup = Setup {
            scalable,
            levels: 1,
            flavour: 0,
            limit: 63,
            blank: false,
        };
        let wait = Op::Descriptor {
            desc: Desc::Valid {
                kind: 7,
                did: 1,
                sid: 0,
                page: 0,
                am: 3,
                flag: false,
                pasid: 0,
            },
            ring: false,
        };
        let ops = vec![
            Op::MapPages {
                index: 20,
                pages: 7,
                frame: 40,
                perm: 2,
            },
            // A fault: IOVA 0x40000 is not mapped.
            Op::Dma {
                sid: DEV,
                pasid: None,
                iova: 0x4_0000,
                write: false,
            },
            // An invalid descriptor stops the queue (IQE); a global flush and a wait are
            // queued behind it.
            Op::Descriptor {
                desc: Desc::Raw { lo: 0xf, hi: 0 },
                ring: true,
            },
            Op::Descriptor {
                desc: Desc::Valid {
                    kind: 3,
                    did: 1,
                    sid: 0,
                    page: 0,
                    am: 0,
                    flag: false,
                    pasid: 0,
                },
                ring: false,
            },
            wait,
            Op::Write {
                offset: viommu_vtd::regs::IQT,
                len: 8,
                value: if scalable { 4 << 5 } else { 4 << 4 },
            },
            // --- migration here (split 6) ---
            Op::Dma {
                sid: DEV,
                pasid: None,
                iova: 0x1_5000,
                write: true,
            },
            // The guest skips the bad descriptor: IQH past it, clear IQE.
            Op::Write {
                offset: viommu_vtd::regs::FSTS,
                len: 4,
                value: 1 << 4,
            },
            Op::Dma {
                sid: DEV,
                pasid: None,
                iova: 0x1_5000,
                write: true,
            },
        ];
        let input = Input { setup, ops };
        for attach_after in [false, true] {
            let m = Migration {
                split: 6,
                attach_after,
                limit: None,
            };
            run_migrated(&input, m).unwrap();
        }
    }
}

/// Migration at every split point of pseudo-random inputs, including destinations whose
/// host holds fewer entries (the restore's re-sync then reclaims and reports out of
/// resources, as at runtime; guest-visible behaviour is unchanged).
#[test]
fn every_split_and_smaller_destination_hosts() {
    every_split_of_random_inputs(24, Input::decode, linux_like, |i| i.ops.len(), run_migrated);
}
