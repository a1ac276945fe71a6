//! [`PinBudget`]: the process's locked-memory budget that every host address space charges.
//!
//! VFIO type1 pins the pages of each DMA mapping and charges them to the process's
//! `locked_vm` against `RLIMIT_MEMLOCK` (`vfio_pin_pages_remote` → `vfio_lock_acct`; a map
//! past it fails `ENOMEM`), and iommufd does the same for the pages an IOAS pins. The
//! budget is per process, not per container, and a page pinned by two containers is charged
//! twice, so the devices of one VMM compete for it. [`SimHost`](super::SimHost)s built with
//! the same budget ([`SimHostConfig::with_pin_budget`](super::SimHostConfig::with_pin_budget))
//! share it, which is how tests and fuzzers make one device's mappings the reason another's
//! map fails.

use super::HostError;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug)]
struct Usage {
    limit: u64,
    used: u64,
}

/// A cloneable handle to one locked-memory budget in bytes; clones share it.
#[derive(Clone, Debug)]
pub struct PinBudget(Arc<Mutex<Usage>>);

impl PinBudget {
    /// A budget of `limit` bytes, nothing charged.
    pub fn new(limit: u64) -> Self {
        PinBudget(Arc::new(Mutex::new(Usage { limit, used: 0 })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Usage) -> R) -> R {
        // Every update is one arithmetic step, consistent even after a panicking holder.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.with(|u| u.used)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.with(|u| u.limit)
    }

    /// Charges `bytes`, or fails `ENOMEM` (out of resources) leaving the budget unchanged.
    pub fn charge(&self, bytes: u64) -> Result<(), HostError> {
        self.with(|u| match u.used.checked_add(bytes) {
            Some(total) if total <= u.limit => {
                u.used = total;
                Ok(())
            }
            _ => Err(HostError::OutOfResources),
        })
    }

    /// Gives `bytes` back (never below zero).
    pub fn release(&self, bytes: u64) {
        self.with(|u| u.used = u.used.saturating_sub(bytes));
    }

    /// True when `self` and `other` are the same budget.
    pub fn same(&self, other: &PinBudget) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Budgets compare by identity: two configurations are equal when they charge the same one.
impl PartialEq for PinBudget {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}

impl Eq for PinBudget {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_limit() {
        let a = PinBudget::new(0x3000);
        let b = a.clone();
        a.charge(0x2000).unwrap();
        assert_eq!(b.charge(0x2000), Err(HostError::OutOfResources));
        assert_eq!(b.used(), 0x2000);
        b.charge(0x1000).unwrap();
        a.release(0x2000);
        assert_eq!((a.used(), a.limit()), (0x1000, 0x3000));
        assert_eq!(a.charge(u64::MAX), Err(HostError::OutOfResources));
        assert!(a == b && a != PinBudget::new(0x3000));
    }
}
