//! Host resources shared between devices.
//!
//! When a device's sync still runs out of host resources after reclaiming its own space
//! ([`ShadowEngine::sync_or_reclaim`](super::ShadowEngine::sync_or_reclaim)), the other
//! shadowed spaces of the model may be holding what it needs: both draw on the process's
//! locked-memory budget (`RLIMIT_MEMLOCK`, charged by every type1 container and iommufd IOAS
//! for the pages they pin; [`PinBudget`](crate::host::PinBudget) simulates it), and a space
//! keeps mappings its guest removed without invalidating them yet. So a model reclaims every
//! other space (a full re-sync, which drops those), and retries the device once when that
//! freed anything — retrying otherwise would only repeat the refused calls.
//!
//! A peer's reclaim can itself run short (splitting a coalesced mapping around a lazily
//! unmapped page needs one more entry): what it left unmapped is reported per peer, so the
//! model surfaces it like any other out-of-resources.

use super::error::{ShadowError, SyncReport};
use crate::host::HostError;
use crate::pt::Run;

/// What reclaiming the other devices' spaces did, peers identified by `Id`.
#[derive(Debug)]
pub struct PeerReclaim<Id> {
    /// Spaces reclaimed.
    pub peers: u64,
    /// Their reports, summed (those of failed syncs included).
    pub report: SyncReport,
    /// Peers whose host still ran out, with what they left unmapped (IOVA order).
    pub short: Vec<(Id, Vec<Run>)>,
    /// Peers whose host refused to unmap one of their mappings (which they keep), with the
    /// mapping and the host's answer.
    pub unmap_errors: Vec<(Id, Run, HostError)>,
}

impl<Id> Default for PeerReclaim<Id> {
    fn default() -> Self {
        PeerReclaim {
            peers: 0,
            report: SyncReport::default(),
            short: Vec::new(),
            unmap_errors: Vec::new(),
        }
    }
}

impl<Id> PeerReclaim<Id> {
    /// Folds the results of reclaiming each peer (a full re-sync of its space), in order.
    pub fn collect(
        results: impl IntoIterator<Item = (Id, Result<SyncReport, ShadowError>)>,
    ) -> Self {
        let mut all = PeerReclaim::default();
        for (id, result) in results {
            all.peers += 1;
            match result {
                Ok(report) => all.report.absorb(report),
                Err(ShadowError::OutOfResources { report, not_mapped }) => {
                    all.report.absorb(*report);
                    all.short.push((id, not_mapped));
                }
                Err(ShadowError::Unmap { run, error, report }) => {
                    all.report.absorb(*report);
                    all.unmap_errors.push((id, run, error));
                }
            }
        }
        all
    }

    /// True when some peer gave a host entry back, so retrying the device may succeed.
    pub fn freed(&self) -> bool {
        self.report.unmap_calls > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::test_page as run;

    fn report(unmaps: u64, maps: u64) -> SyncReport {
        SyncReport {
            unmap_calls: unmaps,
            map_calls: maps,
            ..SyncReport::default()
        }
    }

    #[test]
    fn folds_every_peer_and_keeps_each_failure() {
        let r = PeerReclaim::collect([
            (1u16, Ok(report(0, 1))),
            (
                2,
                Err(ShadowError::OutOfResources {
                    report: Box::new(report(1, 2)),
                    not_mapped: vec![run(0x5000)],
                }),
            ),
            (
                3,
                Err(ShadowError::Unmap {
                    run: run(0x9000),
                    error: HostError::Invalid,
                    report: Box::new(report(1, 0)),
                }),
            ),
        ]);
        assert_eq!(r.peers, 3);
        assert_eq!((r.report.unmap_calls, r.report.map_calls), (2, 3));
        assert_eq!(r.short, vec![(2, vec![run(0x5000)])]);
        assert_eq!(r.unmap_errors, vec![(3, run(0x9000), HostError::Invalid)]);
        assert!(r.freed());
    }

    #[test]
    fn nothing_unmapped_means_nothing_freed() {
        let r = PeerReclaim::collect([(7u16, Ok(report(0, 4)))]);
        assert!(!r.freed());
        let none = PeerReclaim::<u16>::collect([]);
        assert_eq!(none.peers, 0);
        assert!(!none.freed());
    }
}
