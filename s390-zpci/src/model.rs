//! [`Zpci`]: the model a VMM embeds — the function table, the VMM-facing calls, and the
//! instruction handlers (in [`crate::insn`]) its intercept path calls.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use viommu_shared::AddrRange;
use viommu_shared::dma::{
    DeviceIommu, DmaFault, DmaFaultKind, DmaRequest, DmaTranslate, DmaTranslation,
};
use viommu_shared::host::HostDma;
use viommu_shared::iotlb::IotlbRegistry;
use viommu_shared::memory::{DmaMapping, GuestMemoryState, MemoryEvent, MemoryEvents};
use viommu_shared::regs::MsiSink;
use viommu_shared::shadow::{ShadowMapping, SyncReport};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::backend::PciFunctionBackend;
use crate::codes::Pec;
use crate::config::{Config, FunctionConfig, GroupConfig};
use crate::error::ModelError;
use crate::events::{ErrorEvent, EventQueue};
use crate::function::{Ctx, Function, FunctionInfo};
use crate::handle::{Fh, Fid, FunctionState};
use crate::host::HostAttachment;

/// Functions by slot index (the handle's index field) and by function id.
#[derive(Default)]
pub(crate) struct FunctionTable {
    pub slots: BTreeMap<u16, Arc<Mutex<Function>>>,
    pub by_fid: BTreeMap<Fid, u16>,
    pub next: u16,
}

impl FunctionTable {
    /// A free index, round-robin from 1 (index 0 is never used so that LIST PCI's resume
    /// token 0 always means "start").
    fn alloc_index(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next = self.next.wrapping_add(1).max(1);
            if !self.slots.contains_key(&self.next) {
                return Some(self.next);
            }
        }
        None
    }
}

/// Locks a function, recovering from poisoning (the state is plain data).
pub(crate) fn lock(f: &Mutex<Function>) -> MutexGuard<'_, Function> {
    f.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the model handle and the emulated-DMA path.
pub(crate) struct Core {
    pub config: Config,
    pub mem: GuestMemoryMmap,
    pub ram: Vec<AddrRange>,
    pub doorbell: Arc<dyn MsiSink>,
    pub iotlb: Arc<IotlbRegistry>,
    pub table: RwLock<FunctionTable>,
    pub events: Mutex<EventQueue>,
    /// Hosts attached per function group (for the refresh bit).
    pub hosted: Mutex<BTreeMap<u8, usize>>,
    /// Discarded / private guest memory (VMM memory events). Lock order: this, then a
    /// function.
    pub memory: Mutex<GuestMemoryState>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Zpci")
            .field("functions", &self.read_table().slots.len())
            .field("groups", &self.config.groups.len())
            .finish()
    }
}

impl Core {
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            config: &self.config,
            mem: &self.mem,
            iotlb: &self.iotlb,
            events: &self.events,
            doorbell: &*self.doorbell,
        }
    }

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, FunctionTable> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, FunctionTable> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The function in slot `index`.
    pub fn by_index(&self, index: u16) -> Option<Arc<Mutex<Function>>> {
        self.read_table().slots.get(&index).cloned()
    }

    /// The function `fid`.
    pub fn by_fid(&self, fid: Fid) -> Result<Arc<Mutex<Function>>, ModelError> {
        let t = self.read_table();
        t.by_fid
            .get(&fid)
            .and_then(|i| t.slots.get(i))
            .cloned()
            .ok_or(ModelError::NoSuchFunction(fid))
    }

    /// Every function in index order, starting at index `from`.
    pub fn functions_from(&self, from: u16) -> Vec<(u16, Arc<Mutex<Function>>)> {
        self.read_table()
            .slots
            .range(from..)
            .map(|(i, f)| (*i, f.clone()))
            .collect()
    }

    /// The group `pfgid` (validated when the function was added).
    pub fn group(&self, pfgid: u8) -> GroupConfig {
        self.config.group(pfgid).cloned().unwrap_or_default()
    }

    /// True when some function of group `pfgid` has a host attached.
    pub fn group_has_host(&self, pfgid: u8) -> bool {
        self.hosted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&pfgid)
            .is_some_and(|n| *n > 0)
    }

    /// Counts a host attached to (`+1`) or detached from (`-1`) a function of `pfgid`.
    fn note_host(&self, pfgid: u8, attached: bool) {
        let mut h = self.hosted.lock().unwrap_or_else(PoisonError::into_inner);
        let n = h.entry(pfgid).or_insert(0);
        *n = if attached {
            n.saturating_add(1)
        } else {
            n.saturating_sub(1)
        };
    }

    fn translate(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault> {
        let Ok(f) = self.by_fid(Fid(req.requester_id)) else {
            return Err(DmaFault::new(req.iova, DmaFaultKind::Blocked));
        };
        let mut f = lock(&f);
        f.translate(&self.ctx(), req.iova, req.perm)
    }
}

/// Model-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModelStats {
    /// Functions plugged.
    pub functions: usize,
    /// RPCITs answered CC 1 status 16 (all functions).
    pub insufficient_resources: u64,
    /// RPCITs processed (all functions).
    pub rpcits: u64,
    /// Global RPCITs (all functions).
    pub global_rpcits: u64,
    /// Error events queued and not yet taken.
    pub events_pending: usize,
    /// Error events dropped because the queue was full.
    pub events_dropped: u64,
}

/// The s390 zPCI model. See the [crate documentation](crate).
///
/// `Send + Sync`; every method takes `&self`. Instruction handlers lock only the function
/// they address.
#[derive(Clone, Debug)]
pub struct Zpci {
    pub(crate) core: Arc<Core>,
}

impl Zpci {
    /// A model with no functions over guest memory `mem`. `msi` receives one doorbell per
    /// error event (see [`crate::events`]).
    pub fn new(config: Config, mem: GuestMemoryMmap, msi: Arc<dyn MsiSink>) -> Zpci {
        let ram = mem
            .iter()
            .map(|r| AddrRange::from_len(r.start_addr().0, r.len()))
            .collect();
        let iotlb = Arc::new(IotlbRegistry::with_capacity(config.iotlb_capacity));
        Zpci {
            core: Arc::new(Core {
                config,
                mem,
                ram,
                doorbell: msi,
                iotlb,
                table: RwLock::new(FunctionTable::default()),
                events: Mutex::new(EventQueue::default()),
                hosted: Mutex::new(BTreeMap::new()),
                memory: Mutex::new(GuestMemoryState::new()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Plugs a function with its PCI backend; returns its (disabled) handle.
    pub fn add_function(
        &self,
        cfg: FunctionConfig,
        backend: Box<dyn PciFunctionBackend>,
    ) -> Result<Fh, ModelError> {
        if self.core.config.group(cfg.pfgid).is_none() {
            return Err(ModelError::UnknownGroup(cfg.pfgid));
        }
        if cfg.sdma > cfg.edma || cfg.sdma > u64::MAX - 0xfff {
            return Err(ModelError::InvalidConfig("sdma must not exceed edma"));
        }
        let mut t = self.core.write_table();
        if t.by_fid.contains_key(&cfg.fid) {
            return Err(ModelError::DuplicateFid(cfg.fid));
        }
        let index = t.alloc_index().ok_or(ModelError::TooManyFunctions)?;
        let fid = cfg.fid;
        let f = Function::new(cfg, index, backend);
        let fh = f.fh;
        t.slots.insert(index, Arc::new(Mutex::new(f)));
        t.by_fid.insert(fid, index);
        Ok(fh)
    }

    /// Unplugs a function: everything it mapped on its host is unmapped, its host backend
    /// and emulated-DMA caches are dropped.
    pub fn remove_function(&self, fid: Fid) -> Result<(), ModelError> {
        let f = {
            let mut t = self.core.write_table();
            let index = t
                .by_fid
                .remove(&fid)
                .ok_or(ModelError::NoSuchFunction(fid))?;
            t.slots.remove(&index)
        };
        let Some(f) = f else {
            return Err(ModelError::NoSuchFunction(fid));
        };
        let mut f = lock(&f);
        let e = f.reset(&self.core.ctx(), FunctionState::Standby);
        let detached = match f.host {
            Some(_) => {
                self.core.note_host(f.cfg.pfgid, false);
                f.detach_host()
            }
            None => Ok(()),
        };
        match e {
            Some(e) => Err(e),
            None => detached,
        }
    }

    /// SCLP configure: a standby function becomes disabled (configured).
    pub fn configure(&self, fid: Fid) -> Result<(), ModelError> {
        let f = self.core.by_fid(fid)?;
        let mut f = lock(&f);
        if f.state == FunctionState::Standby {
            f.state = FunctionState::Disabled;
        }
        Ok(())
    }

    /// SCLP deconfigure: the function goes to standby after a cold reset (its address
    /// space, interruptions and host mappings are gone).
    pub fn deconfigure(&self, fid: Fid) -> Result<(), ModelError> {
        let f = self.core.by_fid(fid)?;
        let mut f = lock(&f);
        match f.reset(&self.core.ctx(), FunctionState::Standby) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Makes the function's DMA address space shadowed into `host` (a passthrough device
    /// behind it). `host` should hold no mappings. If an address space is already
    /// registered, what the guest maps is mapped at once. Host trouble doing so is returned
    /// as an error but the host stays attached: on exhaustion
    /// ([`ModelError::HostOutOfResources`]) a full re-sync is left pending for the next
    /// RPCIT.
    ///
    /// Attach before the guest reads the function's DMA range (QUERY PCI FUNCTION): the
    /// advertised range depends on the host's usable range and budget at attach time.
    pub fn attach_host(&self, fid: Fid, host: Box<dyn HostDma + Send>) -> Result<(), ModelError> {
        let f = self.core.by_fid(fid)?;
        // Held across the attach so that no memory event slips between the copy and the
        // first sync.
        let memory = self
            .core
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut f = lock(&f);
        if f.host.is_some() {
            return Err(ModelError::HostAlreadyAttached(fid));
        }
        self.core.note_host(f.cfg.pfgid, true);
        f.attach_host(&self.core.ctx(), HostAttachment::new(host, memory.clone()))
    }

    /// Removes every host mapping of the function and its host backend.
    pub fn detach_host(&self, fid: Fid) -> Result<(), ModelError> {
        let f = self.core.by_fid(fid)?;
        let mut f = lock(&f);
        if f.host.is_some() {
            self.core.note_host(f.cfg.pfgid, false);
        }
        f.detach_host()
    }

    /// The IOMMU of an emulated device behind function `fid`, for
    /// `vm_memory::iommu::IommuMemory`.
    pub fn device_iommu(&self, fid: Fid) -> Result<DeviceIommu, ModelError> {
        self.core.by_fid(fid)?;
        let model: Arc<dyn DmaTranslate> = self.core.clone();
        Ok(DeviceIommu::new(
            self.core.iotlb.register(fid.0, None),
            model,
        ))
    }

    /// The emulated-DMA translation caches (for inspection).
    pub fn iotlb(&self) -> &Arc<IotlbRegistry> {
        &self.core.iotlb
    }

    /// The host reported an error of the device behind `fid` (for example a VFIO error
    /// notification): the function enters the error state with `pec`.
    pub fn inject_error(&self, fid: Fid, pec: Pec, faddr: u64) -> Result<(), ModelError> {
        let f = self.core.by_fid(fid)?;
        let mut f = lock(&f);
        match f.enter_error(&self.core.ctx(), pec, faddr) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The host reported the device behind `fid` unrecoverable: the function enters the
    /// permanent-error state (DMA blocked, host shadow emptied) with event `pec`; only
    /// [`deconfigure`](Self::deconfigure) leaves it (A.3.5).
    pub fn set_permanent_error(&self, fid: Fid, pec: Pec) -> Result<(), ModelError> {
        let f = self.core.by_fid(fid)?;
        let mut f = lock(&f);
        let ctx = self.core.ctx();
        f.raise_only(&ctx, pec, 0);
        match f.set_state(&ctx, FunctionState::PermanentError) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The VMM's measurement timer (every `mui` ms of the function's group): updates the
    /// sample count and time stamp (`tod`, the TOD clock) of every measuring function's
    /// block.
    pub fn update_measurements(&self, tod: u64) {
        let ctx = self.core.ctx();
        for (_, f) in self.core.functions_from(0) {
            let mut f = lock(&f);
            if let Err(e) = f.fmb.update(&self.core.mem, tod) {
                f.raise_only(&ctx, Pec::FMB_ADDRESS, e.addr);
            }
        }
    }

    /// Removes and returns the queued error events, oldest first.
    pub fn take_events(&self) -> Vec<ErrorEvent> {
        self.core
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// A snapshot of function `fid`.
    pub fn function(&self, fid: Fid) -> Result<FunctionInfo, ModelError> {
        let f = self.core.by_fid(fid)?;
        let f = lock(&f);
        let group = self.core.group(f.cfg.pfgid);
        Ok(f.info(&self.core.config, &group))
    }

    /// Function ids in slot order.
    pub fn fids(&self) -> Vec<Fid> {
        self.core
            .functions_from(0)
            .iter()
            .map(|(_, f)| lock(f).fid())
            .collect()
    }

    /// The host mappings the shadow of `fid` holds, in IOVA order (exactly what the host
    /// was asked to map and has not been asked to unmap).
    pub fn host_mappings(&self, fid: Fid) -> Result<Vec<ShadowMapping>, ModelError> {
        let f = self.core.by_fid(fid)?;
        let f = lock(&f);
        Ok(f.host
            .as_ref()
            .map(HostAttachment::mappings)
            .unwrap_or_default())
    }

    /// Model-wide counters.
    pub fn stats(&self) -> ModelStats {
        let mut s = ModelStats::default();
        for (_, f) in self.core.functions_from(0) {
            let f = lock(&f);
            s.functions += 1;
            s.insufficient_resources += f.stats.insufficient_resources;
            s.rpcits += f.stats.rpcits;
            s.global_rpcits += f.stats.global_rpcits;
        }
        let q = self
            .core
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.events_pending = q.len();
        s.events_dropped = q.dropped();
        s
    }
}

impl DmaTranslate for Core {
    fn translate(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault> {
        Core::translate(self, req)
    }
}

impl DmaTranslate for Zpci {
    /// Translates an emulated device's DMA: `requester_id` is the function id. A failed
    /// translation puts the function into the error state with its event (A.11).
    fn translate(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault> {
        self.core.translate(req)
    }
}

/// Memory events from the VMM (balloon, virtio-mem, confidential-VM conversions): every
/// function's host shadow follows; see [`viommu_shared::memory`]. Device ids in
/// [`DmaMapping`] are function ids.
impl MemoryEvents for Zpci {
    type Error = ModelError;

    fn memory_event(&self, event: MemoryEvent) -> Result<SyncReport, ModelError> {
        let mut memory = self
            .core
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let change = memory.apply(event);
        let mut total = SyncReport::default();
        let mut first = None;
        if change.is_empty() {
            return Ok(total);
        }
        let ctx = self.core.ctx();
        for (_, f) in self.core.functions_from(0) {
            let (report, error) = lock(&f).memory_event(&ctx, &memory, &change);
            total.absorb(report);
            if first.is_none() {
                first = error;
            }
        }
        first.map_or(Ok(total), Err)
    }

    fn dma_mappings(&self, range: AddrRange) -> Vec<DmaMapping> {
        let mut out = Vec::new();
        for (_, f) in self.core.functions_from(0) {
            let f = lock(&f);
            let fid = f.fid().0;
            if let Some(host) = &f.host {
                out.extend(
                    host.mappings_for_gpa(range)
                        .into_iter()
                        .map(|m| DmaMapping::new(fid, m)),
                );
            }
        }
        out
    }
}
