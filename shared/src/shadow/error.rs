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
        /// Runs left unmapped, the one refused first, in the order they were to be mapped:
        /// IOVA order, except that a sync mapping part of its range first (the full
        /// re-sync of `sync_or_reclaim`) lists that part first.
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

/// The results of several syncs that must all be tried (e.g. every mapping a discard hits:
/// one out-of-resources must not leave later mappings into discarded memory in place). The
/// reports are summed; the first host unmap refusal wins over out-of-resources, whose
/// `not_mapped` lists are merged.
#[derive(Debug, Default)]
pub struct SyncBatch {
    report: SyncReport,
    error: Option<ShadowError>,
}

impl SyncBatch {
    /// Adds one sync's result.
    pub fn add(&mut self, result: Result<SyncReport, ShadowError>) {
        match result {
            Ok(report) => self.report.absorb(report),
            Err(ShadowError::OutOfResources { report, not_mapped }) => {
                self.report.absorb(*report);
                match &mut self.error {
                    Some(ShadowError::OutOfResources {
                        not_mapped: all, ..
                    }) => all.extend(not_mapped),
                    Some(ShadowError::Unmap { .. }) => {}
                    None => {
                        self.error = Some(ShadowError::OutOfResources {
                            report: Box::default(),
                            not_mapped,
                        })
                    }
                }
            }
            Err(ShadowError::Unmap { run, error, report }) => {
                self.report.absorb(*report);
                if !matches!(self.error, Some(ShadowError::Unmap { .. })) {
                    self.error = Some(ShadowError::Unmap {
                        run,
                        error,
                        report: Box::default(),
                    });
                }
            }
        }
    }

    /// The summed report, or the kept error carrying it.
    pub fn finish(self) -> Result<SyncReport, ShadowError> {
        let report = Box::new(self.report);
        match self.error {
            None => Ok(*report),
            Some(ShadowError::OutOfResources { not_mapped, .. }) => {
                Err(ShadowError::OutOfResources { report, not_mapped })
            }
            Some(ShadowError::Unmap { run, error, .. }) => {
                Err(ShadowError::Unmap { run, error, report })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::test_page as run;

    fn oor(iova: u64, calls: u64) -> Result<SyncReport, ShadowError> {
        Err(ShadowError::OutOfResources {
            report: Box::new(SyncReport {
                map_calls: calls,
                ..SyncReport::default()
            }),
            not_mapped: vec![run(iova)],
        })
    }

    #[test]
    fn batch_keeps_going_and_keeps_the_worst_error() {
        let mut b = SyncBatch::default();
        b.add(Ok(SyncReport {
            unmap_calls: 2,
            ..SyncReport::default()
        }));
        b.add(oor(0x1000, 1));
        b.add(oor(0x5000, 1));
        match b.finish() {
            Err(ShadowError::OutOfResources { report, not_mapped }) => {
                assert_eq!((report.unmap_calls, report.map_calls), (2, 2));
                assert_eq!(not_mapped, vec![run(0x1000), run(0x5000)]);
            }
            other => panic!("{other:?}"),
        }
        let mut b = SyncBatch::default();
        b.add(oor(0x1000, 1));
        b.add(Err(ShadowError::Unmap {
            run: run(0x9000),
            error: HostError::Invalid,
            report: Box::new(SyncReport {
                unmap_calls: 1,
                ..SyncReport::default()
            }),
        }));
        match b.finish() {
            Err(ShadowError::Unmap { run: r, report, .. }) => {
                assert_eq!(r, run(0x9000));
                assert_eq!((report.unmap_calls, report.map_calls), (1, 1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(SyncBatch::default().finish(), Ok(SyncReport::default()));
    }
}
