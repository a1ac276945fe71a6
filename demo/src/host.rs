//! Host-call accounting around any host DMA backend: calls, errors, current and peak entries,
//! and an IOVA index so the simulated passthrough device can check its DMA quickly.

use crate::pages::PageMap;
use std::collections::BTreeMap;
use viommu_shared::host::{HostDma, HostError, SharedHost, SimHost, SimHostConfig};
use viommu_shared::{AddrRange, Perm};

/// Counters of one host backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Map calls.
    pub map_calls: u64,
    /// Unmap calls (including unmap-all).
    pub unmap_calls: u64,
    /// Maps refused for lack of entries (`ENOSPC`).
    pub out_of_resources: u64,
    /// Calls refused for any other reason.
    pub other_errors: u64,
    /// Mappings held now.
    pub entries: u64,
    /// Most mappings held at once.
    pub peak_entries: u64,
    /// Unmaps whose returned byte count did not match the index (a backend that holds
    /// something other than what was mapped through this wrapper).
    pub index_mismatches: u64,
}

impl HostStats {
    /// Map and unmap calls.
    pub fn calls(&self) -> u64 {
        self.map_calls + self.unmap_calls
    }
}

/// One mapping the host holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    size: u64,
    gpa: u64,
    perm: Perm,
}

/// A host backend with accounting. Mappings are indexed with type1 semantics: an unmap
/// removes every mapping that starts inside its range.
#[derive(Debug)]
pub struct CountingHost<H> {
    inner: H,
    index: BTreeMap<u64, Held>,
    stats: HostStats,
}

impl<H: HostDma> CountingHost<H> {
    /// Wraps `inner`, which should hold no mappings.
    pub fn new(inner: H) -> Self {
        CountingHost {
            inner,
            index: BTreeMap::new(),
            stats: HostStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> HostStats {
        self.stats
    }

    /// The translation of `iova` on the host: guest-physical address and permissions.
    pub fn translate(&self, iova: u64) -> Option<(u64, Perm)> {
        let (&start, held) = self.index.range(..=iova).next_back()?;
        (iova - start < held.size).then(|| (held.gpa + (iova - start), held.perm))
    }

    /// Every mapped 4 KiB page.
    pub fn pages(&self) -> PageMap {
        let mut map = PageMap::new();
        for (&iova, h) in &self.index {
            map.add_run(iova, h.gpa, h.size, h.perm);
        }
        map
    }

    /// Mappings held, as `(iova, gpa, size)`.
    pub fn mappings(&self) -> Vec<(u64, u64, u64)> {
        self.index
            .iter()
            .map(|(&i, h)| (i, h.gpa, h.size))
            .collect()
    }

    fn forget(&mut self, iova: u64, size: u64, unmapped: u64) {
        let end = iova.saturating_add(size);
        let starts: Vec<u64> = self.index.range(iova..end).map(|(&s, _)| s).collect();
        let mut removed = 0;
        for s in starts {
            if let Some(h) = self.index.get(&s).copied()
                && s.saturating_add(h.size) <= end
            {
                self.index.remove(&s);
                removed += h.size;
            }
        }
        if removed != unmapped {
            self.stats.index_mismatches += 1;
        }
        self.stats.entries = self.index.len() as u64;
    }
}

impl<H: HostDma> HostDma for CountingHost<H> {
    fn map(&mut self, iova: u64, gpa: u64, size: u64, perm: Perm) -> Result<(), HostError> {
        self.stats.map_calls += 1;
        let r = self.inner.map(iova, gpa, size, perm);
        match r {
            Ok(()) => {
                self.index.insert(
                    iova,
                    Held {
                        size,
                        gpa,
                        perm: perm & Perm::RW,
                    },
                );
                self.stats.entries = self.index.len() as u64;
                self.stats.peak_entries = self.stats.peak_entries.max(self.stats.entries);
            }
            Err(HostError::OutOfResources) => self.stats.out_of_resources += 1,
            Err(_) => self.stats.other_errors += 1,
        }
        r
    }

    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64, HostError> {
        self.stats.unmap_calls += 1;
        let r = self.inner.unmap(iova, size);
        match r {
            Ok(n) => self.forget(iova, size, n),
            Err(_) => self.stats.other_errors += 1,
        }
        r
    }

    fn unmap_all(&mut self) -> Result<u64, HostError> {
        self.stats.unmap_calls += 1;
        let r = self.inner.unmap_all();
        match r {
            Ok(_) => {
                self.index.clear();
                self.stats.entries = 0;
            }
            Err(_) => self.stats.other_errors += 1,
        }
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

/// The host backend of one run, shared between the model (or the baseline) that maps into it
/// and the demo that inspects it.
pub type HostHandle = SharedHost<CountingHost<Box<dyn HostDma + Send>>>;

/// A handle on `backend` with accounting.
pub fn handle(backend: Box<dyn HostDma + Send>) -> HostHandle {
    SharedHost::from_host(CountingHost::new(backend))
}

/// A simulated host with `config` (call recording off: runs make millions of calls).
pub fn simulated(config: SimHostConfig) -> HostHandle {
    let mut sim = SimHost::new(config);
    sim.set_recording(false);
    handle(Box::new(sim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_indexes() {
        let h = simulated(SimHostConfig::vtd().with_entry_limit(2));
        let mut b: Box<dyn HostDma + Send> = Box::new(h.clone());
        b.map(0x1000, 0x9000, 0x2000, Perm::READ).unwrap();
        b.map(0x8000, 0x5000, 0x1000, Perm::RW).unwrap();
        assert_eq!(
            b.map(0x10000, 0x5000, 0x1000, Perm::RW),
            Err(HostError::OutOfResources)
        );
        h.with(|c| {
            assert_eq!(c.translate(0x2fff), Some((0xafff, Perm::READ)));
            assert_eq!(c.translate(0x3000), None);
            assert_eq!(c.pages().len(), 3);
            let s = c.stats();
            assert_eq!((s.map_calls, s.out_of_resources, s.peak_entries), (3, 1, 2));
        });
        assert_eq!(b.unmap(0, 0x4000), Ok(0x2000));
        h.with(|c| {
            assert_eq!(c.translate(0x1000), None);
            assert_eq!(c.stats().entries, 1);
            assert_eq!(c.stats().index_mismatches, 0);
        });
    }
}
