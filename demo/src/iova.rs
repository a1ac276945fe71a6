//! A DMA-API-like IOVA allocator, after Linux's `drivers/iommu/iova.c` as `dma-iommu` uses it:
//! sizes rounded up to a power of two of pages and aligned to it, first fit searching downwards
//! from the last allocation (the cached node) and retrying from the top, and per-size caches
//! of freed ranges (the rcaches) for sizes up to 128 KiB, reused last-in first-out.

use std::collections::BTreeMap;
use viommu_shared::AddrRange;

const PAGE: u64 = 4096;
/// Orders (log2 of pages) served from the caches: 4 KiB .. 128 KiB
/// (`IOVA_RANGE_CACHE_MAX_SIZE`).
const CACHED_ORDERS: usize = 6;
/// Freed ranges kept per order (two per-CPU magazines of 128 entries).
const CACHE_DEPTH: usize = 256;

/// The allocator of one DMA domain.
#[derive(Clone, Debug)]
pub struct IovaAllocator {
    window: AddrRange,
    /// Allocated (or cached) blocks: start → end.
    allocated: BTreeMap<u64, u64>,
    /// Searches start below this address.
    cursor: u64,
    cache: Vec<Vec<u64>>,
}

/// The block an allocation of `len` bytes occupies: log2 of its pages, and its size.
pub fn block_of(len: u64) -> (u32, u64) {
    let pages = len.div_ceil(PAGE).max(1).next_power_of_two();
    (pages.trailing_zeros(), pages * PAGE)
}

impl IovaAllocator {
    /// An allocator handing out IOVAs inside `window` (page-aligned).
    pub fn new(window: AddrRange) -> Self {
        IovaAllocator {
            window,
            allocated: BTreeMap::new(),
            cursor: window.end,
            cache: vec![Vec::new(); CACHED_ORDERS],
        }
    }

    /// Where IOVAs come from.
    pub fn window(&self) -> AddrRange {
        self.window
    }

    /// Blocks allocated (including cached free ones).
    pub fn blocks(&self) -> usize {
        self.allocated.len()
    }

    /// An IOVA for `len` bytes, or `None` when the window is exhausted.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let (order, size) = block_of(len);
        if let Some(iova) = self.cache.get_mut(order as usize).and_then(|c| c.pop()) {
            return Some(iova);
        }
        if let Some(iova) = self.alloc_tree(size) {
            return Some(iova);
        }
        // Linux frees the caches and tries once more before failing.
        self.flush_caches();
        self.alloc_tree(size)
    }

    /// Returns the IOVA of an allocation of `len` bytes.
    pub fn free(&mut self, iova: u64, len: u64) {
        let (order, _) = block_of(len);
        if let Some(c) = self.cache.get_mut(order as usize)
            && c.len() < CACHE_DEPTH
        {
            c.push(iova);
            return;
        }
        self.release(iova);
    }

    fn release(&mut self, iova: u64) {
        if self.allocated.remove(&iova).is_some() && iova >= self.cursor {
            // The search restarts above the freed block (`__cached_rbnode_delete_update`).
            self.cursor = self
                .allocated
                .range(iova..)
                .next()
                .map_or(self.window.end, |(&s, _)| s);
        }
    }

    fn flush_caches(&mut self) {
        let cached: Vec<u64> = self.cache.iter_mut().flat_map(std::mem::take).collect();
        for iova in cached {
            self.release(iova);
        }
    }

    fn alloc_tree(&mut self, size: u64) -> Option<u64> {
        for top in [self.cursor, self.window.end] {
            if let Some(iova) = self.search_below(top, size) {
                self.allocated.insert(iova, iova + size);
                self.cursor = iova;
                return Some(iova);
            }
        }
        None
    }

    /// The highest free `size`-aligned block of `size` bytes ending at or below `top`.
    fn search_below(&self, top: u64, size: u64) -> Option<u64> {
        let mut hi = top;
        loop {
            let start = hi.checked_sub(size)? & !(size - 1);
            if start < self.window.start {
                return None;
            }
            match self.allocated.range(..start + size).next_back() {
                Some((&s, &e)) if e > start => hi = s,
                _ => return Some(start),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_aligned_top_down_with_caches() {
        let mut a = IovaAllocator::new(AddrRange::new(0x1000, 0x10_0000));
        let x = a.alloc(0x3000).unwrap(); // 12 KiB → a 16 KiB block
        assert_eq!(x, 0xfc000);
        let y = a.alloc(0x1000).unwrap();
        assert_eq!(y, 0xfb000);
        let z = a.alloc(0x8000).unwrap();
        assert_eq!(z, 0xf0000);
        // A freed 16 KiB block comes back from the cache.
        a.free(x, 0x3000);
        assert_eq!(a.alloc(0x4000), Some(x));
        // Large blocks are not cached: the search fills the hole below the cursor first.
        let big = a.alloc(0x40_000).unwrap();
        assert_eq!(big, 0x80000);
        a.free(big, 0x40_000);
        assert_eq!(a.alloc(0x40_000), Some(big));
        // Exhaustion: nothing 1 MiB-sized fits any more.
        assert_eq!(a.alloc(0x10_0000), None);
        // Everything handed out is disjoint and inside the window.
        let mut seen = Vec::new();
        let mut b = IovaAllocator::new(AddrRange::new(0x1000, 0x100_0000));
        for i in 0..200u64 {
            let len = 0x1000 << (i % 7);
            let iova = b.alloc(len).unwrap();
            assert_eq!(iova % block_of(len).1, 0);
            seen.push((iova, iova + block_of(len).1));
            if i % 3 == 0 {
                let (s, e) = seen.remove(0);
                b.free(s, e - s);
            }
        }
        seen.sort();
        assert!(seen.windows(2).all(|w| w[0].1 <= w[1].0));
        assert!(seen.iter().all(|&(s, e)| s >= 0x1000 && e <= 0x100_0000));
    }
}
