//! [`Vtd`]: the emulated remapping unit a VMM embeds.

use crate::caps;
use crate::config::Config;
use crate::error::VtdError;
use crate::fault::{Fault, FaultRecord};
use crate::regs::{CAP, ECAP, FRCD_BASE, GCMD_CFI, GCMD_IRE, GSTS, REGS};
use crate::shadow::{HostBackend, ShadowedDevice, new_engine};
use crate::snapshot::{QueueSnapshot, VTD_SNAPSHOT_VERSION, VtdSnapshot};
use crate::space::Space;
use crate::stats::VtdStats;
use crate::tables::RootPointer;
use crate::unit::{HANDLERS, Unit};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use viommu_shared::AddrRange;
use viommu_shared::dma::{DeviceIommu, DmaFault, DmaRequest, DmaTranslate, DmaTranslation};
use viommu_shared::iotlb::IotlbRegistry;
use viommu_shared::irq::{
    InterruptRemapper, IrFault, IrInvalidation, IrListener, RemapMode, Resolution,
};
use viommu_shared::memory::{DmaMapping, MemoryEvent, MemoryEvents};
use viommu_shared::regs::{MmioHandler, Msi, MsiSink, RegisterBank, RegisterFile, check_access};
use viommu_shared::shadow::{ShadowMapping, SyncReport};
use viommu_shared::snapshot::{SnapshotError, restore_registers, save_registers};
use vm_memory::GuestMemoryMmap;

/// The register bank and the state behind it, under one lock.
struct Inner {
    bank: RegisterBank<Unit>,
    unit: Unit,
}

impl Inner {
    /// Registers to their reset values, CAP/ECAP from the configuration.
    fn load_capabilities(&mut self) {
        let regs = self.bank.regs_mut();
        regs.set_at(CAP, caps::cap(&self.unit.config));
        regs.set_at(ECAP, caps::ecap(&self.unit.config));
    }

    fn take_error(&mut self) -> Result<(), VtdError> {
        match self.unit.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Shared by [`Vtd`] and the [`DeviceIommu`]s it hands out.
struct Core {
    inner: Mutex<Inner>,
    iotlb: Arc<IotlbRegistry>,
    config: Config,
    /// Errors of writes made through [`MmioHandler`], which cannot return them.
    deferred: Mutex<Vec<VtdError>>,
    /// Interrupt-remapping listeners (the VMM's route tables).
    listeners: Mutex<Vec<Arc<dyn IrListener>>>,
}

/// Most errors kept for [`Vtd::take_deferred_errors`]; later ones are only counted.
const MAX_DEFERRED: usize = 64;

impl Core {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the state torn in a way that matters
        // more than stopping every vCPU would; keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends a call: takes its error and its interrupt-remapping notifications, releases the
    /// unit's lock, then tells the listeners (which may call back into the unit).
    fn finish(&self, mut inner: MutexGuard<'_, Inner>) -> Result<(), VtdError> {
        let result = inner.take_error();
        let pending = std::mem::take(&mut inner.unit.ir_pending);
        drop(inner);
        if !pending.is_empty() {
            let listeners = self
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for what in pending {
                for l in &listeners {
                    l.invalidated(what);
                }
            }
        }
        result
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vtd")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DmaTranslate for Core {
    fn translate(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault> {
        let mut inner = self.lock();
        let Inner { bank, unit } = &mut *inner;
        unit.translate(bank.regs_mut(), req)
    }
}

/// An emulated Intel VT-d DMA-remapping unit.
///
/// - The guest programs it through [`mmio_read`](Self::mmio_read) /
///   [`mmio_write`](Self::mmio_write) (the register window at the DRHD base,
///   [`mmio_size`](Self::mmio_size) bytes).
/// - Emulated devices DMA through it: it implements [`DmaTranslate`], and
///   [`device_iommu`](Self::device_iommu) gives a device its `vm_memory` IOMMU.
/// - Passthrough devices are shadowed: [`attach_host`](Self::attach_host) keeps a host DMA
///   address space equal to what the guest maps for the device, updated on every
///   invalidation the guest issues (caching mode).
///
/// Every method takes `&self`; the unit is `Send + Sync`. Clones are handles to the same
/// unit.
#[derive(Clone)]
pub struct Vtd {
    core: Arc<Core>,
}

impl fmt::Debug for Vtd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt(f)
    }
}

impl Vtd {
    /// A unit with `config`, translating against guest memory `mem`, delivering fault and
    /// invalidation-completion interrupts to `msi`. Out-of-range configuration values are
    /// clamped (see [`Config`]).
    pub fn new(config: Config, mem: GuestMemoryMmap, msi: Arc<dyn MsiSink>) -> Vtd {
        let iotlb = Arc::new(IotlbRegistry::with_capacity(config.iotlb_capacity));
        // The static table and handler list are checked by unit tests; neither depends on
        // guest input.
        let regs = RegisterFile::new(REGS).expect("VT-d register table is valid");
        let bank = RegisterBank::new(regs, HANDLERS).expect("VT-d handler table is valid");
        let unit = Unit::new(config.clone(), mem, msi, iotlb.clone());
        let mut inner = Inner { bank, unit };
        inner.load_capabilities();
        Vtd {
            core: Arc::new(Core {
                inner: Mutex::new(inner),
                iotlb,
                config,
                deferred: Mutex::new(Vec::new()),
                listeners: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Errors of register writes made through the [`MmioHandler`] implementation (e.g. via
    /// `viommu_shared::regs::MmioAdapter` on a `vm-device` bus), oldest first; at most 64
    /// are kept, later ones are counted in [`VtdStats::errors_not_returned`].
    pub fn take_deferred_errors(&self) -> Vec<VtdError> {
        std::mem::take(
            &mut *self
                .core
                .deferred
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// The CAP register value.
    pub fn cap(&self) -> u64 {
        caps::cap(&self.core.config)
    }

    /// The ECAP register value.
    pub fn ecap(&self) -> u64 {
        caps::ecap(&self.core.config)
    }

    /// Size of the register window in bytes (4 KiB aligned; the fault recording registers
    /// follow the fixed registers at CAP.FRO × 16 = 0x220).
    pub fn mmio_size(&self) -> u64 {
        let end = FRCD_BASE + 16 * self.core.config.fault_record_count() as u64;
        end.div_ceil(0x1000) * 0x1000
    }

    /// Guest read of `len` bytes at `offset` in the register window. Only naturally aligned
    /// 4- and 8-byte accesses are defined (VT-d spec 10.2); others, and offsets where no
    /// register is, read 0.
    pub fn mmio_read(&self, offset: u64, len: usize) -> u64 {
        if !matches!(len, 4 | 8) || check_access(offset, len).is_err() {
            return 0;
        }
        let inner = self.core.lock();
        if inner.unit.faults.contains(offset) {
            return inner.unit.faults.read(offset, len);
        }
        inner.bank.read(offset, len)
    }

    /// Guest write of the low `len` bytes of `value` at `offset`. Accesses other than aligned
    /// 4- or 8-byte ones, and writes where no register is, are ignored.
    ///
    /// Side effects (command handshakes, invalidations, queue processing) complete before it
    /// returns. The guest-visible result never depends on the host; a host failure while
    /// shadowing an invalidation is returned here (the first one; later ones are counted in
    /// [`VtdStats::errors_not_returned`]).
    pub fn mmio_write(&self, offset: u64, len: usize, value: u64) -> Result<(), VtdError> {
        if !matches!(len, 4 | 8) || check_access(offset, len).is_err() {
            return Ok(());
        }
        let mut inner = self.core.lock();
        let Inner { bank, unit } = &mut *inner;
        if unit.faults.contains(offset) {
            unit.faults.write(bank.regs_mut(), offset, len, value);
        } else {
            bank.write(unit, offset, len, value);
        }
        self.core.finish(inner)
    }

    /// System reset: registers to their reset values, translation and queued invalidation
    /// off, fault records cleared, caches emptied; passthrough devices go back to the
    /// identity map of guest RAM. Aliases and attached hosts stay.
    pub fn reset(&self) -> Result<(), VtdError> {
        let mut inner = self.core.lock();
        inner.bank.reset();
        inner.load_capabilities();
        let unit = &mut inner.unit;
        unit.faults.reset();
        unit.last_fault = None;
        unit.queue = Default::default();
        unit.root = RootPointer::default();
        unit.translating = false;
        unit.irta = None;
        unit.iotlb.invalidate_all();
        unit.refresh(|_, _| true);
        // Remapping is off again: every route resolves differently.
        unit.notify_ir(IrInvalidation::All);
        self.core.finish(inner)
    }

    /// The emulated-device translation cache shared by every [`DeviceIommu`] of this unit.
    pub fn iotlb(&self) -> &Arc<IotlbRegistry> {
        &self.core.iotlb
    }

    /// The `vm_memory` IOMMU of emulated device `requester_id` (bus << 8 | devfn) for DMA
    /// without PASID: wrap guest memory in
    /// `vm_memory::iommu::IommuMemory<GuestMemoryMmap, DeviceIommu>` for the device.
    pub fn device_iommu(&self, requester_id: u32) -> DeviceIommu {
        self.device_iommu_with_pasid(requester_id, None)
    }

    /// The IOMMU of emulated device `requester_id` for DMA with `pasid` (scalable mode).
    pub fn device_iommu_with_pasid(&self, requester_id: u32, pasid: Option<u32>) -> DeviceIommu {
        let tlb = self.core.iotlb.register(requester_id, pasid);
        DeviceIommu::new(tlb, self.core.clone())
    }

    /// Makes requests from `requester_id` look like requests from `alias` (a device behind a
    /// PCIe-to-PCI bridge uses the bridge's requester id): context lookup, fault source id and
    /// context-cache invalidation matching all use the alias. Re-syncs the device if it is a
    /// passthrough device.
    pub fn set_alias(&self, requester_id: u32, alias: u32) -> Result<(), VtdError> {
        let rid = rid16(requester_id)?;
        let alias = rid16(alias)?;
        self.change_alias(rid, Some(alias))
    }

    /// Removes the alias of `requester_id`.
    pub fn clear_alias(&self, requester_id: u32) -> Result<(), VtdError> {
        let rid = rid16(requester_id)?;
        self.change_alias(rid, None)
    }

    fn change_alias(&self, rid: u16, alias: Option<u16>) -> Result<(), VtdError> {
        let mut inner = self.core.lock();
        let unit = &mut inner.unit;
        match alias {
            Some(a) if a != rid => unit.aliases.insert(rid, a),
            _ => unit.aliases.remove(&rid),
        };
        unit.iotlb.invalidate_device(u32::from(rid));
        unit.refresh_device(rid);
        // Interrupt requests carry the alias too: source validation may change.
        unit.notify_ir(IrInvalidation::Source(rid));
        self.core.finish(inner)
    }

    /// Shadows device `device_id`'s DMA address space into `host`: from now on the host maps
    /// exactly what the guest maps for the device (guest RAM identity while translation is
    /// off or the context is pass-through; nothing while it is blocked), coalesced.
    ///
    /// The initial sync's host failure is returned, but the device stays attached (later
    /// invalidations retry). Needs [`Config::caching_mode`], and, when the unit advertises
    /// snoop control ([`Config::snoop_control`]), a host that enforces cache coherency
    /// ([`HostDma::enforces_coherency`](viommu_shared::host::HostDma::enforces_coherency)),
    /// else [`VtdError::HostNotCoherent`].
    pub fn attach_host(&self, device_id: u32, host: HostBackend) -> Result<(), VtdError> {
        let rid = rid16(device_id)?;
        if !self.core.config.caching_mode {
            return Err(VtdError::CachingModeOff);
        }
        if self.core.config.snoop_control && !host.enforces_coherency() {
            return Err(VtdError::HostNotCoherent { device_id });
        }
        let mut inner = self.core.lock();
        let unit = &mut inner.unit;
        if unit.shadows.devices.contains_key(&rid) {
            return Err(VtdError::AlreadyAttached { device_id });
        }
        let engine = new_engine(host, &unit.config.shadow, &unit.shadows.memory);
        unit.shadows.devices.insert(
            rid,
            ShadowedDevice {
                engine,
                // Blocked with no mapping is what an empty host is; the refresh below
                // resolves the real space and syncs it.
                space: Space::Blocked {
                    reason: crate::fault::FaultReason::ContextNotPresent,
                },
            },
        );
        let space = unit.space_of(rid);
        if let Some(dev) = unit.shadows.devices.get_mut(&rid) {
            dev.space = space;
        }
        let r = unit.shadows.sync(
            rid,
            &unit.mem,
            unit.config.shadow.walk_limits,
            crate::shadow::Extent::All,
            &mut unit.stats,
        );
        unit.note(r);
        inner.take_error()
    }

    /// Stops shadowing `device_id`: every host mapping made for it is removed, and the host
    /// backend is dropped.
    pub fn detach_host(&self, device_id: u32) -> Result<(), VtdError> {
        let rid = rid16(device_id)?;
        let mut dev = {
            let mut inner = self.core.lock();
            inner
                .unit
                .shadows
                .devices
                .remove(&rid)
                .ok_or(VtdError::NotAttached { device_id })?
        };
        dev.engine.teardown().map_err(|e| match e {
            viommu_shared::shadow::ShadowError::Unmap { run, error, .. } => VtdError::HostUnmap {
                device_id,
                run,
                error,
            },
            viommu_shared::shadow::ShadowError::OutOfResources { not_mapped, .. } => {
                VtdError::HostOutOfResources {
                    device_id,
                    not_mapped,
                }
            }
        })?;
        Ok(())
    }

    /// The host mappings currently made for passthrough device `device_id`, in IOVA order.
    pub fn host_mappings(&self, device_id: u32) -> Option<Vec<ShadowMapping>> {
        let rid = u16::try_from(device_id).ok()?;
        self.core.lock().unit.shadows.mappings(rid)
    }

    /// The span of guest mappings passthrough device `device_id` lacks on the host after
    /// running out of host mappings (retried after each later page-selective sync of the
    /// device; a domain or global invalidation re-syncs everything), or `None`.
    pub fn unmapped_range(&self, device_id: u32) -> Option<AddrRange> {
        self.shadowed(device_id, |d| d.engine.missing()).flatten()
    }

    /// The space passthrough device `device_id` is shadowed from.
    pub fn shadow_space(&self, device_id: u32) -> Option<Space> {
        self.shadowed(device_id, |d| d.space)
    }

    /// `f` of passthrough device `device_id`, if attached.
    fn shadowed<R>(&self, device_id: u32, f: impl FnOnce(&ShadowedDevice) -> R) -> Option<R> {
        let rid = u16::try_from(device_id).ok()?;
        self.core.lock().unit.shadows.devices.get(&rid).map(f)
    }

    /// The space DMA without PASID from `requester_id` goes through right now (reading the
    /// guest's tables; records no fault).
    pub fn device_space(&self, requester_id: u32) -> Option<Space> {
        let rid = u16::try_from(requester_id).ok()?;
        Some(self.core.lock().unit.space_of(rid))
    }

    /// Fault recording registers whose F bit is set.
    pub fn fault_records(&self) -> Vec<FaultRecord> {
        self.core.lock().unit.faults.pending()
    }

    /// The most recent fault the unit detected on a DMA request, whether it was recorded,
    /// collapsed into a pending record of the same source id, dropped on overflow or
    /// suppressed by FPD (each of those outcomes is counted in [`VtdStats`]). Tests use it to
    /// see the architected reason of faults that leave no new record.
    pub fn last_fault(&self) -> Option<Fault> {
        self.core.lock().unit.last_fault
    }

    /// Event counters.
    pub fn stats(&self) -> VtdStats {
        self.core.lock().unit.stats
    }

    /// Whether translation is enabled (GSTS.TES).
    pub fn translation_enabled(&self) -> bool {
        self.core.lock().unit.translating
    }

    /// The root table pointer latched by the last SRTP.
    pub fn root_pointer(&self) -> RootPointer {
        self.core.lock().unit.root
    }

    /// The interrupt remapping table address latched by the last SIRTP, if any.
    pub fn interrupt_remap_table(&self) -> Option<u64> {
        self.core.lock().unit.irta
    }

    /// Interrupt remapping as programmed: latched IRTA and GSTS.IRES/CFIS. The remapping
    /// itself is [`InterruptRemapper::remap`] / [`deliver_msi`](Self::deliver_msi).
    pub fn interrupt_remapping(&self) -> InterruptRemapping {
        let inner = self.core.lock();
        let irta = inner.unit.irta.unwrap_or(0);
        InterruptRemapping {
            table: irta & !0xfff,
            entries: 2u32 << (irta & 0xf),
            extended: irta & (1 << 11) != 0,
            latched: inner.unit.irta.is_some(),
            enabled: inner.bank.regs().get_at(GSTS).unwrap_or(0) & GCMD_IRE != 0,
            compatibility: inner.bank.regs().get_at(GSTS).unwrap_or(0) & GCMD_CFI != 0,
        }
    }

    /// An interrupt request from `source` arriving at the unit — an emulated device's MSI
    /// (its DWORD write to 0xFEEx_xxxx), or an IOAPIC/HPET message with the source id the
    /// VMM's DMAR device scope gives it: remapped in [`RemapMode::Request`] (faults are
    /// recorded; the IRTE's FPD honoured) and, if allowed, delivered through the unit's
    /// [`MsiSink`] as a compatibility-format MSI ([`Interrupt::to_msi`]). Requests from a
    /// device with an alias ([`set_alias`](Self::set_alias)) carry the alias.
    ///
    /// [`Interrupt::to_msi`]: viommu_shared::irq::Interrupt::to_msi
    pub fn deliver_msi(&self, source: u16, msi: Msi) -> Result<Resolution, IrFault> {
        let (result, sink) = {
            let mut inner = self.core.lock();
            let Inner { bank, unit } = &mut *inner;
            let r = unit.remap(bank.regs_mut(), source, msi, RemapMode::Request);
            (r, unit.msi.clone())
        };
        let r = result?;
        sink.send(r.interrupt.to_msi());
        Ok(r)
    }

    /// The architectural state, for migration (see [`crate::snapshot`]).
    pub fn save(&self) -> VtdSnapshot {
        let inner = self.core.lock();
        let unit = &inner.unit;
        let (fault_records, next_fault_record) = unit.faults.save();
        let q = unit.queue;
        VtdSnapshot {
            version: VTD_SNAPSHOT_VERSION,
            registers: save_registers(inner.bank.regs()),
            fault_records,
            next_fault_record,
            root: unit.root,
            translating: unit.translating,
            queue: QueueSnapshot {
                enabled: q.enabled,
                base: q.base,
                entries: q.entries,
                wide: q.wide,
                head: q.head,
            },
            irta: unit.irta,
        }
    }

    /// [`save`](Self::save) as a stream ([`VtdSnapshot::to_bytes`]).
    pub fn save_bytes(&self) -> Vec<u8> {
        self.save().to_bytes()
    }

    /// Loads a state produced by [`save`](Self::save) on a unit with the same configuration,
    /// then rebuilds what is derived from guest memory: the emulated-device IOTLB is emptied
    /// and every passthrough device's space is re-resolved from the guest's tables and
    /// re-synced into its host (reclaim and retry on host out-of-resources, as at runtime; a
    /// host failure is returned after the state is loaded).
    ///
    /// Hosts may be attached before or after: [`attach_host`](Self::attach_host) syncs
    /// from the current state either way, and the result is the same. The VMM should
    /// restore first and attach the destination's hosts after: a unit in its reset state
    /// does not translate, so a host attached before the restore first maps (pins) all of
    /// guest RAM only to have it unmapped again by the restore's re-sync. Each
    /// `attach_host` returns its device's host failure.
    ///
    /// A state no unit with this configuration could hold is refused with
    /// [`VtdError::Snapshot`] and the unit is reset (as by [`reset`](Self::reset)).
    pub fn restore(&self, snapshot: &VtdSnapshot) -> Result<(), VtdError> {
        let cap = self.cap();
        let ecap = self.ecap();
        let mut inner = self.core.lock();
        let loaded = snapshot
            .validate(&self.core.config, cap, ecap)
            .and_then(|()| {
                let Inner { bank, unit } = &mut *inner;
                // Registers first: `restore_registers` leaves them untouched on error.
                restore_registers(
                    bank.regs_mut(),
                    &snapshot.registers,
                    crate::snapshot::MODEL_BITS,
                )?;
                if !unit
                    .faults
                    .restore(&snapshot.fault_records, snapshot.next_fault_record)
                {
                    return Err(SnapshotError::mismatch("fault_records"));
                }
                unit.queue = snapshot.latched_queue();
                unit.root = snapshot.root;
                unit.translating = snapshot.translating;
                unit.irta = snapshot.irta;
                Ok(())
            });
        drop(inner);
        if let Err(e) = loaded {
            self.reset_after_refused_snapshot();
            return Err(VtdError::Snapshot(e));
        }
        let mut inner = self.core.lock();
        inner.load_capabilities();
        let unit = &mut inner.unit;
        unit.last_fault = None;
        unit.iotlb.invalidate_all();
        unit.refresh(|_, _| true);
        unit.notify_ir(IrInvalidation::All);
        self.core.finish(inner)
    }

    /// Decodes a stream ([`VtdSnapshot::from_bytes`]) and [`restore`](Self::restore)s it; a
    /// stream that does not decode also leaves the unit reset.
    pub fn restore_bytes(&self, bytes: &[u8]) -> Result<(), VtdError> {
        match VtdSnapshot::from_bytes(bytes) {
            Ok(s) => self.restore(&s),
            Err(e) => {
                self.reset_after_refused_snapshot();
                Err(VtdError::Snapshot(e))
            }
        }
    }

    /// Resets after a refused snapshot; the snapshot error is what the caller gets, so a
    /// host error of the reset's re-sync is counted as not returned.
    fn reset_after_refused_snapshot(&self) {
        if self.reset().is_err() {
            self.core.lock().unit.stats.errors_not_returned += 1;
        }
    }
}

/// Interrupt remapping state as the guest programmed it (see
/// [`Vtd::interrupt_remapping`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InterruptRemapping {
    /// Table base (IRTA 63:12 at the last SIRTP).
    pub table: u64,
    /// Number of entries, 2^(S + 1).
    pub entries: u32,
    /// EIME: x2APIC mode.
    pub extended: bool,
    /// Whether SIRTP was ever issued.
    pub latched: bool,
    /// GSTS.IRES.
    pub enabled: bool,
    /// GSTS.CFIS: compatibility-format interrupts pass (unless EIME).
    pub compatibility: bool,
}

/// Register accesses from a `vm-device` bus through `viommu_shared::regs::MmioAdapter`:
/// write errors (host failures while shadowing) are kept for
/// [`Vtd::take_deferred_errors`].
impl MmioHandler for Vtd {
    fn mmio_read(&mut self, offset: u64, len: usize) -> u64 {
        Vtd::mmio_read(self, offset, len)
    }

    fn mmio_write(&mut self, offset: u64, len: usize, value: u64) {
        if let Err(e) = Vtd::mmio_write(self, offset, len, value) {
            let mut deferred = self
                .core
                .deferred
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if deferred.len() < MAX_DEFERRED {
                deferred.push(e);
            } else {
                self.core.lock().unit.stats.errors_not_returned += 1;
            }
        }
    }
}

/// Interrupt remapping (VT-d spec chapter 5). `source` is the requester id (aliases apply) or
/// the IOAPIC/HPET source id of the VMM's DMAR device scope. With GSTS.IRES clear every
/// request passes as a compatibility-format interrupt. Nothing is cached: each call reads
/// the IRTE, so a result is current as of the call; listeners hear of every global and
/// index-selective interrupt-entry-cache invalidation, SIRTP, IRE and CFI change, reset and
/// restore. A fault's `recorded` is true when it went to the fault recording logic (a new
/// record, collapsed into a pending one of the same source, or an overflow), false in route
/// mode and when the IRTE's FPD suppressed it (0x22, 0x26).
impl InterruptRemapper for Vtd {
    fn remap(&self, source: u16, msi: Msi, mode: RemapMode) -> Result<Resolution, IrFault> {
        let mut inner = self.core.lock();
        let Inner { bank, unit } = &mut *inner;
        unit.remap(bank.regs_mut(), source, msi, mode)
    }

    fn add_listener(&self, listener: Arc<dyn IrListener>) {
        self.core
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener);
    }
}

impl DmaTranslate for Vtd {
    fn translate(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault> {
        self.core.translate(req)
    }
}

fn rid16(device_id: u32) -> Result<u16, VtdError> {
    u16::try_from(device_id).map_err(|_| VtdError::InvalidDeviceId { device_id })
}

/// Memory events from the VMM (balloon, virtio-mem, confidential-VM conversions): every
/// passthrough device's host mappings follow; see [`viommu_shared::memory`].
impl MemoryEvents for Vtd {
    type Error = VtdError;

    fn memory_event(&self, event: MemoryEvent) -> Result<SyncReport, VtdError> {
        let mut inner = self.core.lock();
        let unit = &mut inner.unit;
        let (report, result) = unit.shadows.memory_event(
            event,
            &unit.mem,
            unit.config.shadow.walk_limits,
            &mut unit.stats,
        );
        result.map(|()| report)
    }

    fn dma_mappings(&self, range: AddrRange) -> Vec<DmaMapping> {
        self.core.lock().unit.shadows.dma_mappings(range)
    }
}
