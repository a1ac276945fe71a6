//! Passthrough devices: one [`ShadowEngine`] per device over its host backend, kept equal to
//! the device's [`Space`] (`anchors-x86.md` §1.10, with out-of-resources surfaced instead of
//! lost, §5 item 1). What an out-of-resources left unmapped is retried after every later
//! page-selective sync of the device ([`ShadowEngine::sync_reclaim_retry`]), so it comes back
//! as soon as the guest frees host entries.

use crate::error::VtdError;
use crate::space::{Space, SpaceView, format_of};
use crate::stats::VtdStats;
use std::collections::BTreeMap;
use viommu_shared::AddrRange;
use viommu_shared::host::HostDma;
use viommu_shared::memory::{DmaMapping, GuestMemoryState, MemoryEvent};
use viommu_shared::pt::WalkLimits;
use viommu_shared::shadow::{PeerReclaim, ShadowEngine, ShadowError, ShadowMapping, SyncReport};
use vm_memory::GuestMemoryMmap;

/// The host backend type shadows map into.
pub type HostBackend = Box<dyn HostDma + Send>;

/// One passthrough device.
pub(crate) struct ShadowedDevice {
    pub(crate) engine: ShadowEngine<HostBackend>,
    pub(crate) space: Space,
}

/// What to bring in sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Extent {
    /// One range (page-selective invalidation).
    Range(AddrRange),
    /// The whole space (domain/global invalidation, space change).
    All,
}

/// Every passthrough device of a unit, by requester id, and the guest-memory state they all
/// follow (discarded and private memory is never mapped).
#[derive(Default)]
pub(crate) struct Shadows {
    pub(crate) devices: BTreeMap<u16, ShadowedDevice>,
    pub(crate) memory: GuestMemoryState,
}

/// The interrupt address range: never a DMA target, so never mapped on the host.
pub(crate) const INTERRUPT_RANGE: AddrRange = AddrRange::new(0xfee0_0000, 0xfef0_0000);

fn account(stats: &mut VtdStats, report: &SyncReport) {
    stats.host_refused_maps += report.refused.len() as u64;
    stats.host_unmappable_runs += report.unmappable.len() as u64;
    stats.shadow_walk_faults += report.walk_faults;
    if report.reclaimed {
        stats.host_reclaims += 1;
    }
}

fn sync_one(
    dev: &mut ShadowedDevice,
    mem: &GuestMemoryMmap,
    limits: WalkLimits,
    extent: Extent,
) -> Result<SyncReport, ShadowError> {
    let format = format_of(&dev.space);
    let view = SpaceView::new(&dev.space, &format, mem, limits);
    match extent {
        Extent::Range(r) => dev.engine.sync_reclaim_retry(&view, r),
        Extent::All => dev.engine.reclaim(&view),
    }
}

impl Shadows {
    /// Brings device `id` to its space over `extent`. On host out-of-resources (which the
    /// engine meets only after reclaiming the device's own space and retrying): reclaims every
    /// other shadowed space ([`PeerReclaim`]: they share the process's pin budget), retries
    /// once if that unmapped anything, and reports what is still unmapped. The device's own
    /// error is returned; failing that, the first peer left short by its reclaim (every
    /// shortfall is counted in `host_out_of_resources`).
    pub(crate) fn sync(
        &mut self,
        id: u16,
        mem: &GuestMemoryMmap,
        limits: WalkLimits,
        extent: Extent,
        stats: &mut VtdStats,
    ) -> Result<(), VtdError> {
        let Some(dev) = self.devices.get_mut(&id) else {
            return Ok(());
        };
        let mut result = sync_one(dev, mem, limits, extent);
        let mut peer_error = None;
        if let Err(ShadowError::OutOfResources { report, .. }) = &result {
            let peers = PeerReclaim::collect(
                self.devices
                    .iter_mut()
                    .filter(|(other, _)| **other != id)
                    .map(|(&other, d)| (other, sync_one(d, mem, limits, Extent::All))),
            );
            let freed = peers.freed();
            if peers.peers > 0 {
                stats.host_reclaims += 1;
            }
            account(stats, &peers.report);
            stats.host_out_of_resources += peers.short.len() as u64;
            stats.host_unmap_errors += peers.unmap_errors.len() as u64;
            peer_error = peers
                .short
                .into_iter()
                .map(|(device, not_mapped)| VtdError::HostOutOfResources {
                    device_id: u32::from(device),
                    not_mapped,
                })
                .chain(peers.unmap_errors.into_iter().map(|(device, run, error)| {
                    VtdError::HostUnmap {
                        device_id: u32::from(device),
                        run,
                        error,
                    }
                }))
                .next();
            // Retrying when nothing was freed would only repeat the failed host calls.
            if freed && let Some(dev) = self.devices.get_mut(&id) {
                account(stats, report);
                result = sync_one(dev, mem, limits, extent);
            }
        }
        let own = match result {
            Ok(report) => {
                account(stats, &report);
                Ok(())
            }
            Err(ShadowError::OutOfResources { report, not_mapped }) => {
                account(stats, &report);
                stats.host_out_of_resources += 1;
                Err(VtdError::HostOutOfResources {
                    device_id: u32::from(id),
                    not_mapped,
                })
            }
            Err(ShadowError::Unmap { run, error, report }) => {
                account(stats, &report);
                stats.host_unmap_errors += 1;
                Err(VtdError::HostUnmap {
                    device_id: u32::from(id),
                    run,
                    error,
                })
            }
        };
        match peer_error {
            Some(e) if own.is_ok() => Err(e),
            _ => own,
        }
    }

    /// Applies a memory event from the VMM to every passthrough device (see
    /// [`viommu_shared::memory`]). A device whose host runs out of entries while mapping
    /// memory back gets the full out-of-resources handling of [`sync`](Self::sync) (reclaim
    /// of every space, one retry). Every device is processed; the first error is returned.
    pub(crate) fn memory_event(
        &mut self,
        event: MemoryEvent,
        mem: &GuestMemoryMmap,
        limits: WalkLimits,
        stats: &mut VtdStats,
    ) -> (SyncReport, Result<(), VtdError>) {
        let change = self.memory.apply(event);
        let mut total = SyncReport::default();
        let mut first = Ok(());
        if change.is_empty() {
            return (total, first);
        }
        let ids: Vec<u16> = self.devices.keys().copied().collect();
        for id in ids {
            let Some(dev) = self.devices.get_mut(&id) else {
                continue;
            };
            let format = format_of(&dev.space);
            let view = SpaceView::new(&dev.space, &format, mem, limits);
            let result = GuestMemoryState::apply_to_engine(&mut dev.engine, &view, &change);
            let r = match result {
                Ok(report) => {
                    account(stats, &report);
                    total.absorb(report);
                    Ok(())
                }
                Err(ShadowError::OutOfResources { report, .. }) => {
                    // The exclusions are in force; what is missing is re-mapped by a full
                    // sync with reclaim of the other spaces.
                    total.absorb(*report);
                    self.sync(id, mem, limits, Extent::All, stats)
                }
                Err(ShadowError::Unmap { run, error, report }) => {
                    account(stats, &report);
                    total.absorb(*report);
                    stats.host_unmap_errors += 1;
                    Err(VtdError::HostUnmap {
                        device_id: u32::from(id),
                        run,
                        error,
                    })
                }
            };
            if first.is_ok() {
                first = r;
            }
        }
        (total, first)
    }

    /// Host mappings of every device that reach guest-physical `range`.
    pub(crate) fn dma_mappings(&self, range: AddrRange) -> Vec<DmaMapping> {
        self.devices
            .iter()
            .flat_map(|(&id, d)| {
                d.engine
                    .mappings_for_gpa(range)
                    .into_iter()
                    .map(move |m| DmaMapping::new(u32::from(id), m))
            })
            .collect()
    }

    /// Host mappings of device `id`.
    pub(crate) fn mappings(&self, id: u16) -> Option<Vec<ShadowMapping>> {
        self.devices
            .get(&id)
            .map(|d| d.engine.record().iter().copied().collect())
    }
}

/// A new engine over `host` that never maps guest-physical addresses in the interrupt range
/// and starts from the unit's guest-memory state.
pub(crate) fn new_engine(
    host: HostBackend,
    config: &viommu_shared::shadow::ShadowConfig,
    memory: &GuestMemoryState,
) -> ShadowEngine<HostBackend> {
    let mut engine = ShadowEngine::new(host, config.clone());
    // Nothing is mapped yet, so this only records the exclusion (no host call).
    let _ = engine.reserve_gpa(&viommu_shared::shadow::EmptyView, INTERRUPT_RANGE);
    memory.prepare(&mut engine);
    engine
}
