//! The machine: a KVM VM with guest RAM, one vCPU, KVM's in-kernel irqchip (PIC, IO-APIC,
//! local APIC) and PIT or ([`IrqMode::Split`]) KVM's local APIC and the VMM's IO-APIC with
//! every interrupt remapped by the IOMMU, a 16550 on COM1, ACPI PM1a for power-off, PCI bus 0 (host bridge,
//! edu behind the IOMMU, the AMD-Vi function) and the IOMMU's register window, all served
//! from the vCPU thread's exits.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    KVM_CAP_SPLIT_IRQCHIP, KVM_CAP_X2APIC_API, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
    KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK, KVM_X2APIC_API_USE_32BIT_IDS, kvm_enable_cap, kvm_msi,
    kvm_pit_config,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VmFd};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};
use viommu_shared::host::{HostDma, SharedSimHost, SimHostConfig, VfioContainerBackend};
use viommu_shared::regs::{Msi, MsiSink};
use vm_memory::iommu::IommuMemory;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::acpi::{self, AcpiConfig};
use crate::boot;
use crate::edu::{Edu, EduCounters};
use crate::host::{CountingHost, HostCounters};
use crate::ioapic::{self, Ioapic};
use crate::iommu::{AMDVI_DEVFN, AmdViFunction, IOAPIC_ID, Iommu, IommuError, IommuKind};
use crate::irq::{IrCounters, IrqMode, RemappedSource};
use crate::layout;
use crate::pci::{HostBridge, PciBus};

/// PCI devfn of the edu device (00:01.0).
pub const EDU_DEVFN: u8 = 1 << 3;

/// Which host backend the edu device's address space is shadowed into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// The simulated type1 host (measured kernel semantics) with an entry limit.
    Sim {
        /// DMA entry limit (type1's `dma_entry_limit`).
        limit: u32,
    },
    /// A real VFIO type1 container, made usable by attaching the group of the device bound to
    /// vfio-pci at this sysfs path (e.g. `/sys/bus/pci/devices/0000:00:03.0`). The VMM's guest
    /// memory is what the container maps (and the kernel pins).
    Vfio {
        /// sysfs path of a device bound to vfio-pci.
        device: String,
    },
    /// No shadowing.
    None,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// bzImage path.
    pub kernel: String,
    /// initramfs path.
    pub initrd: Option<String>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// The IOMMU.
    pub iommu: IommuKind,
    /// The host backend.
    pub host: HostKind,
    /// In-kernel irqchip, or split with the VMM's IO-APIC and interrupt remapping.
    pub irq: IrqMode,
}

/// Why the VMM stopped with an error.
#[derive(Debug)]
pub enum VmError {
    /// A KVM ioctl failed.
    Kvm(&'static str, kvm_ioctls::Error),
    /// Guest memory could not be created or written.
    Memory(String),
    /// Loading the kernel failed.
    Boot(boot::BootError),
    /// The ACPI tables do not fit.
    Acpi(acpi::AcpiError),
    /// An eventfd could not be created.
    EventFd(std::io::Error),
    /// The configuration is invalid.
    Config(String),
    /// The vCPU stopped with an exit the VMM does not handle.
    UnexpectedExit(String),
    /// The VFIO container or device for the host backend could not be set up.
    Vfio(&'static str, vfio_ioctls::VfioError),
}

impl std::fmt::Display for VmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmError::Kvm(what, e) => write!(f, "KVM {what}: {e}"),
            VmError::Memory(e) => write!(f, "guest memory: {e}"),
            VmError::Boot(e) => write!(f, "{e}"),
            VmError::Acpi(e) => write!(f, "{e}"),
            VmError::EventFd(e) => write!(f, "eventfd: {e}"),
            VmError::Config(e) => write!(f, "{e}"),
            VmError::UnexpectedExit(e) => write!(f, "unexpected vCPU exit: {e}"),
            VmError::Vfio(what, e) => write!(f, "VFIO {what}: {e}"),
        }
    }
}

impl std::error::Error for VmError {}

/// How the guest stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// ACPI S5 through PM1a_CNT.
    PowerOff,
    /// Triple fault / reset.
    Shutdown,
}

/// What the VMM reports at exit.
#[derive(Debug)]
pub struct Report {
    /// How the guest stopped.
    pub stop: StopReason,
    /// The model's counters.
    pub model: Vec<(&'static str, u64)>,
    /// Which host backend (`sim`, `vfio` or `none`).
    pub host_kind: &'static str,
    /// Host backend counters, if shadowing.
    pub host: Option<Arc<HostCounters>>,
    /// Host entries left after detaching at teardown.
    pub host_entries_at_teardown: Option<u64>,
    /// Detach error at teardown.
    pub teardown_error: Option<IommuError>,
    /// edu counters.
    pub edu: Arc<EduCounters>,
    /// MSIs signalled into KVM (device and IOMMU interrupts).
    pub msis: u64,
    /// The irqchip mode.
    pub irq: IrqMode,
    /// Messages sent by the VMM's IO-APIC (split mode).
    pub ioapic_msis: u64,
    /// Interrupt-remapping outcomes per source (`edu`, `ioapic`) in split mode.
    pub remapped: Vec<(&'static str, Arc<IrCounters>)>,
}

impl Report {
    /// The one-line report the harness parses.
    pub fn line(&self) -> String {
        let mut w = vec![format!(
            "stop={}",
            match self.stop {
                StopReason::PowerOff => "poweroff",
                StopReason::Shutdown => "shutdown",
            }
        )];
        for (k, v) in &self.model {
            w.push(format!("{k}={v}"));
        }
        w.push(format!("host={}", self.host_kind));
        if let Some(h) = &self.host {
            w.push(format!("host_calls={}", h.calls()));
            w.push(format!("host_maps={}", h.maps.load(Ordering::Relaxed)));
            w.push(format!("host_unmaps={}", h.unmaps.load(Ordering::Relaxed)));
            w.push(format!("host_errors={}", h.errors.load(Ordering::Relaxed)));
            w.push(format!(
                "host_enospc={}",
                h.out_of_resources.load(Ordering::Relaxed)
            ));
            w.push(format!(
                "host_entries_peak={}",
                h.peak_entries.load(Ordering::Relaxed)
            ));
        }
        if let Some(n) = self.host_entries_at_teardown {
            w.push(format!("host_entries_at_teardown={n}"));
        }
        if let Some(e) = &self.teardown_error {
            w.push(format!("teardown_error={:?}", e.to_string()));
        }
        let e = &self.edu;
        w.push(format!("edu_dma_ok={}", e.dma_ok.load(Ordering::Relaxed)));
        w.push(format!(
            "edu_dma_failed={}",
            e.dma_failed.load(Ordering::Relaxed)
        ));
        w.push(format!(
            "edu_dma_refused={}",
            e.dma_refused.load(Ordering::Relaxed)
        ));
        w.push(format!("edu_msis={}", e.msis.load(Ordering::Relaxed)));
        w.push(format!("msis={}", self.msis));
        w.push(format!(
            "irq={}",
            match self.irq {
                IrqMode::Kernel => "kernel",
                IrqMode::Split => "split",
            }
        ));
        if self.irq == IrqMode::Split {
            w.push(format!("ioapic_msis={}", self.ioapic_msis));
        }
        for (name, c) in &self.remapped {
            w.push(format!(
                "{name}_ir_remapped={}",
                c.remapped.load(Ordering::Relaxed)
            ));
            w.push(format!(
                "{name}_ir_passed={}",
                c.passed.load(Ordering::Relaxed)
            ));
            w.push(format!(
                "{name}_ir_refused={}",
                c.refused.load(Ordering::Relaxed)
            ));
        }
        w.join(" ")
    }
}

/// MSIs into KVM (`KVM_SIGNAL_MSI`).
struct KvmMsi {
    vm: Arc<VmFd>,
    sent: AtomicU64,
}

impl MsiSink for KvmMsi {
    fn send(&self, msi: Msi) {
        let m = kvm_msi {
            address_lo: msi.address as u32,
            address_hi: (msi.address >> 32) as u32,
            data: msi.data,
            ..Default::default()
        };
        self.sent.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.vm.signal_msi(m) {
            eprintln!("viommu-vmm: KVM_SIGNAL_MSI {msi:?}: {e}");
        }
    }
}

/// The serial port's interrupt: an eventfd registered as irqfd for GSI 4 (in-kernel
/// irqchip), or an edge on pin 4 of the VMM's IO-APIC (split).
enum IrqLine {
    Irqfd(EventFd),
    Ioapic(Arc<Mutex<Ioapic>>, usize),
}

impl Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        match self {
            IrqLine::Irqfd(e) => e.write(1),
            IrqLine::Ioapic(io, pin) => {
                lock(io).pulse(*pin);
                Ok(())
            }
        }
    }
}

/// The IO-APIC's lock; a panic elsewhere while holding it leaves consistent register state.
fn lock(io: &Mutex<Ioapic>) -> std::sync::MutexGuard<'_, Ioapic> {
    io.lock().unwrap_or_else(|e| e.into_inner())
}

/// Enables split irqchip (KVM's local APIC only; `ioapic::PINS` GSIs reserved for the
/// VMM's IO-APIC) and the x2APIC API (32-bit destination ids in `address_hi` 31:8 of
/// `KVM_SIGNAL_MSI`, the layout of `Interrupt::to_msi`; no 0xff broadcast quirk). Both
/// before any vCPU exists.
fn enable_split_irqchip(vm: &VmFd) -> Result<(), VmError> {
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_SPLIT_IRQCHIP,
        ..Default::default()
    };
    cap.args[0] = ioapic::PINS as u64;
    vm.enable_cap(&cap)
        .map_err(|e| VmError::Kvm("enable split irqchip", e))?;
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_X2APIC_API,
        ..Default::default()
    };
    cap.args[0] = u64::from(KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK);
    vm.enable_cap(&cap)
        .map_err(|e| VmError::Kvm("enable x2APIC API", e))
}

/// Creates the VM and runs the guest until it powers off; then detaches the host backend
/// and returns the report.
pub fn run(cfg: &VmConfig) -> Result<Report, VmError> {
    let ram = cfg.mem_mib << 20;
    if !((64 << 20)..=layout::RAM_MAX).contains(&ram) {
        return Err(VmError::Config(format!(
            "memory must be 64..{} MiB",
            layout::RAM_MAX >> 20
        )));
    }
    let kvm = Kvm::new().map_err(|e| VmError::Kvm("open /dev/kvm", e))?;
    let vm = Arc::new(kvm.create_vm().map_err(|e| VmError::Kvm("create VM", e))?);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), ram as usize)])
        .map_err(|e| VmError::Memory(e.to_string()))?;
    let host_addr = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| VmError::Memory(e.to_string()))?;
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: ram,
        userspace_addr: host_addr as u64,
        flags: 0,
    };
    // SAFETY: the region is the single mapping of `mem`, which lives (in `mem` and its
    // clones held by the models and devices) until after the VM fd is closed at the end of
    // this function.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| VmError::Kvm("set memory region", e))?;
    // Only needed on Intel; AMD ignores it.
    let _ = vm.set_tss_address(0xfffb_d000);
    let split = cfg.irq == IrqMode::Split;
    if split {
        enable_split_irqchip(&vm)?;
    } else {
        vm.create_irq_chip()
            .map_err(|e| VmError::Kvm("create irqchip", e))?;
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(|e| VmError::Kvm("create PIT", e))?;
    }

    let msi = Arc::new(KvmMsi {
        vm: vm.clone(),
        sent: AtomicU64::new(0),
    });
    let iommu = Iommu::new(cfg.iommu, mem.clone(), msi.clone(), split);
    // Split mode: every interrupt source is an interrupt request to the IOMMU's remapper.
    let remapper = if split { iommu.remapper() } else { None };
    let mut remapped = Vec::new();
    let mut source_sink = |name: &'static str, source: Option<u16>| -> Arc<dyn MsiSink> {
        match (&remapper, source) {
            (Some(r), Some(source)) => {
                let s = RemappedSource::new(r.clone(), source, msi.clone());
                remapped.push((name, s.counters()));
                Arc::new(s)
            }
            _ => msi.clone(),
        }
    };
    let edu_bdf = u16::from(EDU_DEVFN);
    let edu_msi = source_sink("edu", Some(edu_bdf));
    let ioapic = split.then(|| {
        Arc::new(Mutex::new(Ioapic::new(
            IOAPIC_ID,
            source_sink("ioapic", iommu.ioapic_source_id()),
        )))
    });

    // PCI bus 0.
    let mut bus = PciBus::new();
    bus.add(0, Box::new(HostBridge::new()));
    let edu_counters = match iommu.device_iommu(edu_bdf) {
        Some(di) => {
            let edu = Edu::new(IommuMemory::new(mem.clone(), di, true, ()), edu_msi);
            let c = edu.counters();
            bus.add(EDU_DEVFN, Box::new(edu));
            c
        }
        None => {
            let edu = Edu::new(mem.clone(), edu_msi);
            let c = edu.counters();
            bus.add(EDU_DEVFN, Box::new(edu));
            c
        }
    };
    if let Iommu::AmdVi(m) = &iommu {
        bus.add(AMDVI_DEVFN, Box::new(AmdViFunction::new(m.clone())));
    }

    // The edu device's address space is also shadowed into a host backend, as for a
    // passthrough device: every guest map and unmap reaches the host.
    let mut host_counters = None;
    // Keeps the VFIO group attached to the container while the VM runs.
    let mut _vfio_device = None;
    let host: Option<Box<dyn HostDma + Send>> = match (&cfg.host, &iommu) {
        (_, Iommu::None) | (HostKind::None, _) => None,
        (HostKind::Sim { limit }, _) => {
            let sim = match cfg.iommu {
                IommuKind::AmdVi => SimHostConfig::amd_vi(),
                _ => SimHostConfig::vtd(),
            }
            .with_entry_limit(*limit);
            let host = CountingHost::new(SharedSimHost::new(sim));
            host_counters = Some(host.counters());
            Some(Box::new(host))
        }
        (HostKind::Vfio { device }, _) => {
            let container =
                Arc::new(VfioContainer::new(None).map_err(|e| VmError::Vfio("open container", e))?);
            let dev = VfioDevice::new(
                std::path::Path::new(device),
                container.clone() as Arc<dyn VfioOps>,
                false,
            )
            .map_err(|e| VmError::Vfio("attach device group", e))?;
            _vfio_device = Some(dev);
            let host =
                CountingHost::new(VfioContainerBackend::new(container, Arc::new(mem.clone())));
            host_counters = Some(host.counters());
            Some(Box::new(host))
        }
    };
    if let Some(host) = host
        && let Err(e) = iommu.attach_host(edu_bdf, host)
    {
        eprintln!("viommu-vmm: attach host backend: {e}");
    }

    // ACPI and the kernel.
    let tables = acpi::build(&AcpiConfig {
        cpus: 1,
        iommu: iommu.acpi_table(
            &bus.devfns().into_iter().map(u16::from).collect::<Vec<_>>(),
            split,
        ),
    })
    .map_err(VmError::Acpi)?;
    for (addr, bytes) in &tables.blobs {
        mem.write_slice(bytes, GuestAddress(*addr))
            .map_err(|e| VmError::Memory(e.to_string()))?;
    }
    let loaded = boot::load(
        &mem,
        ram,
        &cfg.kernel,
        cfg.initrd.as_deref(),
        &cfg.cmdline,
        tables.rsdp,
    )
    .map_err(VmError::Boot)?;

    // Serial.
    let serial_irq = match &ioapic {
        Some(io) => IrqLine::Ioapic(io.clone(), layout::SERIAL_IRQ as usize),
        None => {
            let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::EventFd)?;
            vm.register_irqfd(&evt, layout::SERIAL_IRQ)
                .map_err(|e| VmError::Kvm("register serial irqfd", e))?;
            IrqLine::Irqfd(evt)
        }
    };
    let mut serial = Serial::new(serial_irq, std::io::stdout());

    // vCPU 0.
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| VmError::Kvm("create vCPU", e))?;
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| VmError::Kvm("get supported CPUID", e))?;
    let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
    for e in cpuid.as_mut_slice() {
        if e.function == 1 {
            // Initial APIC id 0, one logical processor.
            e.ebx &= 0x0000_ffff;
            e.ebx |= 1 << 16;
            if split {
                // x2APIC (ECX 21) and, when KVM emulates it, the TSC-deadline timer
                // (ECX 24), which KVM leaves to userspace to expose: with it and ARAT
                // Linux needs no PIT (`apic_needs_pit`), which split mode does not have.
                e.ecx |= 1 << 21;
                // The hypervisor bit (ECX 31), so that Linux finds KVM's leaves and takes
                // the TSC frequency from kvmclock: there is no PIT to calibrate against.
                e.ecx |= 1 << 31;
                if tsc_deadline {
                    e.ecx |= 1 << 24;
                }
            }
        }
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| VmError::Kvm("set CPUID", e))?;
    let sregs = vcpu.get_sregs().map_err(|e| VmError::Kvm("get sregs", e))?;
    vcpu.set_sregs(&boot::sregs(sregs))
        .map_err(|e| VmError::Kvm("set sregs", e))?;
    vcpu.set_regs(&boot::regs(loaded.entry))
        .map_err(|e| VmError::Kvm("set regs", e))?;
    vcpu.set_fpu(&boot::fpu())
        .map_err(|e| VmError::Kvm("set FPU", e))?;
    set_lint(&vcpu)?;

    let window = iommu.mmio_window();
    let mut pm1_enable = 0u16;
    let stop = loop {
        let exit = vcpu.run().map_err(|e| VmError::Kvm("run", e))?;
        match exit {
            VcpuExit::IoIn(port, data) => {
                data.fill(0xff);
                match port {
                    p if (layout::SERIAL_PORT..layout::SERIAL_PORT + 8).contains(&p) => {
                        data[0] = serial.read((p - layout::SERIAL_PORT) as u8);
                    }
                    p if (layout::PCI_CONFIG_ADDRESS..layout::PCI_CONFIG_DATA + 4).contains(&p) => {
                        bus.pio_read(p, data)
                    }
                    p if (layout::PM1A_EVT..layout::PM1A_EVT + 4).contains(&p) => {
                        // Status reads 0; enable reads back.
                        let v = if p >= layout::PM1A_EVT + 2 {
                            pm1_enable
                        } else {
                            0
                        };
                        let bytes = u32::from(v).to_le_bytes();
                        let first = usize::from((p - layout::PM1A_EVT) & 1);
                        for (i, b) in data.iter_mut().enumerate() {
                            *b = bytes.get(first + i).copied().unwrap_or(0);
                        }
                    }
                    p if (layout::PM1A_CNT..layout::PM1A_CNT + 2).contains(&p) => {
                        // SCI_EN: always in ACPI mode.
                        data.fill(0);
                        if p == layout::PM1A_CNT {
                            data[0] = 1;
                        }
                    }
                    _ => {}
                }
            }
            VcpuExit::IoOut(port, data) => match port {
                p if (layout::SERIAL_PORT..layout::SERIAL_PORT + 8).contains(&p) => {
                    // Errors of the interrupt eventfd or stdout cannot be reported to the
                    // guest; the console is best effort.
                    let _ = serial.write((p - layout::SERIAL_PORT) as u8, data[0]);
                }
                p if (layout::PCI_CONFIG_ADDRESS..layout::PCI_CONFIG_DATA + 4).contains(&p) => {
                    bus.pio_write(p, data)
                }
                p if p == layout::PM1A_EVT + 2 && data.len() == 2 => {
                    pm1_enable = u16::from_le_bytes([data[0], data[1]]);
                }
                p if p == layout::PM1A_CNT && data.len() == 2 => {
                    let v = u16::from_le_bytes([data[0], data[1]]);
                    // SLP_EN (bit 13) with SLP_TYP (bits 10..12) = S5.
                    if v & (1 << 13) != 0 && (v >> 10) & 7 == layout::S5_SLP_TYP {
                        break StopReason::PowerOff;
                    }
                }
                _ => {}
            },
            VcpuExit::MmioRead(addr, data) => match window {
                Some((base, size)) if addr >= base && addr - base < size => {
                    iommu.mmio_read(addr - base, data)
                }
                _ if let Some(io) = &ioapic
                    && (layout::IOAPIC..layout::IOAPIC + ioapic::WINDOW).contains(&addr) =>
                {
                    lock(io).mmio_read(addr - layout::IOAPIC, data)
                }
                _ => {
                    if !bus.mmio_read(addr, data) {
                        data.fill(0xff);
                    }
                }
            },
            VcpuExit::MmioWrite(addr, data) => match window {
                Some((base, size)) if addr >= base && addr - base < size => {
                    iommu.mmio_write(addr - base, data)
                }
                _ if let Some(io) = &ioapic
                    && (layout::IOAPIC..layout::IOAPIC + ioapic::WINDOW).contains(&addr) =>
                {
                    lock(io).mmio_write(addr - layout::IOAPIC, data)
                }
                _ => {
                    bus.mmio_write(addr, data);
                }
            },
            VcpuExit::IoapicEoi(vector) => {
                if let Some(io) = &ioapic {
                    lock(io).eoi(vector);
                }
            }
            VcpuExit::Shutdown => break StopReason::Shutdown,
            VcpuExit::Hlt => break StopReason::Shutdown,
            VcpuExit::SystemEvent(t, _) => {
                eprintln!("viommu-vmm: system event {t}");
                break StopReason::Shutdown;
            }
            other => return Err(VmError::UnexpectedExit(format!("{other:?}"))),
        }
    };
    let _ = serial.writer_mut().flush();

    // Teardown: every host mapping must go.
    let mut teardown_error = None;
    let mut at_teardown = None;
    if let Some(h) = &host_counters {
        if let Err(e) = iommu.detach_host(edu_bdf) {
            teardown_error = Some(e);
        }
        at_teardown = Some(h.entries.load(Ordering::Relaxed));
    }
    Ok(Report {
        stop,
        model: iommu.counters(),
        host_kind: match (&cfg.host, host_counters.is_some()) {
            (HostKind::Sim { .. }, true) => "sim",
            (HostKind::Vfio { .. }, true) => "vfio",
            _ => "none",
        },
        host: host_counters,
        host_entries_at_teardown: at_teardown,
        teardown_error,
        edu: edu_counters,
        msis: msi.sent.load(Ordering::Relaxed),
        irq: cfg.irq,
        ioapic_msis: ioapic.as_ref().map_or(0, |io| lock(io).sent()),
        remapped,
    })
}

/// LINT0 as ExtINT (the 8259s) and LINT1 as NMI, as firmware leaves them.
fn set_lint(vcpu: &kvm_ioctls::VcpuFd) -> Result<(), VmError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const EXTINT: u32 = 7;
    const NMI: u32 = 4;
    let mut lapic = vcpu.get_lapic().map_err(|e| VmError::Kvm("get LAPIC", e))?;
    for (off, mode) in [(APIC_LVT0, EXTINT), (APIC_LVT1, NMI)] {
        let r = &mut lapic.regs[off..off + 4];
        let mut v = u32::from_le_bytes([r[0] as u8, r[1] as u8, r[2] as u8, r[3] as u8]);
        v = (v & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            r[i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic)
        .map_err(|e| VmError::Kvm("set LAPIC", e))
}
