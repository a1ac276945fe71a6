//! One benchmark case at a time, for instruction counts under callgrind (repeatable where
//! wall time on a shared machine is not). The measured work runs inside functions named
//! `measured_*`, so callgrind can count only them:
//!
//! ```sh
//! cargo build --release -p viommu-demo --example measure
//! valgrind --tool=callgrind --toggle-collect='measure::measured_*' \
//!     target/release/examples/measure global-flush viommu 3
//! ```
//!
//! Cases: `global-flush viommu|qemu N`, `translate vtd|amd-vi|zpci hit|miss N` (N passes over
//! 1024 pages), `workload vtd|amd-vi|zpci viommu|per-leaf REQUESTS` (count with
//! `--toggle-collect='*IommuDomain>::map' --toggle-collect='*IommuDomain>::unmap'
//! --toggle-collect='*IommuDomain>::flush_all'`).

use std::hint::black_box;
use viommu_demo::fixtures::{qemu_flush, translate_fixture, zpci_flush};
use viommu_demo::{HostChoice, ModelKind, RunConfig, Strategy, WorkloadConfig, run};
use vm_memory::iommu::Iommu;
use vm_memory::{GuestAddress, Permissions};

#[inline(never)]
fn measured_global_flush_viommu(f: &viommu_demo::fixtures::ZpciFlush, n: u64) {
    for _ in 0..n {
        assert!(f.global_rpcit());
    }
}

#[inline(never)]
fn measured_global_flush_qemu(f: &mut viommu_demo::fixtures::QemuFlush, n: u64) {
    for _ in 0..n {
        assert!(f.global_rpcit());
    }
}

#[inline(never)]
fn measured_translate(f: &viommu_demo::fixtures::TranslateFixture, n: u64) {
    for _ in 0..n {
        for &iova in &f.iovas {
            let it = f
                .iommu
                .translate(GuestAddress(iova), 8, Permissions::Read)
                .expect("mapped");
            black_box(it.count());
        }
    }
}

/// One pass outside the measured function (fills the cache for the hit case).
fn warm(f: &viommu_demo::fixtures::TranslateFixture) {
    for &iova in &f.iovas {
        let it = f
            .iommu
            .translate(GuestAddress(iova), 8, Permissions::Read)
            .expect("mapped");
        black_box(it.count());
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: measure global-flush viommu|qemu N | translate MODEL hit|miss N | \
         workload MODEL viommu|per-leaf REQUESTS"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    let n: u64 = arg(args.len().saturating_sub(1).max(2))
        .parse()
        .unwrap_or_else(|_| usage());
    match arg(0) {
        "global-flush" => match arg(1) {
            "viommu" => measured_global_flush_viommu(&zpci_flush(), n),
            "qemu" => measured_global_flush_qemu(&mut qemu_flush(), n),
            _ => usage(),
        },
        "translate" => {
            let model = ModelKind::parse(arg(1)).unwrap_or_else(|| usage());
            let capacity = match arg(2) {
                "hit" => 4096,
                "miss" => 1,
                _ => usage(),
            };
            let f = translate_fixture(model, capacity);
            warm(&f);
            measured_translate(&f, n);
        }
        "workload" => {
            let model = ModelKind::parse(arg(1)).unwrap_or_else(|| usage());
            let strategy = match arg(2) {
                "viommu" => Strategy::Viommu,
                "per-leaf" => Strategy::PerLeaf,
                _ => usage(),
            };
            let r = run(&RunConfig {
                model,
                strategy,
                workload: WorkloadConfig {
                    requests: n,
                    ..WorkloadConfig::default()
                },
                host: HostChoice::Simulated { entry_limit: 2048 },
                progress: false,
            })
            .expect("run");
            println!(
                "{} {}: {} host calls, passed {}",
                model.name(),
                strategy.label(),
                r.host_stats.calls(),
                r.passed()
            );
        }
        _ => usage(),
    }
}
