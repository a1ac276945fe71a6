//! The scripted host-backend sequences: plain `HostDma` calls, fixed before they run, executed
//! once on the real container and once on SimHost.
//!
//! IOVAs come from the container's IOVA ranges (so reserved windows and the address-width
//! limit are probed where this IOMMU has them), guest-physical addresses from
//! [`crate::layout`].

use crate::layout;
use crate::verdict::{avail, errno_name};
use std::fmt;
use viommu_shared::host::{HostDma, HostError};
use viommu_shared::{AddrRange, Perm};

const K4: u64 = 0x1000;
/// Top page of the 64-bit space.
const TOP_PAGE: u64 = u64::MAX - K4 + 1;

/// One host-backend operation.
#[derive(Clone, Debug)]
pub enum Op {
    /// `map(iova, gpa, size, perm)`.
    Map {
        iova: u64,
        gpa: u64,
        size: u64,
        perm: Perm,
    },
    /// `unmap(iova, size)`.
    Unmap { iova: u64, size: u64 },
    /// `unmap_all()`.
    UnmapAll,
    /// `count` one-page maps at consecutive IOVAs from `iova`, all to guest page `gpa` (so no
    /// two can ever be one mapping); stops at the first error.
    MapPages { iova: u64, gpa: u64, count: u64 },
    /// No call: only the remaining-entries count is read.
    Query,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Map {
                iova,
                gpa,
                size,
                perm,
            } => write!(
                f,
                "map {iova:#x}+{size:#x} -> gpa {gpa:#x} {}",
                perm_name(perm)
            ),
            Op::Unmap { iova, size } => write!(f, "unmap {iova:#x}+{size:#x}"),
            Op::UnmapAll => write!(f, "unmap_all"),
            Op::MapPages { iova, gpa, count } => {
                write!(f, "map {count} single pages from {iova:#x} -> gpa {gpa:#x}")
            }
            Op::Query => write!(f, "DMA_AVAIL"),
        }
    }
}

/// `RW`, `R`, `W` or `-`.
pub fn perm_name(p: Perm) -> &'static str {
    match (p.contains(Perm::READ), p.contains(Perm::WRITE)) {
        (true, true) => "RW",
        (true, false) => "R",
        (false, true) => "W",
        (false, false) => "-",
    }
}

/// A step: why it is there, and the operation.
#[derive(Clone, Debug)]
pub struct Step {
    /// What the step probes.
    pub why: String,
    /// The call.
    pub op: Op,
}

/// What a call answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A map succeeded.
    Mapped,
    /// An unmap succeeded with this many bytes unmapped.
    Unmapped(u64),
    /// `MapPages`: how many succeeded, and the error that stopped it.
    Pages {
        mapped: u64,
        stopped: Option<HostError>,
    },
    /// `Query`.
    Queried,
    /// The call failed.
    Failed(HostError),
}

/// A step's result: the answer and the remaining-entries count afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The answer.
    pub answer: Answer,
    /// `DMA_AVAIL` after the call.
    pub remaining: Option<u32>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.answer {
            Answer::Mapped => write!(f, "OK")?,
            Answer::Unmapped(n) => write!(f, "OK size={n}")?,
            Answer::Pages { mapped, stopped } => {
                write!(f, "{mapped} mapped")?;
                if let Some(e) = stopped {
                    write!(f, " then {}", errno_name(e))?;
                }
            }
            Answer::Queried => write!(f, "-")?,
            Answer::Failed(e) => write!(f, "{}", errno_name(e))?,
        }
        write!(f, " avail={}", avail(self.remaining))
    }
}

/// Runs `steps` on `host`, one outcome per step.
pub fn execute(host: &mut dyn HostDma, steps: &[Step]) -> Vec<Outcome> {
    steps
        .iter()
        .map(|s| {
            let answer = match s.op {
                Op::Map {
                    iova,
                    gpa,
                    size,
                    perm,
                } => match host.map(iova, gpa, size, perm) {
                    Ok(()) => Answer::Mapped,
                    Err(e) => Answer::Failed(e),
                },
                Op::Unmap { iova, size } => match host.unmap(iova, size) {
                    Ok(n) => Answer::Unmapped(n),
                    Err(e) => Answer::Failed(e),
                },
                Op::UnmapAll => match host.unmap_all() {
                    Ok(n) => Answer::Unmapped(n),
                    Err(e) => Answer::Failed(e),
                },
                Op::MapPages { iova, gpa, count } => {
                    let mut mapped = 0;
                    let mut stopped = None;
                    for i in 0..count {
                        match host.map(iova + i * K4, gpa, K4, Perm::RW) {
                            Ok(()) => mapped += 1,
                            Err(e) => {
                                stopped = Some(e);
                                break;
                            }
                        }
                    }
                    Answer::Pages { mapped, stopped }
                }
                Op::Query => Answer::Queried,
            };
            Outcome {
                answer,
                remaining: host.remaining_entries(),
            }
        })
        .collect()
}

/// What the sequences are built from: the container's IOVA ranges and entry limit.
#[derive(Clone, Debug)]
pub struct Platform {
    /// Usable IOVA ranges (sorted, half-open; an end of `u64::MAX` includes the top page).
    pub ranges: Vec<AddrRange>,
    /// `dma_entry_limit`.
    pub limit: u32,
}

impl Platform {
    /// Base of the IOVAs the sequences use: 16 MiB into the first range.
    fn base(&self) -> u64 {
        self.ranges.first().map_or(0, |r| r.start) + 0x100_0000
    }

    /// Reserved windows between usable ranges.
    fn gaps(&self) -> Vec<AddrRange> {
        self.ranges
            .windows(2)
            .map(|w| AddrRange::new(w[0].end, w[1].start))
            .filter(|g| !g.is_empty())
            .collect()
    }

    /// End of the last usable range, when the space above it is not usable.
    fn top(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.end).filter(|&e| e != u64::MAX)
    }
}

/// Builds a step list.
#[derive(Default)]
struct Plan {
    steps: Vec<Step>,
}

impl Plan {
    fn push(&mut self, why: impl Into<String>, op: Op) {
        self.steps.push(Step {
            why: why.into(),
            op,
        });
    }
    fn map(&mut self, why: impl Into<String>, iova: u64, gpa: u64, size: u64, perm: Perm) {
        self.push(
            why,
            Op::Map {
                iova,
                gpa,
                size,
                perm,
            },
        );
    }
    fn map_rw(&mut self, why: impl Into<String>, iova: u64, size: u64) {
        self.map(why, iova, layout::GPA_A, size, Perm::RW);
    }
    fn unmap(&mut self, why: impl Into<String>, iova: u64, size: u64) {
        self.push(why, Op::Unmap { iova, size });
    }
}

/// Overlaps and adjacency (reference real-kernel.md §5 `[v2] map ...` lines).
fn overlaps(s: &mut Plan, b: u64) {
    s.map_rw("2-page mapping", b, 2 * K4);
    s.map_rw("overlaps its tail", b + K4, K4);
    s.map_rw("same range again", b, 2 * K4);
    s.map_rw("overlaps its head", b - K4, 2 * K4);
    s.map_rw("superset of it", b - K4, 4 * K4);
    s.map(
        "adjacent, same gpa as the first",
        b + 2 * K4,
        layout::GPA_A,
        K4,
        Perm::RW,
    );
    s.unmap("unmap spanning both mappings", b, 3 * K4);
}

/// Argument errors and permissions.
fn arguments(s: &mut Plan, b: u64) {
    s.map_rw("unaligned iova", b + 1, K4);
    s.map_rw("unaligned size", b, K4 - 1);
    s.map_rw("size 0", b, 0);
    s.map("unaligned gpa", b, layout::GPA_A + 0x800, K4, Perm::RW);
    s.map("no READ nor WRITE", b, layout::GPA_A, K4, Perm::empty());
    s.map(
        "iova + size wraps",
        TOP_PAGE,
        layout::GPA_A,
        2 * K4,
        Perm::RW,
    );
    s.map("gpa not backed", b, layout::UNBACKED_GPA, K4, Perm::RW);
    s.map(
        "gpa runs past its region",
        b,
        layout::DATA.end - K4,
        2 * K4,
        Perm::RW,
    );
    s.map("read-only", b, layout::GPA_A, K4, Perm::READ);
    s.map(
        "overlap with unbacked gpa",
        b,
        layout::UNBACKED_GPA,
        K4,
        Perm::RW,
    );
    s.map(
        "overlap with unaligned iova",
        b + 1,
        layout::GPA_A,
        K4,
        Perm::RW,
    );
    s.unmap("unmap the read-only mapping", b, K4);
    s.map("write-only", b, layout::GPA_A, K4, Perm::WRITE);
    s.unmap("unmap the write-only mapping", b, K4);
    s.map(
        "READ|EXEC|PRIV (host keeps READ)",
        b,
        layout::GPA_A,
        K4,
        Perm::READ | Perm::EXEC | Perm::PRIV,
    );
    s.unmap("unmap it", b, K4);
    s.unmap("unmap unaligned iova", b + 1, K4);
    s.unmap("unmap unaligned size", b, K4 - 1);
    s.unmap("unmap size 0", b, 0);
    s.unmap("unmap iova + size wraps", TOP_PAGE, 2 * K4);
}

/// Reserved windows (MSI window, AMD's HyperTransport hole) and the top of the address width.
fn reserved(s: &mut Plan, p: &Platform) {
    for g in p.gaps() {
        s.map_rw(format!("first page of reserved {g}"), g.start, K4);
        s.map_rw(format!("last page of reserved {g}"), g.end - K4, K4);
        s.map_rw(format!("straddles the start of {g}"), g.start - K4, 2 * K4);
        s.map_rw(format!("straddles the end of {g}"), g.end - K4, 2 * K4);
        s.map_rw(format!("page below {g}"), g.start - K4, K4);
        s.map_rw(format!("page above {g}"), g.end, K4);
        s.unmap("unmap the page below", g.start - K4, K4);
        s.unmap("unmap the page above", g.end, K4);
    }
    if let Some(top) = p.top() {
        s.map_rw(format!("last page below the top {top:#x}"), top - K4, K4);
        s.unmap("unmap it", top - K4, K4);
        s.map_rw(format!("first page at the top {top:#x}"), top, K4);
        s.map_rw("straddles the top", top - K4, 2 * K4);
    }
    // Fixed probes (reference: "map iova 1<<39", "1<<48"), whatever the ranges say.
    for iova in [1u64 << 39, 1 << 48, 1 << 63] {
        s.map_rw(format!("fixed probe {iova:#x}"), iova, K4);
        s.unmap("unmap it", iova, K4);
    }
    // The top of the 64-bit space. type1 computes `iova + size`, which wraps to 0 for a range
    // ending at 2^64: such an unmap finds nothing. Where the ranges allow it (AMD-Vi) the
    // kernel would even map the top page and then never unmap it, so the backend refuses
    // that map (main.rs probes the raw kernel behaviour on a throw-away container).
    s.map_rw("page below the top page", TOP_PAGE - K4, K4);
    s.unmap(
        "unmap [it, 2^64): iova + size wraps to 0",
        TOP_PAGE - K4,
        2 * K4,
    );
    s.unmap("unmap it exactly", TOP_PAGE - K4, K4);
    s.map_rw(
        "top page (backend refuses: range ends at 2^64)",
        TOP_PAGE,
        K4,
    );
}

/// Partial, superset and empty unmaps; type1 v1 and v2 answer differently here.
fn partial_unmaps(s: &mut Plan, a: u64) {
    let m2 = |s: &mut Plan, why: &str, iova| s.map_rw(why, iova, 2 * K4);
    m2(s, "2-page mapping X at A", a);
    s.unmap("first half of X", a, K4);
    s.unmap("second half of X", a + K4, K4);
    s.unmap("from inside X past its end", a + K4, 2 * K4);
    s.unmap("from before X into it", a - K4, 2 * K4);
    s.unmap("all of what is left at A", a, 2 * K4);
    s.unmap("same again (empty)", a, 2 * K4);
    m2(s, "X again", a);
    s.unmap(
        "from A to 2^64: iova + size wraps to 0",
        a,
        0u64.wrapping_sub(a),
    );
    s.unmap("superset of X", a - K4, 4 * K4);
    m2(s, "X again", a);
    s.map_rw("1-page Y right after X", a + 2 * K4, K4);
    s.unmap("from inside X, covering Y", a + K4, 2 * K4);
    s.unmap("X and Y exactly", a, 3 * K4);
    s.unmap("clean up [A, A+12K)", a, 3 * K4);
    m2(s, "X again", a);
    m2(s, "2-page Z right after X", a + 2 * K4);
    s.unmap("covers X, cuts Z", a, 3 * K4);
    s.unmap("from inside X to inside Z", a + K4, 2 * K4);
    s.unmap("clean up [A, A+16K)", a, 4 * K4);
    s.map_rw("1-page W at A+8K", a + 2 * K4, K4);
    s.unmap("range starting in a hole, covering W", a, 4 * K4);
    s.unmap("empty huge range [0, 2^63)", 0, 1 << 63);
}

/// `unmap_all` with and without mappings.
fn unmap_all(s: &mut Plan, a: u64) {
    s.map_rw("mapping 1", a, K4);
    s.map_rw("mapping 2", a + 4 * K4, 3 * K4);
    s.map(
        "mapping 3 (read-only)",
        a + 16 * K4,
        layout::GPA_A,
        K4,
        Perm::READ,
    );
    s.push("unmap_all with 3 mappings", Op::UnmapAll);
    s.push("unmap_all with none", Op::UnmapAll);
}

/// `dma_entry_limit`: ENOSPC, DMA_AVAIL to 0 and back, and which checks come before the count.
fn limit(s: &mut Plan, p: &Platform, c: u64) {
    let l = u64::from(p.limit);
    s.push(
        format!("fill: {l} single-page maps"),
        Op::MapPages {
            iova: c,
            gpa: layout::GPA_A,
            count: l,
        },
    );
    s.map_rw("one more: ENOSPC", c + l * K4, K4);
    s.map_rw(
        "multi-page mapping at full: ENOSPC",
        c + (l + 8) * K4,
        16 * K4,
    );
    s.map_rw("overlap at full (overlap is checked first)", c, K4);
    s.map_rw("unaligned at full", c + l * K4 + 1, K4);
    if let Some(g) = p.gaps().first() {
        s.map_rw(
            "reserved window at full (count is checked first)",
            g.start,
            K4,
        );
    }
    s.map(
        "unbacked gpa at full",
        c + l * K4,
        layout::UNBACKED_GPA,
        K4,
        Perm::RW,
    );
    s.unmap("free one entry", c, K4);
    s.map_rw("map again into the freed entry", c + l * K4, K4);
    s.map_rw("full again", c + (l + 1) * K4, K4);
    s.push("unmap_all", Op::UnmapAll);
    s.push("DMA_AVAIL back to the limit", Op::Query);
}

/// The type1 v2 sequence.
pub fn type1v2(p: &Platform) -> Vec<Step> {
    let mut s = Plan::default();
    let b = p.base();
    s.push("fresh container", Op::Query);
    overlaps(&mut s, b);
    arguments(&mut s, b);
    reserved(&mut s, p);
    partial_unmaps(&mut s, b + 0x100_0000);
    unmap_all(&mut s, b + 0x200_0000);
    limit(&mut s, p, b + 0x400_0000);
    s.steps
}

/// The type1 v1 sequence (a second container, `SET_IOMMU(VFIO_TYPE1_IOMMU)`).
pub fn type1v1(p: &Platform) -> Vec<Step> {
    let mut s = Plan::default();
    let b = p.base();
    s.push("fresh container", Op::Query);
    overlaps(&mut s, b);
    partial_unmaps(&mut s, b + 0x100_0000);
    unmap_all(&mut s, b + 0x200_0000);
    limit(&mut s, p, b + 0x400_0000);
    s.steps
}
