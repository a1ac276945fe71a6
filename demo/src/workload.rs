//! The storage-like request stream: deterministic for a seed, independent of how the IOMMU
//! answers (so both strategies see exactly the same guest workload).

use crate::layout::DATA;
use viommu_shared::fuzz_support::XorShift;

const PAGE: u64 = 4096;

/// Parameters of a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// PRNG seed.
    pub seed: u64,
    /// DMA requests (each one map, and one unmap when it completes).
    pub requests: u64,
    /// Requests in flight before the oldest-or-random one completes (a storage queue depth).
    pub queue_depth: usize,
    /// s390 lazy unmaps: the flush queue is flushed with a global RPCIT when it holds this
    /// many buffers (Linux: 32768 entries or 1 s; scaled down to the run's length).
    pub flush_queue: usize,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: 0x5eed_d3a0,
            requests: 10_000,
            queue_depth: 32,
            flush_queue: 512,
        }
    }
}

/// Which way the data moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The device reads memory (a storage write): the IOMMU grants read only.
    ToDevice,
    /// The device writes memory (a storage read): the IOMMU grants write (s390: read-write,
    /// its tables have no write-only pages).
    FromDevice,
}

/// One physically contiguous piece of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address.
    pub gpa: u64,
    /// Bytes (a multiple of 4 KiB).
    pub len: u64,
}

/// One DMA request: a buffer made of segments, mapped at one contiguous IOVA range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Physically contiguous pieces, in IOVA order.
    pub segments: Vec<Segment>,
    /// Direction.
    pub direction: Direction,
    /// Chooses which in-flight request completes when the queue is full.
    pub pick: u64,
}

impl Request {
    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// True when the request has no bytes (never generated).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Buffer sizes of a storage workload and their weights (percent): mostly small blocks,
/// some large sequential transfers up to 2 MiB.
pub const SIZE_MIX: [(u64, u64); 10] = [
    (4 << 10, 30),
    (8 << 10, 10),
    (16 << 10, 10),
    (32 << 10, 10),
    (64 << 10, 15),
    (128 << 10, 10),
    (256 << 10, 7),
    (512 << 10, 4),
    (1 << 20, 2),
    (2 << 20, 2),
];

/// The seeded request generator.
#[derive(Clone, Debug)]
pub struct Generator {
    rng: XorShift,
}

impl Generator {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: XorShift::new(seed),
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn size(&mut self) -> u64 {
        let mut r = self.below(100);
        for (size, weight) in SIZE_MIX {
            if r < weight {
                return size;
            }
            r -= weight;
        }
        PAGE
    }

    /// A guest-physical address in the data area aligned to `align` (a power of two).
    fn gpa(&mut self, align: u64) -> u64 {
        let first = DATA.start.div_ceil(align) * align;
        let slots = (DATA.end - first) / align;
        first + self.below(slots) * align
    }

    /// The next request. Half the buffers are physically contiguous (large folios, huge
    /// pages); the others are scatter lists of 4–64 KiB pieces from the page allocator,
    /// each aligned to its size as buddy allocations are.
    pub fn next_request(&mut self) -> Request {
        let size = self.size();
        let mut segments = Vec::new();
        if self.below(2) == 0 {
            segments.push(Segment {
                gpa: self.gpa(size),
                len: size,
            });
        } else {
            let mut left = size;
            while left > 0 {
                // Largest power of two not above what is left, so every piece is a
                // power-of-two block.
                let cap = 1u64 << (63 - left.leading_zeros());
                let len = (PAGE << self.below(5)).min(cap);
                segments.push(Segment {
                    gpa: self.gpa(len),
                    len,
                });
                left -= len;
            }
        }
        let direction = if self.below(100) < 60 {
            Direction::FromDevice
        } else {
            Direction::ToDevice
        };
        Request {
            segments,
            direction,
            pick: self.rng.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_well_formed() {
        let mut a = Generator::new(7);
        let mut b = Generator::new(7);
        for _ in 0..1000 {
            let r = a.next_request();
            assert_eq!(r, b.next_request());
            assert!(SIZE_MIX.iter().any(|&(s, _)| s == r.len()));
            for s in &r.segments {
                assert!(s.len.is_power_of_two());
                assert_eq!(s.gpa % s.len, 0);
                assert!(s.gpa >= DATA.start && s.gpa + s.len <= DATA.end);
            }
        }
        assert_ne!(
            Generator::new(8).next_request().pick,
            Generator::new(7).next_request().pick
        );
    }
}
