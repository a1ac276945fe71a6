//! Bodies of the VT-d fuzz targets and their oracles.
//!
//! They live here, not in `fuzz/`, so that `cargo test` replays them on the stable toolchain
//! (`tests/fuzz_replay.rs`: the checked-in corpus under `fuzz/corpus/<target>/` plus
//! deterministic pseudo-random inputs); `fuzz/fuzz_targets/` only wraps them for libFuzzer.
//! Each target panics when an oracle fails, which is what a fuzzer reports; the `run`/`check`
//! functions behind them return the failure instead, so tests can show that the oracles
//! reject inconsistent states.
//!
//! - [`model`] (target `vtd`): a hostile guest and VMM driving a whole unit.
//! - [`migration`]: the migration property (a run with save/restore part-way matches one
//!   without), used by `tests/migration_props.rs`.
//! - [`walker`] (target `walker_vtd`): the shared walker over hostile second-stage tables.

pub mod migration;
pub mod model;
pub mod restore;
pub mod walker;

pub use model::model;
pub use restore::restore;
pub use viommu_shared::fuzz_support::Encoder;
pub use walker::walker;
