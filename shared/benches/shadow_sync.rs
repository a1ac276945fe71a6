//! Shadow-sync benchmarks: syncing 2 MiB, 64 MiB and 1 GiB of 4 KiB guest mappings into a
//! simulated host.
//!
//! - `coalesced`: the shadow engine (one host call per `max_run` piece).
//! - `per_leaf`: the QEMU way — one host map per guest leaf.
//! - `linear_scan`: a bare load of every leaf PTE, the floor for any walk-based sync.
//!
//! Host call counts are printed once per size (they do not vary between runs).

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::atomic::Ordering;
use viommu_shared::host::{HostDma, SimHost, SimHostConfig};
use viommu_shared::pt::{ByteOrder, TableBuilder, Walker};
use viommu_shared::shadow::{ShadowConfig, ShadowEngine};
use viommu_shared::testing::{RadixFormat, guest_memory};
use viommu_shared::{AddrRange, GuestAddress, Perm};
use vm_memory::{Bytes, GuestMemoryMmap};

const IOVA: u64 = 0x40_0000_0000;
const GPA: u64 = 0x1_0000_0000;
const TABLES: u64 = 0x100_0000;
const TABLE_AREA: u64 = 8 << 20;

struct Setup {
    fmt: RadixFormat,
    mem: GuestMemoryMmap,
    root: u64,
    /// Guest-physical addresses of the leaf tables, in IOVA order.
    leaf_tables: Vec<u64>,
}

fn setup(bytes: u64) -> Setup {
    let fmt = RadixFormat::x86_like(4, ByteOrder::Little);
    let mem = guest_memory(&[(TABLES, TABLE_AREA as usize)]);
    let mut b = TableBuilder::new(&fmt, &mem, TABLES, TABLES + TABLE_AREA).unwrap();
    b.map_range(IOVA, GPA, bytes, Perm::RW).unwrap();
    let mut leaf_tables = Vec::new();
    for off in (0..bytes).step_by(2 << 20) {
        leaf_tables.push(b.entry_for(0, IOVA + off).unwrap());
    }
    let root = b.root();
    Setup {
        fmt,
        mem,
        root,
        leaf_tables,
    }
}

fn host() -> SimHost {
    let mut h = SimHost::new(SimHostConfig::vtd().with_entry_limit(u32::MAX));
    h.set_recording(false);
    h
}

fn coalesced(s: &Setup, bytes: u64) -> u64 {
    let mut eng = ShadowEngine::new(host(), ShadowConfig::default());
    let view = Walker::new(&s.fmt, &s.mem, s.root);
    let r = eng.sync(&view, AddrRange::from_len(IOVA, bytes)).unwrap();
    r.host_calls()
}

fn per_leaf(s: &Setup, bytes: u64) -> u64 {
    let mut h = host();
    let view = Walker::new(&s.fmt, &s.mem, s.root);
    let mut calls = 0;
    view.for_each_leaf(
        AddrRange::from_len(IOVA, bytes),
        &mut |l| {
            calls += 1;
            h.map(l.iova, l.addr, l.size, l.perm).unwrap();
        },
        &mut |_| {},
    )
    .unwrap();
    calls
}

fn linear_scan(s: &Setup, bytes: u64) -> u64 {
    let entries = bytes / 4096;
    let mut acc = 0u64;
    for (i, &t) in s.leaf_tables.iter().enumerate() {
        let n = (entries - i as u64 * 512).min(512);
        for e in 0..n {
            let v: u64 = s
                .mem
                .load(GuestAddress(t + e * 8), Ordering::Acquire)
                .unwrap();
            acc = acc.wrapping_add(v);
        }
    }
    acc
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("shadow_sync_4k");
    g.sample_size(10);
    for (name, bytes) in [("2MiB", 2u64 << 20), ("64MiB", 64 << 20), ("1GiB", 1 << 30)] {
        let s = setup(bytes);
        eprintln!(
            "host calls {name}: coalesced {} vs per-leaf {}",
            coalesced(&s, bytes),
            per_leaf(&s, bytes)
        );
        g.bench_with_input(BenchmarkId::new("coalesced", name), &bytes, |b, &n| {
            b.iter(|| black_box(coalesced(&s, n)))
        });
        g.bench_with_input(BenchmarkId::new("per_leaf", name), &bytes, |b, &n| {
            b.iter_batched(
                || (),
                |_| black_box(per_leaf(&s, n)),
                BatchSize::PerIteration,
            )
        });
        g.bench_with_input(BenchmarkId::new("linear_scan", name), &bytes, |b, &n| {
            b.iter(|| black_box(linear_scan(&s, n)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
