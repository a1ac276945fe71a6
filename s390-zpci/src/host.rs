//! A function's host backend and the shadow engine of its current registration.

use viommu_shared::AddrRange;
use viommu_shared::host::{HostDma, HostError, SharedHost};
use viommu_shared::memory::GuestMemoryState;
use viommu_shared::shadow::{
    GuestView, ShadowConfig, ShadowEngine, ShadowError, ShadowMapping, SyncReport,
};

/// The VMM's host backend, shared so that a new shadow engine can be built over it when the
/// guest switches between table translation and relaxed translation (different mapping
/// granularity). At most one engine uses it at a time.
pub(crate) type HostHandle = SharedHost<Box<dyn HostDma + Send>>;

/// Host mapping granularity of an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EngineMode {
    /// Translation tables: the configured `ShadowConfig`.
    Tables,
    /// Relaxed translation: RAM in large pieces.
    Relaxed,
}

/// What to bring in line with the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncScope {
    /// One range.
    Range(AddrRange),
    /// One range; on exhaustion, everything, then the range again.
    RangeOrReclaim(AddrRange),
    /// Everything.
    All,
}

/// A host backend attached to a function.
pub(crate) struct HostAttachment {
    handle: HostHandle,
    engine: Option<(EngineMode, ShadowEngine<HostHandle>)>,
    /// Usable IOVA ranges at attach time.
    pub ranges: Vec<AddrRange>,
    /// Free entries at attach time (type1's DMA_AVAIL), `None` when unlimited.
    pub budget_at_attach: Option<u32>,
    /// Discarded / private guest memory (VMM memory events): every engine starts from it.
    pub memory: GuestMemoryState,
}

impl HostAttachment {
    /// Wraps `host` (which should hold no mappings); engines start from `memory`.
    pub fn new(host: Box<dyn HostDma + Send>, memory: GuestMemoryState) -> Self {
        let handle = HostHandle::from_host(host);
        let ranges = handle.iova_ranges();
        let budget_at_attach = handle.remaining_entries();
        HostAttachment {
            handle,
            engine: None,
            ranges,
            budget_at_attach,
            memory,
        }
    }

    /// The current engine, if it lays out `mode`.
    pub fn current_engine(&mut self, mode: EngineMode) -> Option<&mut ShadowEngine<HostHandle>> {
        match &mut self.engine {
            Some((m, e)) if *m == mode => Some(e),
            _ => None,
        }
    }

    /// Host mappings of the current engine whose guest-physical range overlaps `range`.
    pub fn mappings_for_gpa(&self, range: AddrRange) -> Vec<ShadowMapping> {
        self.engine
            .as_ref()
            .map(|(_, e)| e.mappings_for_gpa(range))
            .unwrap_or_default()
    }

    /// Free host entries now, read from the host itself.
    pub fn remaining_entries(&self) -> Option<u32> {
        self.handle.remaining_entries()
    }

    /// Host mappings the current engine holds.
    pub fn mappings(&self) -> Vec<viommu_shared::shadow::ShadowMapping> {
        self.engine
            .as_ref()
            .map(|(_, e)| e.record().iter().copied().collect())
            .unwrap_or_default()
    }

    /// Number of host mappings held.
    pub fn mapping_count(&self) -> usize {
        self.engine.as_ref().map_or(0, |(_, e)| e.record().len())
    }

    /// The engine for `mode`, creating it (or replacing an empty engine of another mode).
    pub fn engine(
        &mut self,
        mode: EngineMode,
        config: &ShadowConfig,
        relaxed_max_run: u64,
    ) -> &mut ShadowEngine<HostHandle> {
        let replace = match &mut self.engine {
            None => true,
            // Another granularity: empty the old engine first. If the host refuses, keep
            // it (dropping it would leak its mappings); its granularity only costs entries.
            Some((m, e)) if *m != mode => e.teardown().is_ok(),
            Some(_) => false,
        };
        if replace {
            self.engine = None;
        }
        let handle = &self.handle;
        let memory = &self.memory;
        let (_, engine) = self.engine.get_or_insert_with(|| {
            let cfg = match mode {
                EngineMode::Tables => config.clone(),
                EngineMode::Relaxed => config.clone().with_max_run(relaxed_max_run),
            };
            let mut engine = ShadowEngine::new(handle.clone(), cfg);
            memory.prepare(&mut engine);
            (mode, engine)
        });
        engine
    }

    /// Syncs the current engine (if any) with `view` over `scope`.
    pub fn sync(
        engine: &mut ShadowEngine<HostHandle>,
        view: &dyn GuestView,
        scope: SyncScope,
    ) -> Result<SyncReport, ShadowError> {
        match scope {
            SyncScope::Range(r) => engine.sync(view, r),
            SyncScope::RangeOrReclaim(r) => engine.sync_or_reclaim(view, r),
            SyncScope::All => engine.reclaim(view),
        }
    }

    /// Removes every host mapping and drops the engine. On a host refusal the engine is
    /// kept (so a later call retries) and the error returned.
    pub fn teardown(&mut self) -> Result<(), ShadowError> {
        if let Some((_, e)) = &mut self.engine {
            e.teardown()?;
        }
        self.engine = None;
        Ok(())
    }

    /// Last resort on detach after a refused teardown: asks the host to drop everything.
    pub fn force_unmap_all(&mut self) -> Result<u64, HostError> {
        self.handle.unmap_all()
    }
}
