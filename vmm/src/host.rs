//! The host DMA backend the IOMMU model shadows the passthrough-style device into, and a
//! counting wrapper whose numbers the VMM reports at exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use viommu_shared::AddrRange;
use viommu_shared::Perm;
use viommu_shared::host::{HostDma, HostError};

/// Counters of one host backend.
#[derive(Debug, Default)]
pub struct HostCounters {
    /// Map calls.
    pub maps: AtomicU64,
    /// Unmap and unmap-all calls.
    pub unmaps: AtomicU64,
    /// Calls that returned an error.
    pub errors: AtomicU64,
    /// Out-of-resources errors among them.
    pub out_of_resources: AtomicU64,
    /// Most entries held at once (from the host's remaining-entries count).
    pub peak_entries: AtomicU64,
    /// Entries held now.
    pub entries: AtomicU64,
}

impl HostCounters {
    /// Map plus unmap calls.
    pub fn calls(&self) -> u64 {
        self.maps.load(Ordering::Relaxed) + self.unmaps.load(Ordering::Relaxed)
    }
}

/// Forwards to `H`, counting calls and tracking how many entries the host holds (the
/// decrease of its remaining-entries count since creation, so the host must report one).
pub struct CountingHost<H> {
    inner: H,
    capacity: Option<u32>,
    counters: Arc<HostCounters>,
}

impl<H: HostDma> CountingHost<H> {
    /// Wraps `inner`, which should hold no mappings yet.
    pub fn new(inner: H) -> CountingHost<H> {
        let capacity = inner.remaining_entries();
        CountingHost {
            inner,
            capacity,
            counters: Arc::default(),
        }
    }

    /// The shared counters.
    pub fn counters(&self) -> Arc<HostCounters> {
        self.counters.clone()
    }

    fn after<T>(&self, r: &Result<T, HostError>) {
        if let Err(e) = r {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            if matches!(e, HostError::OutOfResources) {
                self.counters
                    .out_of_resources
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        if let (Some(cap), Some(now)) = (self.capacity, self.inner.remaining_entries()) {
            let held = u64::from(cap.saturating_sub(now));
            self.counters.entries.store(held, Ordering::Relaxed);
            self.counters
                .peak_entries
                .fetch_max(held, Ordering::Relaxed);
        }
    }
}

impl<H: HostDma> HostDma for CountingHost<H> {
    fn map(&mut self, iova: u64, gpa: u64, size: u64, perm: Perm) -> Result<(), HostError> {
        self.counters.maps.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.map(iova, gpa, size, perm);
        self.after(&r);
        r
    }

    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64, HostError> {
        self.counters.unmaps.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.unmap(iova, size);
        self.after(&r);
        r
    }

    fn unmap_all(&mut self) -> Result<u64, HostError> {
        self.counters.unmaps.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.unmap_all();
        self.after(&r);
        r
    }

    fn remaining_entries(&self) -> Option<u32> {
        self.inner.remaining_entries()
    }

    fn iova_ranges(&self) -> Vec<AddrRange> {
        self.inner.iova_ranges()
    }

    fn page_sizes(&self) -> u64 {
        self.inner.page_sizes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::host::{SimHost, SimHostConfig};

    #[test]
    fn counts_calls_entries_and_out_of_resources() {
        let mut h = CountingHost::new(SimHost::new(SimHostConfig::vtd().with_entry_limit(2)));
        let c = h.counters();
        h.map(0x1000, 0x1000, 0x1000, Perm::RW).unwrap();
        h.map(0x3000, 0x3000, 0x1000, Perm::RW).unwrap();
        assert!(h.map(0x5000, 0x5000, 0x1000, Perm::RW).is_err());
        assert_eq!(c.entries.load(Ordering::Relaxed), 2);
        h.unmap(0x1000, 0x1000).unwrap();
        assert_eq!(c.entries.load(Ordering::Relaxed), 1);
        h.unmap_all().unwrap();
        assert_eq!(c.entries.load(Ordering::Relaxed), 0);
        assert_eq!(c.peak_entries.load(Ordering::Relaxed), 2);
        assert_eq!(c.calls(), 5);
        assert_eq!(c.errors.load(Ordering::Relaxed), 1);
        assert_eq!(c.out_of_resources.load(Ordering::Relaxed), 1);
    }
}
