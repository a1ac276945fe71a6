//! One zPCI function: state machine, registered address space, host shadow, measurement.
//!
//! Every transition that changes what the function's DMA may reach goes through
//! one host sync: the shadow engine brings the host to the guest view, which is
//! nothing unless the function is enabled with an address space registered (errors and
//! blocked states block DMA, A.3.5). So every entry leaving the guest's view — through an
//! invalid page, segment or region entry, deregistration, disable, reset or the error state —
//! is unmapped on the host (A.17 item 6, errata 1 and 8).

use std::sync::Mutex;

use viommu_shared::addr::{PAGE_SIZE_4K, align_down, align_up};
use viommu_shared::dma::{DmaFault, DmaFaultKind, DmaTranslation};
use viommu_shared::iotlb::IotlbRegistry;
use viommu_shared::memory::{GuestMemoryState, StateChange};
use viommu_shared::pt::{Run, WalkFault, WalkLimits, Walker};
use viommu_shared::regs::MsiSink;
use viommu_shared::shadow::{GuestView, IdentityView, ShadowError, SyncReport};
use viommu_shared::{AddrRange, Perm};
use vm_memory::GuestMemoryMmap;

use crate::backend::PciFunctionBackend;
use crate::codes::{Cc, Pec, status};
use crate::config::{AperturePolicy, Config, ExhaustionPolicy, FunctionConfig, GroupConfig};
use crate::error::ModelError;
use crate::events::{ErrorEvent, EventQueue};
use crate::format::{DmaTableFormat, TableError};
use crate::handle::{Fh, Fid, FunctionState};
use crate::host::{EngineMode, HostAttachment, SyncScope};
use crate::iota::Iota;
use crate::measure::{Counter, FmbCounters, Measurement};
use crate::view::{ApertureView, relaxed_block};

/// Everything a function operation needs from the model.
pub(crate) struct Ctx<'a> {
    pub config: &'a Config,
    pub mem: &'a GuestMemoryMmap,
    pub iotlb: &'a IotlbRegistry,
    pub events: &'a Mutex<EventQueue>,
    pub doorbell: &'a dyn MsiSink,
}

impl Ctx<'_> {
    fn raise(&self, e: ErrorEvent) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(e, self.doorbell);
    }

    fn walk_limits(&self) -> WalkLimits {
        self.config.shadow.walk_limits
    }
}

/// How a registered address space translates.
#[derive(Clone, Debug)]
pub(crate) enum Translation {
    /// Through DMA tables rooted at `root`.
    Tables { format: DmaTableFormat, root: u64 },
    /// Relaxed translation: RAM at `sdma + GPA`.
    Relaxed(IdentityView),
}

/// A registered I/O address space (MPCIFC register IOAT).
#[derive(Clone, Debug)]
pub(crate) struct Ioat {
    pub pba: u64,
    pub pal: u64,
    pub iota: Iota,
    pub translation: Translation,
}

impl Ioat {
    /// `[pba, pal]` as a half-open range.
    pub fn aperture(&self) -> AddrRange {
        AddrRange::new(self.pba, self.pal.saturating_add(1))
    }

    fn mode(&self) -> EngineMode {
        match self.translation {
            Translation::Tables { .. } => EngineMode::Tables,
            Translation::Relaxed(_) => EngineMode::Relaxed,
        }
    }
}

/// Adapter-interruption registration (MPCIFC register interruptions), kept for the VMM,
/// which routes the device's MSI-X vectors to adapter interrupts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InterruptRegistration {
    /// Interruption subclass.
    pub isc: u8,
    /// Number of interrupts.
    pub noi: u16,
    /// Adapter interrupt bit-vector address.
    pub aibv: u64,
    /// Bit offset of the function's first bit in the bit vector.
    pub aibvo: u8,
    /// Adapter interrupt summary-bit address.
    pub aisb: u64,
    /// Bit offset of the summary bit.
    pub aisbo: u8,
    /// Summary bit enabled.
    pub sum: bool,
}

/// Per-function counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FunctionStats {
    /// RPCITs processed past the state checks.
    pub rpcits: u64,
    /// RPCITs covering the whole registered DMA range (global flushes).
    pub global_rpcits: u64,
    /// RPCITs answered CC 1 status 16.
    pub insufficient_resources: u64,
    /// Full re-syncs of the host shadow (global RPCITs, registrations, resets).
    pub full_syncs: u64,
    /// Host map calls made.
    pub host_map_calls: u64,
    /// Host unmap calls made.
    pub host_unmap_calls: u64,
    /// Guest runs the host refused or could not place (not resources).
    pub host_refused_runs: u64,
    /// Translation-table errors found (RPCIT or DMA).
    pub table_errors: u64,
    /// Emulated DMA requests that faulted.
    pub dma_faults: u64,
}

/// The registered address space, as [`FunctionInfo`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoatInfo {
    /// Start of the DMA range.
    pub pba: u64,
    /// Last byte of the DMA range.
    pub pal: u64,
    /// The anchor as registered.
    pub iota: u64,
    /// True for relaxed translation (T = 0).
    pub relaxed: bool,
}

/// A snapshot of one function, for the VMM and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Function id.
    pub fid: Fid,
    /// Current handle.
    pub fh: Fh,
    /// State.
    pub state: FunctionState,
    /// Function group.
    pub pfgid: u8,
    /// DMA range advertised by QUERY PCI FUNCTION: `(sdma, edma)`, inclusive.
    pub dma_range: (u64, u64),
    /// Registered address space.
    pub ioat: Option<IoatInfo>,
    /// Registered adapter interruptions.
    pub interrupts: Option<InterruptRegistration>,
    /// Measurement block address while measuring.
    pub fmb_addr: Option<u64>,
    /// Measurement counters.
    pub counters: FmbCounters,
    /// True when a host backend is attached.
    pub has_host: bool,
    /// Host mappings the shadow holds.
    pub host_mappings: usize,
    /// Free host entries, read from the host (`None`: no host or no limit).
    pub host_remaining: Option<u32>,
    /// The host shadow must be rebuilt in full at the next RPCIT (an earlier rebuild ran out
    /// of host entries).
    pub full_sync_pending: bool,
    /// The last error event raised for the function.
    pub last_error: Option<ErrorEvent>,
    /// Counters.
    pub stats: FunctionStats,
}

/// The guest-visible answer of a function operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub cc: Cc,
    pub status: Option<u8>,
    pub host_error: Option<ModelError>,
}

impl Answer {
    pub fn ok() -> Answer {
        Answer {
            cc: Cc::Ok,
            status: None,
            host_error: None,
        }
    }

    pub fn cc(cc: Cc) -> Answer {
        Answer {
            cc,
            status: None,
            host_error: None,
        }
    }

    pub fn status(status: u8) -> Answer {
        Answer {
            cc: Cc::Error,
            status: Some(status),
            host_error: None,
        }
    }

    fn with_host_error(mut self, e: Option<ModelError>) -> Answer {
        self.host_error = e;
        self
    }
}

/// What a host sync did.
enum HostSync {
    /// No host attached.
    NoHost,
    /// Done.
    Synced(SyncReport),
    /// The host ran out of entries; `not_mapped` stayed unmapped.
    OutOfResources {
        report: SyncReport,
        not_mapped: Vec<Run>,
    },
    /// The host refused to unmap one of our mappings.
    UnmapFailed(ModelError),
}

/// Result of checking a range of the tables for architected errors.
enum TableCheck {
    Clean,
    Error(TableError, u64),
    Incomplete,
}

/// One zPCI function.
pub(crate) struct Function {
    pub cfg: FunctionConfig,
    pub fh: Fh,
    pub state: FunctionState,
    pub backend: Box<dyn PciFunctionBackend>,
    pub ioat: Option<Ioat>,
    pub irq: Option<InterruptRegistration>,
    pub fmb: Measurement,
    pub host: Option<HostAttachment>,
    pub full_sync_pending: bool,
    pub last_error: Option<ErrorEvent>,
    pub stats: FunctionStats,
}

impl Function {
    /// A function in slot `index`.
    pub fn new(cfg: FunctionConfig, index: u16, backend: Box<dyn PciFunctionBackend>) -> Self {
        let state = match cfg.initial_state {
            FunctionState::Standby => FunctionState::Standby,
            _ => FunctionState::Disabled,
        };
        Function {
            cfg,
            fh: Fh::disabled(index),
            state,
            backend,
            ioat: None,
            irq: None,
            fmb: Measurement::default(),
            host: None,
            full_sync_pending: false,
            last_error: None,
            stats: FunctionStats::default(),
        }
    }

    pub fn fid(&self) -> Fid {
        self.cfg.fid
    }

    /// The DMA range QUERY PCI FUNCTION advertises: the configured range, page-aligned,
    /// limited to what the group's deepest table reaches, to the host's usable IOVA range
    /// and, by policy, to the host's entry budget (A.13).
    pub fn dma_range(&self, config: &Config, group: &GroupConfig) -> (u64, u64) {
        let mut sdma = align_up(self.cfg.sdma, PAGE_SIZE_4K);
        let mut edma = self.cfg.edma.min(group.max_iova()) | 0xfff;
        if let Some(host) = &self.host {
            // The host range holding the start of ours (the s390 host has one aperture).
            if let Some(r) = host.ranges.iter().find(|r| r.end > sdma && r.start <= edma) {
                sdma = sdma.max(align_up(r.start, PAGE_SIZE_4K));
                edma = edma.min(align_down(r.end, PAGE_SIZE_4K).wrapping_sub(1));
            }
            if config.aperture == AperturePolicy::ShrinkToHostBudget
                && !group.relaxed_translation
                && let Some(budget) = host.budget_at_attach
            {
                let bytes = u64::from(budget.max(1)) * PAGE_SIZE_4K;
                edma = edma.min(sdma.saturating_add(bytes - 1));
            }
        }
        (sdma, edma)
    }

    /// Raises an error event and puts the function into the error state: DMA is blocked,
    /// so the emulated-DMA cache is flushed and the host shadow emptied.
    pub fn enter_error(&mut self, ctx: &Ctx<'_>, pec: Pec, faddr: u64) -> Option<ModelError> {
        let ev = ErrorEvent {
            fid: self.fid(),
            fh: self.fh,
            pec,
            faddr,
        };
        self.last_error = Some(ev);
        ctx.raise(ev);
        if self.state.is_enabled_family() {
            self.state = FunctionState::Error;
        }
        self.blocked_changed(ctx)
    }

    /// DMA became blocked (error state, reset-blocked, disable): flush caches, empty the
    /// host, and rebuild in full once DMA is allowed again.
    fn blocked_changed(&mut self, ctx: &Ctx<'_>) -> Option<ModelError> {
        ctx.iotlb.invalidate_device(self.fid().0);
        self.full_sync_pending = true;
        match self.sync_host(ctx, SyncScope::All) {
            HostSync::UnmapFailed(e) => Some(e),
            _ => None,
        }
    }

    /// Brings the host shadow to the guest view over `scope`.
    fn sync_host(&mut self, ctx: &Ctx<'_>, scope: SyncScope) -> HostSync {
        let fid = self.fid();
        let Function {
            host,
            ioat,
            state,
            stats,
            ..
        } = self;
        let Some(host) = host else {
            return HostSync::NoHost;
        };
        let live = ioat.as_ref().filter(|_| state.dma_allowed());
        let result = match live {
            None => {
                // Nothing may be mapped: empty whatever the engine holds and drop it.
                return match host.teardown() {
                    Ok(()) => HostSync::Synced(SyncReport::default()),
                    Err(e) => HostSync::UnmapFailed(unmap_error(fid, &e)),
                };
            }
            Some(ioat) => {
                let engine =
                    host.engine(ioat.mode(), &ctx.config.shadow, ctx.config.relaxed_max_run);
                with_view(ioat, ctx, |view| HostAttachment::sync(engine, view, scope))
            }
        };
        if scope == SyncScope::All {
            stats.full_syncs += 1;
        }
        match result {
            Ok(report) => {
                note_report(stats, &report);
                HostSync::Synced(report)
            }
            Err(ShadowError::OutOfResources { report, not_mapped }) => {
                note_report(stats, &report);
                if report.reclaimed {
                    stats.full_syncs += 1;
                }
                HostSync::OutOfResources {
                    report: *report,
                    not_mapped,
                }
            }
            Err(e) => {
                if let ShadowError::Unmap { report, .. } = &e {
                    note_report(stats, report);
                }
                HostSync::UnmapFailed(unmap_error(fid, &e))
            }
        }
    }

    /// A memory event from the VMM (`memory` is the model's state after it, `change` what it
    /// changed): the host shadow drops translations into memory that became unusable and
    /// maps back those into memory usable again. Exhaustion leaves a full sync pending for
    /// the next RPCIT (whose CC 1 status 16 tells the guest) and is reported; an unmap
    /// refusal puts the function into the error state.
    pub fn memory_event(
        &mut self,
        ctx: &Ctx<'_>,
        memory: &GuestMemoryState,
        change: &StateChange,
    ) -> (SyncReport, Option<ModelError>) {
        let fid = self.fid();
        let Function {
            host,
            ioat,
            state,
            stats,
            ..
        } = self;
        let Some(host) = host else {
            return (SyncReport::default(), None);
        };
        host.memory = memory.clone();
        let live = ioat.as_ref().filter(|_| state.dma_allowed());
        let Some(ioat) = live else {
            // Nothing is mapped; the next engine starts from `host.memory`.
            return (SyncReport::default(), None);
        };
        let Some(engine) = host.current_engine(ioat.mode()) else {
            return (SyncReport::default(), None);
        };
        let result = with_view(ioat, ctx, |view| {
            GuestMemoryState::apply_to_engine(engine, view, change)
        });
        match result {
            Ok(report) => {
                note_report(stats, &report);
                (report, None)
            }
            Err(ShadowError::OutOfResources { report, not_mapped }) => {
                note_report(stats, &report);
                self.full_sync_pending = true;
                (*report, Some(out_of_resources(fid, &not_mapped)))
            }
            Err(e) => {
                let report = match &e {
                    ShadowError::Unmap { report, .. } => {
                        note_report(stats, report);
                        (**report).clone()
                    }
                    ShadowError::OutOfResources { .. } => SyncReport::default(),
                };
                self.enter_error(ctx, Pec::SYSTEM_ERROR, 0);
                (report, Some(unmap_error(fid, &e)))
            }
        }
    }

    /// Rebuilds the whole host shadow. Exhaustion leaves a full sync pending for the next
    /// RPCIT and is reported; an unmap refusal puts the function into the error state.
    pub fn resync_all(&mut self, ctx: &Ctx<'_>) -> Option<ModelError> {
        match self.sync_host(ctx, SyncScope::All) {
            HostSync::NoHost => {
                self.full_sync_pending = false;
                None
            }
            HostSync::Synced(report) => {
                self.full_sync_pending = !self.state.dma_allowed() && self.ioat.is_some();
                refused(self.fid(), &report)
            }
            HostSync::OutOfResources { not_mapped, .. } => {
                self.full_sync_pending = true;
                Some(out_of_resources(self.fid(), &not_mapped))
            }
            HostSync::UnmapFailed(e) => {
                self.enter_error(ctx, Pec::SYSTEM_ERROR, 0);
                Some(e)
            }
        }
    }

    /// Checks `range` of the registered tables for the errors RPCIT reports.
    fn check_tables(&self, ctx: &Ctx<'_>, range: AddrRange) -> TableCheck {
        let Some(Ioat {
            translation: Translation::Tables { format, root },
            ..
        }) = &self.ioat
        else {
            return TableCheck::Clean;
        };
        let walker = Walker::new(format, ctx.mem, *root).with_limits(ctx.walk_limits());
        let mut first: Option<WalkFault> = None;
        let walked = walker.for_each_leaf(range, &mut |_| {}, &mut |f| {
            first.get_or_insert(f);
        });
        match (first, walked) {
            (Some(WalkFault::Reserved { level, entry, iova }), _) => TableCheck::Error(
                format
                    .classify(level, entry)
                    .unwrap_or(TableError::InvalidEntry),
                iova,
            ),
            (Some(_), _) => TableCheck::Error(TableError::InvalidEntry, range.start),
            (None, Err(_)) => TableCheck::Incomplete,
            (None, Ok(_)) => TableCheck::Clean,
        }
    }

    /// Counts an operation in the measurement block; a block that cannot be written raises
    /// PEC 0x2a and stops measurement (A.8.4).
    pub fn count(&mut self, ctx: &Ctx<'_>, c: Counter) {
        if let Err(e) = self.fmb.count(ctx.mem, c) {
            self.raise_only(ctx, Pec::FMB_ADDRESS, e.addr);
        }
    }

    /// Raises an event without a state change.
    pub fn raise_only(&mut self, ctx: &Ctx<'_>, pec: Pec, faddr: u64) {
        let ev = ErrorEvent {
            fid: self.fid(),
            fh: self.fh,
            pec,
            faddr,
        };
        self.last_error = Some(ev);
        ctx.raise(ev);
    }

    /// RPCIT over `[start, start + len)` (A.7), after the handle checks.
    pub fn rpcit(&mut self, ctx: &Ctx<'_>, start: u64, len: u64) -> Answer {
        match self.state {
            FunctionState::Enabled | FunctionState::Blocked => {}
            FunctionState::Error => return Answer::status(status::ERROR_RECOVERY),
            _ => return Answer::cc(Cc::InvalidHandle),
        }
        let Some(ioat) = &self.ioat else {
            let e = self.enter_error(ctx, Pec::INVALID_ADDRESS_SPACE, start);
            return Answer::status(status::FUNC_IN_ERROR).with_host_error(e);
        };
        let aperture = ioat.aperture();
        let relaxed = matches!(ioat.translation, Translation::Relaxed(_));
        // The range must reach into [pba, pal]; the part outside is ignored (errata 3: the
        // architecture only requires the range to be within the DMA address space, and
        // nothing outside it may be mapped). A zero length names the byte at `start`.
        let end = start.saturating_add(len.max(1));
        let asked = AddrRange::new(start, end);
        if !asked.overlaps(&aperture) {
            let e = self.enter_error(ctx, Pec::OUT_OF_RANGE, start);
            return Answer::status(status::FUNC_IN_ERROR).with_host_error(e);
        }
        let inside = asked.intersect(&aperture);
        let range = AddrRange::new(
            align_down(inside.start, PAGE_SIZE_4K),
            align_up(inside.end, PAGE_SIZE_4K),
        )
        .intersect(&aperture);
        let global = range == aperture;
        self.stats.rpcits += 1;
        if global {
            self.stats.global_rpcits += 1;
        }
        // Emulated DMA: once this returns no access uses an old translation of the range.
        ctx.iotlb.invalidate_range(u64::from(self.fid().0), range);
        if relaxed {
            self.count(ctx, Counter::Rpcit);
            return Answer::ok();
        }

        let mut host_error = None;
        let mut insufficient = false;
        let mut check = true;
        if self.host.is_some() && self.state == FunctionState::Enabled {
            let full = global || self.full_sync_pending;
            let scope = match (full, ctx.config.exhaustion) {
                (true, _) => SyncScope::All,
                (false, ExhaustionPolicy::SignalGuest) => SyncScope::Range(range),
                (false, ExhaustionPolicy::ReclaimThenSignal) => SyncScope::RangeOrReclaim(range),
            };
            match self.sync_host(ctx, scope) {
                HostSync::NoHost => {}
                HostSync::Synced(report) => {
                    if full {
                        self.full_sync_pending = false;
                    }
                    check = report.walk_faults > 0;
                    insufficient = report.walk_incomplete;
                    host_error = refused(self.fid(), &report);
                }
                HostSync::OutOfResources { report, not_mapped } => {
                    check = report.walk_faults > 0;
                    insufficient = true;
                    // Runs left unmapped outside the range are live mappings a re-layout
                    // of coalesced pieces removed (the guest believes them mapped); after a
                    // failed full sync anything may be missing. Either way the next RPCIT
                    // (Linux's global one follows at once) re-syncs everything.
                    let outside = not_mapped.iter().any(|r| {
                        let m = r.iova_range();
                        m.start < range.start || m.end > range.end
                    });
                    if full || outside {
                        self.full_sync_pending = true;
                    }
                    host_error = Some(out_of_resources(self.fid(), &not_mapped));
                }
                HostSync::UnmapFailed(e) => {
                    self.enter_error(ctx, Pec::SYSTEM_ERROR, start);
                    return Answer::status(status::FUNC_IN_ERROR).with_host_error(Some(e));
                }
            }
        }
        if check {
            match self.check_tables(ctx, range) {
                TableCheck::Clean => {}
                TableCheck::Incomplete => insufficient = true,
                TableCheck::Error(err, iova) => {
                    self.stats.table_errors += 1;
                    let e = self.enter_error(ctx, err.pec(), iova);
                    return Answer::status(status::FUNC_IN_ERROR).with_host_error(host_error.or(e));
                }
            }
        }
        self.count(ctx, Counter::Rpcit);
        if insufficient {
            self.stats.insufficient_resources += 1;
            return Answer::status(status::INSUFFICIENT_RESOURCES).with_host_error(host_error);
        }
        Answer::ok().with_host_error(host_error)
    }

    /// Registers (or re-registers) an address space and brings the host to it; returns
    /// other host trouble met. On host exhaustion the function is left without an address
    /// space and nothing mapped.
    pub fn register_ioat(
        &mut self,
        ctx: &Ctx<'_>,
        ioat: Ioat,
    ) -> Result<Option<ModelError>, ModelError> {
        self.ioat = Some(ioat);
        ctx.iotlb.invalidate_device(self.fid().0);
        match self.resync_all(ctx) {
            Some(e @ ModelError::HostOutOfResources { .. }) => {
                self.ioat = None;
                self.full_sync_pending = false;
                self.sync_host(ctx, SyncScope::All);
                Err(e)
            }
            other => Ok(other),
        }
    }

    /// Deregisters the address space: everything is unmapped on the host.
    pub fn deregister_ioat(&mut self, ctx: &Ctx<'_>) -> Option<ModelError> {
        self.ioat = None;
        self.full_sync_pending = false;
        ctx.iotlb.invalidate_device(self.fid().0);
        match self.sync_host(ctx, SyncScope::All) {
            HostSync::UnmapFailed(e) => Some(e),
            _ => None,
        }
    }

    /// MPCIFC reset error / reset blocked, or any other state change.
    pub fn set_state(&mut self, ctx: &Ctx<'_>, state: FunctionState) -> Option<ModelError> {
        let was = self.state.dma_allowed();
        self.state = state;
        match (was, state.dma_allowed()) {
            (false, true) => self.resync_all(ctx),
            (true, false) => self.blocked_changed(ctx),
            _ => None,
        }
    }

    /// Cold reset (CLP disable, deconfigure): address space, interruptions and measurement
    /// are gone, the device is reset, the host holds nothing.
    pub fn reset(&mut self, ctx: &Ctx<'_>, state: FunctionState) -> Option<ModelError> {
        self.ioat = None;
        self.irq = None;
        self.fmb.stop();
        self.backend.reset();
        self.state = state;
        self.fh = self.fh.with_enable(state.is_enabled_family());
        self.full_sync_pending = false;
        ctx.iotlb.invalidate_device(self.fid().0);
        match self.sync_host(ctx, SyncScope::All) {
            HostSync::UnmapFailed(e) => Some(e),
            _ => None,
        }
    }

    /// Attaches a host backend and maps what the guest already maps.
    pub fn attach_host(&mut self, ctx: &Ctx<'_>, host: HostAttachment) -> Result<(), ModelError> {
        if self.host.is_some() {
            return Err(ModelError::HostAlreadyAttached(self.fid()));
        }
        self.host = Some(host);
        match self.resync_all(ctx) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Removes every host mapping and the host backend.
    pub fn detach_host(&mut self) -> Result<(), ModelError> {
        let fid = self.fid();
        let Some(mut host) = self.host.take() else {
            return Err(ModelError::NoHost(fid));
        };
        match host.teardown() {
            Ok(()) => Ok(()),
            Err(e) => {
                // Last resort so nothing stays mapped behind a detached backend.
                let _ = host.force_unmap_all();
                Err(unmap_error(fid, &e))
            }
        }
    }

    /// Translates one emulated DMA access (A.11: errors put the function into the error
    /// state with an event).
    pub fn translate(
        &mut self,
        ctx: &Ctx<'_>,
        iova: u64,
        need: Perm,
    ) -> Result<DmaTranslation, DmaFault> {
        if !self.state.dma_allowed() {
            return Err(DmaFault::new(iova, DmaFaultKind::Blocked));
        }
        let domain = u64::from(self.fid().0);
        let result = match &self.ioat {
            None => Err((Pec::INVALID_ADDRESS_SPACE, DmaFaultKind::Blocked)),
            Some(ioat) if !ioat.aperture().contains(iova) => {
                Err((Pec::OUT_OF_RANGE, DmaFaultKind::NotPresent))
            }
            Some(ioat) => translate_in(ctx, ioat, iova, need, domain),
        };
        result.map_err(|(pec, kind)| {
            self.stats.dma_faults += 1;
            if matches!(
                pec,
                Pec::INVALID_TABLE_ENTRY | Pec::INVALID_TABLE_LENGTH | Pec::TABLE_TYPE
            ) && kind == DmaFaultKind::Malformed
            {
                self.stats.table_errors += 1;
            }
            self.enter_error(ctx, pec, iova);
            DmaFault::new(iova, kind)
        })
    }

    /// A snapshot for the VMM.
    pub fn info(&self, config: &Config, group: &GroupConfig) -> FunctionInfo {
        FunctionInfo {
            fid: self.fid(),
            fh: self.fh,
            state: self.state,
            pfgid: self.cfg.pfgid,
            dma_range: self.dma_range(config, group),
            ioat: self.ioat.as_ref().map(|i| IoatInfo {
                pba: i.pba,
                pal: i.pal,
                iota: i.iota.0,
                relaxed: matches!(i.translation, Translation::Relaxed(_)),
            }),
            interrupts: self.irq,
            fmb_addr: self.fmb.addr(),
            counters: self.fmb.counters(),
            has_host: self.host.is_some(),
            host_mappings: self.host.as_ref().map_or(0, HostAttachment::mapping_count),
            host_remaining: self
                .host
                .as_ref()
                .and_then(HostAttachment::remaining_entries),
            full_sync_pending: self.full_sync_pending,
            last_error: self.last_error,
            stats: self.stats,
        }
    }
}

/// The translation of `iova` (inside the aperture) in `ioat`, or the event and fault kind.
fn translate_in(
    ctx: &Ctx<'_>,
    ioat: &Ioat,
    iova: u64,
    need: Perm,
    domain: u64,
) -> Result<DmaTranslation, (Pec, DmaFaultKind)> {
    let aperture = ioat.aperture();
    let (page_iova, addr, size, perm) = match &ioat.translation {
        Translation::Tables { format, root } => {
            let walker = Walker::new(format, ctx.mem, *root);
            match walker.translate(iova, need) {
                Ok((_, leaf)) => (leaf.iova, leaf.addr, leaf.size, leaf.perm),
                Err(fault) => return Err(dma_fault_event(format, &fault)),
            }
        }
        Translation::Relaxed(view) => {
            let Some((is, gs, size)) = relaxed_block(view, iova) else {
                return Err((Pec::OUT_OF_RANGE, DmaFaultKind::NotPresent));
            };
            if !view.perm().allows(need) {
                return Err((Pec::TRANSLATION_PROTECTION, DmaFaultKind::Permission));
            }
            (is, gs, size, view.perm())
        }
    };
    // A page reaching outside [pba, pal] (a 1 MiB frame at the edge) is cut down to the
    // 4 KiB page holding the address: the range is page-aligned.
    let page = AddrRange::from_len(page_iova, size);
    let (page_iova, addr, size) = if page.intersect(&aperture) == page {
        (page_iova, addr, size)
    } else {
        let p = align_down(iova, PAGE_SIZE_4K);
        (p, addr + (p - page_iova), PAGE_SIZE_4K)
    };
    Ok(DmaTranslation {
        domain,
        iova: page_iova,
        addr,
        size,
        perm,
    })
}

/// The event a DMA walk fault raises. A DMA through an invalid entry raises "invalid
/// translation-table entry" (PEC 0x7). QEMU raises translation protection (0x4) there
/// because its cache lookup yields "no access"; the table walk here sees the invalid entry
/// itself, which PEC 0x7 names. A write through a read-only translation is 0x4 (A.11).
fn dma_fault_event(format: &DmaTableFormat, fault: &WalkFault) -> (Pec, DmaFaultKind) {
    match *fault {
        WalkFault::Permission { .. } => (Pec::TRANSLATION_PROTECTION, DmaFaultKind::Permission),
        WalkFault::NotPresent { .. } => (Pec::INVALID_TABLE_ENTRY, DmaFaultKind::NotPresent),
        WalkFault::IovaTooWide { .. } => (Pec::OUT_OF_RANGE, DmaFaultKind::NotPresent),
        WalkFault::Reserved { level, entry, .. } => (
            format
                .classify(level, entry)
                .unwrap_or(TableError::InvalidEntry)
                .pec(),
            DmaFaultKind::Malformed,
        ),
        WalkFault::TableOutsideRam { .. } | WalkFault::WorkLimit { .. } => {
            (Pec::INVALID_TABLE_ENTRY, DmaFaultKind::Malformed)
        }
    }
}

fn note_report(stats: &mut FunctionStats, report: &SyncReport) {
    stats.host_map_calls += report.map_calls;
    stats.host_unmap_calls += report.unmap_calls;
    stats.host_refused_runs += (report.refused.len() + report.unmappable.len()) as u64;
}

/// Runs `f` with the guest view of the registered address space `ioat`, clipped to its
/// aperture.
fn with_view<R>(ioat: &Ioat, ctx: &Ctx<'_>, f: impl FnOnce(&dyn GuestView) -> R) -> R {
    let aperture = ioat.aperture();
    match &ioat.translation {
        Translation::Tables { format, root } => {
            let walker = Walker::new(format, ctx.mem, *root).with_limits(ctx.walk_limits());
            f(&ApertureView::new(&walker, aperture))
        }
        Translation::Relaxed(relaxed) => f(&ApertureView::new(relaxed, aperture)),
    }
}

fn out_of_resources(fid: Fid, not_mapped: &[Run]) -> ModelError {
    ModelError::HostOutOfResources {
        fid,
        runs: not_mapped.len(),
        bytes: not_mapped.iter().map(|r| r.size).sum(),
    }
}

fn refused(fid: Fid, report: &SyncReport) -> Option<ModelError> {
    let runs = report.refused.len() + report.unmappable.len();
    (runs > 0).then(|| ModelError::HostRefused {
        fid,
        runs,
        error: report.refused.first().map(|(_, e)| *e),
    })
}

fn unmap_error(fid: Fid, e: &ShadowError) -> ModelError {
    match e {
        ShadowError::Unmap { run, error, .. } => ModelError::HostUnmap {
            fid,
            iova: run.iova,
            size: run.size,
            error: *error,
        },
        ShadowError::OutOfResources { not_mapped, .. } => out_of_resources(fid, not_mapped),
    }
}

/// Builds the address space MPCIFC register-IOAT asks for, or `None` when the anchor or
/// range is invalid for `group` and the advertised `(sdma, edma)` (an operand exception,
/// A.8.3).
pub(crate) fn build_ioat(
    pba: u64,
    pal: u64,
    iota: Iota,
    group: &GroupConfig,
    dma_range: (u64, u64),
    ram: &[AddrRange],
) -> Option<Ioat> {
    let pba = pba & !0xfff;
    let pal = pal | 0xfff;
    let (sdma, edma) = dma_range;
    if pba > pal || pba < sdma || pal > edma {
        return None;
    }
    let translation = if iota.translates() {
        let d = iota.designation()?;
        if !group.supports(d) {
            return None;
        }
        Translation::Tables {
            format: DmaTableFormat::new(d, iota.protected()),
            root: iota.origin(),
        }
    } else {
        if !group.relaxed_translation {
            return None;
        }
        // A.16: guest RAM appears at sdma + GPA (QEMU's alias; Linux's DMA offset).
        let perm = if iota.protected() {
            Perm::READ
        } else {
            Perm::RW
        };
        Translation::Relaxed(IdentityView::with_offset(ram, sdma).with_perm(perm))
    };
    Some(Ioat {
        pba,
        pal,
        iota,
        translation,
    })
}
