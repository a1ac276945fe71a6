//! The I/O translation anchor (IOTA) a guest registers with MPCIFC (A.12.1).

use crate::format::{Designation, REGION_ORIGIN_MASK};

/// A raw 64-bit I/O translation anchor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Iota(pub u64);

impl Iota {
    /// T bit: translation enabled. Clear means relaxed translation (A.16).
    pub const TRANSLATE: u64 = 0x800;
    /// Protection bit: the whole space is read-only.
    pub const PROTECTED: u64 = 0x200;

    /// An anchor designating the region table at `origin` (translation on).
    pub fn tables(designation: Designation, origin: u64) -> Iota {
        Iota((origin & REGION_ORIGIN_MASK) | Self::TRANSLATE | (u64::from(designation.dt()) << 2))
    }

    /// True when the T bit asks for translation through tables.
    pub fn translates(self) -> bool {
        self.0 & Self::TRANSLATE != 0
    }

    /// The designation-type field (bits 2..4).
    pub fn dt(self) -> u8 {
        ((self.0 >> 2) & 7) as u8
    }

    /// The region designation, if DT names one.
    pub fn designation(self) -> Option<Designation> {
        Designation::from_dt(self.dt())
    }

    /// True when the protection bit makes the whole space read-only.
    pub fn protected(self) -> bool {
        self.0 & Self::PROTECTED != 0
    }

    /// The storage key field (bits 5..8).
    pub fn key(self) -> u8 {
        ((self.0 >> 5) & 0xf) as u8
    }

    /// The root table origin. Every non-origin bit is masked (errata 4: QEMU clears only
    /// the T and DT bits, so a protected or keyed anchor yields a wrong origin).
    pub fn origin(self) -> u64 {
        self.0 & REGION_ORIGIN_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        // Linux: virt_to_phys(table) | ZPCI_IOTA_RTTO_FLAG (0x800 | key << 5 | 1 << 2).
        let i = Iota(0x10_4000 | 0x800 | 0x4);
        assert!(i.translates());
        assert_eq!(i.designation(), Some(Designation::RegionThird));
        assert_eq!(i.origin(), 0x10_4000);
        let p = Iota(0x10_4000 | 0x800 | 0x4 | 0x200 | (3 << 5));
        assert!(p.protected());
        assert_eq!(p.key(), 3);
        assert_eq!(p.origin(), 0x10_4000);
        assert_eq!(Iota(0).designation(), None);
        assert!(!Iota(0).translates());
        assert_eq!(
            Iota::tables(Designation::RegionFirst, 0x8000),
            Iota(0x8000 | 0x800 | 0xc)
        );
    }
}
