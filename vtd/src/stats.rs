//! [`VtdStats`]: counters for tests and monitoring.

/// Event counters of one unit since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VtdStats {
    /// Faults written to a fault recording register.
    pub faults_recorded: u64,
    /// Qualified faults suppressed by FPD.
    pub faults_suppressed: u64,
    /// Faults collapsed into a pending record of the same source id.
    pub faults_compressed: u64,
    /// Faults dropped because the fault recording registers overflowed (PFO).
    pub faults_overflowed: u64,
    /// Invalidation descriptors executed.
    pub descriptors: u64,
    /// Invalidation queue errors (FSTS.IQE set).
    pub queue_errors: u64,
    /// Register-based invalidations executed.
    pub register_invalidations: u64,
    /// Register-based invalidations refused (reported with granularity 0).
    pub register_invalidations_refused: u64,
    /// Invalidation-wait status writes that hit no guest memory.
    pub wait_status_write_failures: u64,
    /// Times a host ran out of entries and a space was reclaimed (its own, or every
    /// shadowed space) before retrying.
    pub host_reclaims: u64,
    /// Times a range stayed unmapped on a host after reclaim and retry.
    pub host_out_of_resources: u64,
    /// Host map calls refused for other reasons (e.g. guest-physical address not backed).
    pub host_refused_maps: u64,
    /// Guest runs not mapped because their IOVA is outside the host's usable ranges.
    pub host_unmappable_runs: u64,
    /// Malformed guest table parts met while shadowing (treated as unmapped).
    pub shadow_walk_faults: u64,
    /// Host unmap failures.
    pub host_unmap_errors: u64,
    /// Errors beyond the first of one call (the first is returned).
    pub errors_not_returned: u64,
}
