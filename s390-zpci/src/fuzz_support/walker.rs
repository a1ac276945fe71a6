//! Fuzz target `walker_s390`: the shared walker over hostile s390 DMA translation tables
//! ([`DmaTableFormat`]: region-third, -second or -first designation, read-only or not,
//! big-endian entries): region and segment entries with right or wrong table types and
//! lengths, invalid entries that keep their origin, zero entries, 1 MiB segment frames,
//! page-table entries and raw values, in 32 pages of RAM with a hole above; any root, IOVA
//! range and lookups.
//!
//! Oracles ([`check_walk`]): never panics; the enumeration is sorted, non-overlapping and
//! aligned ([`check_enumeration`]); every leaf is a 4 KiB page (page-table entry) or a 1 MiB
//! frame (segment entry), readable, and read-only when the anchor says so; a lookup of the
//! first in-range address of every enumerated leaf finds that leaf (s390 leaves never exceed
//! their slot); every successful lookup contains its address and, in a completely
//! enumerated range, was enumerated.

use crate::format::{
    Designation, DmaTableFormat, PTE_FRAME_MASK, SEGMENT_FRAME_MASK, invalid_entry, level,
};
use arbitrary::Arbitrary;
use viommu_shared::fuzz_support::walker::{enumerate, masked_range, store_entry};
use viommu_shared::fuzz_support::{check_enumeration, check_lookups};
use viommu_shared::pt::{ByteOrder, EncodeFormat, Leaf, PageTableFormat, WalkLimits, Walker};
use viommu_shared::testing::guest_memory;
use viommu_shared::{AddrRange, Perm};
use vm_memory::GuestMemoryMmap;

/// Guest RAM of the target: 32 pages (8 region or segment tables) at 0; everything above is
/// a hole.
pub const RAM: u64 = 32 * 4096;
/// Most table entries one enumeration reads: enough for every table of the RAM pages to be
/// visited several times over through aliases (and for the work limit to be reached), small
/// enough that one input costs microseconds.
pub const WALK_ENTRIES: u64 = 1 << 12;
/// Most entry writes one input makes.
pub const MAX_WRITES: usize = 256;

/// The table's designation and where the walk looks.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Designation: region-third, -second, -first (`% 3`).
    pub designation: u8,
    /// The anchor's protection bit: everything read-only.
    pub read_only: bool,
    /// Root table (`% 9` × 16 KiB: 8 is outside RAM).
    pub root: u8,
    /// Range start (reduced modulo the input width).
    pub start: u64,
    /// Range length: `len` masked to `len_bits % 65` bits.
    pub len: u64,
    /// See `len`.
    pub len_bits: u8,
    /// Addresses looked up.
    pub lookups: [u64; 4],
}

/// One entry written into guest memory (big-endian).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryWrite {
    /// Entry slot (`× 8`, modulo RAM).
    pub slot: u16,
    /// What to write (`% 6`): table entry for level `level` (a region entry to the 16 KiB
    /// table `(hint & 0xff) % 9`, a segment entry to the 2 KiB page table
    /// `(hint & 0xff) % 65`), leaf (page-table entry or segment frame), invalid entry keeping
    /// an origin, raw `hint`, zero, table entry with table-type/length bits flipped.
    pub kind: u8,
    /// Level the entry is encoded for (`% 5`).
    pub level: u8,
    /// Address, permission and noise bits.
    pub hint: u64,
}

/// The value `w` writes for `fmt`.
pub fn entry_value(fmt: &DmaTableFormat, w: &EntryWrite) -> u64 {
    let lvl = w.level % 5;
    let h = w.hint;
    let perm = if h >> 63 != 0 { Perm::READ } else { Perm::RW };
    let table = |lvl: u8| {
        let lvl = lvl.max(level::SEGMENT);
        let addr = if lvl == level::SEGMENT {
            ((h & 0xff) % 65) * 0x800
        } else {
            ((h & 0xff) % 9) * 0x4000
        };
        fmt.encode_table(lvl, addr, perm)
    };
    match w.kind % 6 {
        0 => table(lvl),
        1 => {
            let (l, mask) = if lvl.is_multiple_of(2) {
                (level::PAGE, PTE_FRAME_MASK)
            } else {
                (level::SEGMENT, SEGMENT_FRAME_MASK)
            };
            fmt.encode_leaf(l, h & mask, perm).unwrap_or(h)
        }
        2 => invalid_entry(lvl) | (h & !0xfff),
        3 => h,
        4 => 0,
        _ => table(lvl) ^ (h & 0xcf),
    }
}

/// A decoded input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Format and walk.
    pub header: Header,
    /// Entry writes, in order.
    pub writes: Vec<EntryWrite>,
}

impl Input {
    /// Decodes the header, then entry writes until the data runs out.
    pub fn decode(data: &[u8]) -> Option<Input> {
        let (header, writes) = viommu_shared::fuzz_support::decode_steps(data, MAX_WRITES)?;
        Some(Input { header, writes })
    }

    /// The format.
    pub fn format(&self) -> DmaTableFormat {
        let d = [
            Designation::RegionThird,
            Designation::RegionSecond,
            Designation::RegionFirst,
        ][usize::from(self.header.designation % 3)];
        DmaTableFormat::new(d, self.header.read_only)
    }

    /// The IOVA range walked.
    pub fn range(&self, fmt: &DmaTableFormat) -> AddrRange {
        let h = &self.header;
        masked_range(h.start, h.len, h.len_bits, fmt.iova_bits())
    }

    /// Encodes the input so that [`decode`](Self::decode) gives it back.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = super::Encoder::new();
        let h = &self.header;
        e.u8(h.designation)
            .bool(h.read_only)
            .u8(h.root)
            .u64(h.start)
            .u64(h.len)
            .u8(h.len_bits);
        for l in h.lookups {
            e.u64(l);
        }
        for w in &self.writes {
            e.u16(w.slot).u8(w.kind).u8(w.level).u64(w.hint);
        }
        e.into_bytes()
    }
}

/// Guest memory holding `input`'s writes.
pub fn memory(input: &Input, fmt: &DmaTableFormat) -> GuestMemoryMmap {
    let mem = guest_memory(&[(0, RAM as usize)]);
    for w in &input.writes {
        let value = entry_value(fmt, w);
        store_entry(&mem, RAM, u64::from(w.slot), ByteOrder::Big, value);
    }
    mem
}

/// Runs `input`; the first oracle failure is returned.
pub fn run(input: &Input) -> Result<(), String> {
    let fmt = input.format();
    let mem = memory(input, &fmt);
    let root = u64::from(input.header.root % 9) * 0x4000;
    let w = Walker::new(&fmt, &mem, root).with_limits(WalkLimits {
        max_entries: WALK_ENTRIES,
    });
    let range = input.range(&fmt);
    let (leaves, complete) = enumerate(&w, range);
    check_walk(&fmt, &w, range, &leaves, complete, &input.header.lookups)
}

/// The oracles over one enumeration `leaves` of `range` (`complete` if it did not stop at
/// the work limit) and lookups of `lookups`.
pub fn check_walk(
    fmt: &DmaTableFormat,
    w: &Walker<'_, DmaTableFormat, GuestMemoryMmap>,
    range: AddrRange,
    leaves: &[Leaf],
    complete: bool,
    lookups: &[u64],
) -> Result<(), String> {
    check_enumeration(leaves, range).map_err(|e| format!("enumeration: {e}"))?;
    for l in leaves {
        let size_ok = matches!((l.level, l.size), (0, 0x1000) | (1, 0x10_0000));
        let perm_ok = l.perm.contains(Perm::READ)
            && Perm::RW.contains(l.perm)
            && !(fmt.read_only() && l.perm.contains(Perm::WRITE));
        if !size_ok || !perm_ok {
            return Err(format!("leaf {l:?} is not a page {fmt:?} can map"));
        }
    }
    // Leaves of this format never exceed their slot.
    check_lookups(&|a| w.lookup(a), range, leaves, complete, lookups)
}

/// The fuzz target: decodes `data` and runs it; panics when an oracle fails.
pub fn walker(data: &[u8]) {
    let Some(input) = Input::decode(data) else {
        return;
    };
    if let Err(e) = run(&input) {
        panic!("walker_s390 oracle: {e}\n{input:?}");
    }
}
