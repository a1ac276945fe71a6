//! viommu-vtd: an emulated Intel VT-d DMA-remapping unit.
//!
//! The guest's unmodified `intel_iommu` driver programs it through its registers; it walks the
//! guest's root/context (and, in scalable mode, PASID) tables and second-stage page tables,
//! translates DMA for emulated devices, records faults in its fault recording registers, and
//! shadows guest mappings of passthrough devices into host DMA backends (VFIO/iommufd), with
//! host out-of-resources handled by reclaim-and-retry and reported, never lost.
//!
//! Reference: the Intel VT-d architecture specification (sections cited in comments) and
//! `shared/reference/anchors-x86.md` §1 (QEMU's model, whose deviations from the spec are
//! not copied) and §3.1 (Linux's driver sequences).
//!
//! # Using it
//!
//! - [`Vtd::new`] with a [`Config`], guest memory and an MSI sink.
//! - Guest register accesses: [`Vtd::mmio_read`] / [`Vtd::mmio_write`] (window of
//!   [`Vtd::mmio_size`] bytes at the DRHD base). Offsets and field bits are in [`regs`] and
//!   [`caps`].
//! - Emulated devices: [`Vtd::device_iommu`] for `vm_memory::iommu::IommuMemory`, or the
//!   [`DmaTranslate`](viommu_shared::dma::DmaTranslate) implementation directly.
//! - Passthrough devices: [`Vtd::attach_host`] / [`Vtd::detach_host`];
//! - Memory events from the VMM (balloon, virtio-mem, confidential-VM conversions) through
//!   [`MemoryEvents`](viommu_shared::memory::MemoryEvents), and the balloon's query of which
//!   devices have a guest-physical range DMA-mapped (see [`viommu_shared::memory`]);
//!   [`Vtd::set_alias`] for devices behind PCIe-to-PCI bridges.
//! - Interrupt remapping ([`Config::interrupt_remapping`]): the unit implements
//!   [`InterruptRemapper`](viommu_shared::irq::InterruptRemapper). A VMM resolves its KVM MSI
//!   routes with `remap(source, msi, RemapMode::Route)` (or a
//!   [`RouteTable`](viommu_shared::irq::RouteTable), which re-resolves exactly the routes a
//!   guest invalidation affects); interrupt *requests* — an emulated device's MSI, an IOAPIC
//!   or HPET message with the source id of the VMM's DMAR device scope — go through
//!   [`Vtd::deliver_msi`] or a per-device
//!   [`RemappingMsiSink`](viommu_shared::irq::RemappingMsiSink), which record faults
//!   0x20–0x26 and deliver the remapped interrupt. DMA to input addresses 0xFEEx_xxxx is
//!   never translated (spec 3.14): a device that writes its MSI through `IommuMemory` gets an
//!   error, so wire its interrupt output to the remapper instead. IRTE formats: [`irte`].
//! - Introspection: [`Vtd::fault_records`], [`Vtd::stats`], [`Vtd::host_mappings`],
//!   [`Vtd::shadow_space`], [`Vtd::device_space`]; migration: [`Vtd::save`] /
//!   [`Vtd::restore`] (or [`Vtd::save_bytes`] / [`Vtd::restore_bytes`] for the versioned
//!   stream; see [`snapshot`]).
//! - [`testing`]: encoders of every guest structure and a Linux-like [`testing::GuestDriver`].
//! - [`fuzz_support`]: bodies and oracles of the `vtd` and `walker_vtd` fuzz targets (also
//!   replayed by `cargo test`).
//!
//! ```
//! use std::sync::Arc;
//! use viommu_shared::host::{SharedSimHost, SimHostConfig};
//! use viommu_shared::regs::RecordingMsiSink;
//! use viommu_shared::testing::guest_memory;
//! use viommu_vtd::{regs, Config, Vtd};
//!
//! let mem = guest_memory(&[(0, 64 << 20)]);
//! let vtd = Vtd::new(Config::default(), mem, Arc::new(RecordingMsiSink::new()));
//! assert_eq!(vtd.mmio_read(regs::VER, 4), 0x10);
//!
//! // A passthrough device is shadowed: before translation is enabled its host space is the
//! // identity map of guest RAM.
//! let host = SharedSimHost::new(SimHostConfig::vtd());
//! vtd.attach_host(0x0010, Box::new(host.clone())).unwrap();
//! assert_eq!(host.with(|h| h.mappings().iter().map(|m| m.size).sum::<u64>()), 64 << 20);
//!
//! // Balloon integration (viommu_shared::memory): ask before inflating, then discard.
//! use viommu_shared::{AddrRange, memory::MemoryEvents};
//! let page = AddrRange::from_len(0x10_0000, 4096);
//! assert!(vtd.is_dma_mapped(page)); // identity: every page of RAM is DMA-mapped
//! vtd.discard(page).unwrap();
//! assert!(!vtd.is_dma_mapped(page));
//! vtd.populate(page).unwrap();
//! assert_eq!(vtd.dma_mappings(page).len(), 1);
//!
//! // Enabling translation with an empty root table blocks it: the host space empties.
//! vtd.mmio_write(regs::GCMD, 4, regs::GCMD_TE).unwrap();
//! assert!(host.with(|h| h.mappings().is_empty()));
//! ```
//!
//! # Where this model follows the spec rather than QEMU (`anchors-x86.md` §1, §5)
//!
//! - Clearing FSTS.IQE resumes queue processing at IQH (spec 6.5.2.10); QEMU waits for the
//!   next IQT write.
//! - Disabling queued invalidation always succeeds and resets IQH; QEMU refuses unless the
//!   last descriptor was a wait.
//! - Register-based invalidation while queued invalidation is on completes with granularity
//!   0 (refused) instead of leaving ICC/IVT set forever.
//! - Domain-selective context invalidation is performed as such (CAIG = 2), not as global.
//! - Page-selective invalidations ignore the low AM bits of the page number (the range is
//!   naturally aligned), as the spec defines; QEMU walks from the unaligned address.
//! - Scalable-mode second-stage faults use the scalable-mode codes (0x78, 0x7A, 0x7B, 0x83,
//!   0x85, 0x86, 0x87); QEMU reports the legacy codes except 0x87. Requests without PASID use
//!   the context's RID_PASID (QEMU always uses PASID 0).
//! - SNP in second-stage leaves is accepted with ECAP.SC or when the walk is in scalable mode
//!   (not whenever the unit supports scalable mode).
//! - Device-TLB descriptors accept PFSID; fault records keep all 20 PASID bits; FEUADDR and
//!   IEUADDR are writable.
//! - Pass-through contexts bound input addresses by their AW (fault 0x4).
//! - Output pages overlapping the interrupt range are cut to 4 KiB so no cached translation
//!   reaches 0xFEEx_xxxx; the shadow never maps guest-physical 0xFEEx_xxxx.
//! - Compatibility-format interrupts are blocked with fault 0x25 while remapping is on and
//!   GSTS.CFIS is clear or IRTA.EIME is set (spec 5.1.2.1); QEMU passes them whenever
//!   remapping is on. IRTE reserved bits, including the xAPIC-mode destination bits 39:32 and
//!   63:48 and IM (no posted interrupts), give fault 0x24; QEMU checks fewer.
//! - Requests without PASID to input addresses 0xFEEx_xxxx are interrupt requests, never
//!   DMA-remapped, whatever the tables map there (spec 3.14).
//! - Host map failures are not lost: out-of-resources triggers reclaim and retry, then a
//!   typed error ([`VtdError::HostOutOfResources`]) from the call that processed the
//!   invalidation; host mappings are coalesced.
//!
//! # Not modelled
//!
//! First-stage and nested translation (FLTS/NEST not advertised), ATS translation requests
//! and page requests (PRS), advanced fault logging, protected memory regions, posted
//! interrupts (CAP.PI = 0: IRTE.IM is reserved, fault 0x24; reason 0x27 cannot occur), IQERCD, the
//! invalidation time-out and completion errors (no ATS). Fault reason 0xD (translation
//! request blocked by TT) cannot occur without ATS translation requests.

#![deny(missing_docs)]

pub mod caps;
pub mod config;
pub mod error;
mod events;
pub mod fault;
pub mod format;
pub mod fuzz_support;
pub mod invalidation;
pub mod irte;
mod model;
mod queue;
pub mod regs;
mod shadow;
pub mod snapshot;
pub mod space;
pub mod stats;
pub mod tables;
pub mod testing;
mod unit;

pub use config::{AddressWidth, Config, LargePages};
pub use error::VtdError;
pub use fault::{Fault, FaultReason, FaultRecord};
pub use format::SecondStage;
pub use model::{InterruptRemapping, Vtd};
pub use shadow::HostBackend;
pub use snapshot::{QueueSnapshot, VTD_SNAPSHOT_VERSION, VtdSnapshot};
pub use space::Space;
pub use stats::VtdStats;
pub use tables::{RootMode, RootPointer};
