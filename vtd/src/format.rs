//! The second-stage page-table format (VT-d spec 9.8; `anchors-x86.md` §1.6) for the shared
//! walker. Used by legacy-mode contexts and by scalable-mode PASID entries with PGTT=010b.
//!
//! Entry bits: 0 R, 1 W (R=W=0 is not present), 2 X and 10 ignored here, 6:3 EMT/IPAT and
//! 9:8 A/D ignored (no nesting, no dirty tracking), 7 PS (leaf at the PDE/PDPE levels), 11 SNP,
//! 51:12 address, 52..61 and 63 ignored, 62 reserved (the old TM bit).

use viommu_shared::Perm;
use viommu_shared::pt::{ByteOrder, Decoded, EncodeFormat, PageTableFormat};

/// R: read permission.
pub const SL_R: u64 = 1 << 0;
/// W: write permission.
pub const SL_W: u64 = 1 << 1;
/// PS: the entry maps a large page (levels 1 and 2 only).
pub const SL_PS: u64 = 1 << 7;
/// SNP: snoop behaviour of the page.
pub const SL_SNP: u64 = 1 << 11;
/// Bit 62, reserved since VT-d 3.0 (TM in earlier revisions; QEMU: `stale-tm`).
pub const SL_TM: u64 = 1 << 62;
/// Bits that are ignored by hardware and never reserved: 52..=61 and 63.
pub const SL_IGNORED_HIGH: u64 = 0xbff0_0000_0000_0000;

/// One configuration of the second-stage format: depth, widths and what is reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SecondStage {
    levels: u8,
    haw: u32,
    snp_allowed: bool,
    two_mib: bool,
    one_gib: bool,
}

impl SecondStage {
    /// A table of `levels` levels (3, 4 or 5; clamped), host address width `haw` bits
    /// (clamped to 12..=52), SNP accepted or reserved, and the large pages the unit supports.
    pub fn new(levels: u8, haw: u32, snp_allowed: bool, two_mib: bool, one_gib: bool) -> Self {
        SecondStage {
            levels: levels.clamp(3, 5),
            haw: haw.clamp(12, 52),
            snp_allowed,
            two_mib,
            one_gib,
        }
    }

    /// The depth encoded by a context/PASID entry AW value (1 = 3-level, 2 = 4-level,
    /// 3 = 5-level); callers check AW against CAP.SAGAW first.
    pub fn levels_for_aw(aw: u64) -> u8 {
        (aw.clamp(1, 3) + 2) as u8
    }

    /// Number of levels.
    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// Input address width in bits (39, 48 or 57).
    pub fn input_bits(&self) -> u32 {
        12 + 9 * u32::from(self.levels)
    }

    /// Whether SNP is accepted.
    pub fn snp_allowed(&self) -> bool {
        self.snp_allowed
    }

    /// Bits of an address field that are implemented (12..haw).
    fn addr_mask(&self) -> u64 {
        ((1u64 << self.haw) - 1) & !0xfff
    }

    /// Bits that must be zero in every present entry: address bits at or above HAW (up to
    /// bit 51), bit 62, and SNP unless accepted.
    fn reserved_common(&self) -> u64 {
        let addr_field = 0x000f_ffff_ffff_f000u64;
        let mut r = (addr_field & !self.addr_mask()) | SL_TM;
        if !self.snp_allowed {
            r |= SL_SNP;
        }
        r
    }

    fn perm(raw: u64) -> Perm {
        let mut p = Perm::empty();
        if raw & SL_R != 0 {
            p |= Perm::READ;
        }
        if raw & SL_W != 0 {
            p |= Perm::WRITE;
        }
        p
    }

    fn perm_bits(perm: Perm) -> u64 {
        let mut raw = 0;
        if perm.contains(Perm::READ) {
            raw |= SL_R;
        }
        if perm.contains(Perm::WRITE) {
            raw |= SL_W;
        }
        raw
    }

    /// Whether a PS leaf is allowed at `level` (CAP.SLLPS).
    fn large_ok(&self, level: u8) -> bool {
        match level {
            1 => self.two_mib,
            2 => self.one_gib,
            _ => false,
        }
    }
}

impl PageTableFormat for SecondStage {
    fn byte_order(&self) -> ByteOrder {
        ByteOrder::Little
    }

    fn top_level(&self) -> u8 {
        self.levels - 1
    }

    fn index_bits(&self, _level: u8) -> u32 {
        9
    }

    fn iova_bits(&self) -> u32 {
        self.input_bits()
    }

    fn decode(&self, level: u8, raw: u64) -> Decoded {
        if raw & (SL_R | SL_W) == 0 {
            return Decoded::Empty;
        }
        if raw & self.reserved_common() != 0 {
            return Decoded::Reserved;
        }
        let perm = Self::perm(raw);
        let addr = raw & self.addr_mask();
        if level == 0 {
            // Bit 7 of a 4 KiB PTE is ignored.
            return Decoded::Leaf {
                addr,
                size_log2: 12,
                perm,
            };
        }
        if raw & SL_PS != 0 {
            if !self.large_ok(level) {
                return Decoded::Reserved;
            }
            let size_log2 = 12 + 9 * level;
            // The address bits below the page size are reserved in a large-page entry.
            if addr & ((1u64 << size_log2) - 1) != 0 {
                return Decoded::Reserved;
            }
            return Decoded::Leaf {
                addr,
                size_log2,
                perm,
            };
        }
        // Bit 11 of a table pointer is treated like SNP of a leaf (reserved unless accepted),
        // as QEMU's per-level reserved masks do (`VTD_SPTE_PAGE_L*_RSVD_MASK`).
        Decoded::Table {
            addr,
            level: level - 1,
            perm,
        }
    }
}

impl EncodeFormat for SecondStage {
    fn encode_table(&self, _level: u8, table: u64, perm: Perm) -> u64 {
        (table & self.addr_mask()) | Self::perm_bits(perm)
    }

    fn encode_leaf(&self, level: u8, addr: u64, perm: Perm) -> Option<u64> {
        let bits = Self::perm_bits(perm);
        if bits == 0 || addr & !self.addr_mask() != 0 {
            return None;
        }
        match level {
            0 => Some(addr | bits),
            1 | 2 if self.large_ok(level) && addr & ((1u64 << (12 + 9 * level)) - 1) == 0 => {
                Some(addr | bits | SL_PS)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f4() -> SecondStage {
        SecondStage::new(4, 48, false, true, true)
    }

    #[test]
    fn decode_levels_and_reserved_bits() {
        let f = f4();
        assert_eq!(f.decode(0, 0), Decoded::Empty);
        // R=W=0 with other bits set is still not present.
        assert_eq!(f.decode(0, 0x1234_5000 | SL_SNP), Decoded::Empty);
        assert_eq!(
            f.decode(0, 0x1234_5003),
            Decoded::Leaf {
                addr: 0x1234_5000,
                size_log2: 12,
                perm: Perm::RW
            }
        );
        // Ignored high bits and bit 10 are fine; bit 62 and SNP are reserved.
        assert!(matches!(
            f.decode(0, 0x1234_5001 | SL_IGNORED_HIGH | (1 << 10)),
            Decoded::Leaf { .. }
        ));
        assert_eq!(f.decode(0, 0x1234_5001 | SL_TM), Decoded::Reserved);
        assert_eq!(f.decode(0, 0x1234_5001 | SL_SNP), Decoded::Reserved);
        // Address above HAW.
        assert_eq!(f.decode(0, (1 << 48) | 1), Decoded::Reserved);
        // PS at the PML4 level is reserved; a 2M leaf needs its low bits clear.
        assert_eq!(f.decode(3, 0x20_0000 | SL_PS | 3), Decoded::Reserved);
        assert_eq!(f.decode(1, 0x20_1000 | SL_PS | 3), Decoded::Reserved);
        assert_eq!(
            f.decode(1, 0x40_0000 | SL_PS | 1),
            Decoded::Leaf {
                addr: 0x40_0000,
                size_log2: 21,
                perm: Perm::READ
            }
        );
        assert_eq!(
            f.decode(2, 0x4000_0000 | 2),
            Decoded::Table {
                addr: 0x4000_0000,
                level: 1,
                perm: Perm::WRITE
            }
        );
        // Without 1G support PS at level 2 is reserved.
        let no1g = SecondStage::new(4, 48, true, true, false);
        assert_eq!(no1g.decode(2, 0x4000_0000 | SL_PS | 3), Decoded::Reserved);
        assert!(matches!(
            no1g.decode(0, 0x1000 | SL_SNP | 3),
            Decoded::Leaf { .. }
        ));
    }

    #[test]
    fn encode_round_trips() {
        let f = f4();
        for level in 0..3u8 {
            let addr = 1u64 << (12 + 9 * u32::from(level));
            let raw = f.encode_leaf(level, addr, Perm::READ).unwrap();
            assert_eq!(
                f.decode(level, raw),
                Decoded::Leaf {
                    addr,
                    size_log2: (12 + 9 * level),
                    perm: Perm::READ
                }
            );
        }
        assert_eq!(f.encode_leaf(3, 1 << 39, Perm::RW), None);
        assert_eq!(f.encode_leaf(0, 0x1000, Perm::empty()), None);
        assert_eq!(
            f.decode(3, f.encode_table(3, 0x5000, Perm::RW)),
            Decoded::Table {
                addr: 0x5000,
                level: 2,
                perm: Perm::RW
            }
        );
        assert_eq!(f.top_level(), 3);
        assert_eq!(f.iova_bits(), 48);
        assert_eq!(SecondStage::levels_for_aw(1), 3);
        assert_eq!(SecondStage::levels_for_aw(3), 5);
    }
}
