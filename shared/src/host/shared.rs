//! [`SharedHost`]: a cloneable, lockable handle to one host backend.

use super::sim::{SimHost, SimHostConfig};
use super::{HostDma, HostError};
use crate::addr::AddrRange;
use crate::perm::Perm;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// A cloneable handle to one host backend. Every clone is the same container: a model can
/// build a new shadow engine over it (e.g. when a device switches between translation and
/// pass-through with different mapping granularity), and a test, scenario or demo can keep
/// inspecting a host an engine owns.
pub struct SharedHost<H: ?Sized>(Arc<Mutex<H>>);

/// A shared [`SimHost`].
pub type SharedSimHost = SharedHost<SimHost>;

impl<H> SharedHost<H> {
    /// Wraps `host`.
    pub fn from_host(host: H) -> Self {
        SharedHost(Arc::new(Mutex::new(host)))
    }
}

impl<H: ?Sized> SharedHost<H> {
    /// Runs `f` on the host (a poisoned lock is recovered: a backend's state stays
    /// consistent across a panicking caller because every call is a single operation).
    pub fn with<R>(&self, f: impl FnOnce(&mut H) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }
}

impl SharedHost<SimHost> {
    /// A new shared simulated host with `config`.
    pub fn new(config: SimHostConfig) -> Self {
        Self::from_host(SimHost::new(config))
    }
}

impl<H: ?Sized> Clone for SharedHost<H> {
    fn clone(&self) -> Self {
        SharedHost(Arc::clone(&self.0))
    }
}

impl<H: ?Sized> fmt::Debug for SharedHost<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedHost")
    }
}

impl<H: HostDma + ?Sized> HostDma for SharedHost<H> {
    fn map(&mut self, iova: u64, gpa: u64, size: u64, perm: Perm) -> Result<(), HostError> {
        self.with(|h| h.map(iova, gpa, size, perm))
    }
    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64, HostError> {
        self.with(|h| h.unmap(iova, size))
    }
    fn unmap_all(&mut self) -> Result<u64, HostError> {
        self.with(|h| h.unmap_all())
    }
    fn remaining_entries(&self) -> Option<u32> {
        self.with(|h| h.remaining_entries())
    }
    fn iova_ranges(&self) -> Vec<AddrRange> {
        self.with(|h| h.iova_ranges())
    }
    fn page_sizes(&self) -> u64 {
        self.with(|h| h.page_sizes())
    }
    fn enforces_coherency(&self) -> bool {
        self.with(|h| h.enforces_coherency())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_host_and_dyn_backends_work() {
        let a = SharedSimHost::new(SimHostConfig::vtd());
        let mut b = a.clone();
        b.map(0x1000, 0x2000, 0x1000, Perm::READ).unwrap();
        assert_eq!(a.with(|h| h.mapping_count()), 1);
        let boxed: Box<dyn HostDma + Send> = Box::new(a.clone());
        let mut d = SharedHost::from_host(boxed);
        assert_eq!(d.unmap(0x1000, 0x1000), Ok(0x1000));
        assert_eq!(a.with(|h| h.mapping_count()), 0);
        assert_eq!(d.remaining_entries(), Some(65535));
    }
}
