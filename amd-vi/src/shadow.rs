//! Passthrough devices: one shared [`ShadowEngine`] per device keeps its host DMA mappings
//! equal to the guest's view of the device's address space.
//!
//! The mode a shadow reflects is the device's entry as of the last time the IOMMU had to
//! (re)load it — attach, INVALIDATE_DEVTAB_ENTRY, INVALIDATE_IOMMU_ALL, an IommuEn change or
//! an alias change — which is what hardware caching the entry does. Then:
//!
//! - translated (Mode 1–6): the DTE-masked table walk; INVALIDATE_IOMMU_PAGES for its
//!   DomainID syncs the invalidated range;
//! - untranslated (IommuEn = 0, V = 0, or Mode 0 with IR/IW): identity over guest RAM with
//!   those permissions;
//! - blocked (Mode 0 without IR/IW, TV = 0, malformed or unreadable entry): nothing mapped.
//!
//! Passthrough DMA is not seen by the model, so a malformed entry or table of a passthrough
//! device raises no event; the device is blocked (or the malformed part left unmapped).
//!
//! Host out of resources: `sync_or_reclaim` (sync; on failure a full re-sync that maps the
//! range first), then a reclaim of the other devices' spaces and one retry if that freed
//! anything ([`PeerReclaim`], as VT-d does); what still does not fit stays unmapped, is
//! counted, and is returned as [`AmdViError::HostOutOfResources`] from the call that
//! processed the command. The engine remembers the span of what is missing and retries it
//! (without a reclaim) after every later successful sync of the device
//! ([`ShadowEngine::sync_reclaim_retry`]), so mappings come back as soon as the guest frees
//! host entries.

use crate::dte::DeviceMode;
use crate::error::AmdViError;
use crate::shared_state::{Exec, Inner};
use crate::stats;
use crate::view::with_view;
use std::collections::BTreeMap;
use viommu_shared::AddrRange;
use viommu_shared::host::{HostDma, HostError};
use viommu_shared::memory::{DmaMapping, GuestMemoryState, MemoryEvent};
use viommu_shared::pt::Run;
use viommu_shared::shadow::{PeerReclaim, ShadowEngine, ShadowError, SyncReport};

/// The whole IOVA space.
pub const EVERYTHING: AddrRange = AddrRange::new(0, u64::MAX);

/// A passthrough device's host address space and the mode it currently reflects.
pub struct HostShadow {
    /// The engine owning the host backend.
    pub engine: ShadowEngine<Box<dyn HostDma + Send>>,
    /// The mode the host mappings reflect.
    pub mode: DeviceMode,
}

impl HostShadow {
    /// A shadow of `mode` over `engine`, nothing synced yet.
    pub fn new(engine: ShadowEngine<Box<dyn HostDma + Send>>, mode: DeviceMode) -> HostShadow {
        HostShadow { engine, mode }
    }
}

/// Passthrough devices by requester id.
pub type Shadows = BTreeMap<u16, HostShadow>;

impl Inner {
    /// Brings `range` of device `device_id`'s host mappings to its current mode's view (a
    /// device not attached is left alone). On host out-of-resources after the device's own
    /// reclaim, reclaims every other device's space ([`PeerReclaim`]: they share the
    /// process's pin budget) and retries once if that freed anything. Returns the device's
    /// own error or, failing that, the first error of a peer its reclaim left short (every
    /// one is counted and kept in the host-error history).
    pub fn sync_device(
        &self,
        shadows: &mut Shadows,
        device_id: u16,
        range: AddrRange,
    ) -> Result<(), AmdViError> {
        let Some(shadow) = shadows.get_mut(&device_id) else {
            return Ok(());
        };
        stats::add(&self.stats.shadow_syncs, 1);
        let mut result = self.sync_engine(shadow, range);
        let mut peer_error = None;
        if let Err(ShadowError::OutOfResources { report, .. }) = &result {
            let (freed, error) = self.reclaim_peers(shadows, device_id);
            peer_error = error;
            if freed && let Some(shadow) = shadows.get_mut(&device_id) {
                self.count(report);
                result = self.sync_engine(shadow, range);
            }
        }
        let own = self.settle(device_id, result);
        match peer_error {
            Some(e) if own.is_ok() => Err(e),
            _ => own,
        }
    }

    /// `sync_or_reclaim` of `range`, then (if that succeeded) the retry of what is missing.
    fn sync_engine(
        &self,
        shadow: &mut HostShadow,
        range: AddrRange,
    ) -> Result<SyncReport, ShadowError> {
        let limits = self.config.shadow.walk_limits;
        let engine = &mut shadow.engine;
        with_view(&shadow.mode, &self.mem, &self.identity, limits, |view| {
            engine.sync_reclaim_retry(view, range)
        })
    }

    /// Reclaims (fully re-syncs) every device but `except`, counting what that did; returns
    /// whether any host entry was freed and the first peer error.
    fn reclaim_peers(&self, shadows: &mut Shadows, except: u16) -> (bool, Option<AmdViError>) {
        let limits = self.config.shadow.walk_limits;
        let peers = PeerReclaim::collect(shadows.iter_mut().filter(|(id, _)| **id != except).map(
            |(&id, shadow)| {
                let engine = &mut shadow.engine;
                let result = with_view(&shadow.mode, &self.mem, &self.identity, limits, |view| {
                    engine.reclaim(view)
                });
                (id, result)
            },
        ));
        if peers.peers > 0 {
            stats::add(&self.stats.host_reclaims, 1);
        }
        self.count(&peers.report);
        let freed = peers.freed();
        let mut first = None;
        for (device_id, not_mapped) in peers.short {
            first.get_or_insert(self.ran_out(device_id, not_mapped));
        }
        for (device_id, run, error) in peers.unmap_errors {
            first.get_or_insert(self.unmap_refused(device_id, run, error));
        }
        (freed, first)
    }

    /// Counts a device's sync result and turns a failure into the error for the VMM (also
    /// kept in the host-error history).
    fn settle(
        &self,
        device_id: u16,
        result: Result<SyncReport, ShadowError>,
    ) -> Result<(), AmdViError> {
        match result {
            Ok(report) => {
                self.count(&report);
                Ok(())
            }
            Err(ShadowError::OutOfResources { report, not_mapped }) => {
                // `sync_or_reclaim` marks the report `reclaimed`, so `count` has already
                // counted the reclaim.
                self.count(&report);
                Err(self.ran_out(device_id, not_mapped))
            }
            Err(ShadowError::Unmap { run, error, report }) => {
                self.count(&report);
                Err(self.unmap_refused(device_id, run, error))
            }
        }
    }

    /// Counts `device_id` running out of host resources with `not_mapped` left unmapped and
    /// keeps it in the host-error history.
    fn ran_out(&self, device_id: u16, not_mapped: Vec<Run>) -> AmdViError {
        stats::add(&self.stats.host_out_of_resources, 1);
        let e = AmdViError::HostOutOfResources {
            device_id,
            not_mapped,
        };
        self.note_host_error(&e);
        e
    }

    /// Counts a host unmap refusal for `device_id` and keeps it in the host-error history.
    fn unmap_refused(&self, device_id: u16, run: Run, error: HostError) -> AmdViError {
        stats::add(&self.stats.host_unmap_errors, 1);
        let e = AmdViError::HostUnmap {
            device_id,
            run,
            error,
        };
        self.note_host_error(&e);
        e
    }

    fn count(&self, r: &SyncReport) {
        stats::add(&self.stats.host_maps, r.map_calls);
        stats::add(&self.stats.host_unmaps, r.unmap_calls);
        stats::add(&self.stats.host_refused, r.refused.len() as u64);
        stats::add(&self.stats.host_unmappable, r.unmappable.len() as u64);
        if r.reclaimed {
            stats::add(&self.stats.host_reclaims, 1);
        }
    }

    /// Switches device `device_id` to `mode`; when it differs from what the host reflects
    /// (or `always`), re-syncs the whole space.
    pub fn retarget(
        &self,
        shadows: &mut Shadows,
        device_id: u16,
        mode: DeviceMode,
        always: bool,
    ) -> Result<(), AmdViError> {
        let Some(shadow) = shadows.get_mut(&device_id) else {
            return Ok(());
        };
        if shadow.mode == mode && !always {
            return Ok(());
        }
        shadow.mode = mode;
        self.sync_device(shadows, device_id, EVERYTHING)
    }
}

impl Inner {
    /// Applies a memory event from the VMM to every passthrough device (see
    /// [`viommu_shared::memory`]): each engine drops the translations into memory that
    /// became unusable and maps back those into memory usable again. On host exhaustion the
    /// device gets the usual out-of-resources handling (a full re-sync with reclaim; what
    /// still does not fit is remembered and retried later). Every device is processed; the
    /// first error is returned.
    pub fn memory_event(
        &self,
        exec: &mut Exec,
        event: MemoryEvent,
    ) -> (SyncReport, Result<(), AmdViError>) {
        let change = exec.memory.apply(event);
        let mut total = SyncReport::default();
        let mut first = FirstError::default();
        if change.is_empty() {
            return (total, Ok(()));
        }
        let limits = self.config.shadow.walk_limits;
        let ids: Vec<u16> = exec.shadows.keys().copied().collect();
        for device_id in ids {
            let Some(shadow) = exec.shadows.get_mut(&device_id) else {
                continue;
            };
            let engine = &mut shadow.engine;
            let result = with_view(&shadow.mode, &self.mem, &self.identity, limits, |view| {
                GuestMemoryState::apply_to_engine(engine, view, &change)
            });
            match result {
                Ok(report) => {
                    self.count(&report);
                    total.absorb(report);
                }
                Err(ShadowError::OutOfResources { report, .. }) => {
                    self.count(&report);
                    total.absorb(*report);
                    first.keep(self.sync_device(&mut exec.shadows, device_id, EVERYTHING));
                }
                Err(ShadowError::Unmap { run, error, report }) => {
                    self.count(&report);
                    total.absorb(*report);
                    first.keep(Err(self.unmap_refused(device_id, run, error)));
                }
            }
        }
        (total, first.into_result())
    }

    /// Host mappings of every passthrough device that reach guest-physical `range`.
    pub fn dma_mappings(exec: &Exec, range: AddrRange) -> Vec<DmaMapping> {
        exec.shadows
            .iter()
            .flat_map(|(&id, s)| {
                s.engine
                    .mappings_for_gpa(range)
                    .into_iter()
                    .map(move |m| DmaMapping::new(u32::from(id), m))
            })
            .collect()
    }
}

/// Keeps the first error of a sequence of operations that must all run.
#[derive(Debug, Default)]
pub struct FirstError(Option<AmdViError>);

impl FirstError {
    /// Records `r`'s error if it is the first.
    pub fn keep(&mut self, r: Result<(), AmdViError>) {
        if let Err(e) = r {
            self.0.get_or_insert(e);
        }
    }

    /// `Ok` if nothing failed, else the first error.
    pub fn into_result(self) -> Result<(), AmdViError> {
        self.0.map_or(Ok(()), Err)
    }
}
