//! Shared core of viommu: everything the VT-d, AMD-Vi and s390 zPCI models have in common.
//!
//! - [`addr`], [`perm`]: addresses, ranges, page sizes, permissions.
//! - [`pt`]: the [`PageTableFormat`](pt::PageTableFormat) trait and the one walker all formats
//!   share.
//! - [`host`]: the [`HostDma`](host::HostDma) trait and its backends (simulated kernel, VFIO).
//! - [`shadow`]: the shadow engine that keeps a host address space equal to the guest's view.
//! - [`memory`]: memory events from the VMM (discard, populate, shared/private conversion) and
//!   the query "which devices have this guest memory mapped for DMA" (balloon integration).
//! - [`iotlb`], [`dma`]: translation cache and emulated-device DMA through `vm_memory::iommu`.
//! - [`irq`]: the interrupt-remapping API (remap an MSI, route-table updates on invalidation).
//! - [`regs`]: register files as data, MSI sinks, and the `vm-device` MMIO adapter.
//! - [`snapshot`]: snapshot streams for migration (versioned, bounded, typed errors) and
//!   generic register-file save/restore.
//! - [`testing`]: a reference page-table format and helpers for tests, fuzzing and demos.

#![deny(missing_docs)]

pub mod addr;
pub mod dma;
pub mod fuzz_support;
pub mod host;
pub mod iotlb;
pub mod irq;
pub mod memory;
pub mod perm;
pub mod pt;
pub mod regs;
pub mod shadow;
pub mod snapshot;
pub mod testing;

pub use addr::{AddrRange, GuestAddress, Iova};
pub use perm::Perm;
