//! [`ZpciSnapshot`]: the architectural state of the zPCI functions, for migration
//! (`anchors-s390-vfio.md` A.3 function state, A.8 MPCIFC registrations).
//!
//! Saved per function, keyed by the stable FID: the function handle (its slot index is part
//! of what the guest holds), the state, the registered I/O address space (PBA, PAL and the
//! IOTA as registered: the translation is rebuilt from them), the adapter-interruption
//! registration, the measurement block address, counters and sample count, and the last
//! error event. Model-wide: the handle-index allocation cursor and the error events the VMM
//! has not taken yet.
//!
//! Not saved (derived, or the VMM's): emulated-DMA caches, host shadows and budgets, the PCI
//! backends, counters. The destination VMM plugs the same functions (same FIDs and groups)
//! before restoring; every function's address space is then re-resolved from guest memory and
//! its host re-synced in full. A destination host that cannot hold everything behaves as at
//! runtime: the restore reports [`ModelError::HostOutOfResources`], a full re-sync stays
//! pending, and the guest's next RPCIT (Linux's global flush follows any CC 1 at once)
//! answers CC 1 status 16 if the host still cannot hold the mappings (A.7.3).

use crate::codes::Pec;
use crate::config::{Config, GroupConfig};
use crate::error::ModelError;
use crate::events::{EVENT_QUEUE_CAPACITY, ErrorEvent};
use crate::function::{Function, InterruptRegistration, build_ioat};
use crate::handle::{Fh, Fid, FunctionState};
use crate::iota::Iota;
use crate::measure::Measurement;
use crate::model::{Zpci, lock};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::PoisonError;
use viommu_shared::addr::{PAGE_SIZE_4K, align_up};
use viommu_shared::snapshot::{self, SnapshotError, Versioned};

/// The snapshot format version this build writes and restores.
pub const ZPCI_SNAPSHOT_VERSION: u32 = 1;

/// Architected function state (A.3.5), as saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SavedState {
    /// Standby.
    Standby,
    /// Disabled.
    Disabled,
    /// Enabled.
    Enabled,
    /// Error.
    Error,
    /// Blocked.
    Blocked,
    /// Permanent error.
    PermanentError,
}

impl From<FunctionState> for SavedState {
    fn from(s: FunctionState) -> Self {
        match s {
            FunctionState::Standby => SavedState::Standby,
            FunctionState::Disabled => SavedState::Disabled,
            FunctionState::Enabled => SavedState::Enabled,
            FunctionState::Error => SavedState::Error,
            FunctionState::Blocked => SavedState::Blocked,
            FunctionState::PermanentError => SavedState::PermanentError,
        }
    }
}

impl From<SavedState> for FunctionState {
    fn from(s: SavedState) -> Self {
        match s {
            SavedState::Standby => FunctionState::Standby,
            SavedState::Disabled => FunctionState::Disabled,
            SavedState::Enabled => FunctionState::Enabled,
            SavedState::Error => FunctionState::Error,
            SavedState::Blocked => FunctionState::Blocked,
            SavedState::PermanentError => FunctionState::PermanentError,
        }
    }
}

/// A registered I/O address space (MPCIFC register IOAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedIoat {
    /// Start of the DMA range (4 KiB aligned).
    pub pba: u64,
    /// Last byte of the DMA range (ends in 0xfff).
    pub pal: u64,
    /// The I/O translation anchor as registered.
    pub iota: u64,
    /// Start of the DMA range advertised to the guest when it registered (relaxed
    /// translation maps guest RAM at `sdma` + GPA, A.16).
    pub sdma: u64,
}

/// Adapter-interruption registration (MPCIFC register interruptions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedInterrupts {
    /// Interruption subclass.
    pub isc: u8,
    /// Number of interrupts.
    pub noi: u16,
    /// Adapter interrupt bit-vector address.
    pub aibv: u64,
    /// Bit offset in the bit vector.
    pub aibvo: u8,
    /// Summary-bit address.
    pub aisb: u64,
    /// Summary-bit offset.
    pub aisbo: u8,
    /// Summary bit enabled.
    pub sum: bool,
}

/// Function measurement (A.8.4): the block address while measuring and the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedMeasurement {
    /// Block address while measuring (non-zero, 16-byte aligned).
    pub addr: Option<u64>,
    /// PCILG, PCISTG, PCISTB and RPCIT counters.
    pub counters: [u64; 4],
    /// Samples (timer updates) written.
    pub samples: u32,
}

/// An error event (the contents of its CCDF).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedEvent {
    /// Function id.
    pub fid: u32,
    /// Function handle at the time of the event.
    pub fh: u32,
    /// Event code.
    pub pec: u16,
    /// Failing address.
    pub faddr: u64,
}

impl From<ErrorEvent> for SavedEvent {
    fn from(e: ErrorEvent) -> Self {
        SavedEvent {
            fid: e.fid.0,
            fh: e.fh.0,
            pec: e.pec.0,
            faddr: e.faddr,
        }
    }
}

impl From<SavedEvent> for ErrorEvent {
    fn from(e: SavedEvent) -> Self {
        ErrorEvent {
            fid: Fid(e.fid),
            fh: Fh(e.fh),
            pec: Pec(e.pec),
            faddr: e.faddr,
        }
    }
}

/// One function's architectural state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSnapshot {
    /// Function id (the key: the destination must have it plugged).
    pub fid: u32,
    /// Function handle (enable bit and slot index).
    pub fh: u32,
    /// State.
    pub state: SavedState,
    /// Registered I/O address space.
    pub ioat: Option<SavedIoat>,
    /// Registered adapter interruptions.
    pub interrupts: Option<SavedInterrupts>,
    /// Measurement.
    pub measurement: SavedMeasurement,
    /// The last error event raised for the function.
    pub last_error: Option<SavedEvent>,
}

/// The architectural state of every function.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZpciSnapshot {
    /// Format version ([`ZPCI_SNAPSHOT_VERSION`]).
    pub version: u32,
    /// Every plugged function, in slot order.
    pub functions: Vec<FunctionSnapshot>,
    /// The handle-index allocation cursor.
    pub next_index: u16,
    /// Error events raised and not yet taken by the VMM, oldest first.
    pub events: Vec<SavedEvent>,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
}

impl Versioned for ZpciSnapshot {
    const VERSION: u32 = ZPCI_SNAPSHOT_VERSION;
}

impl ZpciSnapshot {
    /// The stream encoding (JSON, see `viommu_shared::snapshot::stream`).
    pub fn to_bytes(&self) -> Vec<u8> {
        snapshot::encode(self)
    }

    /// Decodes a stream: bounded, version checked first.
    pub fn from_bytes(bytes: &[u8]) -> Result<ZpciSnapshot, SnapshotError> {
        snapshot::decode(bytes)
    }
}

/// Fh bits a model-made handle can have.
const FH_BITS: u32 = Fh::ENABLE | Fh::INDEX_MASK;

fn save_function(f: &Function, config: &Config, group: &GroupConfig) -> FunctionSnapshot {
    let (addr, counters, samples) = f.fmb.saved();
    let sdma = f.dma_range(config, group).0;
    FunctionSnapshot {
        fid: f.fid().0,
        fh: f.fh.0,
        state: f.state.into(),
        ioat: f.ioat.as_ref().map(|i| SavedIoat {
            pba: i.pba,
            pal: i.pal,
            iota: i.iota.0,
            sdma,
        }),
        interrupts: f.irq.map(|r| SavedInterrupts {
            isc: r.isc,
            noi: r.noi,
            aibv: r.aibv,
            aibvo: r.aibvo,
            aisb: r.aisb,
            aisbo: r.aisbo,
            sum: r.sum,
        }),
        measurement: SavedMeasurement {
            addr,
            counters,
            samples,
        },
        last_error: f.last_error.map(SavedEvent::from),
    }
}

impl Zpci {
    /// The architectural state, for migration (see [`crate::snapshot`]).
    pub fn save(&self) -> ZpciSnapshot {
        let t = self
            .core
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let functions = t
            .slots
            .values()
            .map(|f| {
                let f = lock(f);
                let group = self.core.group(f.cfg.pfgid);
                save_function(&f, &self.core.config, &group)
            })
            .collect();
        let q = self
            .core
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (events, events_dropped) = q.saved();
        ZpciSnapshot {
            version: ZPCI_SNAPSHOT_VERSION,
            functions,
            next_index: t.next,
            events: events.into_iter().map(SavedEvent::from).collect(),
            events_dropped,
        }
    }

    /// [`save`](Self::save) as a stream ([`ZpciSnapshot::to_bytes`]).
    pub fn save_bytes(&self) -> Vec<u8> {
        self.save().to_bytes()
    }

    /// Loads a state produced by [`save`](Self::save) on a model with the same functions
    /// plugged (same FIDs and groups), then rebuilds what is derived from guest memory:
    /// emulated-DMA caches are flushed and every function with a host has its shadow rebuilt
    /// in full from its registered tables. The first host error is returned after the state
    /// is loaded; on [`ModelError::HostOutOfResources`] a full re-sync stays pending and the
    /// next RPCIT answers CC 1 status 16 if the host still cannot hold the mappings, exactly
    /// as at runtime. Each pending error event rings the doorbell again, so the destination
    /// VMM drains them with [`take_events`](Self::take_events).
    ///
    /// Hosts may be attached before or after: [`attach_host`](Self::attach_host) maps what
    /// the registered tables map either way, and the result is the same (a function in its
    /// reset state has no address space, so attaching first costs nothing). As for the
    /// other models, the VMM should restore first and attach after; each `attach_host`
    /// then returns its function's host failure and leaves the full re-sync pending for the
    /// next RPCIT on exhaustion. One difference: the DMA range QUERY PCI FUNCTION reports
    /// depends on the host attached at the time of the query, and the guest registered
    /// its range on the source; the restored registration is kept as it was.
    ///
    /// A state no model with these functions could hold is refused with
    /// [`ModelError::Snapshot`] and every function is reset to its initial state (standby
    /// or disabled, nothing registered), with no events queued.
    pub fn restore(&self, snapshot: &ZpciSnapshot) -> Result<(), ModelError> {
        if let Err(e) = self.load(snapshot) {
            self.reset_all();
            return Err(ModelError::Snapshot(e));
        }
        let ctx = self.core.ctx();
        self.core.iotlb.invalidate_all();
        let mut first = None;
        for (_, f) in self.core.functions_from(0) {
            let mut f = lock(&f);
            if f.host.is_some()
                && let Some(e) = f.resync_all(&ctx)
            {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Decodes a stream ([`ZpciSnapshot::from_bytes`]) and [`restore`](Self::restore)s it;
    /// a stream that does not decode also leaves every function reset.
    pub fn restore_bytes(&self, bytes: &[u8]) -> Result<(), ModelError> {
        match ZpciSnapshot::from_bytes(bytes) {
            Ok(s) => self.restore(&s),
            Err(e) => {
                self.reset_all();
                Err(ModelError::Snapshot(e))
            }
        }
    }

    /// Validates `s` against the plugged functions and, if it fits, applies it (handles,
    /// states, registrations; the slot table re-keyed by the saved handles).
    fn load(&self, s: &ZpciSnapshot) -> Result<(), SnapshotError> {
        if s.version != ZPCI_SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: u64::from(s.version),
                supported: ZPCI_SNAPSHOT_VERSION,
            });
        }
        if s.events.len() > EVENT_QUEUE_CAPACITY {
            return Err(SnapshotError::invalid("events"));
        }
        let mut t = self
            .core
            .table
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if s.functions.len() != t.by_fid.len() {
            return Err(SnapshotError::mismatch("functions"));
        }
        let mut indices = BTreeSet::new();
        let mut fids = BTreeSet::new();
        let mut staged = Vec::with_capacity(s.functions.len());
        for fs in &s.functions {
            if !fids.insert(fs.fid) {
                return Err(SnapshotError::invalid("functions"));
            }
            let index = t
                .by_fid
                .get(&Fid(fs.fid))
                .copied()
                .ok_or(SnapshotError::mismatch("functions"))?;
            let f = t
                .slots
                .get(&index)
                .cloned()
                .ok_or(SnapshotError::mismatch("functions"))?;
            let new_index = self.check_function(&lock(&f), fs)?;
            if !indices.insert(new_index) {
                return Err(SnapshotError::invalid("fh"));
            }
            staged.push((f, new_index));
        }
        // Everything checked: apply.
        let mut slots = BTreeMap::new();
        for ((f, index), fs) in staged.into_iter().zip(&s.functions) {
            {
                let mut g = lock(&f);
                self.apply_function(&mut g, fs);
                t.by_fid.insert(g.fid(), index);
            }
            slots.insert(index, f);
        }
        t.slots = slots;
        t.next = s.next_index;
        drop(t);
        let mut q = self
            .core
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        q.restore(
            s.events.iter().map(|&e| e.into()),
            s.events_dropped,
            &*self.core.doorbell,
        );
        Ok(())
    }

    /// Checks one function's saved state against the plugged function `f`; returns the
    /// slot index of its handle.
    fn check_function(&self, f: &Function, fs: &FunctionSnapshot) -> Result<u16, SnapshotError> {
        let state = FunctionState::from(fs.state);
        let fh = Fh(fs.fh);
        if fs.fh & !FH_BITS != 0 || fh.index() == 0 || fh.is_enabled() != state.is_enabled_family()
        {
            return Err(SnapshotError::invalid("fh"));
        }
        let configured = matches!(state, FunctionState::Standby | FunctionState::Disabled);
        let registered = fs.ioat.is_some() || fs.interrupts.is_some();
        if configured && (registered || fs.measurement.addr.is_some()) {
            return Err(SnapshotError::invalid("state"));
        }
        if let Some(io) = fs.ioat {
            let group = self.core.group(f.cfg.pfgid);
            // The range the function's configuration and group allow; the destination
            // host's own limits apply through the re-sync, as at runtime.
            let sdma = align_up(f.cfg.sdma, PAGE_SIZE_4K);
            let range = (io.sdma, f.cfg.edma.min(group.max_iova()) | 0xfff);
            let exact = io.pba & 0xfff == 0
                && io.pal & 0xfff == 0xfff
                && io.sdma & 0xfff == 0
                && io.sdma >= sdma;
            if !exact || build_ioat(io.pba, io.pal, Iota(io.iota), &group, range, &[]).is_none() {
                return Err(SnapshotError::invalid("ioat"));
            }
        }
        // The FIB fields they come from: ISC 3 bits, NOI 12, bit offsets 6 (A.8.2).
        if fs
            .interrupts
            .is_some_and(|r| r.isc > 7 || r.noi > 0xfff || r.aibvo > 0x3f || r.aisbo > 0x3f)
        {
            return Err(SnapshotError::invalid("interrupts"));
        }
        if fs.measurement.addr.is_some_and(|a| a == 0 || a & 0xf != 0) {
            return Err(SnapshotError::invalid("measurement"));
        }
        if fs.last_error.is_some_and(|e| e.fid != fs.fid) {
            return Err(SnapshotError::invalid("last_error"));
        }
        Ok(fh.index())
    }

    /// Applies a checked function state (no host sync yet).
    fn apply_function(&self, f: &mut Function, fs: &FunctionSnapshot) {
        let group = self.core.group(f.cfg.pfgid);
        f.fh = Fh(fs.fh);
        f.state = fs.state.into();
        f.ioat = fs.ioat.and_then(|io| {
            let range = (io.sdma, u64::MAX);
            build_ioat(io.pba, io.pal, Iota(io.iota), &group, range, &self.core.ram)
        });
        f.irq = fs.interrupts.map(|r| InterruptRegistration {
            isc: r.isc,
            noi: r.noi,
            aibv: r.aibv,
            aibvo: r.aibvo,
            aisb: r.aisb,
            aisbo: r.aisbo,
            sum: r.sum,
        });
        let m = fs.measurement;
        f.fmb = Measurement::restored(m.addr, m.counters, m.samples);
        f.last_error = fs.last_error.map(ErrorEvent::from);
        f.full_sync_pending = false;
    }

    /// Every function back to its initial state with nothing registered, no events queued
    /// (after a refused snapshot). Host errors of the resets are dropped: the host shadows
    /// are emptied by the same path as CLP disable, which only fails if the host refuses to
    /// unmap, and the caller is told the snapshot was refused.
    fn reset_all(&self) {
        let ctx = self.core.ctx();
        for (_, f) in self.core.functions_from(0) {
            let mut f = lock(&f);
            let initial = match f.cfg.initial_state {
                FunctionState::Standby => FunctionState::Standby,
                _ => FunctionState::Disabled,
            };
            let _ = f.reset(&ctx, initial);
            f.fmb = Measurement::default();
            f.last_error = None;
        }
        self.core
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .restore(std::iter::empty(), 0, &*self.core.doorbell);
    }
}
