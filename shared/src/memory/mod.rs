//! Guest memory that changes under DMA: the VMM-facing API for memory events.
//!
//! A VMM that discards guest memory (balloon inflate, virtio-mem unplug) or converts it
//! between shared and private (confidential guests) tells the IOMMU model through
//! [`MemoryEvents`]; every model (VT-d, AMD-Vi, s390 zPCI) implements it over the same
//! bookkeeping, [`GuestMemoryState`], and the shadow engine's reverse index.
//!
//! Semantics, for every passthrough device's host address space:
//! - A guest translation whose output lands in discarded or private memory is removed from
//!   the host (a DMA there fails instead of reaching freed or private pages), while the model
//!   keeps the guest's view: emulated translation and the guest's tables are untouched.
//! - [`populate`](MemoryEvents::populate) / [`convert_to_shared`](MemoryEvents::convert_to_shared)
//!   bring those translations back without any guest action. The engine remembers which
//!   IOVAs it left out, so this costs a walk of those IOVAs only.
//! - Identity spaces (VT-d pass-through, AMD-Vi untranslated DTEs, zPCI relaxed translation)
//!   are the same thing with an identity view: exactly the host mappings over the range go
//!   and come back. A coalesced host mapping that an event cuts is split — unmapped whole,
//!   survivors re-mapped, unmaps before maps. Where the VMM expects conversions
//!   ([`expect_conversions`](MemoryEvents::expect_conversions)) memory is mapped one 4 KiB
//!   page per host mapping, so conversions never split anything (one host call per page,
//!   more host entries: see `BENCHMARKS.md` for the trade-off).
//! - Guest edits that do not change a translation (a 2 MiB leaf replaced by a table of 512
//!   4 KiB leaves with the same output, or the reverse) cause no host call at all: the host
//!   layout is a function of the translations, not of the table shape.
//!
//! # Recommended balloon integration
//!
//! Ballooning and device assignment need not exclude each other. Before inflating over a
//! guest-physical range, ask [`dma_mappings`](MemoryEvents::dma_mappings) (or
//! [`is_dma_mapped`](MemoryEvents::is_dma_mapped)) which devices and IOVAs have it mapped
//! for DMA:
//!
//! ```text
//! for page in balloon.candidate_pages() {
//!     if iommu.is_dma_mapped(page) { continue; }      // pinned for a device: skip it
//!     iommu.discard(page)?;                           // host mappings gone (none here)
//!     madvise(page, MADV_DONTNEED);                   // then free it
//! }
//! // deflate: iommu.populate(range)? after the memory is back, before the guest uses it
//! ```
//!
//! Inflating only over pages that are not DMA-mapped never takes memory away from a device.
//! A VMM that must reclaim a mapped page anyway still calls [`discard`](MemoryEvents::discard)
//! first: the host mapping is removed before the memory is freed, so a device DMA there fails
//! (an IOMMU fault on the host) instead of corrupting reused memory. With identity-mapped
//! devices (pass-through) every page of RAM is DMA-mapped, so the query answers "everything";
//! such a VMM discards and accepts that the device loses access to the ballooned pages, which
//! is what the guest asked for by giving them up.

pub mod events;
pub mod state;

pub use events::{DmaMapping, MemoryEvents};
pub use state::{GuestMemoryState, MemoryEvent, StateChange};
