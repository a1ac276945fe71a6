//! What a run measured, its verdict, and the side-by-side table the demo prints.

use crate::dma_api::{DmaStats, DomainOutcome};
use crate::host::HostStats;
use crate::pages::Comparison;
use crate::run::{HostChoice, ModelKind, Strategy};
use std::fmt::Write;
use std::time::Duration;

/// The result of one run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The model.
    pub model: ModelKind,
    /// The strategy.
    pub strategy: Strategy,
    /// The host.
    pub host: HostChoice,
    /// Requests in the workload.
    pub requests: u64,
    /// The DMA API's counters (maps, failures, the device's checks).
    pub dma: DmaStats,
    /// The IOMMU side's counters.
    pub outcome: DomainOutcome,
    /// The host's counters before teardown.
    pub host_stats: HostStats,
    /// Time spent in the guest driver, the IOMMU and the host (set-up, workload, teardown;
    /// not the simulated device's checks nor the verification).
    pub wall: Duration,
    /// Guest tables against host mappings after the workload (buffers still in flight).
    pub verdict: Comparison,
    /// The guest tables map exactly the buffers in flight (a check of the guest driver).
    pub tables_match_requests: bool,
    /// Detaching the passthrough device.
    pub teardown: Result<(), String>,
    /// Host mappings left after teardown.
    pub entries_after_teardown: u64,
}

impl RunReport {
    /// Everything that makes the run a failure (empty: it passed). For the per-leaf
    /// baseline these are QEMU's failures, shown for comparison.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let v = &self.verdict;
        if !v.equal() {
            f.push(format!(
                "host differs from the guest tables: {} pages missing, {} stale, {} different",
                v.missing, v.stale, v.different
            ));
        }
        if !self.tables_match_requests {
            f.push("guest tables differ from the buffers in flight".into());
        }
        if self.dma.device_faults > 0 {
            f.push(format!(
                "{} pages of mapped buffers were not reachable on the host",
                self.dma.device_faults
            ));
        }
        if self.dma.wrong_translations > 0 {
            f.push(format!(
                "{} pages reached the wrong guest memory",
                self.dma.wrong_translations
            ));
        }
        if self.dma.stale_after_invalidation > 0 {
            f.push(format!(
                "{} pages stayed mapped on the host after their invalidation",
                self.dma.stale_after_invalidation
            ));
        }
        if self.dma.map_errors > 0 {
            f.push(format!(
                "{} DMA mappings failed in the guest",
                self.dma.map_errors
            ));
        }
        if self.outcome.iommu_faults > 0 {
            f.push(format!("{} IOMMU faults", self.outcome.iommu_faults));
        }
        if let Err(e) = &self.teardown {
            f.push(format!("teardown failed: {e}"));
        }
        if self.entries_after_teardown > 0 {
            f.push(format!(
                "{} host mappings left after teardown",
                self.entries_after_teardown
            ));
        }
        f
    }

    /// True when the host followed the guest exactly, nothing was lost and everything was
    /// removed at teardown.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn ratio(ours: f64, base: f64) -> String {
    if ours <= 0.0 || base <= 0.0 {
        String::new()
    } else {
        format!("{:.1}×", base / ours)
    }
}

fn verdict_cell(r: &RunReport) -> String {
    let v = &r.verdict;
    if v.equal() {
        format!("equal ({} pages)", v.guest_pages)
    } else {
        format!(
            "DIFFERENT: {} missing, {} stale",
            v.missing + v.different,
            v.stale
        )
    }
}

/// The side-by-side table of one model: viommu against the per-leaf baseline (if run).
pub fn render(ours: &RunReport, base: Option<&RunReport>) -> String {
    let mut out = String::new();
    let w = |out: &mut String, label: &str, a: String, b: Option<String>, r: String| {
        let _ = writeln!(
            out,
            "  {label:<40} {a:>22}   {:>22}   {r}",
            b.unwrap_or_default()
        );
    };
    let _ = writeln!(out, "== {}", ours.model.title());
    let host = match &ours.host {
        HostChoice::Simulated { entry_limit } => {
            format!("simulated type1 v2 host, dma_entry_limit {entry_limit}")
        }
        HostChoice::Vfio { device } => format!("VFIO container with {}", device.display()),
    };
    let _ = writeln!(
        out,
        "   {} DMA requests of 4 KiB..2 MiB (storage mix), {host}",
        ours.requests
    );
    w(
        &mut out,
        "",
        ours.strategy.label().into(),
        base.map(|b| b.strategy.label().into()),
        "baseline / viommu".into(),
    );
    let both = |f: &dyn Fn(&RunReport) -> String| (f(ours), base.map(f));
    let (a, b) = both(&|r| format!("{} / {}", r.dma.maps, r.dma.unmaps));
    w(&mut out, "guest maps / unmaps", a, b, String::new());
    let (a, b) = both(&|r| {
        format!(
            "{} ({} global)",
            r.outcome.invalidations, r.outcome.global_flushes
        )
    });
    w(&mut out, "guest invalidations", a, b, String::new());
    let n = |r: &RunReport| r.host_stats.map_calls as f64;
    let (a, b) = both(&|r| r.host_stats.map_calls.to_string());
    w(
        &mut out,
        "host map calls",
        a,
        b,
        base.map_or(String::new(), |b| ratio(n(ours), n(b))),
    );
    let n = |r: &RunReport| r.host_stats.unmap_calls as f64;
    let (a, b) = both(&|r| r.host_stats.unmap_calls.to_string());
    w(
        &mut out,
        "host unmap calls",
        a,
        b,
        base.map_or(String::new(), |b| ratio(n(ours), n(b))),
    );
    let n = |r: &RunReport| r.host_stats.calls() as f64;
    let (a, b) = both(&|r| r.host_stats.calls().to_string());
    w(
        &mut out,
        "host calls",
        a,
        b,
        base.map_or(String::new(), |b| ratio(n(ours), n(b))),
    );
    let n = |r: &RunReport| r.host_stats.peak_entries as f64;
    let (a, b) = both(&|r| r.host_stats.peak_entries.to_string());
    w(
        &mut out,
        "peak host entries",
        a,
        b,
        base.map_or(String::new(), |b| ratio(n(ours), n(b))),
    );
    let (a, b) = both(&|r| {
        format!(
            "{} ({} ENOSPC)",
            r.outcome.out_of_resources, r.host_stats.out_of_resources
        )
    });
    w(&mut out, "out-of-resources events", a, b, String::new());
    let (a, b) = both(&|r| {
        r.dma
            .first_enospc
            .map_or("-".into(), |n| format!("request {n}"))
    });
    w(&mut out, "  first host ENOSPC", a, b, String::new());
    let (a, b) = both(&|r| format!("{} / {}", r.outcome.resolved, r.outcome.unresolved));
    w(&mut out, "  resolved / not resolved", a, b, String::new());
    let (a, b) = both(&|r| r.outcome.model_errors.to_string());
    w(
        &mut out,
        "  typed errors returned to the VMM",
        a,
        b,
        String::new(),
    );
    let (a, b) = both(&|r| r.dma.map_errors.to_string());
    w(&mut out, "guest DMA mapping failures", a, b, String::new());
    let (a, b) = both(&|r| r.outcome.iommu_faults.to_string());
    w(&mut out, "IOMMU faults", a, b, String::new());
    let (a, b) = both(&|r| r.dma.device_faults.to_string());
    w(
        &mut out,
        "device DMA faults on the host (pages)",
        a,
        b,
        String::new(),
    );
    let (a, b) = both(&|r| r.dma.stale_after_invalidation.to_string());
    w(
        &mut out,
        "stale host pages after invalidation",
        a,
        b,
        String::new(),
    );
    let t = |r: &RunReport| r.wall.as_secs_f64();
    let (a, b) = both(&|r| secs(r.wall));
    w(
        &mut out,
        "wall time",
        a,
        b,
        base.map_or(String::new(), |b| ratio(t(ours), t(b))),
    );
    let (a, b) = both(&verdict_cell);
    w(
        &mut out,
        "host == guest tables at the end",
        a,
        b,
        String::new(),
    );
    let (a, b) = both(&|r| match (&r.teardown, r.entries_after_teardown) {
        (Ok(()), 0) => "all host mappings removed".into(),
        (Ok(()), n) => format!("{n} host mappings left"),
        (Err(e), _) => format!("failed: {e}"),
    });
    w(&mut out, "teardown", a, b, String::new());
    for r in std::iter::once(ours).chain(base) {
        let _ = writeln!(
            out,
            "  {} on exhaustion: {}",
            r.strategy.label(),
            r.outcome.resolution
        );
        for note in &r.outcome.notes {
            let _ = writeln!(out, "    {note}");
        }
    }
    let f = ours.failures();
    if f.is_empty() {
        let _ = writeln!(
            out,
            "  verdict: PASS — every page of every mapped buffer reachable on the host, \
             nothing left mapped after its invalidation, host == guest tables at the end, \
             nothing lost"
        );
    } else {
        let _ = writeln!(out, "  verdict: FAIL");
        for x in f {
            let _ = writeln!(out, "    {x}");
        }
    }
    if let Some(b) = base {
        let f = b.failures();
        if !f.is_empty() {
            let _ = writeln!(out, "  what QEMU's strategy did with the same guest:");
            for x in f {
                let _ = writeln!(out, "    {x}");
            }
        }
    }
    out
}
