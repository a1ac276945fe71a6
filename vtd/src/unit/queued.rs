//! Queued invalidation: fetching and validating descriptors between IQH and IQT.

use super::Unit;
use crate::events;
use crate::invalidation::{self, DescriptorError};
use crate::regs::*;
use viommu_shared::regs::RegisterFile;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

impl Unit {
    // ---- Queued invalidation --------------------------------------------------------

    /// Fetches and executes descriptors from IQH up to IQT, in order, synchronously. Stops
    /// on the first bad descriptor with IQE set and IQH on it. Bounded by the queue size.
    pub(crate) fn process_queue(&mut self, regs: &mut RegisterFile) {
        if !self.queue.enabled || regs.get_at(FSTS).unwrap_or(0) & FSTS_IQE != 0 {
            return;
        }
        let iqt = regs.get_at(IQT).unwrap_or(0);
        let shift = self.queue.shift();
        if self.queue.wide && iqt & 0x10 != 0 {
            // A 256-bit queue's tail must be 32-byte aligned.
            return self.queue_error(regs);
        }
        let tail = (iqt >> shift) as u32;
        if tail >= self.queue.entries {
            return self.queue_error(regs);
        }
        let mut budget = self.queue.entries;
        while self.queue.head != tail && budget > 0 {
            budget -= 1;
            let addr = self.queue.slot(self.queue.head);
            let Some(q) = read_descriptor(&self.mem, addr) else {
                return self.queue_error(regs);
            };
            let inv = match invalidation::decode(q, self.queue.wide, &self.config) {
                Ok(inv) => inv,
                Err(DescriptorError::UnsupportedType(_))
                | Err(DescriptorError::NeedsWideQueue(_))
                | Err(DescriptorError::Reserved)
                | Err(DescriptorError::Granularity) => return self.queue_error(regs),
            };
            self.execute(regs, inv);
            self.stats.descriptors += 1;
            self.queue.head = (self.queue.head + 1) % self.queue.entries.max(1);
            regs.set_at(IQH, u64::from(self.queue.head) << shift);
        }
    }

    fn queue_error(&mut self, regs: &mut RegisterFile) {
        let fsts = regs.get_at(FSTS).unwrap_or(0);
        regs.update_at(FSTS, FSTS_IQE, FSTS_IQE);
        self.stats.queue_errors += 1;
        events::fault_condition(regs, &*self.msi, fsts);
    }
}

/// Reads the first 128 bits of a descriptor (the upper half of a 256-bit descriptor is
/// reserved or software-private for every supported type).
fn read_descriptor(mem: &GuestMemoryMmap, addr: u64) -> Option<[u64; 2]> {
    let lo: u64 = mem.read_obj(GuestAddress(addr)).ok()?;
    let hi: u64 = mem.read_obj(GuestAddress(addr.checked_add(8)?)).ok()?;
    Some([u64::from_le(lo), u64::from_le(hi)])
}
