//! [`MemoryEvents`]: the trait every model implements for the VMM.

use super::state::MemoryEvent;
use crate::addr::AddrRange;
use crate::perm::Perm;
use crate::shadow::{ShadowMapping, SyncReport};

/// One host DMA mapping that reaches a queried guest-physical range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DmaMapping {
    /// The passthrough device: PCI requester id (VT-d), device id (AMD-Vi) or function id
    /// (s390 zPCI) as the model's `attach_host` named it.
    pub device: u32,
    /// The whole host mapping (which the host pins as one piece; it may extend beyond the
    /// queried range).
    pub mapping: ShadowMapping,
}

impl DmaMapping {
    /// `device`'s host mapping `mapping`.
    pub fn new(device: u32, mapping: ShadowMapping) -> Self {
        DmaMapping { device, mapping }
    }

    /// The IOVA range the device uses.
    pub fn iova_range(&self) -> AddrRange {
        self.mapping.iova_range()
    }

    /// The guest-physical range it reaches.
    pub fn gpa_range(&self) -> AddrRange {
        self.mapping.gpa_range()
    }

    /// Permissions given to the device.
    pub fn perm(&self) -> Perm {
        self.mapping.perm
    }
}

/// Memory events from the VMM (see the [module](super) docs for the semantics and the
/// recommended balloon integration). Implemented by each model; every passthrough device's
/// host address space follows, and devices attached later start from the current state.
///
/// Each call updates the model's bookkeeping first (the memory did change, whatever the
/// host says), then every device's host mappings; a host failure on one device does not stop
/// the others, and the first one is returned as the model's typed error.
pub trait MemoryEvents {
    /// The model's error type (host out of resources while re-mapping, host refused an
    /// unmap).
    type Error;

    /// Applies `event` to every passthrough device; returns the host work done (summed).
    fn memory_event(&self, event: MemoryEvent) -> Result<SyncReport, Self::Error>;

    /// Every host DMA mapping whose guest-physical range overlaps `range`, by device and IOVA.
    fn dma_mappings(&self, range: AddrRange) -> Vec<DmaMapping>;

    /// True when some passthrough device has any byte of `range` mapped for DMA.
    fn is_dma_mapped(&self, range: AddrRange) -> bool {
        !self.dma_mappings(range).is_empty()
    }

    /// Balloon inflate / virtio-mem unplug of `range`.
    fn discard(&self, range: AddrRange) -> Result<SyncReport, Self::Error> {
        self.memory_event(MemoryEvent::Discard(range))
    }

    /// Balloon deflate / virtio-mem plug of `range`.
    fn populate(&self, range: AddrRange) -> Result<SyncReport, Self::Error> {
        self.memory_event(MemoryEvent::Populate(range))
    }

    /// A confidential guest made `range` private.
    fn convert_to_private(&self, range: AddrRange) -> Result<SyncReport, Self::Error> {
        self.memory_event(MemoryEvent::ConvertToPrivate(range))
    }

    /// A confidential guest made `range` shared.
    fn convert_to_shared(&self, range: AddrRange) -> Result<SyncReport, Self::Error> {
        self.memory_event(MemoryEvent::ConvertToShared(range))
    }

    /// The VMM expects `range` to be converted piecemeal (page-granular policy).
    fn expect_conversions(&self, range: AddrRange) -> Result<SyncReport, Self::Error> {
        self.memory_event(MemoryEvent::ExpectConversions(range))
    }
}
