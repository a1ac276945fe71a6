//! Replays the s390 zPCI fuzz targets on the stable toolchain: every checked-in corpus entry
//! under `fuzz/corpus/zpci/` and `fuzz/corpus/walker_s390/`, Linux-like seed sequences, and
//! deterministic pseudo-random inputs. Also shows that the oracles reject inconsistent
//! states. `FUZZ_REPLAY_CASES` scales the number of pseudo-random inputs.
//!
//! `cargo test -p viommu-s390-zpci --test fuzz_replay -- --ignored write_seed_corpus`
//! (re)writes the seed files into the corpus.

use viommu_s390_zpci::fuzz_support::model::{
    self, FID, Input, Insn, Op, Operand, PAL, SDMA, Setup, TABLES, World,
};
use viommu_s390_zpci::fuzz_support::walker::{self, EntryWrite, Header};
use viommu_s390_zpci::insn::clp::cmd;
use viommu_s390_zpci::{Designation, Fib, Iota};
use viommu_shared::Perm;
use viommu_shared::fuzz_support::XorShift;
use viommu_shared::fuzz_support::replay::{self, cases};
use viommu_shared::host::HostDma;
use viommu_shared::pt::{Leaf, Walker};

fn replay(target: &str, body: fn(&[u8]), random: u64, max_len: usize) {
    replay::replay(env!("CARGO_MANIFEST_DIR"), target, body, random, max_len);
}

#[test]
fn zpci_corpus_and_random_inputs() {
    replay("zpci", model::model, cases(2000), 800);
}

#[test]
fn walker_corpus_and_random_inputs() {
    replay("walker_s390", walker::walker, cases(3000), 2048);
}

fn setup(designation: u8, limit: u8) -> Setup {
    Setup {
        designation,
        limit,
        reclaim: false,
        relaxed: false,
        blank: false,
    }
}

fn map(at: u16, pages: u8, gpa: u16) -> Op {
    Op::Map {
        at,
        pages,
        gpa,
        ro: false,
    }
}

fn rpcit(at: u16, pages: u16) -> Op {
    Op::Rpcit { at, pages, skew: 0 }
}

fn op(kind: u8, raw: u64) -> Operand {
    Operand { kind, raw }
}

/// Handle word of the enabled function with `pcias` and `len` (operand shape 2).
fn handle(pcias: u64, len: u64) -> Operand {
    op(2, 4 | (pcias << 8) | (len << 16))
}

/// Handle word of the enabled function with operation control `oc` (operand shape 5).
fn handle_oc(oc: u64) -> Operand {
    op(5, 4 | (oc << 16))
}

fn insn(insn: Insn, operands: [Operand; 4]) -> Op {
    Op::Insn { insn, operands }
}

/// Linux-like sequences: maps with RPCIT, lazy unmaps, cut segments, exhaustion and
/// recovery, re-registration, host changes; instructions as the Linux driver issues them.
fn seed_inputs() -> Vec<Input> {
    let mut out = Vec::new();
    for designation in 0..3 {
        out.push(Input {
            setup: setup(designation, 0),
            ops: vec![
                map(0, 15, 0),
                rpcit(0, 15),
                Op::Dma {
                    iova: SDMA + 0x3008,
                    write: true,
                },
                Op::Unmap { at: 4, pages: 3 },
                map(300, 40, 9),
                rpcit(300, 40),
                Op::CutSegment { seg: 0 },
                rpcit(0, 300),
                Op::RestoreSegment { seg: 0 },
                Op::Rpcit {
                    at: 0,
                    pages: 599,
                    skew: 0x800,
                },
                Op::Dma {
                    iova: SDMA + 0x10_0000,
                    write: false,
                },
            ],
        });
    }
    // Exhaustion: a host of 24 entries, scattered maps, Linux's global-RPCIT recovery.
    for reclaim in [false, true] {
        let mut ops = Vec::new();
        for i in 0..40u16 {
            ops.push(Op::Map {
                at: i * 14,
                pages: 0,
                gpa: i * 3,
                ro: i % 2 == 0,
            });
        }
        ops.push(rpcit(0, 599));
        ops.push(Op::Unmap { at: 0, pages: 63 });
        ops.push(rpcit(0, 599));
        out.push(Input {
            setup: Setup {
                reclaim,
                ..setup(0, 1)
            },
            ops,
        });
    }
    // Re-registration and host changes.
    out.push(Input {
        setup: setup(1, 2),
        ops: vec![
            map(10, 20, 100),
            rpcit(10, 20),
            Op::Reregister,
            Op::Reattach,
            map(2000, 47, 0),
            rpcit(2000, 47),
            Op::Reattach,
        ],
    });
    // Instructions: CLP LIST PCI and QUERY PCI FUNCTION, config-space load and store,
    // STPCIFC, MPCIFC deregistration and registration, RPCIT through registers.
    let iota = Iota::tables(Designation::RegionThird, TABLES.0).0;
    let fib = Fib {
        pba: SDMA,
        pal: PAL,
        iota,
        ..Fib::default()
    }
    .to_bytes();
    let mut body = [0u8; 16];
    body[..4].copy_from_slice(&0x8000_0000u32.to_be_bytes());
    let scratch = model::SCRATCH;
    out.push(Input {
        setup: setup(0, 2),
        ops: vec![
            insn(
                Insn::Clp {
                    r2: 2,
                    lps: 2,
                    len: 0,
                    command: cmd::LIST_PCI,
                    body: [0; 16],
                    rsp: 1,
                },
                [op(0, 0); 4],
            ),
            insn(
                Insn::Clp {
                    r2: 2,
                    lps: 2,
                    len: 0,
                    command: cmd::QUERY_PCI_FN,
                    body,
                    rsp: 3,
                },
                [op(0, 0); 4],
            ),
            insn(
                Insn::Pcilg { r1: 1, r2: 2 },
                [op(0, 0), op(0, 0), handle(15, 4), op(7, 0)],
            ),
            insn(
                Insn::Pcistg { r1: 1, r2: 2 },
                [op(7, 0x6), op(0, 0), handle(15, 2), op(7, 4)],
            ),
            insn(
                Insn::Stpcifc {
                    r1: 1,
                    addr: scratch + 0x2000,
                },
                [handle_oc(0), op(0, 0), op(0, 0), op(0, 0)],
            ),
            insn(
                Insn::Mpcifc {
                    r1: 1,
                    addr: scratch + 0x2000,
                    fib: [0; 80],
                },
                [handle_oc(5), op(0, 0), op(0, 0), op(0, 0)],
            ),
            insn(
                Insn::Mpcifc {
                    r1: 1,
                    addr: scratch + 0x2000,
                    fib,
                },
                [handle_oc(4), op(0, 0), op(0, 0), op(0, 0)],
            ),
            map(0, 31, 0),
            insn(
                Insn::Rpcit { r1: 1, r2: 2 },
                [handle_oc(0), op(0, 0), op(3, 0), op(6, 32 << 8)],
            ),
            insn(
                Insn::Pcistb {
                    r1: 1,
                    r3: 3,
                    addr: scratch,
                },
                [handle(0, 64), op(0, 0), op(7, 0), op(0, 0)],
            ),
            insn(
                Insn::ClpLong {
                    size: 4096,
                    len: 32,
                    command: cmd::QUERY_PCI_FNGRP,
                    rsp: 4064,
                    seed: 1,
                },
                [op(0, 0); 4],
            ),
            Op::Entry {
                lvl: 0,
                page: 3,
                value: 0,
            },
            Op::Dma {
                iova: SDMA + 0x3000,
                write: false,
            },
        ],
    });
    // From reset: the function enabled through CLP SET PCI FUNCTION.
    let mut enable = [0u8; 16];
    enable[..4].copy_from_slice(&0x0000_0010u32.to_be_bytes());
    enable[11] = 1;
    out.push(Input {
        setup: Setup {
            blank: true,
            relaxed: true,
            ..setup(2, 0)
        },
        ops: vec![insn(
            Insn::Clp {
                r2: 2,
                lps: 2,
                len: 0,
                command: cmd::SET_PCI_FN,
                body: enable,
                rsp: 2,
            },
            [op(0, 0); 4],
        )],
    });
    out
}

fn walker_seeds() -> Vec<walker::Input> {
    let w = |slot: u64, kind: u8, level: u8, hint: u64| EntryWrite {
        slot: slot as u16,
        kind,
        level,
        hint,
    };
    // Root region table at 0 (16 KiB), lower tables at 16 KiB steps; page tables at 2 KiB.
    let table_at = |i: u64| i; // (hint & 0xff) % 9 picks the 16 KiB table
    let mut out = Vec::new();
    for designation in 0..3u8 {
        let top = 2 + designation;
        let mut writes = Vec::new();
        // Chain from the root (table 0) through tables 1, 2, ... down to a segment table.
        for (i, lvl) in (2..=top).rev().enumerate() {
            writes.push(w(i as u64 * 2048, 0, lvl, table_at(i as u64 + 1)));
        }
        let seg = (top - 1) as u64 * 2048;
        // Segment 0 -> page table 40 (at 80 KiB); segment 1 -> a 1 MiB frame; segment 2
        // invalid keeping its origin; segment 3 zero.
        writes.push(w(seg, 0, 1, 40));
        writes.push(w(seg + 1, 1, 1, 0x30_0000));
        writes.push(w(seg + 2, 2, 1, 0x1_4000));
        writes.push(w(seg + 3, 4, 1, 0));
        writes.push(w(seg + 4, 5, 1, 40 | 0x4));
        let pt = 40 * 0x800 / 8;
        writes.push(w(pt, 1, 0, 0x5000));
        writes.push(w(pt + 1, 1, 0, (1 << 63) | 0x6000));
        writes.push(w(pt + 2, 2, 0, 0x7000));
        writes.push(w(pt + 3, 4, 0, 0));
        out.push(walker::Input {
            header: Header {
                designation,
                read_only: designation == 1,
                root: 0,
                start: 0,
                len: u64::MAX,
                len_bits: 64,
                lookups: [0x1000, 0x10_0000, 0x20_0000, 0x3000],
            },
            writes,
        });
    }
    out
}

#[test]
fn seed_inputs_run_clean_and_encode_round_trip() {
    for input in seed_inputs() {
        assert_eq!(Input::decode(&model::encode(&input)).as_ref(), Some(&input));
        model::run(&input).unwrap();
    }
    for input in walker_seeds() {
        assert_eq!(
            walker::Input::decode(&input.encode()).as_ref(),
            Some(&input)
        );
        walker::run(&input).unwrap();
    }
    let mut rng = XorShift::new(7);
    for _ in 0..500 {
        let bytes = rng.bytes(400);
        if let Some(i) = Input::decode(&bytes) {
            assert_eq!(Input::decode(&model::encode(&i)).as_ref(), Some(&i));
        }
        if let Some(i) = walker::Input::decode(&bytes) {
            assert_eq!(walker::Input::decode(&i.encode()).as_ref(), Some(&i));
        }
    }
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_seed_corpus() {
    for (target, inputs) in [
        (
            "zpci",
            seed_inputs().iter().map(model::encode).collect::<Vec<_>>(),
        ),
        (
            "walker_s390",
            walker_seeds().iter().map(|i| i.encode()).collect(),
        ),
    ] {
        replay::write_seeds(env!("CARGO_MANIFEST_DIR"), target, &inputs).unwrap();
    }
}

#[test]
fn host_oracle_rejects_a_host_that_differs_from_the_shadow() {
    let w = World::new(setup(0, 0)).unwrap();
    w.check().unwrap();
    // A hand-made inconsistent state: the host holds a mapping the model never made.
    w.host
        .with(|h| h.map(SDMA + 0x1000, 0x5000, 0x1000, Perm::READ))
        .unwrap();
    assert!(w.check().unwrap_err().contains("host oracle"));
}

#[test]
fn rpcit_oracle_rejects_a_stale_host_mapping() {
    let mut w = World::new(setup(0, 0)).unwrap();
    w.step(&map(5, 0, 1)).unwrap();
    w.step(&rpcit(5, 0)).unwrap();
    assert_eq!(w.zpci.host_mappings(FID).unwrap().len(), 1);
    // A lazy unmap (no RPCIT): the host is legitimately stale...
    w.step(&Op::Unmap { at: 5, pages: 0 }).unwrap();
    // ...and the oracle asked over that range sees it.
    let err = w.check_range(viommu_shared::AddrRange::new(SDMA, PAL + 1));
    assert!(err.unwrap_err().contains(&format!("{:#x}", SDMA + 0x5000)));
    w.step(&rpcit(5, 0)).unwrap();
    // A global RPCIT at the end makes the host equal to the (empty) truth.
    w.finish().unwrap();
}

#[test]
fn truth_oracle_rejects_a_guest_model_that_differs_from_the_tables() {
    let mut w = World::new(setup(0, 0)).unwrap();
    w.step(&map(0, 3, 0)).unwrap();
    // The guest model forgets a page the tables map: after the global RPCIT the host holds
    // it and the final oracle reports the difference.
    w.guest.ptes.remove(&(SDMA + 0x2000));
    let err = w.finish().unwrap_err();
    assert!(err.contains(&format!("{:#x}", SDMA + 0x2000)), "{err}");
}

#[test]
fn walker_oracle_rejects_a_leaf_the_table_does_not_hold() {
    let input = walker_seeds().remove(0);
    let fmt = input.format();
    let mem = walker::memory(&input, &fmt);
    let w = Walker::new(&fmt, &mem, 0);
    let range = input.range(&fmt);
    let mut leaves = Vec::new();
    let complete = w
        .for_each_leaf(range, &mut |l| leaves.push(l), &mut |_| {})
        .is_ok();
    assert!(complete && leaves.len() >= 3, "{leaves:x?}");
    walker::check_walk(&fmt, &w, range, &leaves, complete, &[0x1000]).unwrap();
    let mut forged = leaves.clone();
    forged[0].addr += 0x1000;
    assert!(walker::check_walk(&fmt, &w, range, &forged, complete, &[]).is_err());
    let found = w.lookup(leaves[0].iova).unwrap();
    assert!(walker::check_walk(&fmt, &w, range, &leaves[1..], complete, &[found.iova]).is_err());
    // A write-only leaf is not an s390 page.
    let wo = Leaf {
        perm: Perm::WRITE,
        ..leaves[0]
    };
    assert!(walker::check_walk(&fmt, &w, range, &[wo], false, &[]).is_err());
}
