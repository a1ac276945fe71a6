//! The AMD-Vi v1 ("host") I/O page-table format for the shared walker.
//!
//! Spec §2.2.3 (I/O Page Tables for Host Translations); bit layout as in Linux
//! `generic_pt/fmt/amdv1.h` (anchors-x86 §2.4). Levels here are 0-based like the shared
//! walker (level 0 holds 4 KiB PTEs; the spec calls it level 1, so spec `NextLevel = n` points
//! to our level `n - 1`). A DTE with `Mode = m` has `m` levels, root at level `m - 1`.
//!
//! Entry: PR (0), NextLevel (11:9), address (51:12), reserved (58:52), U (59), FC (60),
//! IR (61), IW (62).
//!
//! - `NextLevel = 1..=6` below the current level: a table pointer. Pointing more than one
//!   level down skips levels; the walker then requires the skipped IOVA bits to be zero.
//! - `NextLevel = 0` above level 0: a leaf of the level's default size (4 KiB << 9·level),
//!   translated *with* the page offset. QEMU returns these one level too small and drops the
//!   offset (anchors-x86 §2.4, §5 item 2a); the spec size is used here.
//! - `NextLevel = 7`: a leaf whose power-of-two size is encoded by the run of ones in the
//!   address from bit 12 up: size = 2^(1 + first zero bit at or above 12). The size must lie
//!   between the level's default size and half the table's span (Linux
//!   `amdv1pt_possible_sizes`); the entry repeats in every slot the page covers.
//! - The top level of a 6-level table cannot hold leaves (spec Table 15).
//! - IR/IW of table entries are ANDed along the walk with the leaf's (spec §2.2.3: the
//!   effective permission is the AND of the DTE's and every entry's IR/IW). QEMU returns the
//!   leaf's own bits; the spec rule is applied here.

use viommu_shared::Perm;
use viommu_shared::pt::{ByteOrder, Decoded, EncodeFormat, PageTableFormat};

/// PR: entry present.
pub const PTE_PR: u64 = 1 << 0;
/// Position of the NextLevel field (11:9).
pub const NEXT_LEVEL_SHIFT: u32 = 9;
/// Output / next-table address bits 51:12.
pub const PTE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Reserved bits 58:52: an entry with any set is malformed (IO_PAGE_FAULT with RZ=1).
pub const PTE_RESERVED: u64 = 0x07f0_0000_0000_0000;
/// FC: force coherent (accepted, no effect on emulation).
pub const PTE_FC: u64 = 1 << 60;
/// IR: reads allowed.
pub const PTE_IR: u64 = 1 << 61;
/// IW: writes allowed.
pub const PTE_IW: u64 = 1 << 62;
/// NextLevel value of a leaf of the level's default size.
pub const NL_DEFAULT: u64 = 0;
/// NextLevel value of a leaf with an encoded size.
pub const NL_SIZED: u64 = 7;

/// Largest table depth (DTE Mode 6).
pub const MAX_LEVELS: u8 = 6;

/// The v1 page-table format of a DTE with `Mode = levels`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmdV1Format {
    levels: u8,
}

/// IR/IW bits for `perm`.
pub fn perm_bits(perm: Perm) -> u64 {
    let mut v = 0;
    if perm.contains(Perm::READ) {
        v |= PTE_IR;
    }
    if perm.contains(Perm::WRITE) {
        v |= PTE_IW;
    }
    v
}

/// Permissions of the IR/IW bits of `raw` (a PTE, PDE or DTE quadword 0: same positions).
pub fn perm_of(raw: u64) -> Perm {
    let mut p = Perm::empty();
    if raw & PTE_IR != 0 {
        p |= Perm::READ;
    }
    if raw & PTE_IW != 0 {
        p |= Perm::WRITE;
    }
    p
}

impl AmdV1Format {
    /// The format of a `levels`-level table (DTE Mode 1..=6); `None` for other modes.
    pub fn new(levels: u8) -> Option<AmdV1Format> {
        (1..=MAX_LEVELS)
            .contains(&levels)
            .then_some(AmdV1Format { levels })
    }

    /// Number of levels (the DTE Mode).
    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// Whether a leaf may sit at `level` (every level but the top of a 6-level table).
    fn can_have_leaf(level: u8) -> bool {
        level < MAX_LEVELS - 1
    }

    /// Entry at `level` pointing to a table at `next_level` (any lower level: skipping is
    /// allowed), granting `perm` to everything below. `None` if `next_level >= level` or
    /// `level` is not a table level of any mode.
    pub fn encode_table_to(
        &self,
        level: u8,
        table: u64,
        next_level: u8,
        perm: Perm,
    ) -> Option<u64> {
        (next_level < level && level < MAX_LEVELS).then(|| {
            (table & PTE_ADDR_MASK)
                | PTE_PR
                | (u64::from(next_level + 1) << NEXT_LEVEL_SHIFT)
                | perm_bits(perm)
        })
    }

    /// Entry at `level` mapping a page of `2^size_log2` bytes at `addr`: a default-size leaf
    /// (NextLevel 0) when the size is the level's slot size, else a NextLevel-7 leaf with the
    /// size encoded in the address. The caller writes the same entry into every slot the page
    /// covers (`2^size_log2 / slot size` consecutive entries), as Linux does. `None` if the
    /// size is not representable at that level or `addr` is not aligned to it.
    pub fn encode_sized_leaf(
        &self,
        level: u8,
        addr: u64,
        size_log2: u32,
        perm: Perm,
    ) -> Option<u64> {
        let slot = self.level_shift(level);
        if !Self::can_have_leaf(level)
            || size_log2 < slot
            || size_log2 > slot + 8
            || size_log2 > 52
            || addr & ((1u64 << size_log2) - 1) != 0
            || addr & !PTE_ADDR_MASK != 0
        {
            return None;
        }
        let base = addr | PTE_PR | perm_bits(perm);
        if size_log2 == slot {
            return Some(base);
        }
        // Ones from bit 12 up to bit size_log2 - 2, zero at bit size_log2 - 1.
        let ones = ((1u64 << (size_log2 - 1)) - 1) & PTE_ADDR_MASK;
        Some(base | ones | (NL_SIZED << NEXT_LEVEL_SHIFT))
    }

    /// log2 of the page size a NextLevel-7 entry encodes, or `None` when the run of ones
    /// reaches past the address field.
    pub fn sized_leaf_log2(raw: u64) -> Option<u32> {
        let v = (raw & PTE_ADDR_MASK) | 0xfff;
        let first_zero = (!v).trailing_zeros();
        (first_zero < 52).then_some(first_zero + 1)
    }
}

impl PageTableFormat for AmdV1Format {
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
        (12 + 9 * u32::from(self.levels)).min(64)
    }

    fn decode(&self, level: u8, raw: u64) -> Decoded {
        if raw & PTE_PR == 0 {
            return Decoded::Empty;
        }
        if raw & PTE_RESERVED != 0 {
            return Decoded::Reserved;
        }
        let perm = perm_of(raw);
        let addr = raw & PTE_ADDR_MASK;
        let next = (raw >> NEXT_LEVEL_SHIFT) & 7;
        let slot = self.level_shift(level);
        match next {
            NL_DEFAULT if Self::can_have_leaf(level) => Decoded::Leaf {
                addr,
                size_log2: slot as u8,
                perm,
            },
            NL_SIZED if Self::can_have_leaf(level) => match Self::sized_leaf_log2(raw) {
                // At least the slot size, less than the table's span.
                Some(s) if s >= slot && s <= slot + 8 => Decoded::Leaf {
                    addr: addr & !((1u64 << s) - 1),
                    size_log2: s as u8,
                    perm,
                },
                _ => Decoded::Reserved,
            },
            // A table pointer must go down at least one level; level 0 holds only leaves.
            n if (1..=6).contains(&n) && (n as u8) <= level => Decoded::Table {
                addr,
                level: n as u8 - 1,
                perm,
            },
            _ => Decoded::Reserved,
        }
    }
}

impl EncodeFormat for AmdV1Format {
    fn encode_table(&self, level: u8, table: u64, perm: Perm) -> u64 {
        self.encode_table_to(level, table, level.saturating_sub(1), perm)
            .unwrap_or(0)
    }

    fn encode_leaf(&self, level: u8, addr: u64, perm: Perm) -> Option<u64> {
        self.encode_sized_leaf(level, addr, self.level_shift(level), perm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        assert!(AmdV1Format::new(0).is_none());
        assert!(AmdV1Format::new(7).is_none());
        let f = AmdV1Format::new(3).unwrap();
        assert_eq!(f.top_level(), 2);
        assert_eq!(f.iova_bits(), 39);
        assert_eq!(f.level_shift(2), 30);
        assert_eq!(AmdV1Format::new(6).unwrap().iova_bits(), 64);
    }

    #[test]
    fn decode_entries() {
        let f = AmdV1Format::new(4).unwrap();
        assert_eq!(f.decode(0, 0x1000 | PTE_IR), Decoded::Empty);
        // 4K leaf.
        assert_eq!(
            f.decode(0, 0x5000 | PTE_PR | PTE_IR),
            Decoded::Leaf {
                addr: 0x5000,
                size_log2: 12,
                perm: Perm::READ
            }
        );
        // Default-size 2M leaf at level 1.
        assert_eq!(
            f.decode(1, 0x8000_0000 | PTE_PR | PTE_IR | PTE_IW),
            Decoded::Leaf {
                addr: 0x8000_0000,
                size_log2: 21,
                perm: Perm::RW
            }
        );
        // Table pointers, including a skip from level 3 to level 1.
        assert_eq!(
            f.decode(3, 0x9000 | PTE_PR | (3 << 9) | PTE_IR | PTE_IW),
            Decoded::Table {
                addr: 0x9000,
                level: 2,
                perm: Perm::RW
            }
        );
        assert_eq!(
            f.decode(3, 0x9000 | PTE_PR | (2 << 9) | PTE_IW),
            Decoded::Table {
                addr: 0x9000,
                level: 1,
                perm: Perm::WRITE
            }
        );
        // A pointer to the same level, or a table pointer at level 0: malformed.
        assert_eq!(f.decode(2, 0x9000 | PTE_PR | (3 << 9)), Decoded::Reserved);
        assert_eq!(f.decode(0, 0x9000 | PTE_PR | (1 << 9)), Decoded::Reserved);
        // Reserved bits.
        assert_eq!(f.decode(0, 0x5000 | PTE_PR | (1 << 52)), Decoded::Reserved);
        // FC and U are accepted.
        assert!(matches!(
            f.decode(0, 0x5000 | PTE_PR | PTE_FC | (1 << 59)),
            Decoded::Leaf { .. }
        ));
        // NextLevel 7: 8K at level 0 (bit 12 clear), 32K (bits 13:12 set, 14 clear).
        assert_eq!(
            f.decode(0, 0x1_0000 | PTE_PR | (7 << 9) | PTE_IR),
            Decoded::Leaf {
                addr: 0x1_0000,
                size_log2: 13,
                perm: Perm::READ
            }
        );
        assert_eq!(
            f.decode(0, 0x1_3000 | PTE_PR | (7 << 9)),
            Decoded::Leaf {
                addr: 0x1_0000,
                size_log2: 15,
                perm: Perm::empty()
            }
        );
        // 2M at level 0 spans the whole table: not allowed; at level 1 it is the default size.
        assert_eq!(f.decode(0, 0xf_f000 | PTE_PR | (7 << 9)), Decoded::Reserved);
        assert_eq!(
            f.decode(1, 0xf_f000 | PTE_PR | (7 << 9)),
            Decoded::Leaf {
                addr: 0,
                size_log2: 21,
                perm: Perm::empty()
            }
        );
        // 8K at level 1 is smaller than the slot.
        assert_eq!(f.decode(1, PTE_PR | (7 << 9)), Decoded::Reserved);
        // Top of a 6-level table cannot hold a leaf.
        let f6 = AmdV1Format::new(6).unwrap();
        assert_eq!(f6.decode(5, PTE_PR), Decoded::Reserved);
        assert!(matches!(
            f6.decode(4, PTE_PR),
            Decoded::Leaf { size_log2: 48, .. }
        ));
        // Ones all the way up: no size.
        assert_eq!(AmdV1Format::sized_leaf_log2(PTE_ADDR_MASK), None);
    }

    #[test]
    fn encode_round_trips() {
        let f = AmdV1Format::new(3).unwrap();
        for (level, addr, log2) in [
            (0u8, 0x2000u64, 13u32),
            (0, 0x8000, 15),
            (0, 0x10_0000, 20),
            (1, 0x40_0000, 22),
            (1, 0x20_0000, 21),
            (2, 0x4000_0000, 30),
            (0, 0x7000, 12),
        ] {
            let raw = f.encode_sized_leaf(level, addr, log2, Perm::RW).unwrap();
            assert_eq!(
                f.decode(level, raw),
                Decoded::Leaf {
                    addr,
                    size_log2: log2 as u8,
                    perm: Perm::RW
                },
                "level {level} size 2^{log2}"
            );
        }
        assert!(
            f.encode_sized_leaf(0, 0x1000, 13, Perm::RW).is_none(),
            "unaligned"
        );
        assert!(
            f.encode_sized_leaf(0, 0, 21, Perm::RW).is_none(),
            "whole table"
        );
        assert!(
            f.encode_sized_leaf(1, 0, 13, Perm::RW).is_none(),
            "below slot"
        );
        assert!(
            AmdV1Format::new(6)
                .unwrap()
                .encode_leaf(5, 0, Perm::RW)
                .is_none()
        );
        let t = f.encode_table(2, 0x5000, Perm::RW);
        assert_eq!(
            f.decode(2, t),
            Decoded::Table {
                addr: 0x5000,
                level: 1,
                perm: Perm::RW
            }
        );
        let t = f.encode_table_to(2, 0x5000, 0, Perm::READ).unwrap();
        assert_eq!(
            f.decode(2, t),
            Decoded::Table {
                addr: 0x5000,
                level: 0,
                perm: Perm::READ
            }
        );
        assert!(f.encode_table_to(1, 0x5000, 1, Perm::READ).is_none());
    }
}
