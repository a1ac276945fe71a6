//! Bodies of the AMD-Vi fuzz targets and their oracles.
//!
//! They live here, not in `fuzz/`, so that `cargo test` replays them on the stable toolchain
//! (`tests/fuzz_replay.rs`: the checked-in corpus under `fuzz/corpus/<target>/` plus
//! deterministic pseudo-random inputs); `fuzz/fuzz_targets/` only wraps them for libFuzzer.
//! Each target panics when an oracle fails, which is what a fuzzer reports; the `run`/`check`
//! functions behind them return the failure instead, so tests can show that the oracles
//! reject inconsistent states.
//!
//! - [`model`] (target `amd_vi`): a hostile guest and VMM driving the IOMMU.
//! - [`walker`] (target `walker_amd`): the shared walker over hostile v1 page tables.

pub mod migration;
pub mod model;
pub mod restore;
pub mod walker;

pub use model::model;
pub use restore::restore;
pub use viommu_shared::fuzz_support::Encoder;
pub use walker::walker;
