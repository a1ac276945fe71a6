//! `viommu-demo`: runs a Linux-like guest's storage DMA workload through the VT-d, AMD-Vi and
//! s390 zPCI models with a shadowed passthrough device, next to QEMU's per-leaf strategy on
//! the same workload, and checks that the host always holds exactly the guest's mappings.
//!
//! Exit status: 0 when every viommu verdict passes, 1 when one fails, 2 on a usage or set-up
//! error (e.g. `--vfio` on a machine without VFIO).

use std::path::PathBuf;
use std::process::ExitCode;
use viommu_demo::report::render;
use viommu_demo::{HostChoice, ModelKind, RunConfig, RunReport, Strategy, WorkloadConfig, run};

/// Default `dma_entry_limit` of the simulated host: low enough that the s390 guest's lazy
/// unmaps exhaust it (RPCIT CC 1 status 16 → global RPCIT → retry), as a busy or shared
/// container would be; the kernel's default is 65535.
const DEFAULT_LIMIT: u32 = 2048;

const USAGE: &str = "\
usage: viommu-demo [options]

Runs a storage-like DMA workload (streaming maps/unmaps of 4 KiB..2 MiB buffers) from a
Linux-like guest through each emulated IOMMU, shadowing the passthrough device into a host,
once with viommu's shadowing and once with QEMU's per-leaf strategy, and compares them.

options:
  --requests N      DMA requests per run (default 10000)
  --seed S          workload seed (default 0x5eedd3a0)
  --limit N         host dma_entry_limit of the simulated host (default 2048)
  --queue-depth N   requests in flight (default 32)
  --flush-queue N   s390 lazy-unmap flush-queue size, in buffers (default 512)
  --model M         vtd, amd-vi or zpci (repeatable; default all three)
  --strategy S      both (default), viommu, or per-leaf (QEMU's strategy only)
  --vfio PATH       shadow into a real VFIO container holding the device at PATH
                    (/sys/bus/pci/devices/...), viommu runs only
  --no-progress     no progress indicator on stderr
  -h, --help        this text";

struct Args {
    workload: WorkloadConfig,
    limit: u32,
    models: Vec<ModelKind>,
    ours: bool,
    baseline: bool,
    vfio: Option<PathBuf>,
    progress: bool,
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args {
        workload: WorkloadConfig::default(),
        limit: DEFAULT_LIMIT,
        models: Vec::new(),
        ours: true,
        baseline: true,
        vfio: None,
        progress: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let mut number = |name: &str| {
            let v = value(name)?;
            parse_u64(&v).ok_or(format!("{name}: not a number: {v}"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--requests" => a.workload.requests = number("--requests")?,
            "--seed" => a.workload.seed = number("--seed")?,
            "--limit" => {
                a.limit = u32::try_from(number("--limit")?).map_err(|_| "--limit: too large")?
            }
            "--queue-depth" => a.workload.queue_depth = number("--queue-depth")?.max(1) as usize,
            "--flush-queue" => a.workload.flush_queue = number("--flush-queue")?.max(1) as usize,
            "--model" => {
                let v = value("--model")?;
                let m = ModelKind::parse(&v).ok_or(format!("unknown model {v}"))?;
                a.models.push(m);
            }
            "--strategy" => {
                let v = value("--strategy")?;
                (a.ours, a.baseline) = match v.as_str() {
                    "both" => (true, true),
                    "viommu" => (true, false),
                    "per-leaf" => (false, true),
                    _ => return Err(format!("unknown strategy {v}")),
                };
            }
            "--vfio" => a.vfio = Some(PathBuf::from(value("--vfio")?)),
            "--no-progress" => a.progress = false,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.models.is_empty() {
        a.models = ModelKind::ALL.to_vec();
    }
    if a.vfio.is_some() {
        (a.ours, a.baseline) = (true, false);
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("viommu-demo: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let host = match &args.vfio {
        Some(device) => HostChoice::Vfio {
            device: device.clone(),
        },
        None => HostChoice::Simulated {
            entry_limit: args.limit,
        },
    };
    println!(
        "viommu demonstration: a Linux-like guest drives each emulated IOMMU through its \
         registers/instructions;\nits passthrough device's DMA goes through the host \
         mappings the shadow keeps (seed {:#x}, queue depth {}).\n",
        args.workload.seed, args.workload.queue_depth
    );
    let mut summary: Vec<(RunReport, Option<RunReport>)> = Vec::new();
    for &model in &args.models {
        let cfg = |strategy| RunConfig {
            model,
            strategy,
            workload: args.workload.clone(),
            host: host.clone(),
            progress: args.progress,
        };
        let mut reports = Vec::new();
        for (wanted, strategy) in [
            (args.ours, Strategy::Viommu),
            (args.baseline, Strategy::PerLeaf),
        ] {
            if !wanted {
                continue;
            }
            match run(&cfg(strategy)) {
                Ok(r) => reports.push(r),
                Err(e) => {
                    eprintln!("viommu-demo: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        let mut reports = reports.into_iter();
        let Some(first) = reports.next() else {
            continue;
        };
        let second = reports.next();
        println!("{}", render(&first, second.as_ref()));
        summary.push((first, second));
    }
    println!("summary");
    let mut ok = true;
    for (ours, base) in &summary {
        // A per-leaf-only run reports QEMU's strategy: informational, never a failure.
        ok &= ours.strategy != Strategy::Viommu || ours.passed();
        let vs = base.as_ref().map_or(String::new(), |b| {
            format!(
                "; host calls {} vs {} ({:.1}× fewer), peak host entries {} vs {}, wall {:.3} s vs {:.3} s",
                ours.host_stats.calls(),
                b.host_stats.calls(),
                b.host_stats.calls() as f64 / ours.host_stats.calls().max(1) as f64,
                ours.host_stats.peak_entries,
                b.host_stats.peak_entries,
                ours.wall.as_secs_f64(),
                b.wall.as_secs_f64(),
            )
        });
        let who = match ours.strategy {
            Strategy::Viommu => String::new(),
            other => format!(" {}", other.label()),
        };
        println!(
            "  {:<7}{who} {}{vs}",
            ours.model.name(),
            if ours.passed() { "PASS" } else { "FAIL" }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
