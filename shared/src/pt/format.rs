//! The [`PageTableFormat`] trait: what an architecture says about its I/O page tables.

use crate::perm::Perm;

/// Byte order of the entries in guest memory.
///
/// VT-d and AMD-Vi tables are little-endian; s390 DMA tables are big-endian. The format says
/// which; the walker never assumes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteOrder {
    /// Least significant byte first (x86 IOMMUs).
    Little,
    /// Most significant byte first (s390).
    Big,
}

impl ByteOrder {
    /// Converts the bytes of an entry, as loaded natively from memory, to its value.
    pub fn decode(self, native: u64) -> u64 {
        match self {
            ByteOrder::Little => u64::from_le(native),
            ByteOrder::Big => u64::from_be(native),
        }
    }

    /// Converts an entry value to the native word whose bytes are stored in memory.
    pub fn encode(self, value: u64) -> u64 {
        match self {
            ByteOrder::Little => value.to_le(),
            ByteOrder::Big => value.to_be(),
        }
    }
}

/// One decoded 64-bit table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not present: nothing is mapped through this slot.
    Empty,
    /// Points to a lower-level table.
    Table {
        /// Guest-physical address of the next table.
        addr: u64,
        /// Level of that table; normally one below, lower if the format skips levels
        /// (AMD-Vi). Must be strictly lower than the current level, or the walker faults.
        level: u8,
        /// Permissions this entry grants to everything below it (ANDed along the walk).
        perm: Perm,
    },
    /// Maps a page.
    Leaf {
        /// Guest-physical address of the page (low bits below the page size are ignored).
        addr: u64,
        /// log2 of the page size; at least the slot size of the level.
        size_log2: u8,
        /// Permissions of the page.
        perm: Perm,
    },
    /// Malformed: reserved bits set or an encoding the format forbids.
    Reserved,
}

/// What an architecture says about its I/O page tables. Levels are numbered from 0 (the table
/// whose entries map the smallest pages) up to [`top_level`](Self::top_level) (the root).
///
/// Every table entry is 64 bits wide.
pub trait PageTableFormat {
    /// Byte order of entries in guest memory.
    fn byte_order(&self) -> ByteOrder;

    /// Level of the root table.
    fn top_level(&self) -> u8;

    /// How many IOVA bits index a table at `level`.
    fn index_bits(&self, level: u8) -> u32;

    /// log2 of the smallest page (the slot size of level 0). 12 for every format here.
    fn page_shift(&self) -> u32 {
        12
    }

    /// Input address width: IOVAs at or above `1 << iova_bits()` cannot be translated.
    fn iova_bits(&self) -> u32;

    /// Decodes the raw (already byte-swapped) entry `raw` found in a table at `level`.
    fn decode(&self, level: u8, raw: u64) -> Decoded;

    /// Position of the lowest IOVA bit indexing a table at `level`.
    fn level_shift(&self, level: u8) -> u32 {
        let mut shift = self.page_shift();
        for l in 0..level {
            shift += self.index_bits(l);
        }
        shift
    }
}

/// The inverse of [`PageTableFormat::decode`], used to build tables (tests, fuzzing,
/// conformance scenarios, benchmarks). Models implement it next to their decoder.
pub trait EncodeFormat: PageTableFormat {
    /// Entry pointing to the table at `table` whose level is `level - 1`, granting `perm`.
    fn encode_table(&self, level: u8, table: u64, perm: Perm) -> u64;

    /// Entry at `level` mapping the page at `addr` of the slot size of `level` with `perm`, or
    /// `None` when the format cannot map a page of that size at that level.
    fn encode_leaf(&self, level: u8, addr: u64, perm: Perm) -> Option<u64>;
}
