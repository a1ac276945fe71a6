//! [`AmdVi`]: the device a VMM embeds.

use crate::config::Config;
use crate::dte::{DeviceMode, Dte};
use crate::error::AmdViError;
use crate::event::EventRecord;
use crate::platform::{IvrsInfo, PciCapability, SpecialKind};
use crate::shadow::{EVERYTHING, FirstError, HostShadow};
use crate::shared_state::{Inner, lock};
use crate::stats::Stats;
use std::sync::{Arc, PoisonError};
use viommu_shared::AddrRange;
use viommu_shared::dma::{DeviceIommu, DmaFault, DmaRequest, DmaTranslate, DmaTranslation};
use viommu_shared::host::HostDma;
use viommu_shared::iotlb::IotlbRegistry;
use viommu_shared::irq::{IrFault, IrInvalidation, RemapMode, Resolution};
use viommu_shared::memory::{DmaMapping, MemoryEvent, MemoryEvents};
use viommu_shared::regs::{ByteOrder, MmioHandler, Msi, MsiSink, is_access_len};
use viommu_shared::shadow::{EmptyView, ShadowEngine, ShadowError, ShadowMapping, SyncReport};
use vm_device::DeviceMmio;
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The guest-physical ranges below 2^64 - 1 that are not guest RAM.
fn ram_holes(mem: &GuestMemoryMmap) -> Vec<AddrRange> {
    let mut ram: Vec<AddrRange> = mem
        .iter()
        .map(|r| AddrRange::from_len(r.start_addr().0, r.len()))
        .collect();
    ram.sort_by_key(|r| r.start);
    let mut holes = Vec::new();
    let mut at = 0;
    for r in ram {
        if r.start > at {
            holes.push(AddrRange::new(at, r.start));
        }
        at = at.max(r.end);
    }
    if at < u64::MAX {
        holes.push(AddrRange::new(at, u64::MAX));
    }
    holes
}

/// An emulated AMD-Vi IOMMU.
///
/// All methods take `&self` and may be called from any thread: MMIO from vCPU threads,
/// [`DmaTranslate::translate`] (through [`device_iommu`](Self::device_iommu)) from device
/// threads. Cloning is cheap and yields another handle to the same IOMMU.
///
/// Guest-visible behaviour follows the AMD I/O Virtualization Technology specification
/// (48882); where QEMU's `amd-iommu` differs, the module documentation of the part concerned
/// says which is followed and why.
#[derive(Clone, Debug)]
pub struct AmdVi {
    pub(crate) inner: Arc<Inner>,
}

impl AmdVi {
    /// The shared state (for the crate's other modules).
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// A new IOMMU in its reset state (disabled: DMA passes untranslated) over guest memory
    /// `mem`, sending its interrupts (event log, completion wait) to `msi` once the VMM gives
    /// it the guest's MSI message with [`set_msi`](Self::set_msi).
    pub fn new(config: Config, mem: GuestMemoryMmap, msi: Arc<dyn MsiSink>) -> AmdVi {
        AmdVi {
            inner: Arc::new(Inner::new(config, mem, msi)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The Extended Feature Register value advertised (MMIO 0x30, IVHD 11h/40h).
    pub fn efr(&self) -> u64 {
        self.inner.efr
    }

    /// The PCI capability block for the IOMMU's PCI function.
    pub fn pci_capability(&self) -> PciCapability {
        PciCapability::new(&self.inner.config)
    }

    /// The values for the ACPI IVRS table, with the capability block placed at
    /// `capability_offset` in the function's config space.
    pub fn ivrs(&self, capability_offset: u16) -> IvrsInfo {
        IvrsInfo::new(&self.inner.config, capability_offset)
    }

    /// Sets the MSI message the guest programmed in the IOMMU function's MSI capability
    /// (`None` while MSI is disabled there: interrupt conditions then only set status bits).
    pub fn set_msi(&self, msi: Option<Msi>) {
        lock(&self.inner.regs).set_msi(msi);
    }

    /// The MSI message set with [`set_msi`](Self::set_msi).
    pub fn msi(&self) -> Option<Msi> {
        lock(&self.inner.regs).msi()
    }

    /// A guest read of `len` bytes (1, 2, 4 or 8) at `offset` in the register window.
    /// Unmapped, misaligned or odd-sized reads return 0.
    pub fn mmio_read(&self, offset: u64, len: usize) -> u64 {
        lock(&self.inner.regs).read(offset, len)
    }

    /// A guest write of the low `len` bytes of `value` at `offset` in the register window.
    ///
    /// Side effects run before it returns: a Control write starting or stopping the IOMMU
    /// re-resolves every device, and a write to the command head, tail or Control runs the
    /// command buffer to completion. Malformed accesses are ignored. The error reports host
    /// problems met while shadowing (the guest-visible side is complete either way).
    pub fn mmio_write(&self, offset: u64, len: usize, value: u64) -> Result<(), AmdViError> {
        let pending = lock(&self.inner.regs).write(offset, len, value);
        if !pending.iommu_toggled && !pending.run_commands && !pending.irq_changed {
            return Ok(());
        }
        let mut exec = lock(&self.inner.exec);
        let mut errors = FirstError::default();
        if pending.irq_changed {
            self.inner
                .queue_irq_invalidation(&mut exec, IrInvalidation::All);
        }
        if pending.iommu_toggled {
            errors.keep(self.inner.iommu_toggled(&mut exec));
        }
        if pending.run_commands {
            errors.keep(self.inner.process_commands(&mut exec));
        }
        self.inner.flush_irq_notifications(&mut exec);
        errors.into_result()
    }

    /// System reset: registers back to their reset values (IOMMU disabled), emulated-DMA
    /// caches flushed, passthrough devices back to untranslated DMA.
    pub fn reset(&self) -> Result<(), AmdViError> {
        let mut exec = lock(&self.inner.exec);
        lock(&self.inner.regs).reset();
        self.inner
            .queue_irq_invalidation(&mut exec, IrInvalidation::All);
        let result = self.inner.iommu_toggled(&mut exec);
        self.inner.flush_irq_notifications(&mut exec);
        result
    }

    /// Makes `device_id`'s address space shadowed into `host` (a passthrough device): host
    /// mappings follow the device's translation from now on. The host should hold no
    /// mappings yet.
    ///
    /// If the host runs out of mappings the device stays attached, partly mapped, and the
    /// error says what is missing; later invalidations retry.
    pub fn attach_host(
        &self,
        device_id: u16,
        host: Box<dyn HostDma + Send>,
    ) -> Result<(), AmdViError> {
        let mut exec = lock(&self.inner.exec);
        if exec.shadows.contains_key(&device_id) {
            return Err(AmdViError::AlreadyAttached { device_id });
        }
        let snap = self.inner.snapshot();
        let mode = self.inner.resolve(self.inner.alias_of(device_id), &snap);
        let mut engine = ShadowEngine::new(host, self.inner.config.shadow.clone());
        // Guest-physical addresses outside RAM are never host DMA targets (VFIO refuses
        // them). Excluding them up front also bounds the work of laying out a huge guest
        // page: a level-4 default leaf is 256 TiB, which cut at `max_run` would be 2^27
        // host mappings planned in memory before the first map call (found by fuzzing).
        for hole in ram_holes(&self.inner.mem) {
            // The record is empty: no host call is made, nothing can fail.
            let _ = engine.reserve_gpa(&EmptyView, hole);
        }
        exec.memory.prepare(&mut engine);
        exec.shadows
            .insert(device_id, HostShadow::new(engine, mode));
        self.inner
            .sync_device(&mut exec.shadows, device_id, EVERYTHING)
    }

    /// Removes every host mapping of `device_id` and forgets its host backend (dropped here).
    ///
    /// If the host refuses an unmap the device stays attached with what is still mapped
    /// (see [`host_mappings`](Self::host_mappings)) and the error is returned; call again to
    /// retry.
    pub fn detach_host(&self, device_id: u16) -> Result<(), AmdViError> {
        let mut exec = lock(&self.inner.exec);
        let shadow = exec
            .shadows
            .get_mut(&device_id)
            .ok_or(AmdViError::NotAttached { device_id })?;
        match shadow.engine.teardown() {
            Ok(_) => {
                exec.shadows.remove(&device_id);
                Ok(())
            }
            Err(e) => {
                let error = match e {
                    ShadowError::Unmap { run, error, .. } => AmdViError::HostUnmap {
                        device_id,
                        run,
                        error,
                    },
                    ShadowError::OutOfResources { not_mapped, .. } => {
                        AmdViError::HostOutOfResources {
                            device_id,
                            not_mapped,
                        }
                    }
                };
                self.inner.note_host_error(&error);
                Err(error)
            }
        }
    }

    /// Declares that DMA from requester `device_id` reaches the IOMMU as `alias` (an IVRS
    /// alias entry, e.g. devices behind a PCIe-to-PCI bridge): its translation comes from
    /// `alias`'s entry and its events carry `alias`. `alias == device_id` removes the alias.
    /// A passthrough device is re-synced to its new entry.
    pub fn set_alias(&self, device_id: u16, alias: u16) -> Result<(), AmdViError> {
        let mut exec = lock(&self.inner.exec);
        {
            let mut a = self
                .inner
                .aliases
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if alias == device_id {
                a.remove(&device_id);
            } else {
                a.insert(device_id, alias);
            }
        }
        self.inner.iotlb.invalidate_device(u32::from(device_id));
        self.inner
            .queue_irq_invalidation(&mut exec, IrInvalidation::Source(device_id));
        self.inner.flush_irq_notifications(&mut exec);
        if !exec.shadows.contains_key(&device_id) {
            // Not a passthrough device: no host mappings to move (no entry to read).
            return Ok(());
        }
        let snap = self.inner.snapshot();
        let mode = self.inner.resolve(alias, &snap);
        self.inner
            .retarget(&mut exec.shadows, device_id, mode, false)
    }

    /// Delivers an interrupt request of emulated device (or IOAPIC/HPET) `source`: remaps
    /// `msi` as the hardware would for a posted write to the interrupt range (a fault raises
    /// its event) and sends the result, re-encoded as a compatibility-format MSI
    /// ([`Interrupt::to_msi`](viommu_shared::irq::Interrupt::to_msi)), to the [`MsiSink`]
    /// the model was built with, the same sink that receives the IOMMU's own interrupts.
    ///
    /// This is how a VMM wires emulated devices' interrupts behind the IOMMU: its MSI/MSI-X
    /// emulation (and IOAPIC/HPET model, with the id from
    /// [`Config::special_devices`](crate::Config::special_devices)) calls `deliver_msi`
    /// with the message the guest programmed, instead of injecting it directly. A DMA write
    /// to `0xFEEx_xxxx` through [`device_iommu`](Self::device_iommu) does not translate (the
    /// interrupt range is not memory, spec §2.2.5); the device model routes such writes here.
    /// For KVM irqfd routes use
    /// [`InterruptRemapper::remap`](viommu_shared::irq::InterruptRemapper::remap) with [`RemapMode::Route`]
    /// (through a [`RouteTable`](viommu_shared::irq::RouteTable)) and this only for
    /// interrupts the VMM injects itself.
    pub fn deliver_msi(&self, source: u16, msi: Msi) -> Result<Resolution, IrFault> {
        let r = self.inner.remap_irq(source, msi, RemapMode::Request)?;
        self.inner.send(Some(r.interrupt.to_msi()));
        Ok(r)
    }

    /// The requester id the IVRS gives the IOAPIC or HPET `handle`
    /// ([`Config::special_devices`](crate::Config::special_devices)).
    pub fn special_source(&self, kind: SpecialKind, handle: u8) -> Option<u16> {
        self.inner
            .config
            .special_devices
            .iter()
            .find(|d| d.kind == kind && d.handle == handle)
            .map(|d| d.device_id)
    }

    /// The DeviceID whose entry governs DMA from requester `device_id`.
    pub fn alias_of(&self, device_id: u16) -> u16 {
        self.inner.alias_of(device_id)
    }

    /// The `vm_memory::iommu::Iommu` of emulated device `device_id` (requester id): wrap the
    /// device's memory in `IommuMemory<GuestMemoryMmap, DeviceIommu>` and its DMA is
    /// translated here, faults logged as events.
    pub fn device_iommu(&self, device_id: u16) -> DeviceIommu {
        let tlb = self.inner.iotlb.register(u32::from(device_id), None);
        DeviceIommu::new(tlb, self.inner.clone())
    }

    /// The emulated-DMA translation caches (invalidated by the guest's commands).
    pub fn iotlb(&self) -> &Arc<IotlbRegistry> {
        &self.inner.iotlb
    }

    /// What the IOMMU would do with DMA from requester `device_id` right now, read from the
    /// registers and the device table (no event is raised).
    pub fn device_mode(&self, device_id: u16) -> DeviceMode {
        let snap = self.inner.snapshot();
        self.inner.resolve(self.inner.alias_of(device_id), &snap)
    }

    /// The entry governing requester `device_id`, as the guest wrote it (`None` while no
    /// entry can be read).
    pub fn device_entry(&self, device_id: u16) -> Option<Dte> {
        let snap = self.inner.snapshot();
        Dte::read(
            &self.inner.mem,
            &snap.dev_tab,
            self.inner.alias_of(device_id),
        )
        .ok()
    }

    /// The mode a passthrough device's host mappings currently reflect (its entry as last
    /// loaded), or `None` if it has no host.
    pub fn attached_mode(&self, device_id: u16) -> Option<DeviceMode> {
        lock(&self.inner.exec)
            .shadows
            .get(&device_id)
            .map(|s| s.mode)
    }

    /// The host mappings the model holds for a passthrough device, in IOVA order.
    pub fn host_mappings(&self, device_id: u16) -> Option<Vec<ShadowMapping>> {
        lock(&self.inner.exec)
            .shadows
            .get(&device_id)
            .map(|s| s.engine.record().iter().copied().collect())
    }

    /// The span of guest mappings a passthrough device lacks on the host after running out
    /// of host mappings (retried after each later sync of the device), or `None`.
    pub fn unmapped_range(&self, device_id: u16) -> Option<AddrRange> {
        lock(&self.inner.exec)
            .shadows
            .get(&device_id)
            .and_then(|s| s.engine.missing())
    }

    /// Requester ids of the passthrough devices.
    pub fn attached_devices(&self) -> Vec<u16> {
        lock(&self.inner.exec).shadows.keys().copied().collect()
    }

    /// The most recent events raised (up to `Config::event_history`), oldest first, with
    /// whether each reached the guest's log.
    pub fn recent_events(&self) -> Vec<EventRecord> {
        lock(&self.inner.regs).history()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.inner.stats.snapshot()
    }

    /// Host errors met since the last call (the most recent 64), oldest first — including
    /// those of MMIO writes made through [`MmioHandler`], which cannot return them.
    pub fn take_host_errors(&self) -> Vec<AmdViError> {
        lock(&self.inner.host_errors).drain(..).collect()
    }
}

// The VMM shares one model between vCPU and device threads.
const _: fn() = || {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<AmdVi>();
};

impl DmaTranslate for AmdVi {
    fn translate(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault> {
        self.inner.translate(req)
    }
}

/// A `vm-device` MMIO device without an outer lock (the model locks internally). Host
/// errors of writes are kept for [`AmdVi::take_host_errors`] and counted in
/// [`AmdVi::stats`]; buffers of other than 1, 2, 4 or 8 bytes read as zeros and are not
/// written.
impl DeviceMmio for AmdVi {
    fn mmio_read(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        if is_access_len(data.len()) {
            let v = AmdVi::mmio_read(self, offset, data.len());
            ByteOrder::Little.encode(v, data);
        } else {
            data.fill(0);
        }
    }

    fn mmio_write(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        if let Some(v) = ByteOrder::Little.decode(data) {
            // Already recorded in `host_errors` and the counters.
            let _ = AmdVi::mmio_write(self, offset, data.len(), v);
        }
    }
}

/// For `vm-device` buses via [`MmioAdapter`](viommu_shared::regs::MmioAdapter). Host errors
/// of writes are kept for [`AmdVi::take_host_errors`] and counted in [`AmdVi::stats`].
impl MmioHandler for AmdVi {
    fn mmio_read(&mut self, offset: u64, len: usize) -> u64 {
        AmdVi::mmio_read(self, offset, len)
    }

    fn mmio_write(&mut self, offset: u64, len: usize, value: u64) {
        // Already recorded in `host_errors` and the counters.
        let _ = AmdVi::mmio_write(self, offset, len, value);
    }
}

/// Memory events from the VMM (balloon, virtio-mem, confidential-VM conversions): every
/// passthrough device's host mappings follow; see [`viommu_shared::memory`].
impl MemoryEvents for AmdVi {
    type Error = AmdViError;

    fn memory_event(&self, event: MemoryEvent) -> Result<SyncReport, AmdViError> {
        let mut exec = lock(&self.inner.exec);
        let (report, result) = self.inner.memory_event(&mut exec, event);
        result.map(|()| report)
    }

    fn dma_mappings(&self, range: AddrRange) -> Vec<DmaMapping> {
        crate::shared_state::Inner::dma_mappings(&lock(&self.inner.exec), range)
    }
}
