//! One demonstration run: a model, a shadowing strategy, a host, a workload.

use crate::dma_api::{IommuDomain, Stopwatch, run_workload};
use crate::error::DemoError;
use crate::guest;
use crate::host::{self, HostHandle};
use crate::layout::new_guest_memory;
use crate::pages::Comparison;
use crate::progress::Progress;
use crate::report::RunReport;
use crate::workload::WorkloadConfig;
use std::path::PathBuf;
use std::sync::Arc;
use viommu_shared::host::{SimHostConfig, VfioContainerBackend};
use vm_memory::GuestMemoryMmap;

/// The emulated IOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// Intel VT-d.
    Vtd,
    /// AMD-Vi.
    AmdVi,
    /// s390 zPCI.
    Zpci,
}

impl ModelKind {
    /// Every model, in the demo's order.
    pub const ALL: [ModelKind; 3] = [ModelKind::Vtd, ModelKind::AmdVi, ModelKind::Zpci];

    /// Short name (also the `--model` value).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Vtd => "vtd",
            ModelKind::AmdVi => "amd-vi",
            ModelKind::Zpci => "zpci",
        }
    }

    /// What the guest does, in one line.
    pub fn title(self) -> &'static str {
        match self {
            ModelKind::Vtd => {
                "Intel VT-d — caching mode, queued invalidation, 4-level second-stage domain, \
                 page-selective invalidation per map and unmap (strict)"
            }
            ModelKind::AmdVi => {
                "AMD-Vi — NpCache, command buffer + completion wait, 3-level v1 domain with \
                 power-of-two pages, INVALIDATE_IOMMU_PAGES per map and unmap (strict)"
            }
            ModelKind::Zpci => {
                "s390 zPCI — CLP enable, region-third tables, RPCIT per map (refresh bit), \
                 lazy unmaps flushed by global RPCITs, CC 1 status 16 → global RPCIT → retry"
            }
        }
    }

    /// The simulated host of this architecture with `limit` DMA entries.
    pub fn sim_host(self, limit: u32) -> SimHostConfig {
        match self {
            ModelKind::Vtd => SimHostConfig::vtd(),
            ModelKind::AmdVi => SimHostConfig::amd_vi(),
            ModelKind::Zpci => SimHostConfig::s390(guest::zpci::HOST_APERTURE),
        }
        .with_entry_limit(limit)
    }

    /// Parses a `--model` value.
    pub fn parse(s: &str) -> Option<ModelKind> {
        ModelKind::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// Who keeps the host equal to the guest tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The model's own shadowing (viommu).
    Viommu,
    /// QEMU's: one host call per guest leaf, per-page RPCIT on s390 ([`crate::baseline`]).
    PerLeaf,
}

impl Strategy {
    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Strategy::Viommu => "viommu",
            Strategy::PerLeaf => "per-leaf (QEMU)",
        }
    }
}

/// Where host mappings go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostChoice {
    /// The simulated kernel (type1 v2) with this `dma_entry_limit`.
    Simulated {
        /// Mappings the container accepts.
        entry_limit: u32,
    },
    /// A real VFIO type1 container holding the device at this sysfs path
    /// (`/sys/bus/pci/devices/DDDD:BB:DD.F`, bound to vfio-pci).
    Vfio {
        /// The device.
        device: PathBuf,
    },
}

/// Everything one run needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// The model.
    pub model: ModelKind,
    /// The shadowing strategy.
    pub strategy: Strategy,
    /// The guest workload.
    pub workload: WorkloadConfig,
    /// The host.
    pub host: HostChoice,
    /// Show progress on stderr for runs longer than a second.
    pub progress: bool,
}

/// Keeps a VFIO device (and so its group in the container) alive during a run.
enum HostGuard {
    None,
    Vfio(#[allow(dead_code)] vfio_ioctls::VfioDevice),
}

fn make_host(cfg: &RunConfig, mem: &GuestMemoryMmap) -> Result<(HostHandle, HostGuard), DemoError> {
    match &cfg.host {
        HostChoice::Simulated { entry_limit } => Ok((
            host::simulated(cfg.model.sim_host(*entry_limit)),
            HostGuard::None,
        )),
        HostChoice::Vfio { device } => {
            let backend = VfioContainerBackend::open(Arc::new(mem.clone()))
                .map_err(DemoError::VfioUnavailable)?;
            let ops: Arc<dyn vfio_ioctls::VfioOps> = backend.container().clone();
            let dev = vfio_ioctls::VfioDevice::new(device, ops, false).map_err(|error| {
                DemoError::VfioDevice {
                    path: device.display().to_string(),
                    error,
                }
            })?;
            Ok((host::handle(Box::new(backend)), HostGuard::Vfio(dev)))
        }
    }
}

/// Runs `cfg`.
pub fn run(cfg: &RunConfig) -> Result<RunReport, DemoError> {
    let mem = new_guest_memory();
    let (host, guard) = make_host(cfg, &mem)?;
    let report = match cfg.model {
        ModelKind::Vtd => guest::vtd::run(cfg, mem, host),
        ModelKind::AmdVi => guest::amd_vi::run(cfg, mem, host),
        ModelKind::Zpci => guest::zpci::run(cfg, mem, host),
    };
    drop(guard);
    report
}

/// Runs the workload through a booted `domain`, compares the host with the guest tables,
/// tears the passthrough device down and reports.
pub(crate) fn drive(
    domain: &mut dyn IommuDomain,
    cfg: &RunConfig,
    mut clock: Stopwatch,
) -> RunReport {
    let label = format!("{} {}", cfg.model.name(), cfg.strategy.label());
    let mut progress = Progress::new(&label, cfg.progress);
    let (dma, expected) = run_workload(domain, &cfg.workload, &mut clock, &mut progress);
    let guest_pages = domain.guest_pages();
    let host_pages = domain.host().with(|h| h.pages());
    let verdict = Comparison::of(&guest_pages, &host_pages);
    let host_stats = domain.host().with(|h| h.stats());
    let outcome = domain.outcome();
    let teardown = clock.time(|| domain.teardown());
    let after = domain.host().with(|h| h.stats());
    RunReport {
        model: cfg.model,
        strategy: cfg.strategy,
        host: cfg.host.clone(),
        requests: cfg.workload.requests,
        dma,
        outcome,
        host_stats,
        wall: clock.total,
        verdict,
        tables_match_requests: guest_pages == expected.0,
        teardown,
        entries_after_teardown: after.entries,
    }
}
