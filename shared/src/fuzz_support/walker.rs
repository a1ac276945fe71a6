//! Fuzz target: the shared walker over hostile tables.

use super::oracle::{check_enumeration, check_lookups};
use crate::addr::AddrRange;
use crate::pt::{ByteOrder, Leaf, PageTableFormat, WalkLimits, Walker};
use crate::testing::{RadixFormat, guest_memory};
use arbitrary::{Arbitrary, Unstructured};
use std::sync::atomic::Ordering;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM of the target: 16 pages at 0; everything above is a hole.
const RAM: u64 = 16 * 4096;

/// One entry the input writes into guest memory.
#[derive(Arbitrary, Debug)]
struct EntryWrite {
    slot: u16,
    kind: u8,
    hint: u64,
}

#[derive(Arbitrary, Debug)]
struct Input {
    geometry: u8,
    big_endian: bool,
    root_page: u8,
    writes: Vec<EntryWrite>,
    start: u64,
    len: u64,
    lookups: Vec<u64>,
}

/// Runs one input: builds a hostile table, enumerates a range and looks up addresses;
/// panics if an oracle fails.
pub fn walker(data: &[u8]) {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let order = if input.big_endian {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };
    let fmt = match input.geometry % 6 {
        5 => RadixFormat::s390_like(),
        n => RadixFormat::x86_like(n + 1, order),
    };
    let mem = guest_memory(&[(0, RAM as usize)]);
    for w in input.writes.iter().take(256) {
        let addr = (u64::from(w.slot) * 8) % RAM;
        let value = match w.kind % 4 {
            // A table pointer to one of the RAM pages (or just past RAM).
            0 => ((w.hint % 17) * 4096) | 3 | (w.hint & 0x80),
            // A 4K page or large-page leaf.
            1 => (w.hint & 0x000f_ffff_ffff_f000) | 1 | ((w.hint >> 60) & 2) | (w.hint & 0x80),
            // Anything at all.
            _ => w.hint,
        };
        let _ = mem.store(order.encode(value), GuestAddress(addr), Ordering::Relaxed);
    }
    let root = (u64::from(input.root_page) % 18) * 4096;
    let w = Walker::new(&fmt, &mem, root).with_limits(WalkLimits {
        max_entries: 1 << 16,
    });
    let range = AddrRange::from_len(input.start, input.len);
    let mut leaves: Vec<Leaf> = Vec::new();
    let done = w
        .for_each_leaf(range, &mut |l| leaves.push(l), &mut |_| {})
        .is_ok();
    if let Err(e) = check_enumeration(&leaves, range) {
        panic!("enumeration oracle: {e}");
    }
    // Leaves of this format never exceed their slot.
    let probes: Vec<u64> = input.lookups.iter().take(64).copied().collect();
    if let Err(e) = check_lookups(&|a| w.lookup(a), range, &leaves, done, &probes) {
        panic!("lookup oracle: {e}");
    }
}

/// The IOVA range a per-format walker input names: `start` masked to the format's
/// `iova_bits`, `len` masked to `len_bits % 65` bits (so every length scale is reached).
pub fn masked_range(start: u64, len: u64, len_bits: u8, iova_bits: u32) -> AddrRange {
    let mask = |v: u64, bits: u32| {
        if bits >= 64 {
            v
        } else {
            v & ((1u64 << bits) - 1)
        }
    };
    AddrRange::from_len(mask(start, iova_bits), mask(len, u32::from(len_bits % 65)))
}

/// Stores table entry `value` in byte order `order` at entry slot `slot` of the `ram` bytes
/// of guest memory at 0 (slots wrap around); a store that fails is skipped.
pub fn store_entry(mem: &GuestMemoryMmap, ram: u64, slot: u64, order: ByteOrder, value: u64) {
    let addr = slot.wrapping_mul(8) % ram;
    let _ = mem.store(order.encode(value), GuestAddress(addr), Ordering::Relaxed);
}

/// Enumerates `range` through `w`: the leaves, and whether the walk completed (did not stop
/// at its work limit).
pub fn enumerate<F: PageTableFormat + ?Sized>(
    w: &Walker<'_, F, GuestMemoryMmap>,
    range: AddrRange,
) -> (Vec<Leaf>, bool) {
    let mut leaves = Vec::new();
    let complete = w
        .for_each_leaf(range, &mut |l| leaves.push(l), &mut |_| {})
        .is_ok();
    (leaves, complete)
}
