//! The shadow engine: keeps one host DMA address space equal to the guest's view of an I/O
//! address space, with the fewest host calls.
//!
//! - [`GuestView`]: where the guest truth comes from (a page-table [`Walker`](crate::pt::Walker),
//!   an identity map, or nothing).
//! - [`plan`]: the canonical host layout of a set of guest runs (coalesced, cut at
//!   `max_run`-aligned IOVAs and host reserved ranges, page-granular where asked).
//! - [`Record`]: what we mapped on the host, with a guest-physical reverse index.
//! - [`ShadowEngine`]: `sync` (bring a range to the guest view), `reclaim` (full re-sync),
//!   `sync_or_reclaim` (the "global flush and retry" building block), `missing` /
//!   `retry_missing` (what an out-of-resources left unmapped, tried again when the x86
//!   models' `sync_reclaim_retry` next succeeds), guest-memory policy
//!   (`reserve_gpa` for memory never mapped, `discard_gpa` / `restore_gpa` for memory that
//!   comes and goes — driven by [`crate::memory`] — and `set_page_granular`), and teardown.
//!   Restores re-sync only the IOVAs the engine withheld because their output was excluded
//!   (its bounded `withheld` record), not the whole space.
//! - [`PeerReclaim`]: when a device still runs out after reclaiming its own space, the
//!   model reclaims the other devices' spaces (they share the process's pin budget) and
//!   retries once.

pub mod config;
pub mod engine;
pub mod error;
pub mod peers;
pub mod plan;
pub mod record;
pub mod view;

pub use config::ShadowConfig;
pub use engine::ShadowEngine;
pub use error::{ShadowError, SyncBatch, SyncReport};
pub use peers::PeerReclaim;
pub use record::{Record, ShadowMapping};
pub use view::{EmptyView, GuestView, IdentityView, MaskedView};

/// A read-write 4 KiB run at `iova` onto guest-physical 0, for unit tests.
#[cfg(test)]
pub(crate) fn test_page(iova: u64) -> crate::pt::Run {
    crate::pt::Run {
        iova,
        addr: 0,
        size: 0x1000,
        perm: crate::perm::Perm::RW,
    }
}
