//! Snapshot streams for migration: what every model's save/restore has in common.
//!
//! A model saves only architectural state (registers, queue and log pointers, pending fault
//! records and events, function tables) into a `serde` state struct whose first field is a
//! format `version`; derived state (IOTLB, shadow records, host mappings) is never saved and
//! is rebuilt from guest memory on restore.
//!
//! - [`stream`]: the one concrete encoding ([`encode`] / [`decode`], JSON through
//!   `serde_json`, as Cloud Hypervisor's snapshots use), bounded in size, with the version
//!   checked before the body is decoded ([`Versioned`]).
//! - [`registers`]: a [`RegisterFile`](crate::regs::RegisterFile) saved generically
//!   ([`save_registers`]) and restored with validation ([`restore_registers`]).
//! - [`error`]: [`SnapshotError`], the typed answer to a corrupt, hostile or incompatible
//!   stream.
//!
//! A stream is guest-controlled input as far as the model is concerned (it may come from an
//! untrusted source host): decoding and restoring never panic, allocate at most a bounded
//! multiple of [`MAX_STREAM_BYTES`], and a model that rejects a stream is left in its reset
//! state.

pub mod error;
pub mod registers;
pub mod stream;

pub use error::{MalformedKind, SnapshotError};
pub use registers::{SavedRegister, restore_registers, save_registers};
pub use stream::{MAX_STREAM_BYTES, Versioned, decode, encode};
