//! The shadow-engine workload: a guest page table (the shared reference `RadixFormat`, built
//! by `GuestTables`) edited the way a driver does, synced through a `ShadowEngine` into the
//! host after each step, then torn down. Run once over the real container and once over
//! SimHost; each step's result, report, record and remaining entries are compared.

use crate::layout;
use crate::verdict::{avail, errno_name};
use std::fmt;
use viommu_shared::host::HostDma;
use viommu_shared::pt::{ByteOrder, Walker};
use viommu_shared::shadow::{ShadowConfig, ShadowEngine, ShadowError, ShadowMapping, SyncReport};
use viommu_shared::testing::{Edit, GuestTables, RadixFormat};
use viommu_shared::{AddrRange, Perm};
use vm_memory::GuestMemoryMmap;

/// 48-bit IOVA space of the 4-level format, in 4 KiB pages.
const SPACE_PAGES: u64 = 1 << 36;
/// Page index of the first page of the MSI window.
const MSI_PAGE: u64 = 0xfee00;

/// What a step does after its edits.
#[derive(Clone, Debug)]
enum After {
    /// `sync_or_reclaim` over the range the edits invalidate.
    Sync,
    /// Nothing: the guest changed its table without invalidating (stale host entries).
    NoSync,
    /// `reclaim`.
    Reclaim,
    /// `teardown`.
    Teardown,
}

/// One workload step.
#[derive(Clone, Debug)]
pub struct Step {
    why: String,
    edits: Vec<Edit>,
    after: After,
}

fn map(at: u64, pages: u64, gpa: u64, perm: Perm) -> Edit {
    Edit::Map {
        at,
        pages,
        gpa: gpa / 0x1000,
        perm,
    }
}

fn step(why: impl Into<String>, edits: Vec<Edit>, after: After) -> Step {
    Step {
        why: why.into(),
        edits,
        after,
    }
}

/// The workload for a container with `limit` entries.
pub fn workload(limit: u32) -> Vec<Step> {
    use After::*;
    let g = |page: u64| layout::GPA_A + page * 0x1000;
    let many = u64::from(limit) + 8;
    vec![
        step("map 16 pages", vec![map(0x100, 16, g(0), Perm::RW)], Sync),
        step(
            "extend contiguously (coalesces)",
            vec![map(0x110, 16, g(16), Perm::RW)],
            Sync,
        ),
        step(
            "remap one page inside (splits)",
            vec![map(0x108, 1, g(0x80), Perm::RW)],
            Sync,
        ),
        step(
            "read-only run",
            vec![map(0x120, 4, g(0x20), Perm::READ)],
            Sync,
        ),
        step(
            "write-only run",
            vec![map(0x124, 2, g(0x24), Perm::WRITE)],
            Sync,
        ),
        step(
            "2 MiB leaf",
            vec![Edit::MapBig {
                slot: 1,
                frame: 0,
                perm: Perm::RW,
            }],
            Sync,
        ),
        step(
            "run across a 2 MiB boundary",
            vec![map(0x5fe, 4, g(0x40), Perm::RW)],
            Sync,
        ),
        step(
            "page in the MSI window",
            vec![map(MSI_PAGE, 1, g(0x50), Perm::RW)],
            Sync,
        ),
        step(
            "pages just below the MSI window",
            vec![map(MSI_PAGE - 2, 2, g(0x52), Perm::RW)],
            Sync,
        ),
        step(
            "page at IOVA 2^39",
            vec![map(1 << 27, 1, g(0x54), Perm::RW)],
            Sync,
        ),
        step(
            "unbacked guest-physical page",
            vec![map(0x700, 1, layout::UNBACKED_GPA, Perm::RW)],
            Sync,
        ),
        step(
            "unmap 8 pages of the run",
            vec![Edit::Unmap {
                at: 0x100,
                pages: 8,
            }],
            Sync,
        ),
        step(
            "unmap the 2 MiB leaf",
            vec![Edit::Unmap {
                at: 0x200,
                pages: 0x200,
            }],
            Sync,
        ),
        step(
            format!("{many} scattered pages: more than dma_entry_limit"),
            (0..many)
                .map(|i| map(0x2000 + i, 1, g(0x60), Perm::RW))
                .collect(),
            Sync,
        ),
        step(
            "guest unmaps them without invalidating",
            vec![Edit::Unmap {
                at: 0x2000,
                pages: many,
            }],
            NoSync,
        ),
        step(
            "map elsewhere: host full, reclaim frees the stale entries",
            vec![map(0x3000, 4, g(0x70), Perm::RW)],
            Sync,
        ),
        step("reclaim with nothing stale", vec![], Reclaim),
        step("teardown", vec![], Teardown),
    ]
}

/// How a step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Edits only.
    NoSync,
    /// The sync (or reclaim) succeeded.
    Synced(ReportSummary),
    /// Out of resources after reclaim and retry.
    OutOfResources {
        /// What was done.
        report: ReportSummary,
        /// Runs left unmapped.
        not_mapped: usize,
    },
    /// An unmap failed.
    UnmapFailed(String),
    /// Teardown succeeded with this many bytes.
    TornDown(u64),
    /// The guest table could not be edited (a harness bug, reported as a disagreement).
    EditFailed(String),
}

/// The comparable part of a `SyncReport`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportSummary {
    maps: u64,
    unmaps: u64,
    unmappable: usize,
    refused: Vec<String>,
    reclaimed: bool,
    walk_faults: u64,
}

impl From<&SyncReport> for ReportSummary {
    fn from(r: &SyncReport) -> Self {
        ReportSummary {
            maps: r.map_calls,
            unmaps: r.unmap_calls,
            unmappable: r.unmappable.len(),
            refused: r
                .refused
                .iter()
                .map(|(run, e)| format!("{:#x}:{}", run.iova, errno_name(e)))
                .collect(),
            reclaimed: r.reclaimed,
            walk_faults: r.walk_faults,
        }
    }
}

impl fmt::Display for ReportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "maps={} unmaps={}", self.maps, self.unmaps)?;
        if self.unmappable > 0 {
            write!(f, " unmappable={}", self.unmappable)?;
        }
        if !self.refused.is_empty() {
            write!(f, " refused=[{}]", self.refused.join(","))?;
        }
        if self.reclaimed {
            write!(f, " reclaimed")?;
        }
        if self.walk_faults > 0 {
            write!(f, " walk_faults={}", self.walk_faults)?;
        }
        Ok(())
    }
}

/// A step's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncOutcome {
    /// How it ended.
    pub ended: Ended,
    /// The engine's record afterwards (what it believes the host holds).
    pub record: Vec<ShadowMapping>,
    /// The host's remaining entries afterwards.
    pub remaining: Option<u32>,
}

impl fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ended {
            Ended::NoSync => write!(f, "no sync")?,
            Ended::Synced(r) => write!(f, "OK {r}")?,
            Ended::OutOfResources { report, not_mapped } => {
                write!(f, "OUT-OF-RESOURCES {report} not_mapped={not_mapped}")?
            }
            Ended::UnmapFailed(e) => write!(f, "UNMAP-FAILED {e}")?,
            Ended::TornDown(n) => write!(f, "torn down {n} bytes")?,
            Ended::EditFailed(e) => write!(f, "EDIT-FAILED {e}")?,
        }
        let bytes: u64 = self.record.iter().map(|m| m.size).sum();
        write!(
            f,
            "; record {} mappings {bytes:#x} bytes; avail={}",
            self.record.len(),
            avail(self.remaining)
        )
    }
}

/// Runs `steps` with a fresh guest table (in [`layout::TABLES`]) and an engine over `host`.
pub fn run<H: HostDma>(host: H, mem: &GuestMemoryMmap, steps: &[Step]) -> Vec<SyncOutcome> {
    let fmt = RadixFormat::x86_like(4, ByteOrder::Little);
    let mut guest = match GuestTables::new(&fmt, mem, layout::TABLES, SPACE_PAGES) {
        Ok(g) => g,
        Err(e) => {
            let ended = Ended::EditFailed(format!("{e:?}"));
            return steps
                .iter()
                .map(|_| SyncOutcome {
                    ended: ended.clone(),
                    record: Vec::new(),
                    remaining: None,
                })
                .collect();
        }
    };
    let mut engine = ShadowEngine::new(host, ShadowConfig::default());
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        let mut inv = AddrRange::default();
        let mut failed = None;
        for e in &s.edits {
            match guest.apply(e) {
                Ok(r) => inv = inv.union_hull(&r),
                Err(err) => failed = Some(format!("{err:?}")),
            }
        }
        let view = Walker::new(&fmt, mem, guest.root());
        let ended = if let Some(e) = failed {
            Ended::EditFailed(e)
        } else {
            let r = match s.after {
                After::NoSync => Ok(None),
                After::Sync => engine.sync_or_reclaim(&view, inv).map(Some),
                After::Reclaim => engine.reclaim(&view).map(Some),
                After::Teardown => match engine.teardown() {
                    Ok(n) => {
                        out.push(outcome(&engine, Ended::TornDown(n)));
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match r {
                Ok(None) => Ended::NoSync,
                Ok(Some(rep)) => Ended::Synced(ReportSummary::from(&rep)),
                Err(ShadowError::OutOfResources { report, not_mapped }) => Ended::OutOfResources {
                    report: ReportSummary::from(&*report),
                    not_mapped: not_mapped.len(),
                },
                Err(e @ ShadowError::Unmap { .. }) => Ended::UnmapFailed(e.to_string()),
            }
        };
        out.push(outcome(&engine, ended));
    }
    out
}

fn outcome<H: HostDma>(engine: &ShadowEngine<H>, ended: Ended) -> SyncOutcome {
    SyncOutcome {
        ended,
        record: engine.record().iter().copied().collect(),
        remaining: engine.host().remaining_entries(),
    }
}

/// What step `i` probes.
pub fn describe(s: &Step) -> String {
    s.why.clone()
}
