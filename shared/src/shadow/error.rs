//! What a sync did, and how it can fail.

use crate::host::HostError;
use crate::pt::{Run, WalkFault};
use std::fmt;

/// What one sync (or reclaim) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Host unmap calls made.
    pub unmap_calls: u64,
    /// Host map calls made (successful or not).
    pub map_calls: u64,
    /// Guest runs (or parts) that lie outside the host's usable IOVA ranges (MSI window,
    /// apertures) and were therefore not mapped.
    pub unmappable: Vec<Run>,
    /// Guest runs (or parts) whose guest-physical range is discarded (balloon, virtio-mem,
    /// private memory) and were therefore not mapped.
    pub excluded: Vec<Run>,
    /// Runs the host refused for a reason other than resources (e.g. `BadAddress` for a
    /// guest-physical range not backed by RAM); they stay unmapped.
    pub refused: Vec<(Run, HostError)>,
    /// Guest runs (or parts) beyond the most host mappings one sync may lay out
    /// ([`ShadowConfig::max_mappings`](super::ShadowConfig::max_mappings)); not mapped, and the
    /// sync reports out-of-resources.
    pub not_planned: Vec<Run>,
    /// Malformed table parts met (each treated as unmapped).
    pub walk_faults: u64,
    /// The first malformed part met, or the work-limit stop.
    pub first_fault: Option<WalkFault>,
    /// The guest walk stopped early (work limit): everything after it was treated as unmapped.
    pub walk_incomplete: bool,
    /// A reclaim (full re-sync) was done before the sync succeeded.
    pub reclaimed: bool,
}

/// Why a sync stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShadowError {
    /// The host (or the engine's own `max_mappings`) is out of entries. The record still
    /// equals the host exactly; `not_mapped` lists what the guest maps but the host does not.
    OutOfResources {
        /// What was done before stopping.
        report: Box<SyncReport>,
        /// Runs left unmapped, in IOVA order (the first one is the one refused).
        not_mapped: Vec<Run>,
    },
    /// The host refused to unmap one of our own mappings; the record keeps it (still mapped).
    Unmap {
        /// The mapping that could not be removed.
        run: Run,
        /// The host's answer.
        error: HostError,
        /// What was done before stopping.
        report: Box<SyncReport>,
    },
}

impl fmt::Display for ShadowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShadowError::OutOfResources { not_mapped, .. } => write!(
                f,
                "host out of DMA entries: {} guest runs not mapped",
                not_mapped.len()
            ),
            ShadowError::Unmap { run, error, .. } => write!(
                f,
                "host refused to unmap [{:#x}, +{:#x}): {error}",
                run.iova, run.size
            ),
        }
    }
}

impl std::error::Error for ShadowError {}
