//! Replays the AMD-Vi fuzz targets on the stable toolchain: every checked-in corpus entry
//! under `fuzz/corpus/amd_vi/` and `fuzz/corpus/walker_amd/`, Linux-like seed sequences, and
//! deterministic pseudo-random inputs. Also shows that the oracles reject inconsistent
//! states. `FUZZ_REPLAY_CASES` scales the number of pseudo-random inputs.
//!
//! `cargo test -p viommu-amd-vi --test fuzz_replay -- --ignored write_seed_corpus`
//! (re)writes the seed files into the corpus.

use viommu_amd_vi::AmdV1Format;
use viommu_amd_vi::fuzz_support::model::{self, Cmd, DATA, Input, Op, Setup, TABLES, World};
use viommu_amd_vi::fuzz_support::walker::{self, EntryWrite, Header};
use viommu_amd_vi::pagetable::{PTE_IR, PTE_IW, PTE_PR};
use viommu_amd_vi::regs::{LEN_SHIFT, control, offset};
use viommu_shared::Perm;
use viommu_shared::fuzz_support::XorShift;
use viommu_shared::fuzz_support::replay::{self, cases};
use viommu_shared::host::HostDma;
use viommu_shared::pt::{Leaf, Walker};

fn replay(target: &str, body: fn(&[u8]), random: u64, max_len: usize) {
    replay::replay(env!("CARGO_MANIFEST_DIR"), target, body, random, max_len);
}

#[test]
fn amd_vi_corpus_and_random_inputs() {
    replay("amd_vi", model::model, cases(3000), 600);
}

#[test]
fn walker_corpus_and_random_inputs() {
    replay("walker_amd", walker::walker, cases(3000), 2048);
}

fn setup(levels: u8) -> Setup {
    Setup {
        levels: levels - 3,
        flavour: 0,
        limit: 15,
        blank: false,
    }
}

fn dma(devid: u16, iova: u64, write: bool) -> Op {
    Op::Dma { devid, iova, write }
}

fn mmio(offset: u64, len: usize, value: u64) -> Op {
    Op::Mmio { offset, len, value }
}

fn flush(domain: u8, index: u16, order: u8) -> Op {
    Op::Flush {
        domain,
        index,
        order,
        all: false,
    }
}

/// Linux-like sequences: map, flush, DMA, unmap, flush, events, device-table changes,
/// NextLevel-7 pages, host changes, for each depth.
fn seed_inputs() -> Vec<Input> {
    let mut out = Vec::new();
    for levels in [3, 4, 5, 6] {
        out.push(Input {
            setup: setup(levels),
            ops: vec![
                Op::MapPages {
                    index: 16,
                    pages: 15,
                    frame: 100,
                    perm: 2,
                },
                flush(1, 16, 4),
                flush(2, 16, 4),
                dma(1, 0x1_0000, false),
                dma(2, 0x1_f000, true),
                Op::UnmapPages {
                    index: 16,
                    pages: 15,
                },
                flush(1, 16, 4),
                dma(1, 0x1_0000, false),
                mmio(offset::EVT_TAIL, 8, 0),
                mmio(offset::EVT_HEAD, 8, 0x10),
                mmio(offset::STATUS, 8, 7),
                Op::Flush {
                    domain: 0,
                    index: 0,
                    order: 0,
                    all: true,
                },
            ],
        });
    }
    // Init through registers from reset, tables by hand.
    let blank = Setup {
        blank: true,
        ..setup(3)
    };
    let pte = |slot: u16, value: u64| Op::Pte { slot, value };
    out.push(Input {
        setup: blank,
        ops: vec![
            Op::Dte {
                devid: 1,
                root_page: 0,
                mode: 3,
                perm: 3,
                domain: 1,
                noise: 0,
                clean: true,
            },
            pte(0, (TABLES + 0x1000) | PTE_PR | (2 << 9) | PTE_IR | PTE_IW),
            pte(512, (TABLES + 0x2000) | PTE_PR | (1 << 9) | PTE_IR | PTE_IW),
            pte(1024, DATA | PTE_PR | PTE_IR | PTE_IW),
            pte(1025, (DATA + 0x1000) | PTE_PR | PTE_IR),
            mmio(offset::DEV_TAB_BASE, 8, model::DEV_TAB),
            mmio(offset::CMD_BUF_BASE, 4, model::CMD_BUF),
            mmio(offset::CMD_BUF_BASE + 4, 4, (8 << LEN_SHIFT) >> 32),
            mmio(offset::EVT_LOG_BASE, 8, model::EVT_LOG | (8 << LEN_SHIFT)),
            mmio(
                offset::CONTROL,
                8,
                control::IOMMU_EN
                    | control::CMD_BUF_EN
                    | control::EVENT_LOG_EN
                    | control::COM_WAIT_INT_EN,
            ),
            Op::Command { cmd: Cmd::All },
            Op::Command {
                cmd: Cmd::Wait {
                    addr: 0x22_0000,
                    store: true,
                    interrupt: true,
                    data: 1,
                },
            },
            dma(1, 0x1000, true),
            dma(1, 0x1000, false),
            Op::Command {
                cmd: Cmd::Devtab { devid: 1 },
            },
            Op::Command {
                cmd: Cmd::Pages {
                    domain: 1,
                    page: 0x7_ffff,
                    size: true,
                    pde: true,
                },
            },
        ],
    });
    // Device-table changes, aliases, host changes, reset.
    out.push(Input {
        setup: setup(4),
        ops: vec![
            Op::Dte {
                devid: 1,
                root_page: 0,
                mode: 0,
                perm: 1,
                domain: 1,
                noise: 0,
                clean: true,
            },
            Op::Command {
                cmd: Cmd::Devtab { devid: 1 },
            },
            dma(1, 0x5000, false),
            Op::DteRaw {
                devid: 2,
                q: [0, 0, 0, 0],
            },
            Op::Command {
                cmd: Cmd::Devtab { devid: 2 },
            },
            Op::Dte {
                devid: 3,
                root_page: 0,
                mode: 7,
                perm: 3,
                domain: 2,
                noise: u64::MAX,
                clean: false,
            },
            dma(3, 0x5000, false),
            Op::Alias { dev: 2, alias: 1 },
            Op::Reattach {
                second: false,
                flavour: 1,
                limit: 2,
            },
            Op::Reattach {
                second: true,
                flavour: 0,
                limit: 0,
            },
            Op::Reset,
        ],
    });
    // NextLevel-7 pages and level skipping in the last tables.
    out.push(Input {
        setup: setup(3),
        ops: vec![
            // A 16 KiB page replicated over 4 PTEs, a 64 KiB page in one slot.
            pte(
                0x8000 / 8 + 32,
                (DATA + 0x1_0000) | 0x1000 | PTE_PR | (7 << 9) | PTE_IR | PTE_IW,
            ),
            pte(
                0x8000 / 8 + 33,
                (DATA + 0x1_0000) | 0x1000 | PTE_PR | (7 << 9) | PTE_IR | PTE_IW,
            ),
            pte(
                0x8000 / 8 + 34,
                (DATA + 0x1_0000) | 0x1000 | PTE_PR | (7 << 9) | PTE_IR | PTE_IW,
            ),
            pte(
                0x8000 / 8 + 35,
                (DATA + 0x1_0000) | 0x1000 | PTE_PR | (7 << 9) | PTE_IR | PTE_IW,
            ),
            pte(
                0x8000 / 8 + 64,
                (DATA + 0x2_0000) | 0x7000 | PTE_PR | (7 << 9) | PTE_IR,
            ),
            flush(1, 32, 6),
            flush(2, 32, 6),
            dma(1, 0x2_1000, true),
            dma(2, 0x4_3000, false),
            // The root's second slot skips to a level-0 table.
            pte(1, (TABLES + 0x8000) | PTE_PR | (1 << 9) | PTE_IR | PTE_IW),
            Op::Flush {
                domain: 0,
                index: 0,
                order: 0,
                all: true,
            },
            dma(1, 0x4000_0000, false),
        ],
    });
    // Interrupt remapping as Linux sets it up: tables, 32-bit then 128-bit x2APIC entries,
    // requests, invalidations, faults.
    let irte = |devid: u8, index: u16, lo: u64, hi: u64| Op::Irte {
        devid,
        index,
        lo,
        hi,
        plausible: true,
    };
    let msi = |source: u8, data: u32, route_only: bool| Op::Msi {
        source,
        any_source: false,
        address: 0,
        outside: false,
        data,
        route_only,
    };
    let irq_dte = |devid: u8, ctl: u8, pass: u8| Op::IrqDte {
        devid,
        len: 9,
        ctl,
        pass,
        ignore: false,
        far: false,
        noise: 0,
        clean: true,
    };
    for levels in [3, 6] {
        out.push(Input {
            setup: setup(levels),
            ops: vec![
                irq_dte(1, 2, 0),
                irq_dte(2, 2, 7),
                irte(1, 0, 0x41 << 16 | 3 << 8 | 1, 0x41),
                irte(1, 1, 0x0102_0300 | 1, 0x0400_0000_0000_0042),
                irte(2, 0, 0x43 << 16 | 5 << 8 | 1 << 6 | 1 << 2 | 1, 0x43),
                msi(1, 0, false),
                msi(1, 0x8001, false),
                msi(2, 0, true),
                msi(2, 0x400, false),
                msi(1, 5, false),
                Op::IrqInvalidate {
                    devid: 1,
                    dte: false,
                },
                // 128-bit entries with x2APIC destinations.
                mmio(
                    offset::CONTROL,
                    8,
                    control::IOMMU_EN
                        | control::CMD_BUF_EN
                        | control::EVENT_LOG_EN
                        | control::EVENT_INT_EN
                        | control::GA_EN
                        | control::XT_EN,
                ),
                msi(1, 1, false),
                msi(1, 0x200, false),
                irte(1, 1, 0x0102_0380 | 1, 0x42),
                msi(1, 1, false),
                Op::IrqInvalidate {
                    devid: 1,
                    dte: true,
                },
                Op::Alias { dev: 3, alias: 1 },
                msi(3, 1, false),
                Op::IrqInvalidate {
                    devid: 1,
                    dte: false,
                },
                Op::IrqDte {
                    devid: 2,
                    len: 13,
                    ctl: 2,
                    pass: 0,
                    ignore: true,
                    far: true,
                    noise: u64::MAX,
                    clean: false,
                },
                msi(2, 0, false),
                Op::Msi {
                    source: 2,
                    any_source: true,
                    address: 0xfed0_0000,
                    outside: true,
                    data: 0,
                    route_only: false,
                },
                Op::Reset,
                msi(1, 0, false),
            ],
        });
    }
    out.push(shared_budget_seed());
    out
}

/// Both hosts charge one pin budget of 32 pages, full after boot (16 pages each). Device 1
/// keeps pages the guest dropped without invalidating them for it; device 2 (iommufd, no
/// entry limit) then needs more than the budget has: its own reclaim frees nothing, the
/// peer's reclaim of device 1 does.
fn shared_budget_seed() -> Input {
    Input {
        setup: Setup {
            limit: 0x60 | 1,
            ..setup(3)
        },
        ops: vec![
            Op::UnmapPages { index: 0, pages: 7 },
            // Device 2 is in domain 1: it drops those 8 pages, device 1 keeps them.
            flush(1, 0, 3),
            Op::MapPages {
                index: 32,
                pages: 8,
                frame: 300,
                perm: 2,
            },
            flush(1, 32, 4),
            dma(2, 0x2_0000, true),
            Op::UnmapPages {
                index: 32,
                pages: 8,
            },
            Op::Flush {
                domain: 0,
                index: 0,
                order: 0,
                all: true,
            },
        ],
    }
}

#[test]
fn shared_budget_seed_runs_device_2_out_through_the_budget() {
    let input = shared_budget_seed();
    let mut w = World::new(input.setup).unwrap();
    let pinned = |w: &World| {
        w.hosts
            .iter()
            .map(|h| {
                h.host
                    .with(|x| x.iter_mappings().map(|m| m.size).sum::<u64>())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(pinned(&w), vec![0x1_0000, 0x1_0000]);
    for op in &input.ops {
        w.step(op).unwrap();
    }
    // Only the budget can run device 2's host (iommufd) out; the peer reclaim moved device
    // 1 to the guest's tables; at the end everything fits again.
    let errors = w.iommu.take_host_errors();
    assert!(
        errors.iter().any(|e| matches!(
            e,
            viommu_amd_vi::AmdViError::HostOutOfResources { device_id: 2, .. }
        )),
        "{errors:?}"
    );
    assert_eq!(pinned(&w), vec![0x8000, 0x8000]);
    model::run(&input).unwrap();
}

fn walker_seeds() -> Vec<walker::Input> {
    let w = |slot: u64, kind: u8, level: u8, hint: u64| EntryWrite {
        slot: slot as u16,
        kind,
        level,
        hint,
    };
    let rw = 2u64 << 60;
    let mut out = Vec::new();
    for levels in 0..6u8 {
        out.push(walker::Input {
            header: Header {
                levels,
                root_page: 0,
                start: 0,
                len: u64::MAX,
                len_bits: 64,
                lookups: [0x1000, 0x4000, 0x20_0000, 0x4000_0000],
            },
            writes: vec![
                // Root slot 0 -> page 1 one level down; slot 1 skips to page 2 at level 0.
                w(
                    0,
                    0,
                    5,
                    rw | ((u64::from(levels) % 6).saturating_sub(1) << 8) | 1,
                ),
                w(1, 0, 5, rw | 2),
                w(512, 0, 5, rw | 2),
                w(513, 1, 1, rw | 0x20_0000),
                w(1024, 1, 0, rw | 0x5000),
                w(1025, 1, 0, 0x6000),
                // A 16 KiB NextLevel-7 page replicated over slots 4..8, one in a single slot.
                w(1028, 3, 0, rw | (1 << 8) | 0x10_0000),
                w(1040, 2, 0, rw | (3 << 8) | 0x20_0000),
                w(1041, 4, 0, 0x0700_0000_0000_0001),
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
            "amd_vi",
            seed_inputs().iter().map(model::encode).collect::<Vec<_>>(),
        ),
        (
            "walker_amd",
            walker_seeds().iter().map(|i| i.encode()).collect(),
        ),
    ] {
        replay::write_seeds(env!("CARGO_MANIFEST_DIR"), target, &inputs).unwrap();
    }
}

#[test]
fn host_oracle_rejects_a_host_that_differs_from_the_shadow() {
    let w = World::new(setup(4)).unwrap();
    w.check().unwrap();
    // A hand-made inconsistent state: the host holds a mapping the model never made.
    w.hosts[1]
        .host
        .with(|h| h.map(0x7000_0000, 0x1000, 0x1000, Perm::READ))
        .unwrap();
    assert!(w.check().unwrap_err().contains("host oracle"));
}

#[test]
fn barrier_oracle_rejects_a_stale_host_mapping() {
    let mut w = World::new(setup(4)).unwrap();
    w.step(&Op::MapPages {
        index: 32,
        pages: 0,
        frame: 7,
        perm: 2,
    })
    .unwrap();
    // Device 1 is in domain 2.
    w.step(&flush(2, 32, 0)).unwrap();
    let dev = model::PASSTHROUGH[0];
    assert!(
        w.iommu
            .host_mappings(dev)
            .unwrap()
            .iter()
            .any(|m| m.iova == 0x2_0000)
    );
    // The guest clears the PTE without invalidating: the host is legitimately stale, and
    // the barrier oracle, asked now, sees it.
    w.step(&Op::UnmapPages {
        index: 32,
        pages: 0,
    })
    .unwrap();
    let mode = w.iommu.attached_mode(dev).unwrap();
    let err = w
        .check_barrier(dev, &mode, viommu_shared::AddrRange::new(0, u64::MAX))
        .unwrap_err();
    assert!(err.contains("0x20000"), "{err}");
    // The flush makes it consistent again.
    w.step(&flush(2, 32, 0)).unwrap();
}

/// A remapper that answers like the model but never reports invalidations.
struct Deaf(viommu_amd_vi::AmdVi);

impl viommu_shared::irq::InterruptRemapper for Deaf {
    fn remap(
        &self,
        source: u16,
        msi: viommu_shared::regs::Msi,
        mode: viommu_shared::irq::RemapMode,
    ) -> Result<viommu_shared::irq::Resolution, viommu_shared::irq::IrFault> {
        self.0.remap(source, msi, mode)
    }

    fn add_listener(&self, _listener: std::sync::Arc<dyn viommu_shared::irq::IrListener>) {}
}

#[test]
fn route_oracle_rejects_a_missed_invalidation() {
    use viommu_shared::irq::InterruptRemapper;
    let irte = |lo: u64| Op::Irte {
        devid: 1,
        index: 0,
        lo,
        hi: 0x41,
        plausible: true,
    };
    let ir_dte = Op::IrqDte {
        devid: 1,
        len: 4,
        ctl: 2,
        pass: 0,
        ignore: false,
        far: false,
        noise: 0,
        clean: true,
    };
    let mut w = World::new(setup(4)).unwrap();
    w.step(&ir_dte).unwrap();
    w.step(&irte(0x41 << 16 | 3 << 8 | 1)).unwrap();
    w.step(&Op::IrqInvalidate {
        devid: 1,
        dte: true,
    })
    .unwrap();
    let r = w.routes.get(1).unwrap().unwrap();
    assert_eq!((r.interrupt.vector, r.interrupt.destination), (0x41, 3));
    // A VMM whose route table never hears from the model keeps the old route: caught.
    w.routes =
        viommu_shared::irq::RouteTable::new(std::sync::Arc::new(Deaf(w.iommu.clone())), None);
    w.routes
        .set(
            1,
            1,
            viommu_shared::regs::Msi {
                address: 0xfee0_0000,
                data: 0,
            },
        )
        .unwrap();
    w.step(&irte(0x41 << 16 | 9 << 8 | 1)).unwrap();
    let err = w
        .step(&Op::IrqInvalidate {
            devid: 1,
            dte: false,
        })
        .unwrap_err();
    assert!(err.contains("route of 0x1"), "{err}");
    assert_eq!(
        w.iommu
            .remap(
                1,
                viommu_shared::regs::Msi {
                    address: 0xfee0_0000,
                    data: 0
                },
                viommu_shared::irq::RemapMode::Route
            )
            .unwrap()
            .interrupt
            .destination,
        9
    );
}

#[test]
fn walker_oracle_rejects_a_leaf_the_table_does_not_hold() {
    let input = walker_seeds().remove(2);
    let fmt: AmdV1Format = input.format();
    let mem = walker::memory(&input, &fmt);
    let w = Walker::new(&fmt, &mem, 0);
    let range = input.range(&fmt);
    let mut leaves = Vec::new();
    let complete = w
        .for_each_leaf(range, &mut |l| leaves.push(l), &mut |_| {})
        .is_ok();
    assert!(complete && leaves.len() >= 4, "{leaves:x?}");
    walker::check_walk(&fmt, &w, range, &leaves, complete, &[0x1000]).unwrap();
    // Forged: the first leaf's output moved.
    let mut forged = leaves.clone();
    forged[0].addr += 0x1000;
    assert!(walker::check_walk(&fmt, &w, range, &forged, complete, &[]).is_err());
    // Forged: a leaf dropped from a complete enumeration.
    let found = w.lookup(leaves[0].iova).unwrap();
    assert!(walker::check_walk(&fmt, &w, range, &leaves[1..], complete, &[found.iova]).is_err());
    // Forged: a slot-sized leaf overlapping its predecessor.
    let mut twice = leaves.clone();
    twice.insert(1, leaves[0]);
    assert!(walker::check_walk(&fmt, &w, range, &twice, complete, &[]).is_err());
    // Forged: a page larger than a NextLevel-7 entry can encode at level 0.
    let huge = Leaf {
        iova: 0,
        addr: 0,
        size: 1 << 22,
        perm: Perm::RW,
        level: 0,
    };
    assert!(walker::check_walk(&fmt, &w, range, &[huge], false, &[]).is_err());
}
