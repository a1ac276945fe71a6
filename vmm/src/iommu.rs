//! The embedded IOMMU: which model, its register window on the VMM's MMIO bus, its ACPI
//! description, its PCI function (AMD-Vi), per-device DMA views for emulated devices, the host
//! backend for shadowed devices, and the counters reported at exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use viommu_amd_vi::AmdVi;
use viommu_shared::dma::DeviceIommu;
use viommu_shared::host::HostDma;
use viommu_shared::irq::InterruptRemapper;
use viommu_shared::regs::MsiSink;
use viommu_vtd::Vtd;
use vm_memory::GuestMemoryMmap;

use crate::acpi::{IoapicScope, IommuTable};
use crate::layout;
use crate::pci::{ConfigSpace, PciFunction, PciId};

/// Which IOMMU the machine has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuKind {
    /// None: devices DMA to guest-physical addresses.
    None,
    /// Intel VT-d (DMAR).
    Vtd,
    /// AMD-Vi (IVRS + PCI function).
    AmdVi,
}

impl std::str::FromStr for IommuKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(IommuKind::None),
            "vtd" => Ok(IommuKind::Vtd),
            "amd-vi" | "amd" => Ok(IommuKind::AmdVi),
            _ => Err(format!("unknown IOMMU '{s}' (none, vtd, amd-vi)")),
        }
    }
}

/// PCI devfn of the AMD-Vi function (00:02.0).
pub const AMDVI_DEVFN: u8 = 2 << 3;
/// Source id of the IO-APIC's interrupt messages behind VT-d: 00:1f.0, QEMU's Q35 choice
/// (`Q35_PSEUDO_DEVFN_IOAPIC`), published in the DMAR's IOAPIC device scope.
pub const VTD_IOAPIC_SOURCE_ID: u16 = 0x1f << 3;
/// The IO-APIC's APIC id (MADT entry and ID register).
pub const IOAPIC_ID: u8 = 0;

/// Offset of the IOMMU capability block in the AMD-Vi function's configuration space.
pub const AMDVI_CAP_OFFSET: u16 = 0x40;

/// The model behind the machine's IOMMU.
#[derive(Clone, Debug)]
pub enum Iommu {
    /// No IOMMU.
    None,
    /// VT-d.
    Vtd(Arc<Vtd>),
    /// AMD-Vi.
    AmdVi(Arc<AmdVi>),
}

/// A model operation's error, by model.
#[derive(Debug)]
pub enum IommuError {
    /// The machine has no IOMMU to shadow through.
    NoIommu,
    /// From the VT-d model.
    Vtd(viommu_vtd::VtdError),
    /// From the AMD-Vi model.
    AmdVi(viommu_amd_vi::AmdViError),
}

impl std::fmt::Display for IommuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IommuError::NoIommu => write!(f, "no IOMMU to shadow through"),
            IommuError::Vtd(e) => write!(f, "VT-d: {e}"),
            IommuError::AmdVi(e) => write!(f, "AMD-Vi: {e}"),
        }
    }
}

impl std::error::Error for IommuError {}

/// How many register-write errors are printed; later ones are only counted (by the model).
const LOGGED_ERRORS: u64 = 3;
static ERRORS_SEEN: AtomicU64 = AtomicU64::new(0);

/// Prints a model operation's error for the VMM's log (the first few; the model counts all).
fn log_error(what: &str, e: &dyn std::fmt::Display) {
    let n = ERRORS_SEEN.fetch_add(1, Ordering::Relaxed);
    if n < LOGGED_ERRORS {
        eprintln!("viommu-vmm: {what}: {e}");
    } else if n == LOGGED_ERRORS {
        eprintln!("viommu-vmm: further register-write errors are only counted");
    }
}

impl Iommu {
    /// The model of `kind` over `mem`, signalling its interrupts to `msi`; with
    /// `interrupt_remapping` the VT-d unit remaps interrupts (the AMD-Vi model always
    /// implements it; whether the guest uses it depends on the IVRS naming an IOAPIC, see
    /// [`acpi_table`](Self::acpi_table)).
    pub fn new(
        kind: IommuKind,
        mem: GuestMemoryMmap,
        msi: Arc<dyn MsiSink>,
        interrupt_remapping: bool,
    ) -> Iommu {
        match kind {
            IommuKind::None => Iommu::None,
            IommuKind::Vtd => {
                let config = viommu_vtd::Config {
                    interrupt_remapping,
                    ..viommu_vtd::Config::default()
                };
                Iommu::Vtd(Arc::new(Vtd::new(config, mem, msi)))
            }
            IommuKind::AmdVi => {
                let config = viommu_amd_vi::Config {
                    mmio_base: layout::AMDVI_MMIO,
                    device_id: u16::from(AMDVI_DEVFN),
                    ..viommu_amd_vi::Config::default()
                };
                Iommu::AmdVi(Arc::new(AmdVi::new(config, mem, msi)))
            }
        }
    }

    /// Guest-physical `[base, base + size)` of the register window.
    pub fn mmio_window(&self) -> Option<(u64, u64)> {
        match self {
            Iommu::None => None,
            Iommu::Vtd(v) => Some((layout::VTD_MMIO, v.mmio_size())),
            Iommu::AmdVi(_) => Some((layout::AMDVI_MMIO, viommu_amd_vi::MMIO_SIZE)),
        }
    }

    /// Guest read in the register window.
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        let v = match self {
            Iommu::None => u64::MAX,
            Iommu::Vtd(v) => v.mmio_read(offset, data.len()),
            Iommu::AmdVi(a) => a.mmio_read(offset, data.len()),
        };
        for (i, b) in data.iter_mut().enumerate() {
            *b = (v >> (8 * i)) as u8;
        }
    }

    /// Guest write in the register window. A host error (from shadowing) is logged: on x86
    /// there is no architected way to report it to the guest; the model has counted it.
    pub fn mmio_write(&self, offset: u64, data: &[u8]) {
        let v = data
            .iter()
            .take(8)
            .enumerate()
            .fold(0u64, |a, (i, b)| a | (u64::from(*b) << (8 * i)));
        match self {
            Iommu::None => {}
            Iommu::Vtd(m) => {
                if let Err(e) = m.mmio_write(offset, data.len(), v) {
                    log_error("VT-d register write", &e);
                }
            }
            Iommu::AmdVi(m) => {
                if let Err(e) = m.mmio_write(offset, data.len(), v) {
                    log_error("AMD-Vi register write", &e);
                }
            }
        }
    }

    /// The ACPI description; `devices` are the requester ids of every PCI function
    /// (the IVRS lists them). With `remap_ioapic` the table publishes the IO-APIC behind the
    /// IOMMU (DMAR IOAPIC scope and INTR_REMAP; IVRS IOAPIC special entry), which is what
    /// makes Linux enable interrupt remapping.
    pub fn acpi_table(&self, devices: &[u16], remap_ioapic: bool) -> IommuTable {
        match self {
            Iommu::None => IommuTable::None,
            Iommu::Vtd(v) => IommuTable::Dmar {
                register_base: layout::VTD_MMIO,
                host_address_width: v.config().address_width.bits() as u8,
                ioapic: (remap_ioapic && v.config().interrupt_remapping).then_some(IoapicScope {
                    id: IOAPIC_ID,
                    source_id: VTD_IOAPIC_SOURCE_ID,
                }),
            },
            Iommu::AmdVi(a) => {
                let remap = remap_ioapic && a.config().interrupt_remapping;
                let special = if remap {
                    a.config().special_devices.as_slice()
                } else {
                    &[]
                };
                // The special devices' ids are selected too: Linux 6.1 sizes its device
                // table by the highest id of the select/range/alias entries only
                // (`find_last_devid_from_ivhd` skips IVHD_DEV_SPECIAL), so the IOAPIC's DTE
                // (00:14.0) would lie beyond the table the guest programs and its every
                // interrupt be refused with ILLEGAL_DEV_TABLE_ENTRY.
                let mut devices = devices.to_vec();
                for d in special {
                    if !devices.contains(&d.device_id) {
                        devices.push(d.device_id);
                    }
                }
                IommuTable::Ivrs {
                    info: a.ivrs(AMDVI_CAP_OFFSET),
                    devices,
                    special: special.iter().map(|d| d.ivhd_entry()).collect(),
                }
            }
        }
    }

    /// The interrupt remapper, when the model remaps interrupts.
    pub fn remapper(&self) -> Option<Arc<dyn InterruptRemapper>> {
        match self {
            Iommu::None => None,
            Iommu::Vtd(v) => v
                .config()
                .interrupt_remapping
                .then(|| v.clone() as Arc<dyn InterruptRemapper>),
            Iommu::AmdVi(a) => a
                .config()
                .interrupt_remapping
                .then(|| a.clone() as Arc<dyn InterruptRemapper>),
        }
    }

    /// The source id of the IO-APIC's messages (its DMAR device scope, its IVRS special
    /// entry), when the model remaps interrupts.
    pub fn ioapic_source_id(&self) -> Option<u16> {
        match self {
            Iommu::None => None,
            Iommu::Vtd(v) => v
                .config()
                .interrupt_remapping
                .then_some(VTD_IOAPIC_SOURCE_ID),
            Iommu::AmdVi(a) => a
                .config()
                .special_devices
                .iter()
                .find(|d| d.kind == viommu_amd_vi::SpecialKind::IoApic && d.handle == IOAPIC_ID)
                .map(|d| d.device_id)
                .filter(|_| a.config().interrupt_remapping),
        }
    }

    /// The DMA view of the emulated device with requester id `bdf`.
    pub fn device_iommu(&self, bdf: u16) -> Option<DeviceIommu> {
        match self {
            Iommu::None => None,
            Iommu::Vtd(v) => Some(v.device_iommu(u32::from(bdf))),
            Iommu::AmdVi(a) => Some(a.device_iommu(bdf)),
        }
    }

    /// Shadows `bdf`'s address space into `host`.
    pub fn attach_host(&self, bdf: u16, host: Box<dyn HostDma + Send>) -> Result<(), IommuError> {
        match self {
            Iommu::None => Err(IommuError::NoIommu),
            Iommu::Vtd(v) => v.attach_host(u32::from(bdf), host).map_err(IommuError::Vtd),
            Iommu::AmdVi(a) => a.attach_host(bdf, host).map_err(IommuError::AmdVi),
        }
    }

    /// Removes every host mapping of `bdf`.
    pub fn detach_host(&self, bdf: u16) -> Result<(), IommuError> {
        match self {
            Iommu::None => Ok(()),
            Iommu::Vtd(v) => v.detach_host(u32::from(bdf)).map_err(IommuError::Vtd),
            Iommu::AmdVi(a) => a.detach_host(bdf).map_err(IommuError::AmdVi),
        }
    }

    /// The model's counters as `key=value` words: `faults` (DMA faults recorded),
    /// `invalidations` (invalidation descriptors / commands processed) and the rest.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        match self {
            Iommu::None => vec![],
            Iommu::Vtd(v) => {
                let s = v.stats();
                vec![
                    ("faults", s.faults_recorded),
                    ("faults_suppressed", s.faults_suppressed),
                    ("invalidations", s.descriptors + s.register_invalidations),
                    ("queue_errors", s.queue_errors),
                    ("host_reclaims", s.host_reclaims),
                    ("host_out_of_resources", s.host_out_of_resources),
                    ("host_unmap_errors", s.host_unmap_errors),
                ]
            }
            Iommu::AmdVi(a) => {
                let s = a.stats();
                vec![
                    ("faults", s.dma_faults),
                    ("events_logged", s.events_logged),
                    ("invalidations", s.commands),
                    ("illegal_commands", s.illegal_commands),
                    ("host_reclaims", s.host_reclaims),
                    ("host_out_of_resources", s.host_out_of_resources),
                    ("host_unmap_errors", s.host_unmap_errors),
                ]
            }
        }
    }
}

/// The AMD-Vi IOMMU's own PCI function (class 08 06 00): the IOMMU capability block the
/// model describes (read-only), and an MSI capability whose message the model uses for its
/// event-log and completion interrupts (Linux's `iommu_setup_msi`).
pub struct AmdViFunction {
    config: ConfigSpace,
    model: Arc<AmdVi>,
}

impl AmdViFunction {
    /// The function of `model`.
    pub fn new(model: Arc<AmdVi>) -> AmdViFunction {
        use viommu_amd_vi::platform;
        let mut config = ConfigSpace::new(PciId {
            vendor: platform::PCI_VENDOR_ID,
            device: platform::PCI_DEVICE_ID,
            class: platform::PCI_CLASS,
            revision: 0,
        });
        let cap = model.pci_capability().to_bytes();
        let at = config.add_capability(cap[0], &cap[2..]);
        debug_assert_eq!(at, usize::from(AMDVI_CAP_OFFSET));
        config.add_msi_capability();
        AmdViFunction { config, model }
    }
}

impl PciFunction for AmdViFunction {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_write(&mut self, off: usize, len: usize, value: u32) {
        self.config.write(off, len, value);
        self.model.set_msi(self.config.msi());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::regs::{Msi, NullMsiSink};
    use viommu_shared::testing::guest_memory;

    #[test]
    fn remapping_publishes_the_ioapic_and_its_source_id() {
        let mem = guest_memory(&[(0, 1 << 20)]);
        let vtd = Iommu::new(IommuKind::Vtd, mem.clone(), Arc::new(NullMsiSink), true);
        assert!(vtd.remapper().is_some());
        assert_eq!(vtd.ioapic_source_id(), Some(0x00f8));
        match vtd.acpi_table(&[], true) {
            IommuTable::Dmar { ioapic, .. } => assert_eq!(
                ioapic,
                Some(IoapicScope {
                    id: 0,
                    source_id: 0xf8
                })
            ),
            other => panic!("{other:?}"),
        }
        let plain = Iommu::new(IommuKind::Vtd, mem.clone(), Arc::new(NullMsiSink), false);
        assert!(plain.remapper().is_none());
        assert_eq!(plain.ioapic_source_id(), None);
        match plain.acpi_table(&[], true) {
            IommuTable::Dmar { ioapic, .. } => assert_eq!(ioapic, None),
            other => panic!("{other:?}"),
        }
        let amd = Iommu::new(IommuKind::AmdVi, mem, Arc::new(NullMsiSink), true);
        assert!(amd.remapper().is_some());
        assert_eq!(amd.ioapic_source_id(), Some(0x00a0));
        match amd.acpi_table(&[8], true) {
            IommuTable::Ivrs {
                special, devices, ..
            } => {
                assert_eq!(special, [[0x48, 0, 0, 0, 0, 0xa0, 0, 1]]);
                assert_eq!(devices, [8, 0xa0], "the IOAPIC's id sizes the device table");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn amd_vi_function_exposes_the_capability_and_forwards_msi() {
        let mem = guest_memory(&[(0, 1 << 20)]);
        let Iommu::AmdVi(model) = Iommu::new(IommuKind::AmdVi, mem, Arc::new(NullMsiSink), false)
        else {
            panic!("not AMD-Vi");
        };
        let mut f = AmdViFunction::new(model.clone());
        let c = f.config();
        assert_eq!(c.read(0, 4), 0x1419_1022);
        assert_eq!(c.read(0x08, 4) >> 8, 0x08_0600);
        assert_eq!(c.read(0x34, 1), 0x40);
        let cap = model.pci_capability();
        assert_eq!(c.read(0x40, 4) & !0xff00, cap.header & !0xff00);
        assert_eq!(c.read(0x44, 4), cap.base_low);
        assert_eq!(cap.base_low & !1, layout::AMDVI_MMIO as u32);
        let msi = c.read(0x41, 1) as usize;
        assert_eq!(c.read(msi, 1), 5);
        assert_eq!(model.msi(), None);
        f.config_write(msi + 4, 4, 0xfee0_0000);
        f.config_write(msi + 12, 2, 0x33);
        f.config_write(msi + 2, 2, 1);
        assert_eq!(
            model.msi(),
            Some(Msi {
                address: 0xfee0_0000,
                data: 0x33
            })
        );
        match Iommu::AmdVi(model).acpi_table(&[0, 8, 0x10], false) {
            IommuTable::Ivrs {
                info,
                devices,
                special,
            } => {
                assert_eq!(info.device_id, u16::from(AMDVI_DEVFN));
                assert_eq!(info.capability_offset, AMDVI_CAP_OFFSET);
                assert_eq!(devices, [0, 8, 0x10]);
                assert!(special.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}
