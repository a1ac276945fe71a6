//! viommu against the way QEMU shadows (see `BENCHMARKS.md` for results and how to run):
//!
//! - `translate/<model>/{hit,miss}`: emulated-device lookups through `DeviceIommu`
//!   (`vm_memory::iommu::Iommu::translate`), with the translation cached (hit) or not (a
//!   one-entry cache, so every lookup of another page walks the guest tables: miss).
//! - `global_flush_4GiB_64Ki_pages/{viommu,qemu_per_page}`: an s390 global RPCIT over a 4 GiB
//!   aperture holding 65536 live 4 KiB mappings, already in sync with the host: the zPCI
//!   model's re-sync through the shadow engine, against QEMU's RPCIT (a walk per entry and a
//!   cache lookup per 4 KiB page of the aperture, unmaps for runs of invalid entries).
//! - `workload/<model>/{viommu,per_leaf}`: the demonstration's guest workload (2000 requests,
//!   dma_entry_limit 2048), timed as the demo times it (guest driver, IOMMU and host; not the
//!   simulated device's checks).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use viommu_demo::fixtures::{
    FLUSH_PAGES, TRANSLATE_PAGES, qemu_flush, translate_fixture, zpci_flush,
};
use viommu_demo::{HostChoice, ModelKind, RunConfig, Strategy, WorkloadConfig, run};
use vm_memory::iommu::Iommu;
use vm_memory::{GuestAddress, Permissions};

fn translate(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(TRANSLATE_PAGES));
    g.measurement_time(Duration::from_secs(3));
    for model in ModelKind::ALL {
        for (case, capacity) in [("hit", 4096), ("miss", 1)] {
            let f = translate_fixture(model, capacity);
            g.bench_function(BenchmarkId::new(model.name(), case), |b| {
                b.iter(|| {
                    for &iova in &f.iovas {
                        let it = f
                            .iommu
                            .translate(GuestAddress(iova), 8, Permissions::Read)
                            .expect("mapped");
                        black_box(it.count());
                    }
                })
            });
        }
    }
    g.finish();
}

fn global_flush(c: &mut Criterion) {
    let mut g = c.benchmark_group("global_flush_4GiB_64Ki_pages");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    let ours = zpci_flush();
    let before = ours.host.with(|h| h.stats());
    assert!(ours.global_rpcit());
    let after = ours.host.with(|h| h.stats());
    eprintln!(
        "global flush host calls: viommu {} per flush ({} live mappings)",
        after.calls() - before.calls(),
        FLUSH_PAGES
    );
    g.bench_function("viommu", |b| b.iter(|| assert!(ours.global_rpcit())));
    drop(ours);
    let mut qemu = qemu_flush();
    let before = qemu.qemu.host().with(|h| h.stats());
    let lookups = qemu.qemu.stats().cache_lookups;
    assert!(qemu.global_rpcit());
    let after = qemu.qemu.host().with(|h| h.stats());
    eprintln!(
        "global flush host calls: QEMU {} per flush, {} page-cache lookups",
        after.calls() - before.calls(),
        qemu.qemu.stats().cache_lookups - lookups
    );
    g.bench_function("qemu_per_page", |b| b.iter(|| assert!(qemu.global_rpcit())));
    g.finish();
}

fn workload(c: &mut Criterion) {
    let mut g = c.benchmark_group("workload");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    let requests = 2000;
    g.throughput(Throughput::Elements(requests));
    for model in ModelKind::ALL {
        for (name, strategy) in [
            ("viommu", Strategy::Viommu),
            ("per_leaf", Strategy::PerLeaf),
        ] {
            let cfg = RunConfig {
                model,
                strategy,
                workload: WorkloadConfig {
                    requests,
                    ..WorkloadConfig::default()
                },
                host: HostChoice::Simulated { entry_limit: 2048 },
                progress: false,
            };
            let r = run(&cfg).expect("run");
            eprintln!(
                "workload {} {name}: {} host calls, peak {} entries, passed: {}",
                model.name(),
                r.host_stats.calls(),
                r.host_stats.peak_entries,
                r.passed()
            );
            g.bench_function(BenchmarkId::new(model.name(), name), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| run(&cfg).expect("run").wall)
                        .sum::<Duration>()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, translate, global_flush, workload);
criterion_main!(benches);
