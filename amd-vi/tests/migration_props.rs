//! The migration property (`viommu_amd_vi::fuzz_support::migration`): random hostile
//! scenarios, saved mid-way (with events in the log, commands queued behind an illegal
//! command, the IOMMU in any state), restored into a fresh IOMMU with fresh `SimHost`s,
//! continue exactly like the unmigrated run: same architectural state after every step, same
//! guest memory, same host mappings after the final flush.

use proptest::prelude::*;
use viommu_amd_vi::fuzz_support::migration::{Migration, run_migrated};
use viommu_amd_vi::fuzz_support::model::{Cmd, Input, Op, Setup};
use viommu_amd_vi::regs::{control, offset};
use viommu_shared::fuzz_support::migration::every_split_of_random_inputs;

/// A Linux-like guest: the initialised setup, and only table updates, flushes, well-formed
/// commands, DMA, resets and host changes (hostile inputs keep everything).
fn linux_like(mut input: Input) -> Input {
    input.setup.blank = false;
    input.ops.retain(|op| match op {
        Op::Command { cmd } => !matches!(cmd, Cmd::Raw { .. }),
        Op::Mmio { .. } | Op::DteRaw { .. } | Op::Pte { .. } => false,
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

/// The snapshot is taken with an IO_PAGE_FAULT in the event log and an invalidation and a
/// completion wait queued behind an illegal command (processing halted); after the migration
/// the guest skips the bad command and restarts processing, and the queued commands run on
/// the destination.
#[test]
fn logged_events_and_queued_commands_survive() {
    let setup = Setup {
        levels: 1,
        flavour: 0,
        limit: 31,
        blank: false,
    };
    let restart = |en: bool| Op::Mmio {
        offset: offset::CONTROL,
        len: 8,
        value: control::IOMMU_EN
            | control::EVENT_LOG_EN
            | control::EVENT_INT_EN
            | if en { control::CMD_BUF_EN } else { 0 },
    };
    let ops = vec![
        Op::MapPages {
            index: 20,
            pages: 7,
            frame: 40,
            perm: 2,
        },
        // IOVA 0x40000 is not mapped: an IO_PAGE_FAULT is logged.
        Op::Dma {
            devid: 1,
            iova: 0x4_0000,
            write: false,
        },
        // Opcode 0 is illegal: processing halts with the head on it.
        Op::Command {
            cmd: Cmd::Raw {
                opcode: 0,
                lo: 0,
                hi: 0,
            },
        },
        Op::Command { cmd: Cmd::All },
        Op::Command {
            cmd: Cmd::Wait {
                addr: 0x23_0000,
                store: true,
                interrupt: false,
                data: 7,
            },
        },
        // --- migration here (split 5) ---
        Op::Dma {
            devid: 1,
            iova: 0x1_5000,
            write: true,
        },
        // Skip the illegal command and restart processing.
        Op::Mmio {
            offset: offset::CMD_HEAD,
            len: 8,
            value: 0x30,
        },
        restart(false),
        restart(true),
        Op::Dma {
            devid: 1,
            iova: 0x1_5000,
            write: true,
        },
    ];
    let input = Input { setup, ops };
    for attach_after in [false, true] {
        let m = Migration {
            split: 5,
            attach_after,
            limit: None,
        };
        run_migrated(&input, m).unwrap();
    }
}

/// Migration at every fifth split point of pseudo-random inputs, including destinations
/// whose hosts hold fewer entries (the restore's re-sync then reclaims and reports out of
/// resources, as at runtime; guest-visible behaviour is unchanged).
#[test]
fn every_split_and_smaller_destination_hosts() {
    every_split_of_random_inputs(24, Input::decode, linux_like, |i| i.ops.len(), run_migrated);
}
