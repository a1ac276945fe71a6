//! The s390 DMA translation-table format (A.12) for the shared walker.
//!
//! Levels, numbered as the shared walker does (0 = the table mapping 4 KiB pages):
//!
//! | level | table | entries | index bits of the IOVA |
//! |---|---|---|---|
//! | 0 | page table | 256 × 8 B (2 KiB) | 12..19 |
//! | 1 | segment table | 2048 × 8 B (16 KiB) | 20..30 |
//! | 2 | region-third table | 2048 | 31..41 |
//! | 3 | region-second table | 2048 | 42..52 |
//! | 4 | region-first table | 2048 | 53..63 |
//!
//! Entries are big-endian in guest memory (errata item 0).
//!
//! Decoding rules (A.12.3, A.12.4, errata 4–5):
//! - An entry whose value is exactly 0 is an error (invalid table entry, PEC 0x7), not
//!   "unmapped": QEMU's walk treats it so and Linux never writes 0 (new tables are filled
//!   with invalid entries). It decodes as [`Decoded::Reserved`].
//! - The invalid bit (0x20 in region/segment entries, 0x400 in page-table entries) makes the
//!   entry [`Decoded::Empty`] whatever its other bits are, before any other check (as QEMU).
//! - Region entries must carry the table type of the table they sit in (TT, bits 2..3) and
//!   a full table length (TL = 3) with table offset 0. The shared walker cannot express
//!   partial tables (a TL/offset limiting which indexes of the next table are valid), and no
//!   guest builds them (Linux always writes TL = 3), so any other TL/offset decodes as
//!   [`Decoded::Reserved`] and is reported as PEC 0x8 (invalid table length), which is what
//!   QEMU reports too. A wrong TT is PEC 0x9.
//! - Segment entries must carry TT = 0. The format-control bit 0x400 makes a segment entry
//!   map a 1 MiB frame (QEMU supports it; errata 8 notes Linux's header lacks it).
//! - Protection (0x200) at any level, or in the IOTA, makes everything below read-only.
//! - A valid entry whose frame or table address is 0 is valid (errata 5: QEMU wrongly reports
//!   a table-type error for it).

use viommu_shared::Perm;
use viommu_shared::pt::{ByteOrder, Decoded, EncodeFormat, PageTableFormat};

use crate::codes::Pec;

/// Invalid bit of region and segment entries.
pub const TABLE_INVALID: u64 = 0x20;
/// Protection bit of every entry.
pub const PROTECTED: u64 = 0x200;
/// Table-type field of region and segment entries.
pub const TABLE_TYPE_MASK: u64 = 0xc;
/// Table-length field of region entries.
pub const TABLE_LENGTH_MASK: u64 = 0x3;
/// Table-offset field of region entries.
pub const TABLE_OFFSET_MASK: u64 = 0xc0;
/// Format-control bit of segment entries: the entry maps a 1 MiB frame.
pub const SEGMENT_FC: u64 = 0x400;
/// Invalid bit of page-table entries.
pub const PTE_INVALID: u64 = 0x400;
/// Region-entry origin mask (16 KiB aligned tables).
pub const REGION_ORIGIN_MASK: u64 = !0x3fff;
/// Segment-entry page-table origin mask (2 KiB aligned tables).
pub const SEGMENT_ORIGIN_MASK: u64 = !0x7ff;
/// Segment-entry 1 MiB frame mask.
pub const SEGMENT_FRAME_MASK: u64 = !0xf_ffff;
/// Page-table-entry frame mask.
pub const PTE_FRAME_MASK: u64 = !0xfff;

/// Level numbers.
pub mod level {
    /// Page table.
    pub const PAGE: u8 = 0;
    /// Segment table.
    pub const SEGMENT: u8 = 1;
    /// Region-third table.
    pub const REGION_THIRD: u8 = 2;
    /// Region-second table.
    pub const REGION_SECOND: u8 = 3;
    /// Region-first table.
    pub const REGION_FIRST: u8 = 4;
}

/// Which table the I/O translation anchor designates (A.12.1 DT field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Designation {
    /// DT 1: region-third table origin; 3 levels, 42-bit IOVAs.
    RegionThird,
    /// DT 2: region-second table origin; 4 levels, 53-bit IOVAs.
    RegionSecond,
    /// DT 3: region-first table origin; 5 levels, 64-bit IOVAs.
    RegionFirst,
}

impl Designation {
    /// The designation for a DT field value, if it is a region-table designation.
    pub fn from_dt(dt: u8) -> Option<Designation> {
        match dt {
            1 => Some(Designation::RegionThird),
            2 => Some(Designation::RegionSecond),
            3 => Some(Designation::RegionFirst),
            _ => None,
        }
    }

    /// The DT field value.
    pub fn dt(self) -> u8 {
        match self {
            Designation::RegionThird => 1,
            Designation::RegionSecond => 2,
            Designation::RegionFirst => 3,
        }
    }

    /// Level of the root table.
    pub fn top_level(self) -> u8 {
        match self {
            Designation::RegionThird => level::REGION_THIRD,
            Designation::RegionSecond => level::REGION_SECOND,
            Designation::RegionFirst => level::REGION_FIRST,
        }
    }

    /// Number of table levels (3, 4 or 5).
    pub fn levels(self) -> u8 {
        self.top_level() + 1
    }

    /// IOVA width translated by tables of this designation (42, 53 or 64 bits).
    pub fn iova_bits(self) -> u32 {
        match self {
            Designation::RegionThird => 42,
            Designation::RegionSecond => 53,
            Designation::RegionFirst => 64,
        }
    }
}

/// Why an entry decoded as malformed; each is one architected event code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableError {
    /// The entry is 0, or could not be read: invalid table entry (PEC 0x7).
    InvalidEntry,
    /// A region entry with TL ≠ 3 or a non-zero table offset (PEC 0x8).
    TableLength,
    /// The entry's table type does not match the table it is in (PEC 0x9).
    TableType,
}

impl TableError {
    /// The event code of this error.
    pub fn pec(self) -> Pec {
        match self {
            TableError::InvalidEntry => Pec::INVALID_TABLE_ENTRY,
            TableError::TableLength => Pec::INVALID_TABLE_LENGTH,
            TableError::TableType => Pec::TABLE_TYPE,
        }
    }
}

/// The s390 DMA table format of one registered I/O address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DmaTableFormat {
    designation: Designation,
    read_only: bool,
}

impl DmaTableFormat {
    /// Tables rooted at a table of `designation`; `read_only` when the IOTA's protection bit
    /// makes the whole space read-only.
    pub fn new(designation: Designation, read_only: bool) -> Self {
        DmaTableFormat {
            designation,
            read_only,
        }
    }

    /// The root designation.
    pub fn designation(&self) -> Designation {
        self.designation
    }

    /// True when the whole space is read-only (IOTA protection bit).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Expected table-type field of entries in a table at `level` (≥ 1).
    fn expected_type(level: u8) -> u64 {
        u64::from(level.saturating_sub(1)) << 2
    }

    /// Why `raw`, found at `level`, decodes as [`Decoded::Reserved`]; `None` when it does
    /// not.
    pub fn classify(&self, level: u8, raw: u64) -> Option<TableError> {
        if raw == 0 {
            return Some(TableError::InvalidEntry);
        }
        match level {
            level::PAGE => None,
            _ if raw & TABLE_INVALID != 0 => None,
            _ if level > self.designation.top_level() => Some(TableError::TableType),
            _ if raw & TABLE_TYPE_MASK != Self::expected_type(level) => Some(TableError::TableType),
            level::SEGMENT => None,
            _ if raw & TABLE_LENGTH_MASK != TABLE_LENGTH_MASK || raw & TABLE_OFFSET_MASK != 0 => {
                Some(TableError::TableLength)
            }
            _ => None,
        }
    }

    fn perm(&self, protected: bool) -> Perm {
        if protected || self.read_only {
            Perm::READ
        } else {
            Perm::RW
        }
    }
}

impl PageTableFormat for DmaTableFormat {
    fn byte_order(&self) -> ByteOrder {
        ByteOrder::Big
    }

    fn top_level(&self) -> u8 {
        self.designation.top_level()
    }

    fn index_bits(&self, level: u8) -> u32 {
        if level == level::PAGE { 8 } else { 11 }
    }

    fn iova_bits(&self) -> u32 {
        self.designation.iova_bits()
    }

    fn decode(&self, level: u8, raw: u64) -> Decoded {
        if self.classify(level, raw).is_some() {
            return Decoded::Reserved;
        }
        let protected = raw & PROTECTED != 0;
        if level == level::PAGE {
            if raw & PTE_INVALID != 0 {
                return Decoded::Empty;
            }
            return Decoded::Leaf {
                addr: raw & PTE_FRAME_MASK,
                size_log2: 12,
                perm: self.perm(protected),
            };
        }
        if raw & TABLE_INVALID != 0 {
            return Decoded::Empty;
        }
        if level == level::SEGMENT {
            if raw & SEGMENT_FC != 0 {
                return Decoded::Leaf {
                    addr: raw & SEGMENT_FRAME_MASK,
                    size_log2: 20,
                    perm: self.perm(protected),
                };
            }
            return Decoded::Table {
                addr: raw & SEGMENT_ORIGIN_MASK,
                level: level::PAGE,
                perm: self.perm(protected),
            };
        }
        Decoded::Table {
            addr: raw & REGION_ORIGIN_MASK,
            level: level - 1,
            perm: self.perm(protected),
        }
    }
}

impl EncodeFormat for DmaTableFormat {
    fn encode_table(&self, level: u8, table: u64, perm: Perm) -> u64 {
        let prot = if perm.contains(Perm::WRITE) {
            0
        } else {
            PROTECTED
        };
        if level == level::SEGMENT {
            (table & SEGMENT_ORIGIN_MASK) | prot
        } else {
            (table & REGION_ORIGIN_MASK) | Self::expected_type(level) | TABLE_LENGTH_MASK | prot
        }
    }

    fn encode_leaf(&self, level: u8, addr: u64, perm: Perm) -> Option<u64> {
        if perm.intersection(Perm::RW).is_empty() {
            return None;
        }
        let prot = if perm.contains(Perm::WRITE) {
            0
        } else {
            PROTECTED
        };
        match level {
            level::PAGE => Some((addr & PTE_FRAME_MASK) | prot),
            level::SEGMENT => Some((addr & SEGMENT_FRAME_MASK) | SEGMENT_FC | prot),
            _ => None,
        }
    }
}

/// The value of an invalid entry in a table at `level`, as Linux fills new tables.
pub fn invalid_entry(level: u8) -> u64 {
    if level == level::PAGE {
        PTE_INVALID
    } else {
        TABLE_INVALID | (u64::from(level.saturating_sub(1)) << 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> DmaTableFormat {
        DmaTableFormat::new(Designation::RegionThird, false)
    }

    #[test]
    fn geometry() {
        let f = rt();
        assert_eq!(f.top_level(), 2);
        assert_eq!(f.level_shift(0), 12);
        assert_eq!(f.level_shift(1), 20);
        assert_eq!(f.level_shift(2), 31);
        assert_eq!(f.iova_bits(), 42);
        let f5 = DmaTableFormat::new(Designation::RegionFirst, false);
        assert_eq!(f5.level_shift(4), 53);
        assert_eq!(f5.level_shift(4) + f5.index_bits(4), 64);
        assert_eq!(
            DmaTableFormat::new(Designation::RegionSecond, false).level_shift(3) + 11,
            53
        );
    }

    #[test]
    fn decode_entries() {
        let f = rt();
        // Linux's region-third entry: origin | TT RTX | TL 3.
        assert_eq!(
            f.decode(2, 0x12_4000 | 0x7),
            Decoded::Table {
                addr: 0x12_4000,
                level: 1,
                perm: Perm::RW
            }
        );
        assert_eq!(f.decode(2, 0), Decoded::Reserved);
        assert_eq!(f.classify(2, 0), Some(TableError::InvalidEntry));
        // Invalid wins over everything.
        assert_eq!(f.decode(2, 0xffff_0000_0000_0020 | 0xc0), Decoded::Empty);
        assert_eq!(
            f.classify(2, 0x12_4000 | 0x6),
            Some(TableError::TableLength)
        );
        assert_eq!(
            f.classify(2, 0x12_4000 | 0x47),
            Some(TableError::TableLength)
        );
        assert_eq!(f.classify(2, 0x12_4000 | 0x3), Some(TableError::TableType));
        assert_eq!(f.classify(2, 0x12_4000 | 0xb), Some(TableError::TableType));
        // Segment entries: TT 0, page-table origin 2 KiB aligned, protection.
        assert_eq!(
            f.decode(1, 0x5800 | PROTECTED),
            Decoded::Table {
                addr: 0x5800,
                level: 0,
                perm: Perm::READ
            }
        );
        assert_eq!(f.classify(1, 0x5800 | 0x4), Some(TableError::TableType));
        assert_eq!(
            f.decode(1, 0x30_0000 | SEGMENT_FC),
            Decoded::Leaf {
                addr: 0x30_0000,
                size_log2: 20,
                perm: Perm::RW
            }
        );
        // Page-table entries: frame 0 is valid (errata 5), 0x400 invalid.
        assert_eq!(
            f.decode(0, PROTECTED),
            Decoded::Leaf {
                addr: 0,
                size_log2: 12,
                perm: Perm::READ
            }
        );
        assert_eq!(f.decode(0, 0x400), Decoded::Empty);
        assert_eq!(f.decode(0, 0), Decoded::Reserved);
        // The IOTA protection bit makes leaves read-only.
        let ro = DmaTableFormat::new(Designation::RegionThird, true);
        assert_eq!(
            ro.decode(0, 0x9000),
            Decoded::Leaf {
                addr: 0x9000,
                size_log2: 12,
                perm: Perm::READ
            }
        );
    }

    #[test]
    fn encode_round_trips() {
        let f = DmaTableFormat::new(Designation::RegionFirst, false);
        for level in 1..=4u8 {
            let raw = f.encode_table(level, 0x8_0000, Perm::RW);
            assert_eq!(
                f.decode(level, raw),
                Decoded::Table {
                    addr: 0x8_0000,
                    level: level - 1,
                    perm: Perm::RW
                },
                "level {level}"
            );
            assert_eq!(f.decode(level, invalid_entry(level)), Decoded::Empty);
        }
        assert_eq!(f.encode_table(2, 0x4000, Perm::RW), 0x4007);
        let leaf = f.encode_leaf(0, 0x7000, Perm::READ).unwrap();
        assert_eq!(leaf, 0x7200);
        assert!(f.encode_leaf(2, 0, Perm::RW).is_none());
        assert!(f.encode_leaf(0, 0x1000, Perm::empty()).is_none());
        assert_eq!(f.decode(0, invalid_entry(0)), Decoded::Empty);
    }
}
