//! The demonstration's workload at a small size, for every model: viommu keeps the host equal
//! to the guest tables with fewer host calls than QEMU's per-leaf strategy, and the s390 run
//! goes through RPCIT CC 1 status 16 → global RPCIT → retry and recovers.

use std::process::Command;
use viommu_demo::dma_api::DmaStats;
use viommu_demo::{
    DemoError, HostChoice, ModelKind, RunConfig, RunReport, Strategy, WorkloadConfig, run,
};

const REQUESTS: u64 = 400;

fn config(model: ModelKind, strategy: Strategy, limit: u32) -> RunConfig {
    RunConfig {
        model,
        strategy,
        workload: WorkloadConfig {
            seed: 0xd3a0,
            requests: REQUESTS,
            queue_depth: 16,
            flush_queue: 48,
        },
        host: HostChoice::Simulated { entry_limit: limit },
        progress: false,
    }
}

fn both(model: ModelKind, limit: u32) -> (RunReport, RunReport) {
    let ours = run(&config(model, Strategy::Viommu, limit)).expect("viommu run");
    let base = run(&config(model, Strategy::PerLeaf, limit)).expect("baseline run");
    (ours, base)
}

fn assert_exact(r: &RunReport) {
    assert!(r.passed(), "{:?}: {:?}", r.model, r.failures());
    assert!(r.verdict.equal());
    assert!(
        r.verdict.guest_pages > 0,
        "buffers are in flight at the end"
    );
    assert_eq!(r.verdict.guest_pages, r.verdict.host_pages);
    assert!(r.tables_match_requests);
    let DmaStats {
        maps,
        device_faults,
        stale_after_invalidation,
        map_errors,
        ..
    } = r.dma;
    assert_eq!(
        (maps, device_faults, stale_after_invalidation, map_errors),
        (REQUESTS, 0, 0, 0)
    );
    assert_eq!(r.entries_after_teardown, 0);
}

#[test]
fn vtd_exact_and_cheaper_than_per_leaf() {
    let (ours, base) = both(ModelKind::Vtd, 256);
    assert_exact(&ours);
    assert!(ours.host_stats.calls() < base.host_stats.calls());
    assert!(ours.host_stats.peak_entries < base.host_stats.peak_entries);
    assert_eq!(ours.outcome.out_of_resources, 0);
    // QEMU's strategy runs out at 256 entries and loses mappings: the device faults.
    assert!(base.host_stats.out_of_resources > 0);
    let o = &base.outcome;
    assert!(o.out_of_resources > 0 && o.out_of_resources <= base.host_stats.out_of_resources);
    assert_eq!((o.resolved, o.unresolved), (0, o.out_of_resources));
    assert!(base.dma.first_enospc.is_some());
    assert!(base.dma.device_faults > 0);
    assert!(!base.passed());
    // Same guest workload on both sides.
    assert_eq!(ours.dma.maps, base.dma.maps);
    assert_eq!(ours.outcome.invalidations, base.outcome.invalidations);
}

#[test]
fn amd_vi_exact_and_cheaper_than_per_leaf() {
    let (ours, base) = both(ModelKind::AmdVi, 256);
    assert_exact(&ours);
    assert!(ours.host_stats.calls() < base.host_stats.calls());
    assert!(ours.host_stats.peak_entries < base.host_stats.peak_entries);
    assert_eq!(ours.outcome.out_of_resources, 0);
    assert_eq!(ours.dma.maps, base.dma.maps);
}

#[test]
fn zpci_recovers_from_cc1_status16_through_global_rpcit() {
    let (ours, base) = both(ModelKind::Zpci, 192);
    assert_exact(&ours);
    // The lazily unmapped entries exhausted the host: RPCIT answered CC 1 status 16, the
    // guest's global RPCIT reclaimed them and made the mapping, every time.
    let o = &ours.outcome;
    assert!(o.out_of_resources > 0, "{o:?}");
    assert_eq!((o.resolved, o.unresolved), (o.out_of_resources, 0));
    assert_eq!(ours.host_stats.out_of_resources, o.out_of_resources);
    assert_eq!(ours.host_stats.peak_entries, 192);
    // Global RPCITs: one per flush-queue flush and one per exhaustion.
    assert_eq!(
        o.global_flushes,
        ours.dma.queue_flushes + o.out_of_resources
    );
    assert!(ours.host_stats.calls() < base.host_stats.calls());
    // QEMU's per-page entries exhaust its counter far more often.
    assert!(base.outcome.out_of_resources > o.out_of_resources);
}

#[test]
fn an_overcommitted_x86_host_loses_nothing_silently() {
    // 48 entries cannot hold the live buffers of a strict guest (nothing stale to reclaim):
    // every invalidation left short is a typed error to the VMM, and teardown still removes
    // everything.
    for model in [ModelKind::Vtd, ModelKind::AmdVi] {
        let r = run(&config(model, Strategy::Viommu, 48)).unwrap();
        let o = &r.outcome;
        assert!(o.unresolved > 0, "{model:?}: {o:?}");
        assert!(o.model_errors > 0, "{model:?}: {o:?}");
        assert!(r.dma.device_faults > 0);
        assert_eq!(r.host_stats.peak_entries, 48);
        assert!(!r.passed());
        assert_eq!((r.teardown.clone(), r.entries_after_teardown), (Ok(()), 0));
    }
}

#[test]
fn runs_are_deterministic() {
    let a = run(&config(ModelKind::Zpci, Strategy::Viommu, 192)).unwrap();
    let b = run(&config(ModelKind::Zpci, Strategy::Viommu, 192)).unwrap();
    assert_eq!(a.dma, b.dma);
    assert_eq!(a.host_stats, b.host_stats);
    assert_eq!(a.outcome, b.outcome);
    assert_eq!(a.verdict, b.verdict);
}

#[test]
fn vfio_without_a_container_is_a_clear_error() {
    let cfg = RunConfig {
        host: HostChoice::Vfio {
            device: "/sys/bus/pci/devices/0000:ff:1f.7".into(),
        },
        ..config(ModelKind::Vtd, Strategy::Viommu, 256)
    };
    let err = run(&cfg).expect_err("no such device anywhere");
    assert!(
        matches!(
            err,
            DemoError::VfioUnavailable(_) | DemoError::VfioDevice { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("--vfio: "));
}

#[test]
fn the_binary_passes_and_exits_nonzero_on_usage_errors() {
    let bin = env!("CARGO_BIN_EXE_viommu-demo");
    let out = Command::new(bin)
        .args(["--requests", "300", "--limit", "192", "--flush-queue", "48"])
        .args(["--queue-depth", "16", "--seed", "0xd3a0", "--no-progress"])
        .args(["--strategy", "viommu"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for model in ["vtd", "amd-vi", "zpci"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(model) && l.contains("PASS")),
            "{model}: {stdout}"
        );
    }
    let bad = Command::new(bin).arg("--bogus").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let vfio = Command::new(bin)
        .args([
            "--vfio",
            "/sys/bus/pci/devices/0000:ff:1f.7",
            "--requests",
            "10",
        ])
        .output()
        .unwrap();
    assert_eq!(vfio.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&vfio.stderr).contains("--vfio"));
}
