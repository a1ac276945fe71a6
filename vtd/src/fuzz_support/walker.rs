//! Fuzz target `walker_vtd`: the shared walker over hostile VT-d second-stage tables
//! ([`SecondStage`], 3/4/5 levels, any host address width, with or without SNP and 2 MiB /
//! 1 GiB pages): structured and raw entry writes into 16 pages of RAM with a hole above, any
//! root, IOVA range and lookups.
//!
//! Oracles ([`check_walk`]): never panics; the enumeration is sorted, non-overlapping and
//! aligned ([`check_enumeration`]); every leaf is a page the format can map (4 KiB, or 2 MiB /
//! 1 GiB when advertised, at an address below the host address width); a lookup of
//! the first in-range address of every enumerated leaf finds that leaf (second-stage leaves
//! never exceed their slot); every successful lookup contains its address and, in a
//! completely enumerated range, was enumerated.

use crate::format::SecondStage;
use arbitrary::Arbitrary;
use viommu_shared::AddrRange;
use viommu_shared::fuzz_support::walker::{enumerate, masked_range, store_entry};
use viommu_shared::fuzz_support::{check_enumeration, check_lookups};
use viommu_shared::pt::{ByteOrder, EncodeFormat, Leaf, PageTableFormat, WalkLimits, Walker};
use viommu_shared::testing::guest_memory;
use viommu_shared::{Perm, pt::Decoded};
use vm_memory::GuestMemoryMmap;

/// Guest RAM of the target: 16 pages at 0; everything above is a hole.
pub const RAM: u64 = 16 * 4096;
/// Most table entries one enumeration reads: enough for every table of the RAM pages to be
/// visited several times over through aliases (and for the work limit to be reached), small
/// enough that one input costs microseconds.
pub const WALK_ENTRIES: u64 = 1 << 12;
/// Most entry writes one input makes.
pub const MAX_WRITES: usize = 256;

/// The table's format and where the walk looks.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Depth: 3 + `levels % 3`.
    pub levels: u8,
    /// Host address width: 12 + `haw % 41`.
    pub haw: u8,
    /// Bit 0: SNP accepted; bit 1: 2 MiB pages; bit 2: 1 GiB pages.
    pub features: u8,
    /// Root page (`% 18`: pages 16 and 17 are outside RAM).
    pub root_page: u8,
    /// Range start (reduced modulo the input width).
    pub start: u64,
    /// Range length: `len` masked to `len_bits % 65` bits.
    pub len: u64,
    /// See `len`.
    pub len_bits: u8,
    /// Addresses looked up.
    pub lookups: [u64; 4],
}

/// One entry written into guest memory.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryWrite {
    /// Entry slot (`× 8`, modulo RAM).
    pub slot: u16,
    /// What to write (`% 5`): table pointer (to page `(hint & 0xff) % 17`), leaf, leaf with
    /// noise bits, raw `hint`, zero.
    pub kind: u8,
    /// Level the entry is encoded for (`% 5`).
    pub level: u8,
    /// Address, permission and noise bits.
    pub hint: u64,
}

fn perm(hint: u64) -> Perm {
    [Perm::READ, Perm::WRITE, Perm::RW][((hint >> 60) % 3) as usize]
}

/// The value `w` writes for `fmt`.
pub fn entry_value(fmt: &SecondStage, w: &EntryWrite) -> u64 {
    let level = w.level % 5;
    let h = w.hint;
    match w.kind % 5 {
        // A pointer to one of the RAM pages (or just past RAM).
        0 => fmt.encode_table(level.max(1), ((h & 0xff) % 17) * 4096, perm(h)),
        1 | 2 => {
            let size = 1u64 << (12 + 9 * u32::from(level % 3));
            let addr = h & 0x000f_ffff_ffff_f000 & !(size - 1);
            let leaf = fmt.encode_leaf(level % 3, addr, perm(h)).unwrap_or(h);
            if w.kind % 5 == 2 {
                // Ignored, reserved and SNP bits.
                leaf | (h & 0xfff0_0000_0000_0f78)
            } else {
                leaf
            }
        }
        3 => h,
        _ => 0,
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
    pub fn format(&self) -> SecondStage {
        let h = &self.header;
        SecondStage::new(
            3 + h.levels % 3,
            12 + u32::from(h.haw % 41),
            h.features & 1 != 0,
            h.features & 2 != 0,
            h.features & 4 != 0,
        )
    }

    /// The IOVA range walked.
    pub fn range(&self, fmt: &SecondStage) -> AddrRange {
        let h = &self.header;
        masked_range(h.start, h.len, h.len_bits, fmt.iova_bits())
    }

    /// Encodes the input so that [`decode`](Self::decode) gives it back.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = super::Encoder::new();
        let h = &self.header;
        e.u8(h.levels)
            .u8(h.haw)
            .u8(h.features)
            .u8(h.root_page)
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
pub fn memory(input: &Input, fmt: &SecondStage) -> GuestMemoryMmap {
    let mem = guest_memory(&[(0, RAM as usize)]);
    for w in &input.writes {
        let value = entry_value(fmt, w);
        store_entry(&mem, RAM, u64::from(w.slot), ByteOrder::Little, value);
    }
    mem
}

/// Runs `input`; the first oracle failure is returned.
pub fn run(input: &Input) -> Result<(), String> {
    let fmt = input.format();
    let mem = memory(input, &fmt);
    let root = u64::from(input.header.root_page % 18) * 4096;
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
    fmt: &SecondStage,
    w: &Walker<'_, SecondStage, GuestMemoryMmap>,
    range: AddrRange,
    leaves: &[Leaf],
    complete: bool,
    lookups: &[u64],
) -> Result<(), String> {
    check_enumeration(leaves, range).map_err(|e| format!("enumeration: {e}"))?;
    let haw_end = 1u128 << probe_haw(fmt);
    for l in leaves {
        let size_ok = match l.size {
            0x1000 => l.level == 0,
            0x20_0000 => l.level == 1 && large_ok(fmt, 1),
            0x4000_0000 => l.level == 2 && large_ok(fmt, 2),
            _ => false,
        };
        if !size_ok || u128::from(l.addr) >= haw_end {
            return Err(format!("leaf {l:?} is not a page {fmt:?} can map"));
        }
    }
    // Leaves of this format never exceed their slot.
    check_lookups(&|a| w.lookup(a), range, leaves, complete, lookups)
}

/// Whether `fmt` accepts a large leaf at `level`, asked through its decoder.
fn large_ok(fmt: &SecondStage, level: u8) -> bool {
    matches!(fmt.decode(level, (1 << 7) | 3), Decoded::Leaf { .. })
}

/// The host address width of `fmt`: the lowest address bit a 4 KiB leaf rejects.
fn probe_haw(fmt: &SecondStage) -> u32 {
    (12..52)
        .find(|&b| fmt.decode(0, (1u64 << b) | 3) == Decoded::Reserved)
        .unwrap_or(52)
}

/// The fuzz target: decodes `data` and runs it; panics when an oracle fails.
pub fn walker(data: &[u8]) {
    let Some(input) = Input::decode(data) else {
        return;
    };
    if let Err(e) = run(&input) {
        panic!("walker_vtd oracle: {e}\n{input:?}");
    }
}
