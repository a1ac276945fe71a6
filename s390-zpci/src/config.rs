//! Model, function-group and function configuration.

use crate::format::Designation;
use crate::handle::{Fid, FunctionState};
use viommu_shared::shadow::ShadowConfig;

/// QEMU's default start of the DMA range for emulated functions (`ZPCI_SDMA_ADDR`, A.13).
pub const DEFAULT_SDMA: u64 = 0x1_0000_0000;
/// QEMU's default end (inclusive) of the DMA range (`ZPCI_EDMA_ADDR`, A.13).
pub const DEFAULT_EDMA: u64 = 0x01ff_ffff_ffff_ffff;
/// QEMU's default function group id.
pub const DEFAULT_PFGID: u8 = 0xff;

/// When the function group advertises the "refresh" bit (A.4.5), which makes the guest
/// issue RPCIT for new mappings too, not only for invalidations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RefreshPolicy {
    /// When any function of the group has a host attached (shadowing needs to learn of new
    /// mappings). Groups of emulated functions only save the RPCIT per map: emulated DMA
    /// walks the tables on a cache miss. This is A.17 item 2.
    #[default]
    WhenShadowing,
    /// Always advertise refresh.
    Always,
    /// Never advertise refresh (shadowing then only learns of mappings at registration,
    /// reset and global RPCITs; only for experiments).
    Never,
}

/// A function group, as CLP QUERY PCI FUNCTION GROUP reports it (A.4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// Group id.
    pub pfgid: u8,
    /// Number of interrupts (12 bits).
    pub noi: u16,
    /// Version.
    pub version: u8,
    /// Maximum PCISTB length in bytes (13 bits).
    pub maxstbl: u16,
    /// Measurement update interval in milliseconds.
    pub mui: u16,
    /// DMA address space mask.
    pub dasm: u64,
    /// MSI address.
    pub msia: u64,
    /// Refresh-bit policy.
    pub refresh: RefreshPolicy,
    /// Offer relaxed translation (RTR bit, A.16): MPCIFC may register an IOTA with T = 0,
    /// mapping guest RAM at `sdma + GPA`.
    pub relaxed_translation: bool,
    /// Deepest table the group supports: region-third (3 levels, default), region-second (4)
    /// or region-first (5).
    pub max_designation: Designation,
}

impl Default for GroupConfig {
    /// QEMU's default group (`s390_pci_init_default_group`).
    fn default() -> Self {
        GroupConfig {
            pfgid: DEFAULT_PFGID,
            noi: 128,
            version: 0,
            maxstbl: 128,
            mui: 4000,
            dasm: 0,
            msia: 0xfe00_0000_0000_0000,
            refresh: RefreshPolicy::default(),
            relaxed_translation: false,
            max_designation: Designation::RegionThird,
        }
    }
}

impl GroupConfig {
    /// RTR flag of the group response.
    pub const FLAG_RTR: u8 = 0x20;
    /// Frame flag of the group response.
    pub const FLAG_FRAME: u8 = 0x02;
    /// Refresh flag of the group response.
    pub const FLAG_REFRESH: u8 = 0x01;

    /// The DTSM byte (supported IOTA designation types).
    ///
    /// The sources disagree on its encoding (errata 7): QEMU advertises `0x40` for "region
    /// third only", while Linux picks region-second tables when `dtsm & 0x08` and
    /// region-first when `dtsm & 0x0c` (the IOTA DT field values). The model keeps QEMU's
    /// `0x40` and adds exactly the bits that make Linux choose what the group supports; since
    /// `& 0x0c` also fires on `0x08`, a region-second-only group also limits the advertised
    /// DMA range to region-second reach so that Linux never needs region-first tables (see
    /// [`max_iova`](Self::max_iova)).
    pub fn dtsm(&self) -> u8 {
        match self.max_designation {
            Designation::RegionThird => 0x40,
            Designation::RegionSecond => 0x40 | 0x08,
            Designation::RegionFirst => 0x40 | 0x08 | 0x04,
        }
    }

    /// True when MPCIFC may register tables of `d`.
    pub fn supports(&self, d: Designation) -> bool {
        d <= self.max_designation
    }

    /// The last IOVA the group's deepest table translates.
    pub fn max_iova(&self) -> u64 {
        match self.max_designation {
            Designation::RegionThird => (1 << 42) - 1,
            Designation::RegionSecond => (1 << 53) - 1,
            Designation::RegionFirst => u64::MAX,
        }
    }
}

/// What the model does when the host runs out of DMA entries during an RPCIT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExhaustionPolicy {
    /// Answer CC 1 status 16 at once and let the guest's global RPCIT (Linux's recovery,
    /// A.14.2) free what it lazily invalidated. Keeps each RPCIT's cost proportional to its
    /// range.
    #[default]
    SignalGuest,
    /// First re-sync the whole DMA range (freeing entries the guest invalidated without
    /// RPCIT; the architecture lets the IOMMU drop cached translations at any time), retry,
    /// and answer CC 1 status 16 only if the guest's live mappings still do not fit.
    ReclaimThenSignal,
}

/// How the DMA range advertised by QUERY PCI FUNCTION relates to the host's budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AperturePolicy {
    /// QEMU's policy (A.13, A.17 item 7): when relaxed translation is not offered and the
    /// host has an entry limit, shrink the range to what that many 4 KiB host entries can
    /// map, so the guest never exhausts the host.
    #[default]
    ShrinkToHostBudget,
    /// Advertise the full range; exhaustion is handled by RPCIT CC 1 status 16 and the
    /// guest's global RPCIT.
    Full,
}

/// Model-wide configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Function groups; QUERY PCI FUNCTION GROUP answers from these. Default: QEMU's group
    /// 0xff.
    pub groups: Vec<GroupConfig>,
    /// What RPCIT does on host exhaustion.
    pub exhaustion: ExhaustionPolicy,
    /// Advertised DMA range versus the host budget.
    pub aperture: AperturePolicy,
    /// Host layout of translated (T = 1) address spaces.
    pub shadow: ShadowConfig,
    /// Largest host mapping for relaxed translation (T = 1 off): guest RAM is mapped in
    /// pieces of at most this size. Default 1 GiB.
    pub relaxed_max_run: u64,
    /// Per-device capacity of the emulated-DMA translation cache, in pages.
    pub iotlb_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            groups: vec![GroupConfig::default()],
            exhaustion: ExhaustionPolicy::default(),
            aperture: AperturePolicy::default(),
            shadow: ShadowConfig::default(),
            relaxed_max_run: 1 << 30,
            iotlb_capacity: viommu_shared::iotlb::DEFAULT_CAPACITY,
        }
    }
}

impl Config {
    /// The group with id `pfgid`.
    pub fn group(&self, pfgid: u8) -> Option<&GroupConfig> {
        self.groups.iter().find(|g| g.pfgid == pfgid)
    }
}

/// One zPCI function as the VMM plugs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionConfig {
    /// Function id (stable name; LIST PCI reports it).
    pub fid: Fid,
    /// User-defined id (UID checking is reported enabled, as QEMU does).
    pub uid: u32,
    /// Function group id; must name a configured group.
    pub pfgid: u8,
    /// Size of each BAR in bytes (0: no BAR); reported as log2 by QUERY PCI FUNCTION.
    pub bar_sizes: [u64; 6],
    /// Start of the function's DMA range (`sdma`).
    pub sdma: u64,
    /// End of the function's DMA range, inclusive (`edma`), before any host limits.
    pub edma: u64,
    /// Physical channel id.
    pub pchid: u16,
    /// PCI function type.
    pub pft: u8,
    /// Virtual function number (0 for a physical function).
    pub vfn: u16,
    /// Utility string (reported if non-empty; at most 64 bytes are used).
    pub util_str: Vec<u8>,
    /// State at plug: [`FunctionState::Disabled`] (configured, the default) or
    /// [`FunctionState::Standby`].
    pub initial_state: FunctionState,
}

impl FunctionConfig {
    /// A configured function `fid` with `uid`, in group 0xff, no BARs, QEMU's default DMA
    /// range.
    pub fn new(fid: Fid, uid: u32) -> Self {
        FunctionConfig {
            fid,
            uid,
            pfgid: DEFAULT_PFGID,
            bar_sizes: [0; 6],
            sdma: DEFAULT_SDMA,
            edma: DEFAULT_EDMA,
            pchid: 0,
            pft: 0,
            vfn: 0,
            util_str: Vec::new(),
            initial_state: FunctionState::Disabled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's table-type choice (LIO `s390_domain_alloc_paging`, 2025), for checking the
    /// advertised DTSM against the guest's own logic.
    fn linux_choice(dtsm: u8, sdma: u64, edma: u64) -> Designation {
        let aperture = edma - sdma + 1;
        if aperture <= (1u64 << 42) - sdma {
            Designation::RegionThird
        } else if aperture <= (1u64 << 53) - sdma && dtsm & 0x08 != 0 {
            Designation::RegionSecond
        } else if dtsm & 0x0c != 0 {
            Designation::RegionFirst
        } else {
            Designation::RegionThird
        }
    }

    #[test]
    fn dtsm_makes_linux_pick_supported_tables() {
        for d in [
            Designation::RegionThird,
            Designation::RegionSecond,
            Designation::RegionFirst,
        ] {
            let g = GroupConfig {
                max_designation: d,
                ..GroupConfig::default()
            };
            let edma = g.max_iova().min(DEFAULT_EDMA);
            let pick = linux_choice(g.dtsm(), DEFAULT_SDMA, edma);
            assert!(g.supports(pick), "{d:?} -> {pick:?}");
            assert_eq!(pick, d);
        }
    }
}
