//! viommu's main demonstration: a Linux-like guest runs a storage-like DMA workload through
//! each emulated IOMMU (Intel VT-d, AMD-Vi, s390 zPCI), driving it through its real register
//! or instruction interface, with a passthrough device whose address space is shadowed into a
//! host DMA backend (the simulated kernel by default, a VFIO container on request).
//!
//! Every run is done twice with the same seeded workload:
//!
//! - [`Strategy::Viommu`]: the model's own shadowing (the shared coalescing shadow engine,
//!   reclaim and retry on host exhaustion, RPCIT CC 1 status 16 on s390);
//! - [`Strategy::PerLeaf`]: the way QEMU shadows, implemented in [`baseline`] — one host call
//!   per guest leaf on x86 (`anchors-x86.md` §1.10, §2.8) and QEMU's RPCIT algorithm with its
//!   per-4-KiB-page cache on s390 (`anchors-s390-vfio.md` A.7.3, A.7.4).
//!
//! A run ([`run`]) reports host calls, peak host entries, out-of-resource events and how they
//! were resolved, faults, wall time, and a verdict: does the host hold exactly what the guest
//! tables map ([`pages::Comparison`])?
//!
//! Modules:
//! - [`workload`]: the seeded request stream (buffer sizes, scatter lists, directions).
//! - [`iova`]: a DMA-API-like IOVA allocator (size-aligned, top-down, per-size caches).
//! - [`dma_api`]: the guest's DMA API over an [`IommuDomain`](dma_api::IommuDomain): map,
//!   strict or lazy unmap (flush queue), the simulated device's DMA checks.
//! - [`guest`]: one Linux-like IOMMU driver per model.
//! - [`baseline`]: QEMU's shadowing strategies.
//! - [`host`]: host-call accounting around any host backend.
//! - [`pages`]: page maps of guest tables and host mappings, and their comparison.
//! - [`report`]: what a run measured, and how it is printed.
//! - [`progress`]: a simple progress indicator on stderr.
//! - [`fixtures`]: set-ups shared by the benchmarks and `examples/measure.rs`.

#![deny(missing_docs)]

pub mod baseline;
pub mod dma_api;
pub mod error;
pub mod fixtures;
pub mod guest;
pub mod host;
pub mod iova;
pub mod layout;
pub mod pages;
pub mod progress;
pub mod report;
pub mod run;
pub mod tables;
pub mod workload;

pub use error::DemoError;
pub use report::RunReport;
pub use run::{HostChoice, ModelKind, RunConfig, Strategy, run};
pub use workload::WorkloadConfig;
