//! Address, range and page-size types shared by every model.
//!
//! Guest-physical addresses use `vm_memory::GuestAddress`; I/O virtual addresses get their own
//! newtype so the two can never be mixed up at a seam.

use std::fmt;

pub use vm_memory::GuestAddress;

/// An I/O virtual address: what a device puts on the bus before the IOMMU translates it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iova(pub u64);

impl fmt::LowerHex for Iova {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// Size of the smallest page every supported IOMMU format and host backend uses (4 KiB).
pub const PAGE_SIZE_4K: u64 = 1 << 12;
/// A 2 MiB large page.
pub const PAGE_SIZE_2M: u64 = 1 << 21;
/// A 1 GiB large page.
pub const PAGE_SIZE_1G: u64 = 1 << 30;

/// A half-open range `[start, end)` of 64-bit addresses.
///
/// `end` may be `u64::MAX` to mean "up to the top of the 64-bit space" (the last byte itself
/// is then not covered; no IOMMU format here can map it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    /// First address in the range.
    pub start: u64,
    /// First address past the range.
    pub end: u64,
}

impl AddrRange {
    /// The range `[start, end)`; an inverted range is empty.
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }

    /// The range starting at `start` with `len` bytes, clamped at the top of the address space.
    pub const fn from_len(start: u64, len: u64) -> Self {
        Self {
            start,
            end: start.saturating_add(len),
        }
    }

    /// Number of bytes covered (0 for an empty or inverted range).
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// True when the range covers no byte.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// True when `addr` lies in the range.
    pub const fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end
    }

    /// True when the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &AddrRange) -> bool {
        self.start < other.end && other.start < self.end && !self.is_empty() && !other.is_empty()
    }

    /// The common part of the two ranges (empty if they do not overlap).
    pub fn intersect(&self, other: &AddrRange) -> AddrRange {
        let r = AddrRange::new(self.start.max(other.start), self.end.min(other.end));
        if r.is_empty() {
            AddrRange::default()
        } else {
            r
        }
    }

    /// The smallest range covering both (ignores empty operands).
    pub fn union_hull(&self, other: &AddrRange) -> AddrRange {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        AddrRange::new(self.start.min(other.start), self.end.max(other.end))
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start, self.end)
    }
}

/// Rounds `v` down to a multiple of the power of two `align`.
pub const fn align_down(v: u64, align: u64) -> u64 {
    v & !(align - 1)
}

/// Rounds `v` up to a multiple of the power of two `align`, saturating at the top.
pub const fn align_up(v: u64, align: u64) -> u64 {
    match v.checked_add(align - 1) {
        Some(x) => x & !(align - 1),
        None => !(align - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_ops() {
        let a = AddrRange::new(0x1000, 0x3000);
        let b = AddrRange::new(0x2000, 0x5000);
        assert!(a.overlaps(&b));
        assert_eq!(a.intersect(&b), AddrRange::new(0x2000, 0x3000));
        assert_eq!(a.union_hull(&b), AddrRange::new(0x1000, 0x5000));
        assert!(!a.overlaps(&AddrRange::new(0x3000, 0x4000)));
        assert_eq!(AddrRange::from_len(u64::MAX - 1, 10).end, u64::MAX);
        assert_eq!(align_up(0x1001, 0x1000), 0x2000);
        assert_eq!(align_down(0x1fff, 0x1000), 0x1000);
        assert_eq!(align_up(u64::MAX, 0x1000), !0xfff);
    }
}
