//! Test support: a reference page-table format and guest-memory helpers.
//!
//! The real formats live in the model crates; this one exists so the shared core can be
//! tested, benchmarked, fuzzed and demonstrated on its own with any geometry and byte order.

pub mod guest;
pub mod radix;

pub use guest::{Edit, GuestTables, Truth, canonical};
pub use radix::RadixFormat;

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Anonymous guest memory with one region per `(start, len)`.
///
/// # Panics
/// If the ranges are invalid or the host cannot allocate them (test code only).
pub fn guest_memory(ranges: &[(u64, usize)]) -> GuestMemoryMmap {
    let r: Vec<(GuestAddress, usize)> = ranges.iter().map(|&(s, l)| (GuestAddress(s), l)).collect();
    GuestMemoryMmap::from_ranges(&r).expect("test guest memory")
}
