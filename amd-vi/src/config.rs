//! Model configuration: what the emulated IOMMU advertises and how it shadows.

use crate::platform::SpecialDevice;
use crate::regs::efr;
use viommu_shared::shadow::ShadowConfig;

/// MMIO base address used by QEMU and by AMD platforms' firmware for the first IOMMU.
pub const DEFAULT_MMIO_BASE: u64 = 0xfed8_0000;

/// Size of the MMIO register window (16 KiB; the performance-counter window at 0x4000 is not
/// implemented, so `EFR.PCSup` is never advertised).
pub const MMIO_SIZE: u64 = 0x4000;

/// Configuration of an [`AmdVi`](crate::AmdVi).
///
/// Everything a guest can discover (EFR bits, capability header, IVRS values) derives from
/// this struct, so a VMM builds its PCI config space and ACPI tables from the same values the
/// model behaves by: see [`AmdVi::pci_capability`](crate::AmdVi::pci_capability) and
/// [`AmdVi::ivrs`](crate::AmdVi::ivrs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Guest-physical base of the 16 KiB register window (reported in the capability block
    /// and the IVHD).
    pub mmio_base: u64,
    /// Host (v1) page-table levels supported: 4, 5 or 6 (advertised as `EFR.HATS`). A DTE with
    /// a larger `Mode` is an illegal device-table entry. Values outside 4..=6 are clamped.
    pub host_levels: u8,
    /// Guest-physical address width reported in the capability block and IVinfo (`PASize`).
    pub pa_bits: u8,
    /// Advertise `NpCache` in the capability header: the guest then invalidates after making
    /// entries present, which shadowing for passthrough devices depends on (anchors-x86 §3.4).
    pub np_cache: bool,
    /// Advertise `EFR.PreFSup` (PREFETCH_IOMMU_PAGES accepted as a no-op).
    pub prefetch: bool,
    /// Advertise `EFR.IASup` (INVALIDATE_IOMMU_ALL accepted; Linux then flushes everything
    /// with one command instead of one per device and domain).
    pub invalidate_all: bool,
    /// Advertise `EFR.PPRSup` (COMPLETE_PPR_REQUEST accepted; the PPR log registers are
    /// stored but no peripheral page request is ever logged).
    pub ppr: bool,
    /// PCI requester id (bus << 8 | devfn) of the IOMMU's own PCI function, reported in the
    /// IVHD (real AMD platforms use 00:00.2).
    pub device_id: u16,
    /// PCI segment the IOMMU serves.
    pub pci_segment: u16,
    /// How host mappings of passthrough devices are laid out. While DMA is untranslated
    /// (IOMMU disabled, V = 0, Mode 0) a passthrough device needs all of guest RAM mapped,
    /// `RAM / max_run` host mappings: raise `max_run` for large guests on hosts with an entry
    /// limit (type1's default is 65535).
    pub shadow: ShadowConfig,
    /// Per-device capacity (pages) of the emulated-DMA IOTLB.
    pub iotlb_capacity: usize,
    /// How many recent events (logged or dropped) [`AmdVi::recent_events`](crate::AmdVi::recent_events)
    /// keeps for introspection.
    pub event_history: usize,
    /// Remap interrupts (spec §2.2.5): DTE.IV, IntCtl, IntTabLen, the interrupt remapping
    /// tables. Off, every interrupt passes through unremapped whatever the DTE says (QEMU's
    /// `intremap=off`) and neither GASup nor XTSup is advertised.
    pub interrupt_remapping: bool,
    /// Advertise `EFR.GASup`: Control.GAEn selects 128-bit interrupt remapping entries
    /// (remapped mode only: GAMSup = 0, so guest-mode (posted) entries are rejected).
    pub ga: bool,
    /// Advertise `EFR.XTSup`: Control.XTEn gives 32-bit x2APIC destinations in 128-bit
    /// entries and Control.IntCapXTEn sends the IOMMU's own interrupts through the XT
    /// interrupt control registers (what Linux needs for x2APIC with more than 255 CPUs).
    pub x2apic: bool,
    /// The IOAPICs and HPETs whose interrupts this IOMMU remaps, with the requester id
    /// (DeviceID) each one's messages carry: the VMM publishes them as IVRS special device
    /// entries ([`SpecialDevice::ivhd_entry`]) and passes that id as the `source` of their
    /// interrupts to [`remap`](viommu_shared::irq::InterruptRemapper::remap). Linux
    /// disables interrupt remapping when the IVRS names no IOAPIC.
    pub special_devices: Vec<SpecialDevice>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mmio_base: DEFAULT_MMIO_BASE,
            host_levels: 6,
            pa_bits: 48,
            np_cache: true,
            prefetch: true,
            invalidate_all: true,
            ppr: false,
            device_id: 0x0002,
            pci_segment: 0,
            shadow: ShadowConfig::default(),
            iotlb_capacity: viommu_shared::iotlb::DEFAULT_CAPACITY,
            event_history: 256,
            interrupt_remapping: true,
            ga: true,
            x2apic: true,
            special_devices: vec![SpecialDevice::QEMU_IOAPIC],
        }
    }
}

impl Config {
    /// Host page-table levels actually supported (`host_levels` clamped to 4..=6).
    pub fn levels(&self) -> u8 {
        self.host_levels.clamp(4, 6)
    }

    /// The Extended Feature Register value this configuration advertises (MMIO 0x30 and
    /// IVHD type 11h/40h).
    ///
    /// Never advertised, because the model does not implement them: GTSup (guest/v2
    /// tables), GAMSup (guest virtual APIC), NXSup, HESup, PCSup, HDSup, SNP.
    pub fn efr(&self) -> u64 {
        let mut v = 0;
        if self.interrupt_remapping && self.ga {
            v |= efr::GA_SUP;
        }
        if self.interrupt_remapping && self.x2apic {
            v |= efr::XT_SUP;
        }
        if self.prefetch {
            v |= efr::PREF_SUP;
        }
        if self.ppr {
            v |= efr::PPR_SUP;
        }
        if self.invalidate_all {
            v |= efr::IA_SUP;
        }
        v | (u64::from(self.levels() - 4) << efr::HATS_SHIFT)
    }

    /// Input address width of the deepest supported table: 12 + 9 × levels, at most 64.
    pub fn va_bits(&self) -> u8 {
        (12 + 9 * u32::from(self.levels())).min(64) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efr_reflects_features() {
        let c = Config::default();
        assert_eq!(
            c.efr(),
            efr::PREF_SUP | efr::IA_SUP | efr::GA_SUP | efr::XT_SUP | (2 << efr::HATS_SHIFT)
        );
        let c = Config {
            host_levels: 9,
            prefetch: false,
            invalidate_all: false,
            ppr: true,
            interrupt_remapping: false,
            ..Config::default()
        };
        assert_eq!(c.levels(), 6);
        assert_eq!(c.efr(), efr::PPR_SUP | (2 << efr::HATS_SHIFT));
        let c = Config {
            host_levels: 1,
            ..Config::default()
        };
        assert_eq!(c.levels(), 4);
        assert_eq!(c.va_bits(), 48);
        assert_eq!(Config::default().va_bits(), 64);
    }
}
