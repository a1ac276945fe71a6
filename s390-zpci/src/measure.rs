//! Function measurement block (A.8.4), format 0, big-endian in guest memory.
//!
//! | offset | field |
//! |---|---|
//! | 0x00 | u32 format (0) |
//! | 0x04 | u32 samples (updates so far) |
//! | 0x08 | u64 last update (TOD clock; bit 0 set while an update is in progress) |
//! | 0x10 | u64 PCI load operations |
//! | 0x18 | u64 PCI store operations |
//! | 0x20 | u64 PCI store-block operations |
//! | 0x28 | u64 RPCIT operations |
//! | 0x30 | u64 DMA bytes read |
//! | 0x38 | u64 DMA bytes written |
//!
//! QEMU writes the block only from a timer every `mui` ms. The model stores each counter into
//! the block as soon as it changes (so the guest always reads fresh counters, and tests can
//! check them without a clock), and the VMM's timer calls
//! [`Zpci::update_measurements`](crate::Zpci::update_measurements) with the TOD clock to bump
//! the sample count and the time stamp. DMA byte counters stay 0: emulated DMA is translated
//! page by page, not byte by byte, and passthrough DMA is invisible to the model.

use std::sync::atomic::Ordering;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Length of the block in bytes.
pub const FMB_LEN: u64 = 0x40;

/// Which counter an operation bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// PCILG.
    Load,
    /// PCISTG.
    Store,
    /// PCISTB.
    StoreBlock,
    /// RPCIT.
    Rpcit,
}

impl Counter {
    fn offset(self) -> u64 {
        match self {
            Counter::Load => 0x10,
            Counter::Store => 0x18,
            Counter::StoreBlock => 0x20,
            Counter::Rpcit => 0x28,
        }
    }

    fn index(self) -> usize {
        match self {
            Counter::Load => 0,
            Counter::Store => 1,
            Counter::StoreBlock => 2,
            Counter::Rpcit => 3,
        }
    }
}

/// The counters of one function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FmbCounters {
    /// PCILG operations.
    pub loads: u64,
    /// PCISTG operations.
    pub stores: u64,
    /// PCISTB operations.
    pub store_blocks: u64,
    /// RPCIT operations.
    pub rpcits: u64,
    /// Updates written (samples).
    pub samples: u32,
}

/// Measurement state of one function.
#[derive(Clone, Debug, Default)]
pub(crate) struct Measurement {
    addr: Option<u64>,
    counters: [u64; 4],
    samples: u32,
}

/// The block could not be written; measurement has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FmbWriteFailed {
    pub addr: u64,
}

impl Measurement {
    /// The block address while measuring.
    pub fn addr(&self) -> Option<u64> {
        self.addr
    }

    /// The counters.
    pub fn counters(&self) -> FmbCounters {
        FmbCounters {
            loads: self.counters[0],
            stores: self.counters[1],
            store_blocks: self.counters[2],
            rpcits: self.counters[3],
            samples: self.samples,
        }
    }

    /// Starts measuring into the block at `addr` (counters restart from zero) and writes
    /// the initial block.
    pub fn start(&mut self, mem: &GuestMemoryMmap, addr: u64) -> Result<(), FmbWriteFailed> {
        self.addr = Some(addr);
        self.counters = [0; 4];
        self.samples = 0;
        self.write_all(mem, 0)
    }

    /// Address, counters and sample count, for a snapshot.
    pub fn saved(&self) -> (Option<u64>, [u64; 4], u32) {
        (self.addr, self.counters, self.samples)
    }

    /// Measurement state loaded from a snapshot (nothing is written to the block: it is in
    /// guest memory already).
    pub fn restored(addr: Option<u64>, counters: [u64; 4], samples: u32) -> Measurement {
        Measurement {
            addr,
            counters,
            samples,
        }
    }

    /// Stops measuring.
    pub fn stop(&mut self) {
        self.addr = None;
    }

    /// Counts one operation and stores the counter into the block.
    pub fn count(&mut self, mem: &GuestMemoryMmap, c: Counter) -> Result<(), FmbWriteFailed> {
        let v = &mut self.counters[c.index()];
        *v = v.wrapping_add(1);
        let value = *v;
        let Some(addr) = self.addr else {
            return Ok(());
        };
        store(mem, addr, c.offset(), value).inspect_err(|_| self.stop())
    }

    /// One timer update: sets the in-progress bit, writes the counters and sample count,
    /// then the time stamp `tod` (shifted left one bit, bit 0 clear), like QEMU.
    pub fn update(&mut self, mem: &GuestMemoryMmap, tod: u64) -> Result<(), FmbWriteFailed> {
        if self.addr.is_none() {
            return Ok(());
        }
        self.samples = self.samples.wrapping_add(1);
        self.write_all(mem, tod)
    }

    fn write_all(&mut self, mem: &GuestMemoryMmap, tod: u64) -> Result<(), FmbWriteFailed> {
        let Some(addr) = self.addr else {
            return Ok(());
        };
        let res = (|| {
            store(mem, addr, 0x08, 1)?;
            store32(mem, addr, 0x00, 0)?;
            store32(mem, addr, 0x04, self.samples)?;
            for c in [
                Counter::Load,
                Counter::Store,
                Counter::StoreBlock,
                Counter::Rpcit,
            ] {
                store(mem, addr, c.offset(), self.counters[c.index()])?;
            }
            store(mem, addr, 0x30, 0)?;
            store(mem, addr, 0x38, 0)?;
            store(mem, addr, 0x08, tod << 1)
        })();
        res.inspect_err(|_| self.stop())
    }
}

fn store(mem: &GuestMemoryMmap, base: u64, off: u64, v: u64) -> Result<(), FmbWriteFailed> {
    let a = base.checked_add(off).ok_or(FmbWriteFailed { addr: base })?;
    mem.store(v.to_be(), GuestAddress(a), Ordering::Release)
        .map_err(|_| FmbWriteFailed { addr: base })
}

fn store32(mem: &GuestMemoryMmap, base: u64, off: u64, v: u32) -> Result<(), FmbWriteFailed> {
    let a = base.checked_add(off).ok_or(FmbWriteFailed { addr: base })?;
    mem.store(v.to_be(), GuestAddress(a), Ordering::Release)
        .map_err(|_| FmbWriteFailed { addr: base })
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::testing::guest_memory;

    fn be64(mem: &GuestMemoryMmap, a: u64) -> u64 {
        u64::from_be(mem.read_obj(GuestAddress(a)).unwrap())
    }

    #[test]
    fn counters_reach_guest_memory_big_endian() {
        let mem = guest_memory(&[(0, 0x10000)]);
        let mut m = Measurement::default();
        m.count(&mem, Counter::Rpcit).unwrap();
        m.start(&mem, 0x1000).unwrap();
        assert_eq!(be64(&mem, 0x1028), 0);
        m.count(&mem, Counter::Rpcit).unwrap();
        m.count(&mem, Counter::Rpcit).unwrap();
        m.count(&mem, Counter::Load).unwrap();
        assert_eq!(be64(&mem, 0x1028), 2);
        assert_eq!(be64(&mem, 0x1010), 1);
        m.update(&mem, 0x1234).unwrap();
        assert_eq!(be64(&mem, 0x1008), 0x2468);
        assert_eq!(be64(&mem, 0x1000) & 0xffff_ffff, 1);
        assert_eq!(m.counters().samples, 1);
        // A block outside RAM stops measurement.
        assert!(m.start(&mem, 0xfff0).is_err());
        assert_eq!(m.addr(), None);
    }
}
