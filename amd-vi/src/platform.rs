//! What a VMM puts in PCI config space and in the ACPI IVRS table so a guest finds the IOMMU.
//!
//! Plain values derived from the [`Config`]; the VMM owns config space and the ACPI tables
//! (field layouts: spec §3.2 (capability block) and §5.2 (IVRS); Linux `iommu_init_pci`,
//! `init_iommu_one`).

use crate::config::Config;
use crate::regs::efr;

/// PCI capability ID of the IOMMU capability block (Secure Device).
pub const CAP_ID: u8 = 0x0f;
/// PCI class code of the IOMMU function (base 0x08 system peripheral, sub 0x06 IOMMU).
pub const PCI_CLASS: u32 = 0x08_0600;
/// PCI vendor id (AMD).
pub const PCI_VENDOR_ID: u16 = 0x1022;
/// PCI device id QEMU uses for its AMD-Vi function.
pub const PCI_DEVICE_ID: u16 = 0x1419;

/// Capability header bit: IOTLBSup (ATS device IOTLBs supported; never set, no ATS model).
pub const CAP_IOTLB_SUP: u32 = 1 << 24;
/// Capability header bit: HtTunnel.
pub const CAP_HT_TUNNEL: u32 = 1 << 25;
/// Capability header bit: NpCache (the IOMMU caches not-present entries, so software
/// invalidates after making entries present).
pub const CAP_NP_CACHE: u32 = 1 << 26;
/// Capability header bit: EFRSup (the Extended Feature Register exists).
pub const CAP_EFR_SUP: u32 = 1 << 27;
/// Capability header bit: CapExt (Misc Information Register 1 present).
pub const CAP_EXT: u32 = 1 << 28;

/// The IOMMU capability block, five dwords from the capability's offset in config space.
/// The VMM patches the next-capability pointer (header bits 15:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PciCapability {
    /// Capability header: CapID 0x0f, CapType 3 (18:16), CapRev 1 (23:19), NpCache, EFRSup.
    pub header: u32,
    /// Base Address Low: Enable (0), base address 31:14.
    pub base_low: u32,
    /// Base Address High: base address 63:32.
    pub base_high: u32,
    /// Range: UnitID 4:0, RngValid 7, BusNumber 15:8, FirstDevice 23:16, LastDevice 31:24
    /// (RngValid = 0: the IVRS describes which devices the IOMMU serves).
    pub range: u32,
    /// Misc Information 0: MsiNum 4:0, GVASize 7:5, PASize 14:8, VASize 21:15.
    pub misc0: u32,
}

impl PciCapability {
    /// The block for `config`.
    pub fn new(config: &Config) -> PciCapability {
        let mut header = u32::from(CAP_ID) | (3 << 16) | (1 << 19) | CAP_EFR_SUP;
        if config.np_cache {
            header |= CAP_NP_CACHE;
        }
        PciCapability {
            header,
            base_low: (config.mmio_base as u32 & 0xffff_c000) | 1,
            base_high: (config.mmio_base >> 32) as u32,
            range: 0xff00_0000,
            misc0: (u32::from(config.pa_bits & 0x7f) << 8)
                | (u32::from(config.va_bits() & 0x7f) << 15),
        }
    }

    /// The 20 bytes in config-space order (little-endian dwords).
    pub fn to_bytes(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        for (i, d) in [
            self.header,
            self.base_low,
            self.base_high,
            self.range,
            self.misc0,
        ]
        .iter()
        .enumerate()
        {
            out[4 * i..4 * i + 4].copy_from_slice(&d.to_le_bytes());
        }
        out
    }
}

/// What kind of platform device an IVRS special device entry (type 48h) describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpecialKind {
    /// An IOAPIC (variety 1); the handle is its IOAPIC ID.
    IoApic,
    /// An HPET (variety 2); the handle is its HPET number.
    Hpet,
}

/// An IOAPIC or HPET behind the IOMMU and the requester id its interrupt messages carry
/// (IVHD device entry type 48h, spec §5.2.2.5; Linux `IVHD_DEV_SPECIAL`).
///
/// These devices are not PCI functions, so only the IVRS tells the guest which DeviceID
/// their messages use: the guest writes that DeviceID's DTE (IV, IntCtl, table) and the VMM
/// passes the same id as the `source` when it remaps their interrupts. QEMU hardcodes the
/// IOAPIC as 00:14.0 ([`SpecialDevice::QEMU_IOAPIC`], the default here too, so guests
/// configured for QEMU behave the same); a VMM with another layout lists its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpecialDevice {
    /// IOAPIC or HPET.
    pub kind: SpecialKind,
    /// IOAPIC ID or HPET number.
    pub handle: u8,
    /// Requester id (bus << 8 | devfn) of its messages.
    pub device_id: u16,
}

impl SpecialDevice {
    /// IOAPIC 0 at 00:14.0, as QEMU describes it (anchors-x86 §2.1, §2.7).
    pub const QEMU_IOAPIC: SpecialDevice = SpecialDevice {
        kind: SpecialKind::IoApic,
        handle: 0,
        device_id: 0x00a0,
    };

    /// The 8-byte IVHD device entry: type 48h, DTE setting 0, handle, DeviceID, variety.
    pub fn ivhd_entry(&self) -> [u8; 8] {
        let [lo, hi] = self.device_id.to_le_bytes();
        let variety = match self.kind {
            SpecialKind::IoApic => 1,
            SpecialKind::Hpet => 2,
        };
        [0x48, 0, 0, 0, self.handle, lo, hi, variety]
    }
}

/// Values for the ACPI IVRS table describing this IOMMU (the VMM adds the device entries:
/// "all devices", aliases matching [`AmdVi::set_alias`](crate::AmdVi::set_alias), special
/// IOAPIC/HPET entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IvrsInfo {
    /// IVRS header IVinfo: EFRSup (0), GVASize (7:5), PASize (14:8), VASize (21:15).
    pub iv_info: u32,
    /// IVHD flags: HtTunEn (0), PassPW (1), ResPassPW (2), Isoc (3), IotlbSup (4),
    /// Coherent (5), PrefSup (6), PPRSup (7).
    pub ivhd_flags: u8,
    /// IVHD IOMMU DeviceID: requester id of the IOMMU function.
    pub device_id: u16,
    /// IVHD capability offset: where the VMM put the [`PciCapability`] in config space.
    pub capability_offset: u16,
    /// IVHD IOMMU base address (the MMIO window).
    pub mmio_base: u64,
    /// IVHD PCI segment group.
    pub pci_segment: u16,
    /// IVHD IOMMU info: MSINum (4:0), UnitID (12:8).
    pub iommu_info: u16,
    /// IVHD type 10h "IOMMU Feature Reporting": IASup (5), HATS (31:30).
    pub feature_reporting: u32,
    /// IVHD type 11h/40h "IOMMU Attributes" (no performance counters, MSINumPPR 0).
    pub attributes: u32,
    /// IVHD type 11h/40h EFR register image (same as MMIO 0x30).
    pub efr: u64,
    /// IVHD type 11h/40h EFR2 register image (no EFR2 features).
    pub efr2: u64,
}

impl IvrsInfo {
    /// The values for `config`, with the capability block at `capability_offset`.
    pub fn new(config: &Config, capability_offset: u16) -> IvrsInfo {
        let efr = config.efr();
        let mut flags = 0u8;
        if efr & efr::PREF_SUP != 0 {
            flags |= 1 << 6;
        }
        if efr & efr::PPR_SUP != 0 {
            flags |= 1 << 7;
        }
        let mut feature_reporting = u32::from(config.levels() - 4) << 30;
        // IVHD 10h feature reporting: XTSup (0), IASup (5), GASup (6) (Linux
        // `IOMMU_FEAT_XTSUP_SHIFT`, `IOMMU_FEAT_GASUP_SHIFT`).
        if efr & efr::XT_SUP != 0 {
            feature_reporting |= 1;
        }
        if efr & efr::IA_SUP != 0 {
            feature_reporting |= 1 << 5;
        }
        if efr & efr::GA_SUP != 0 {
            feature_reporting |= 1 << 6;
        }
        IvrsInfo {
            iv_info: 1
                | (u32::from(config.pa_bits & 0x7f) << 8)
                | (u32::from(config.va_bits() & 0x7f) << 15),
            ivhd_flags: flags,
            device_id: config.device_id,
            capability_offset,
            mmio_base: config.mmio_base,
            pci_segment: config.pci_segment,
            iommu_info: 0,
            feature_reporting,
            attributes: 0,
            efr,
            efr2: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_block_values() {
        let c = Config::default();
        let cap = PciCapability::new(&c);
        assert_eq!(cap.header, 0x0c0b_000f);
        assert_ne!(cap.header & CAP_NP_CACHE, 0);
        assert_eq!(cap.header & CAP_IOTLB_SUP, 0);
        assert_eq!(cap.base_low, 0xfed8_0001);
        assert_eq!(cap.base_high, 0);
        assert_eq!(cap.misc0, (48 << 8) | (64 << 15));
        let b = cap.to_bytes();
        assert_eq!(&b[0..4], &[0x0f, 0x00, 0x0b, 0x0c]);
        assert_eq!(&b[4..8], &0xfed8_0001u32.to_le_bytes());
        let high = PciCapability::new(&Config {
            mmio_base: 0x1_2345_c000,
            np_cache: false,
            ..c.clone()
        });
        assert_eq!((high.base_low, high.base_high), (0x2345_c001, 1));
        assert_eq!(high.header & CAP_NP_CACHE, 0);
    }

    #[test]
    fn ivrs_values() {
        let c = Config::default();
        let i = IvrsInfo::new(&c, 0x40);
        assert_eq!(i.efr, c.efr());
        assert_eq!(i.iv_info & 1, 1);
        assert_eq!((i.iv_info >> 8) & 0x7f, 48);
        assert_eq!(i.ivhd_flags, 1 << 6);
        assert_eq!(i.feature_reporting, (2 << 30) | (1 << 6) | (1 << 5) | 1);
        let e = SpecialDevice::QEMU_IOAPIC.ivhd_entry();
        assert_eq!(e, [0x48, 0, 0, 0, 0, 0xa0, 0, 1]);
        let hpet = SpecialDevice {
            kind: SpecialKind::Hpet,
            handle: 2,
            device_id: 0x1234,
        };
        assert_eq!(hpet.ivhd_entry(), [0x48, 0, 0, 0, 2, 0x34, 0x12, 2]);
        assert_eq!(
            (i.device_id, i.capability_offset, i.mmio_base),
            (2, 0x40, 0xfed8_0000)
        );
    }
}
