//! Replays the VT-d fuzz targets on the stable toolchain: every checked-in corpus entry under
//! `fuzz/corpus/vtd/` and `fuzz/corpus/walker_vtd/`, Linux-like seed sequences, and
//! deterministic pseudo-random inputs. Also shows that the oracles reject inconsistent
//! states. `FUZZ_REPLAY_CASES` scales the number of pseudo-random inputs.
//!
//! `cargo test -p viommu-vtd --test fuzz_replay -- --ignored write_seed_corpus` (re)writes
//! the seed files into the corpus.

use viommu_shared::Perm;
use viommu_shared::fuzz_support::XorShift;
use viommu_shared::fuzz_support::replay::{self, cases};
use viommu_shared::host::HostDma;
use viommu_shared::irq::{DeliveryMode, DestinationMode, Interrupt, TriggerMode};
use viommu_shared::pt::{Leaf, PageTableFormat, Walker};
use viommu_vtd::fuzz_support::model::{self, DEV, Desc, Input, LEAF_PT, Op, Setup, World};
use viommu_vtd::fuzz_support::walker::{self, EntryWrite, Header};
use viommu_vtd::irte::{self, Irte, SourceValidation};
use viommu_vtd::regs::*;
use viommu_vtd::testing::desc;

fn replay(target: &str, body: fn(&[u8]), random: u64, max_len: usize) {
    replay::replay(env!("CARGO_MANIFEST_DIR"), target, body, random, max_len);
}

#[test]
fn vtd_corpus_and_random_inputs() {
    replay("vtd", model::model, cases(3000), 600);
}

#[test]
fn walker_corpus_and_random_inputs() {
    replay("walker_vtd", walker::walker, cases(3000), 2048);
}

fn setup(scalable: bool, levels: u8) -> Setup {
    Setup {
        scalable,
        levels: levels - 3,
        flavour: 0,
        limit: 31,
        blank: false,
    }
}

fn dma(iova: u64, write: bool) -> Op {
    Op::Dma {
        sid: DEV,
        pasid: None,
        iova,
        write,
    }
}

fn valid(kind: u8, page: u32, am: u8) -> Op {
    Op::Descriptor {
        desc: Desc::Valid {
            kind,
            did: 1,
            sid: 0,
            page,
            am,
            flag: false,
            pasid: 0,
        },
        ring: false,
    }
}

fn write(offset: u64, len: usize, value: u64) -> Op {
    Op::Write { offset, len, value }
}

/// Linux-like sequences: map, flush, DMA, unmap, flush, faults, context changes, register
/// invalidation, migration, host changes, for each mode and depth.
fn seed_inputs() -> Vec<Input> {
    let map_unmap = |s: Setup| Input {
        setup: s,
        ops: vec![
            Op::MapPages {
                index: 16,
                pages: 15,
                frame: 100,
                perm: 2,
            },
            Op::Flush {
                index: 16,
                am: 4,
                global: false,
            },
            dma(0x1_0000, false),
            dma(0x1_f000, true),
            Op::UnmapPages {
                index: 16,
                pages: 15,
            },
            Op::Flush {
                index: 16,
                am: 4,
                global: false,
            },
            dma(0x1_0000, false),
            Op::Read {
                offset: FSTS,
                len: 4,
            },
            Op::Read {
                offset: FRCD_BASE + 12,
                len: 4,
            },
            write(FRCD_BASE + 12, 4, 1 << 31),
            write(FSTS, 4, FSTS_PFO | FSTS_PPF),
            Op::Flush {
                index: 0,
                am: 0,
                global: true,
            },
        ],
    };
    let mut out = Vec::new();
    for scalable in [false, true] {
        for levels in [3, 4, 5] {
            out.push(map_unmap(setup(scalable, levels)));
        }
    }
    // Boot through registers from reset (§3.1): tables by hand, root, queue, TE.
    let blank = Setup {
        blank: true,
        ..setup(false, 4)
    };
    let pte = |at: u64, v: u64| Op::Poke { addr: at, value: v };
    out.push(Input {
        setup: blank,
        ops: vec![
            pte(model::ROOT, model::CTX | 1),
            pte(model::CTX + 16 * u64::from(DEV), model::PT | 1),
            pte(model::CTX + 16 * u64::from(DEV) + 8, 2 | (1 << 8)),
            pte(model::PT, (model::PT + 0x1000) | 3),
            pte(model::PT + 0x1000, (model::PT + 0x2000) | 3),
            pte(model::PT + 0x2000, LEAF_PT | 3),
            Op::MapPages {
                index: 0,
                pages: 63,
                frame: 0,
                perm: 2,
            },
            write(RTADDR, 8, model::ROOT),
            write(GCMD, 4, GCMD_SRTP),
            write(IQA, 8, model::QUEUE),
            write(GCMD, 4, GCMD_QIE),
            valid(0, 0, 0),
            valid(3, 0, 0),
            Op::Flush {
                index: 0,
                am: 0,
                global: true,
            },
            write(GCMD, 4, GCMD_QIE | GCMD_TE),
            dma(0x3000, true),
            dma(0x40_0000, true),
            Op::Read {
                offset: FRCD_BASE + 8,
                len: 8,
            },
        ],
    });
    // Register-based invalidation with queued invalidation off.
    out.push(Input {
        setup: blank,
        ops: vec![
            write(RTADDR, 8, model::ROOT),
            write(GCMD, 4, GCMD_SRTP),
            write(CCMD, 8, CCMD_ICC | (1 << CCMD_CIRG_SHIFT)),
            write(IOTLB + 4, 4, (IOTLB_IVT | (1 << IOTLB_IIRG_SHIFT)) >> 32),
            write(GCMD, 4, GCMD_TE),
            dma(0x1000, false),
            write(IRTA, 8, 0x3_0000 | 7),
            write(GCMD, 4, GCMD_TE | GCMD_SIRTP),
            write(GCMD, 4, GCMD_TE | GCMD_IRE),
        ],
    });
    // Context changes: device-selective context flush, domain flush, aliases, pass-through.
    out.push(Input {
        setup: setup(false, 4),
        ops: vec![
            Op::Poke {
                addr: model::CTX + 16 * u64::from(DEV),
                value: model::PT | (2 << 2) | 1,
            },
            Op::Descriptor {
                desc: Desc::Raw {
                    lo: desc::context_device(0, DEV, 0)[0],
                    hi: 0,
                },
                ring: false,
            },
            Op::Descriptor {
                desc: Desc::Raw {
                    lo: desc::iotlb_domain(1)[0],
                    hi: 0,
                },
                ring: true,
            },
            dma(0x8000_0000, true),
            Op::Alias {
                rid: 0x11,
                alias: 0x10,
            },
            Op::Dma {
                sid: 0x11,
                pasid: None,
                iova: 0x2000,
                write: false,
            },
            Op::Reattach {
                flavour: 1,
                limit: 3,
            },
            Op::SaveRestore,
            Op::Reset,
            Op::Reattach {
                flavour: 2,
                limit: 0,
            },
        ],
    });
    // Scalable mode: PASID-cache and PASID-based IOTLB invalidations, DMA with PASID.
    out.push(Input {
        setup: setup(true, 4),
        ops: vec![
            valid(10, 0, 3),
            valid(9, 0, 0),
            Op::Flush {
                index: 0,
                am: 9,
                global: false,
            },
            Op::Dma {
                sid: DEV,
                pasid: Some(0),
                iova: 0x4000,
                write: true,
            },
            Op::Dma {
                sid: DEV,
                pasid: Some(5),
                iova: 0x4000,
                write: true,
            },
            write(FSTS, 4, FSTS_IQE),
            Op::SaveRestore,
        ],
    });
    // Interrupt remapping as Linux drives it (modify_irte + qi_flush_iec), interrupts from
    // every route's source, a forged one, a lazy (uninvalidated) entry change, a blocked
    // compatibility MSI, then CFI, reset and migration.
    let entry = |vector: u8, dest: u32, sid: u16| {
        irte::encode(
            &Irte {
                fpd: false,
                interrupt: Interrupt {
                    destination: dest,
                    vector,
                    delivery: DeliveryMode::Fixed,
                    destination_mode: DestinationMode::Physical,
                    trigger: TriggerMode::Edge,
                    redirection_hint: true,
                },
                validation: SourceValidation::Requester { sid, sq: 0 },
            },
            true,
        )
    };
    let irq = |source: u16, index: u16, route: bool| Op::Irq {
        source,
        address: irte::remappable_msi(index).address,
        data: 0,
        route,
    };
    let mut ops = Vec::new();
    for (i, &(src, idx)) in model::ROUTES.iter().enumerate() {
        ops.push(Op::Irte {
            index: idx,
            entry: entry(0x30 + i as u8, 0x100 + i as u32, src),
            im: 0,
            flush: true,
        });
        ops.push(irq(src, idx, false));
    }
    ops.extend([
        irq(0x11, 0, false),
        Op::Irte {
            index: 1,
            entry: entry(0x77, 7, DEV),
            im: 0,
            flush: false,
        },
        irq(DEV, 1, true),
        Op::Irte {
            index: 5,
            entry: [0, 0],
            im: 2,
            flush: true,
        },
        irq(DEV, 5, false),
        irq(DEV, 3000, false),
        Op::Irq {
            source: DEV,
            address: 0xfee0_1000,
            data: 0x30,
            route: false,
        },
        write(IRTA, 8, model::IRT | 10),
        write(GCMD, 4, GCMD_QIE | GCMD_IRE | GCMD_TE | GCMD_SIRTP),
        write(GCMD, 4, GCMD_QIE | GCMD_IRE | GCMD_TE | GCMD_CFI),
        Op::Irq {
            source: DEV,
            address: 0xfee0_1000,
            data: 0x30,
            route: false,
        },
        Op::SaveRestore,
        Op::Reset,
        irq(DEV, 0, false),
    ]);
    out.push(Input {
        setup: setup(false, 4),
        ops,
    });
    out
}

fn walker_seeds() -> Vec<walker::Input> {
    // A well-formed 4-level table in pages 0..4 with 4K pages, a 2M page and a 1G page, plus
    // a self-referencing pointer and a reserved entry.
    let w = |slot: u64, kind: u8, level: u8, hint: u64| EntryWrite {
        slot: slot as u16,
        kind,
        level,
        hint,
    };
    let rw = 2u64 << 60;
    let mut out = Vec::new();
    for (levels, len_bits) in [(0u8, 40u8), (1, 48), (2, 64)] {
        out.push(walker::Input {
            header: Header {
                levels,
                haw: 36,
                features: 7,
                root_page: 0,
                start: 0,
                len: u64::MAX,
                len_bits,
                lookups: [0x1000, 0x20_0000, 0x4000_0000, 0xdead_b000],
            },
            writes: vec![
                w(0, 0, 3, rw | 1),
                w(512, 0, 2, rw | 2),
                w(512 + 1, 1, 2, rw | 0x4000_0000),
                w(1024, 0, 1, rw | 3),
                w(1024 + 1, 1, 1, rw | 0x60_0000),
                w(1024 + 2, 0, 1, 5),
                w(1536, 1, 0, rw | 0x5000),
                w(1536 + 1, 1, 0, 0x6000),
                w(1536 + 2, 2, 0, rw | 0x4000_0000_0000_7800),
                w(1536 + 3, 3, 0, 0x4000_0000_0000_8003),
                w(2560, 0, 1, rw | 16),
            ],
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
    // The encoders invert the decoders on arbitrary inputs too.
    let mut rng = XorShift::new(7);
    for _ in 0..500 {
        let bytes = rng.bytes(300);
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
            "vtd",
            seed_inputs().iter().map(model::encode).collect::<Vec<_>>(),
        ),
        (
            "walker_vtd",
            walker_seeds().iter().map(|i| i.encode()).collect(),
        ),
    ] {
        replay::write_seeds(env!("CARGO_MANIFEST_DIR"), target, &inputs).unwrap();
    }
}

#[test]
fn route_oracle_rejects_a_route_the_guest_changed_without_invalidating() {
    let mut w = World::new(setup(false, 4)).unwrap();
    let e = |vector: u64| [1 | (vector << 16) | (1 << 32), 0];
    w.step(&Op::Irte {
        index: 0,
        entry: e(0x40),
        im: 0,
        flush: true,
    })
    .unwrap();
    w.check_routes(|_| true, "test").unwrap();
    // A lazy change: the route is legitimately stale, and the oracle (asked for entry 0
    // anyway) sees it; once the guest invalidates, the step's own oracle passes.
    w.step(&Op::Irte {
        index: 0,
        entry: e(0x41),
        im: 0,
        flush: false,
    })
    .unwrap();
    assert!(
        w.check_routes(|i| i == Some(0), "test")
            .unwrap_err()
            .contains("route 0")
    );
    w.step(&Op::Irte {
        index: 1,
        entry: e(0x42),
        im: 1,
        flush: true,
    })
    .unwrap();
    w.check_routes(|_| true, "test").unwrap();
}

#[test]
fn host_oracle_rejects_a_host_that_differs_from_the_shadow() {
    let w = World::new(setup(false, 4)).unwrap();
    w.check().unwrap();
    // A hand-made inconsistent state: the host holds a mapping the model never made.
    w.host
        .with(|h| h.map(0x7000_0000, 0x1000, 0x1000, Perm::READ))
        .unwrap();
    assert!(w.check().unwrap_err().contains("host oracle"));
}

#[test]
fn barrier_oracle_rejects_a_stale_host_mapping() {
    let mut w = World::new(setup(false, 4)).unwrap();
    w.step(&Op::MapPages {
        index: 32,
        pages: 0,
        frame: 7,
        perm: 2,
    })
    .unwrap();
    w.step(&Op::Flush {
        index: 32,
        am: 0,
        global: false,
    })
    .unwrap();
    assert!(
        w.vtd
            .host_mappings(u32::from(DEV))
            .unwrap()
            .iter()
            .any(|m| m.iova == 0x2_0000)
    );
    // The guest clears the PTE without invalidating: the host is legitimately stale...
    w.step(&Op::UnmapPages {
        index: 32,
        pages: 0,
    })
    .unwrap();
    // ...and the barrier oracle, asked now, sees the stale mapping.
    let space = w.vtd.shadow_space(u32::from(DEV)).unwrap();
    let err = w
        .check_barrier(&space, viommu_shared::AddrRange::new(0, u64::MAX))
        .unwrap_err();
    assert!(err.contains("0x20000"), "{err}");
    // A completed flush makes it consistent again.
    w.step(&Op::Flush {
        index: 32,
        am: 0,
        global: false,
    })
    .unwrap();
}

#[test]
fn walker_oracle_rejects_a_leaf_the_table_does_not_hold() {
    let input = walker_seeds().remove(1);
    let fmt = input.format();
    let mem = walker::memory(&input, &fmt);
    let w = Walker::new(&fmt, &mem, 0);
    let range = input.range(&fmt);
    let mut leaves = Vec::new();
    let complete = w
        .for_each_leaf(range, &mut |l| leaves.push(l), &mut |_| {})
        .is_ok();
    assert!(complete && leaves.len() >= 3);
    walker::check_walk(&fmt, &w, range, &leaves, complete, &[0x1000]).unwrap();
    // Forged: the first leaf's output moved.
    let mut forged = leaves.clone();
    forged[0].addr += 0x1000;
    assert!(walker::check_walk(&fmt, &w, range, &forged, complete, &[]).is_err());
    // Forged: a leaf dropped from a complete enumeration.
    let found = w.lookup(leaves[0].iova).unwrap();
    assert!(walker::check_walk(&fmt, &w, range, &leaves[1..], complete, &[found.iova]).is_err());
    // Forged: a page size the format cannot map.
    let odd = Leaf {
        size: 0x8000,
        iova: 0x8000,
        ..leaves[0]
    };
    assert!(walker::check_walk(&fmt, &w, range, &[odd], false, &[]).is_err());
    assert_eq!(fmt.top_level(), 3);
}
