//! [`Config`]: what the emulated remapping unit advertises and how it shadows.

use viommu_shared::shadow::ShadowConfig;

/// Guest address width of the unit: CAP.MGAW and the second-stage table depths it supports
/// (CAP.SAGAW). Each width supports its own depth and every smaller one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AddressWidth {
    /// 39-bit: 3-level tables only.
    Aw39,
    /// 48-bit: 3- and 4-level tables (QEMU's default since 9.2).
    #[default]
    Aw48,
    /// 57-bit: 3-, 4- and 5-level tables.
    Aw57,
}

impl AddressWidth {
    /// Width in bits (39, 48 or 57).
    pub const fn bits(self) -> u32 {
        match self {
            AddressWidth::Aw39 => 39,
            AddressWidth::Aw48 => 48,
            AddressWidth::Aw57 => 57,
        }
    }

    /// CAP.SAGAW: bit 1 = 3-level (39-bit), bit 2 = 4-level (48-bit), bit 3 = 5-level (57-bit).
    pub const fn sagaw(self) -> u64 {
        match self {
            AddressWidth::Aw39 => 0b0010,
            AddressWidth::Aw48 => 0b0110,
            AddressWidth::Aw57 => 0b1110,
        }
    }

    /// Whether a context/PASID entry AW value (1 = 3-level, 2 = 4-level, 3 = 5-level) is
    /// supported.
    pub const fn supports_aw(self, aw: u64) -> bool {
        aw < 5 && self.sagaw() & (1 << aw) != 0
    }
}

/// Which second-stage large pages the unit advertises in CAP.SLLPS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LargePages {
    /// 2 MiB pages (PS in an SL-PDE).
    pub two_mib: bool,
    /// 1 GiB pages (PS in an SL-PDPE).
    pub one_gib: bool,
}

impl Default for LargePages {
    fn default() -> Self {
        LargePages {
            two_mib: true,
            one_gib: true,
        }
    }
}

/// Most fault recording registers the unit can have (CAP.NFR is 8 bits).
pub const MAX_FAULT_RECORDS: u16 = 256;

/// Configuration of an emulated VT-d unit. `Default` is what a shadowing VMM wants: 48-bit,
/// caching mode on, legacy-mode only, pass-through, 2M/1G pages, 8 fault recording registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Guest address width (CAP.MGAW/SAGAW).
    pub address_width: AddressWidth,
    /// CAP.CM: software must invalidate after making entries present. Required for shadowing
    /// passthrough devices (it is what makes Linux flush on map); on by default.
    pub caching_mode: bool,
    /// ECAP.SMTS + SLTS + PASID: scalable-mode root/context tables, PASID tables with
    /// second-stage and pass-through PASID entries, 256-bit invalidation descriptors.
    pub scalable_mode: bool,
    /// ECAP.PT: pass-through contexts (TT=10b) and PGTT=100b PASID entries.
    pub pass_through: bool,
    /// ECAP.SC: snoop control (the SNP bit of second-stage leaves is accepted). A guest that
    /// sees it may rely on SNP to make no-snoop DMA coherent, so passthrough devices then need
    /// a host that enforces coherency: [`Vtd::attach_host`](crate::Vtd::attach_host) refuses
    /// any other with [`VtdError::HostNotCoherent`](crate::VtdError::HostNotCoherent). Set it
    /// from [`HostDma::enforces_coherency`](viommu_shared::host::HostDma::enforces_coherency)
    /// of the hosts the VMM will attach (type1: `VFIO_DMA_CC_IOMMU`; iommufd: the IOMMU's
    /// hardware info). Default off (QEMU's default too).
    pub snoop_control: bool,
    /// ECAP.DT: device-TLB support (context TT=01b, device-TLB invalidation descriptors).
    pub device_tlb: bool,
    /// ECAP.IR: interrupt remapping (IRTA/SIRTP, IRE, CFI, 128-bit IRTEs, IEC invalidation,
    /// faults 0x20–0x26), reached through `viommu_shared::irq::InterruptRemapper` and
    /// [`Vtd::deliver_msi`](crate::Vtd::deliver_msi). Off by default. IOAPIC and HPET
    /// interrupts need no configuration here: the VMM passes the source id its DMAR device
    /// scope gives them as `source`.
    pub interrupt_remapping: bool,
    /// ECAP.EIM (only with interrupt remapping): x2APIC-mode interrupt remapping (IRTA.EIME,
    /// 32-bit destinations). On by default, so turning on `interrupt_remapping` gives what a
    /// guest with x2APIC or more than 255 vCPUs needs.
    pub extended_interrupt_mode: bool,
    /// Second-stage large pages advertised in CAP.SLLPS.
    pub large_pages: LargePages,
    /// Number of fault recording registers (CAP.NFR + 1), clamped to 1..=256. Default 8.
    pub fault_records: u16,
    /// How shadow engines lay out host mappings.
    pub shadow: ShadowConfig,
    /// Per-device capacity of the emulated-DMA translation cache, in entries.
    pub iotlb_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            address_width: AddressWidth::Aw48,
            caching_mode: true,
            scalable_mode: false,
            pass_through: true,
            snoop_control: false,
            device_tlb: false,
            interrupt_remapping: false,
            extended_interrupt_mode: true,
            large_pages: LargePages::default(),
            fault_records: 8,
            shadow: ShadowConfig::default(),
            iotlb_capacity: viommu_shared::iotlb::DEFAULT_CAPACITY,
        }
    }
}

impl Config {
    /// The number of fault recording registers actually implemented (1..=256).
    pub fn fault_record_count(&self) -> usize {
        usize::from(self.fault_records.clamp(1, MAX_FAULT_RECORDS))
    }

    /// Host address width: how many bits of a table pointer or output address are
    /// implemented; bits above it are reserved. Equal to the guest address width, at most 52
    /// (the widest address field of VT-d entries).
    pub fn host_address_width(&self) -> u32 {
        self.address_width.bits().min(52)
    }

    /// Whether ECAP.EIM is advertised (needs interrupt remapping).
    pub fn eim(&self) -> bool {
        self.interrupt_remapping && self.extended_interrupt_mode
    }
}
