//! Device table entries (256 bits, spec §2.2.2) and what they mean for DMA.
//!
//! DMA-remapping fields (quadwords 0 and 1):
//!
//! | bits | field |
//! |---|---|
//! | 0 | V: entry valid |
//! | 1 | TV: translation information valid |
//! | 6:2 | reserved |
//! | 11:9 | Mode: 0 = no translation (IR/IW decide), 1–6 = table levels, 7 reserved |
//! | 51:12 | host page-table root |
//! | 61 / 62 | IR / IW |
//! | 63 | reserved |
//! | 79:64 | DomainID |
//! | 98 | SA: suppress all I/O page fault events |
//!
//! Interrupt-remapping fields (quadword 2, spec §2.2.2.2 / §2.2.5; [`DteIrq`]):
//!
//! | bits | field |
//! |---|---|
//! | 128 | IV: the interrupt fields are valid (0: interrupts pass unremapped) |
//! | 132:129 | IntTabLen: 2^IntTabLen entries; 1100b–1111b reserved |
//! | 133 | IG: ignore unmapped interrupts (no IO_PAGE_FAULT for them) |
//! | 179:134 | IntTableRootPtr (64-byte aligned) |
//! | 183:180 | reserved |
//! | 184 / 185 / 186 | INITPass / EIntPass / NMIPass |
//! | 187 | reserved |
//! | 189:188 | IntCtl: 00b abort, 01b pass unremapped, 10b remap, 11b reserved |
//! | 190 / 191 | Lint0Pass / Lint1Pass |

use crate::pagetable::{PTE_ADDR_MASK, perm_bits, perm_of};
use crate::regs::DeviceTable;
use viommu_shared::Perm;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Size of one entry in bytes.
pub const DTE_SIZE: u64 = 32;
/// V (quadword 0).
pub const DTE_V: u64 = 1 << 0;
/// TV (quadword 0).
pub const DTE_TV: u64 = 1 << 1;
/// Reserved bits of quadword 0 (6:2 and 63): set means ILLEGAL_DEV_TABLE_ENTRY.
pub const DTE_RESERVED0: u64 = 0x7c | (1 << 63);
/// Position of Mode (11:9).
pub const DTE_MODE_SHIFT: u32 = 9;
/// IR (quadword 0, bit 61).
pub const DTE_IR: u64 = 1 << 61;
/// IW (quadword 0, bit 62).
pub const DTE_IW: u64 = 1 << 62;
/// SA, suppress all I/O page faults (quadword 1, bit 34 = DTE bit 98).
pub const DTE_SA: u64 = 1 << 34;

/// IV (quadword 2, bit 0 = DTE bit 128).
pub const DTE_IV: u64 = 1 << 0;
/// Position of IntTabLen (quadword 2, bits 4:1).
pub const DTE_INT_TAB_LEN_SHIFT: u32 = 1;
/// IG (quadword 2, bit 5).
pub const DTE_IG: u64 = 1 << 5;
/// IntTableRootPtr (quadword 2, bits 51:6).
pub const DTE_IRT_ROOT_MASK: u64 = 0x000f_ffff_ffff_ffc0;
/// INITPass (quadword 2, bit 56).
pub const DTE_INIT_PASS: u64 = 1 << 56;
/// EIntPass (quadword 2, bit 57).
pub const DTE_EINT_PASS: u64 = 1 << 57;
/// NMIPass (quadword 2, bit 58).
pub const DTE_NMI_PASS: u64 = 1 << 58;
/// Position of IntCtl (quadword 2, bits 61:60).
pub const DTE_INT_CTL_SHIFT: u32 = 60;
/// Lint0Pass (quadword 2, bit 62).
pub const DTE_LINT0_PASS: u64 = 1 << 62;
/// Lint1Pass (quadword 2, bit 63).
pub const DTE_LINT1_PASS: u64 = 1 << 63;
/// Reserved bits of quadword 2 (55:52 and 59): set with IV = 1 means
/// ILLEGAL_DEV_TABLE_ENTRY for interrupt requests.
pub const DTE_RESERVED2: u64 = (0xf << 52) | (1 << 59);
/// Largest legal IntTabLen (1011b: 2048 entries, the 11-bit MSI data index).
pub const MAX_INT_TAB_LEN: u8 = 11;

/// IntCtl: what happens to fixed and arbitrated interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntCtl {
    /// 00b: target aborted.
    Abort,
    /// 01b: forwarded unremapped.
    Pass,
    /// 10b: remapped through the interrupt remapping table.
    Remap,
    /// 11b: reserved (an illegal entry).
    Reserved,
}

/// The interrupt-remapping half of a device table entry (quadword 2; quadword 3 holds no
/// field this model interprets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DteIrq(pub u64);

impl DteIrq {
    /// IV.
    pub fn valid(&self) -> bool {
        self.0 & DTE_IV != 0
    }

    /// IntTabLen (the table has 2^IntTabLen entries when at most [`MAX_INT_TAB_LEN`]).
    pub fn table_len(&self) -> u8 {
        ((self.0 >> DTE_INT_TAB_LEN_SHIFT) & 0xf) as u8
    }

    /// IG: ignore unmapped interrupts.
    pub fn ignore_unmapped(&self) -> bool {
        self.0 & DTE_IG != 0
    }

    /// IntTableRootPtr.
    pub fn table_root(&self) -> u64 {
        self.0 & DTE_IRT_ROOT_MASK
    }

    /// IntCtl.
    pub fn int_ctl(&self) -> IntCtl {
        match (self.0 >> DTE_INT_CTL_SHIFT) & 3 {
            0 => IntCtl::Abort,
            1 => IntCtl::Pass,
            2 => IntCtl::Remap,
            _ => IntCtl::Reserved,
        }
    }

    /// INITPass.
    pub fn init_pass(&self) -> bool {
        self.0 & DTE_INIT_PASS != 0
    }

    /// EIntPass (ExtINT).
    pub fn extint_pass(&self) -> bool {
        self.0 & DTE_EINT_PASS != 0
    }

    /// NMIPass.
    pub fn nmi_pass(&self) -> bool {
        self.0 & DTE_NMI_PASS != 0
    }

    /// Lint0Pass.
    pub fn lint0_pass(&self) -> bool {
        self.0 & DTE_LINT0_PASS != 0
    }

    /// Lint1Pass.
    pub fn lint1_pass(&self) -> bool {
        self.0 & DTE_LINT1_PASS != 0
    }

    /// Reserved bits set.
    pub fn reserved_bits(&self) -> u64 {
        self.0 & DTE_RESERVED2
    }

    /// Linux's entry (`set_dte_irq_entry`): IV, IntTabLen `len`, IntCtl = remap, table at
    /// `root`.
    pub fn remapped(root: u64, len: u8) -> DteIrq {
        DteIrq(
            DTE_IV
                | (u64::from(len & 0xf) << DTE_INT_TAB_LEN_SHIFT)
                | (root & DTE_IRT_ROOT_MASK)
                | (2 << DTE_INT_CTL_SHIFT),
        )
    }
}

/// One device table entry as four little-endian quadwords.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dte(pub [u64; 4]);

impl Dte {
    /// V: the entry is valid.
    pub fn valid(&self) -> bool {
        self.0[0] & DTE_V != 0
    }

    /// TV: the translation fields are valid.
    pub fn translation_valid(&self) -> bool {
        self.0[0] & DTE_TV != 0
    }

    /// Mode (0–7).
    pub fn mode(&self) -> u8 {
        ((self.0[0] >> DTE_MODE_SHIFT) & 7) as u8
    }

    /// Host page-table root (guest-physical).
    pub fn root(&self) -> u64 {
        self.0[0] & PTE_ADDR_MASK
    }

    /// IR/IW as permissions.
    pub fn perm(&self) -> Perm {
        perm_of(self.0[0])
    }

    /// DomainID.
    pub fn domain_id(&self) -> u16 {
        self.0[1] as u16
    }

    /// SA: I/O page fault events from this device are suppressed.
    pub fn suppress_all_faults(&self) -> bool {
        self.0[1] & DTE_SA != 0
    }

    /// The interrupt-remapping fields.
    pub fn irq(&self) -> DteIrq {
        DteIrq(self.0[2])
    }

    /// This entry with its interrupt-remapping quadword replaced.
    pub fn with_irq(mut self, irq: DteIrq) -> Dte {
        self.0[2] = irq.0;
        self
    }

    /// Reserved bits set in the DMA part of the entry.
    pub fn reserved_bits(&self) -> u64 {
        self.0[0] & DTE_RESERVED0
    }

    /// A valid entry translating through the `mode`-level table at `root` for `domain_id`,
    /// with `perm` (the DTE's IR/IW, ANDed with the tables').
    pub fn translated(domain_id: u16, root: u64, mode: u8, perm: Perm) -> Dte {
        Dte([
            DTE_V
                | DTE_TV
                | (root & PTE_ADDR_MASK)
                | (u64::from(mode & 7) << DTE_MODE_SHIFT)
                | perm_bits(perm),
            u64::from(domain_id),
            0,
            0,
        ])
    }

    /// A valid entry with Mode 0: DMA untranslated, allowed as `perm` says. With no
    /// permission this is how Linux blocks a device (`V|TV` only).
    pub fn untranslated(domain_id: u16, perm: Perm) -> Dte {
        Dte([DTE_V | DTE_TV | perm_bits(perm), u64::from(domain_id), 0, 0])
    }

    /// This entry with SA (suppress all I/O page faults) set or cleared.
    pub fn with_suppress_all_faults(mut self, on: bool) -> Dte {
        if on {
            self.0[1] |= DTE_SA;
        } else {
            self.0[1] &= !DTE_SA;
        }
        self
    }

    /// Reads the entry of `device_id` from the device table.
    pub fn read(
        mem: &GuestMemoryMmap,
        table: &DeviceTable,
        device_id: u16,
    ) -> Result<Dte, DteError> {
        if u32::from(device_id) >= table.entries {
            return Err(DteError::BeyondTable);
        }
        let address = table.base.wrapping_add(u64::from(device_id) * DTE_SIZE);
        let mut q = [0u64; 4];
        for (i, slot) in q.iter_mut().enumerate() {
            let v: u64 = mem
                .read_obj(GuestAddress(address.wrapping_add(8 * i as u64)))
                .map_err(|_| DteError::Unreadable { address })?;
            *slot = u64::from_le(v);
        }
        Ok(Dte(q))
    }

    /// Writes the entry at `address` (for tests, scenarios and guest-driver models).
    pub fn write(
        &self,
        mem: &GuestMemoryMmap,
        address: u64,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        for (i, q) in self.0.iter().enumerate() {
            mem.write_obj(q.to_le(), GuestAddress(address + 8 * i as u64))?;
        }
        Ok(())
    }
}

/// Why a device's entry could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DteError {
    /// The DeviceID lies beyond the device table's size.
    BeyondTable,
    /// The entry at `address` is outside guest RAM.
    Unreadable {
        /// Guest-physical address of the entry.
        address: u64,
    },
}

/// What the IOMMU does with a device's DMA, decided from the IOMMU state and its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceMode {
    /// `Control.IommuEn = 0`: DMA is not remapped at all.
    IommuDisabled,
    /// V = 0: DMA passes untranslated with full access (spec §2.2.2 Table 8).
    PassThrough,
    /// V = 1, TV = 0: no translation information; a DMA needing translation is aborted with
    /// an IO_PAGE_FAULT (PR = 0). QEMU aborts without logging (anchors-x86 §5); the spec's
    /// terminated table walk is a page fault, so it is logged here.
    NoTranslation {
        /// The entry's DomainID.
        domain_id: u16,
        /// SA set.
        suppress_faults: bool,
    },
    /// Mode 0: DMA untranslated, allowed by IR/IW; with neither it is blocked (Linux's
    /// detached-device entry). QEMU's shadow path identity-maps even IR = IW = 0
    /// (anchors-x86 §2.10); the spec's IR/IW rule is applied here.
    Untranslated {
        /// The entry's DomainID.
        domain_id: u16,
        /// IR/IW.
        perm: Perm,
        /// SA set.
        suppress_faults: bool,
    },
    /// Mode 1–6: translated through a v1 table.
    Translated {
        /// The entry's DomainID (the IOTLB tag INVALIDATE_IOMMU_PAGES matches).
        domain_id: u16,
        /// Page-table root.
        root: u64,
        /// Levels (the Mode).
        levels: u8,
        /// IR/IW of the entry, ANDed with every table level's.
        perm: Perm,
        /// SA set.
        suppress_faults: bool,
    },
    /// The entry has reserved bits set (`reserved`), or Mode 7 or a Mode deeper than the
    /// advertised HATS: DMA is aborted with ILLEGAL_DEV_TABLE_ENTRY.
    Illegal {
        /// Reserved bits were set (reported as RZ in the event).
        reserved: bool,
    },
    /// The DeviceID lies beyond the device table: ILLEGAL_DEV_TABLE_ENTRY.
    BeyondTable,
    /// The entry could not be read: DEV_TAB_HARDWARE_ERROR with its address.
    Unreadable {
        /// Guest-physical address of the entry.
        address: u64,
    },
}

impl DeviceMode {
    /// Decides the mode of a device from its entry (`Err` when it could not be read), with
    /// `max_levels` the deepest supported table.
    pub fn from_entry(entry: Result<Dte, DteError>, max_levels: u8) -> DeviceMode {
        let dte = match entry {
            Ok(dte) => dte,
            Err(DteError::BeyondTable) => return DeviceMode::BeyondTable,
            Err(DteError::Unreadable { address }) => return DeviceMode::Unreadable { address },
        };
        if !dte.valid() {
            return DeviceMode::PassThrough;
        }
        if dte.reserved_bits() != 0 {
            return DeviceMode::Illegal { reserved: true };
        }
        let domain_id = dte.domain_id();
        let suppress_faults = dte.suppress_all_faults();
        if !dte.translation_valid() {
            return DeviceMode::NoTranslation {
                domain_id,
                suppress_faults,
            };
        }
        match dte.mode() {
            0 => DeviceMode::Untranslated {
                domain_id,
                perm: dte.perm(),
                suppress_faults,
            },
            m if m <= max_levels => DeviceMode::Translated {
                domain_id,
                root: dte.root(),
                levels: m,
                perm: dte.perm(),
                suppress_faults,
            },
            _ => DeviceMode::Illegal { reserved: false },
        }
    }

    /// The DomainID the entry names, for modes that have one.
    pub fn domain_id(&self) -> Option<u16> {
        match *self {
            DeviceMode::NoTranslation { domain_id, .. }
            | DeviceMode::Untranslated { domain_id, .. }
            | DeviceMode::Translated { domain_id, .. } => Some(domain_id),
            _ => None,
        }
    }

    /// Whether I/O page fault events of this device are suppressed (SA).
    pub fn suppresses_faults(&self) -> bool {
        match *self {
            DeviceMode::NoTranslation {
                suppress_faults, ..
            }
            | DeviceMode::Untranslated {
                suppress_faults, ..
            }
            | DeviceMode::Translated {
                suppress_faults, ..
            } => suppress_faults,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::testing::guest_memory;

    #[test]
    fn modes_from_entries() {
        let m = |d: Dte| DeviceMode::from_entry(Ok(d), 6);
        assert_eq!(m(Dte::default()), DeviceMode::PassThrough);
        // V=0 ignores everything else, including reserved bits.
        assert_eq!(m(Dte([0x7c, 0, 0, 0])), DeviceMode::PassThrough);
        assert_eq!(
            m(Dte([DTE_V, 5, 0, 0])),
            DeviceMode::NoTranslation {
                domain_id: 5,
                suppress_faults: false
            }
        );
        assert_eq!(
            m(Dte::untranslated(3, Perm::empty()).with_suppress_all_faults(true)),
            DeviceMode::Untranslated {
                domain_id: 3,
                perm: Perm::empty(),
                suppress_faults: true
            }
        );
        assert_eq!(
            m(Dte::translated(9, 0x12_3000, 3, Perm::READ)),
            DeviceMode::Translated {
                domain_id: 9,
                root: 0x12_3000,
                levels: 3,
                perm: Perm::READ,
                suppress_faults: false
            }
        );
        assert_eq!(
            m(Dte::translated(9, 0, 7, Perm::RW)),
            DeviceMode::Illegal { reserved: false }
        );
        assert_eq!(
            DeviceMode::from_entry(Ok(Dte::translated(9, 0, 5, Perm::RW)), 4),
            DeviceMode::Illegal { reserved: false }
        );
        let mut d = Dte::translated(9, 0, 3, Perm::RW);
        d.0[0] |= 1 << 3;
        assert_eq!(m(d), DeviceMode::Illegal { reserved: true });
        d.0[0] ^= (1 << 3) | (1 << 63);
        assert_eq!(m(d), DeviceMode::Illegal { reserved: true });
        assert_eq!(
            DeviceMode::from_entry(Err(DteError::BeyondTable), 6),
            DeviceMode::BeyondTable
        );
        assert_eq!(m(Dte::translated(9, 0, 3, Perm::RW)).domain_id(), Some(9));
        assert_eq!(DeviceMode::PassThrough.domain_id(), None);
    }

    #[test]
    fn read_write_and_bounds() {
        let mem = guest_memory(&[(0, 0x10_0000)]);
        let table = DeviceTable::from_register(0x8000); // 128 entries
        let d = Dte::translated(0x1234, 0x5000, 4, Perm::RW);
        d.write(&mem, 0x8000 + 5 * DTE_SIZE).unwrap();
        assert_eq!(Dte::read(&mem, &table, 5), Ok(d));
        assert_eq!(Dte::read(&mem, &table, 128), Err(DteError::BeyondTable));
        let far = DeviceTable::from_register(0x20_0000 | 0x1ff);
        assert_eq!(
            Dte::read(&mem, &far, 2),
            Err(DteError::Unreadable { address: 0x20_0040 })
        );
    }
}
