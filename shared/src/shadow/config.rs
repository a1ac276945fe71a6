//! Shadow-engine configuration.

use crate::pt::WalkLimits;

/// How a [`ShadowEngine`](super::ShadowEngine) lays out host mappings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowConfig {
    /// Largest host mapping, a power of two ≥ 4 KiB. Host mappings never cross a multiple of
    /// it, so each is at most this big. Larger means fewer host entries; smaller bounds the
    /// work (and the window in which a passthrough device sees the range unmapped) when a
    /// guest change hits part of a coalesced mapping, which must be unmapped whole and its
    /// survivors re-mapped. Default 2 MiB: 512 times fewer entries than per-page shadowing.
    pub max_run: u64,
    /// Most host mappings this engine creates (a bound on memory for hosts without an entry
    /// limit, such as iommufd). Reaching it is reported as out of resources.
    pub max_mappings: usize,
    /// Bounds on each guest page-table enumeration. The engine reads the guest through a
    /// [`GuestView`](super::GuestView) it is handed, so a model applies these when it builds
    /// its [`Walker`](crate::pt::Walker): `Walker::new(..).with_limits(config.walk_limits)`.
    pub walk_limits: WalkLimits,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            max_run: 2 << 20,
            max_mappings: 1 << 20,
            walk_limits: WalkLimits::default(),
        }
    }
}

impl ShadowConfig {
    /// This configuration with another `max_run` (rounded up to a power of two, at least
    /// 4 KiB).
    pub fn with_max_run(mut self, max_run: u64) -> Self {
        self.max_run = max_run
            .max(4096)
            .checked_next_power_of_two()
            .unwrap_or(1 << 63);
        self
    }
}
