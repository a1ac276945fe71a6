//! Host DMA backends: where shadowed guest mappings end up.
//!
//! One trait, [`HostDma`], with a typed error, [`HostError`], that keeps the kernel's errno
//! meaning. Implementations: [`SimHost`] (in-process, behaves like the measured kernel),
//! [`VfioContainerBackend`] (a real `/dev/vfio/vfio` type1 container) and [`IommufdBackend`]
//! (an IOAS of a real `/dev/iommu`).

pub mod error;
pub mod iommufd;
pub mod pin_budget;
pub mod shared;
pub mod sim;
pub mod vfio;

pub use error::HostError;
pub use iommufd::{IoasOps, IommufdBackend, KernelIoas};
pub use pin_budget::PinBudget;
pub use shared::{SharedHost, SharedSimHost};
pub use sim::{HostCall, HostFlavour, HostMapping, SimHost, SimHostConfig};
pub use vfio::VfioContainerBackend;

use crate::addr::AddrRange;
use crate::perm::Perm;

/// A host IOMMU address space that DMA mappings can be added to and removed from.
///
/// Addresses are IOVAs on the host side (equal to the guest's IOVAs) and guest-physical
/// addresses; a backend that needs host virtual addresses translates through guest memory.
pub trait HostDma {
    /// Maps `[iova, iova + size)` to guest-physical `[gpa, gpa + size)` with `perm`
    /// (only READ and WRITE are meaningful to hosts).
    fn map(&mut self, iova: u64, gpa: u64, size: u64, perm: Perm) -> Result<(), HostError>;

    /// Unmaps `[iova, iova + size)`; returns the bytes actually unmapped, with the flavour's
    /// rules for ranges that cut or miss mappings.
    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64, HostError>;

    /// Unmaps everything; returns the bytes unmapped.
    fn unmap_all(&mut self) -> Result<u64, HostError>;

    /// How many more mappings the host accepts (type1's DMA_AVAIL), or `None` where the host
    /// has no count limit (iommufd).
    fn remaining_entries(&self) -> Option<u32>;

    /// IOVA ranges the host accepts mappings in (inclusive-exclusive).
    fn iova_ranges(&self) -> Vec<AddrRange>;

    /// Bitmap of supported page sizes; the lowest set bit is the required alignment.
    fn page_sizes(&self) -> u64;

    /// True when the host IOMMU enforces cache coherency for every DMA through this address
    /// space, including requests the device marks no-snoop (type1: the `VFIO_DMA_CC_IOMMU`
    /// extension; iommufd: the IOMMU's enforce-cache-coherency capability). A model may only
    /// promise a guest that non-snooped DMA is made coherent (VT-d ECAP.SC) when this holds.
    /// Default `false`: a backend that cannot tell is assumed not to.
    fn enforces_coherency(&self) -> bool {
        false
    }
}

impl<T: HostDma + ?Sized> HostDma for Box<T> {
    fn map(&mut self, iova: u64, gpa: u64, size: u64, perm: Perm) -> Result<(), HostError> {
        (**self).map(iova, gpa, size, perm)
    }
    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64, HostError> {
        (**self).unmap(iova, size)
    }
    fn unmap_all(&mut self) -> Result<u64, HostError> {
        (**self).unmap_all()
    }
    fn remaining_entries(&self) -> Option<u32> {
        (**self).remaining_entries()
    }
    fn iova_ranges(&self) -> Vec<AddrRange> {
        (**self).iova_ranges()
    }
    fn page_sizes(&self) -> u64 {
        (**self).page_sizes()
    }
    fn enforces_coherency(&self) -> bool {
        (**self).enforces_coherency()
    }
}
