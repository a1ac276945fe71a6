//! The canonical host layout of guest runs.
//!
//! The host layout is a pure function of the guest view and the policy, so that syncing any
//! part of the space in any order converges to the same host mappings and a diff against the
//! record gives the fewest host calls. A maximal guest run (contiguous IOVA and guest-physical
//! address, equal permissions) becomes one host mapping except where a *cut point* splits it:
//! - every multiple of `max_run` in IOVA (bounds mapping size; see
//!   [`ShadowConfig::max_run`](super::ShadowConfig::max_run));
//! - the edges of the host's usable IOVA ranges (parts outside are not mapped: MSI window,
//!   s390 aperture);
//! - the edges of excluded guest-physical ranges (discarded memory is not mapped);
//! - every page of a page-granular guest-physical range (memory that will be converted
//!   between shared and private 4 KiB at a time, so later partial unmaps never cut a mapping).

use super::error::SyncReport;
use crate::addr::{AddrRange, align_down};
use crate::pt::Run;

/// Page granularity of host mappings (4 KiB on every supported host).
pub const HOST_PAGE: u64 = 4096;

/// The policy that decides the canonical layout.
#[derive(Clone, Copy, Debug)]
pub struct Layout<'a> {
    /// See [`ShadowConfig::max_run`](super::ShadowConfig::max_run).
    pub max_run: u64,
    /// Host-usable IOVA ranges, sorted and disjoint; empty means everything is usable.
    pub valid: &'a [AddrRange],
    /// Guest-physical ranges never mapped, sorted and disjoint.
    pub excluded: &'a [AddrRange],
    /// Guest-physical ranges mapped one page per host mapping, sorted and disjoint.
    pub page_granular: &'a [AddrRange],
    /// Most host mappings one plan may produce (bounds memory for a hostile guest page that
    /// would cut into millions of pieces); what does not fit goes to
    /// [`SyncReport::not_planned`].
    pub max_pieces: usize,
}

/// Splits `piece` by guest-physical `ranges` (sorted, disjoint) into the parts inside
/// (`f(part, true)`) and outside (`f(part, false)`), in IOVA order.
fn split_by_gpa(piece: Run, ranges: &[AddrRange], f: &mut dyn FnMut(Run, bool)) {
    let g = piece.addr_range();
    let first = ranges.partition_point(|r| r.end <= g.start);
    let mut at = g.start;
    for r in ranges[first..].iter().take_while(|r| r.start < g.end) {
        let inside = r.intersect(&g);
        if inside.start > at {
            f(sub(piece, at, inside.start), false);
        }
        f(sub(piece, inside.start, inside.end), true);
        at = inside.end;
    }
    if at < g.end {
        f(sub(piece, at, g.end), false);
    }
}

/// The part of `piece` whose guest-physical addresses are `[gpa_start, gpa_end)`.
fn sub(piece: Run, gpa_start: u64, gpa_end: u64) -> Run {
    Run {
        iova: piece.iova + (gpa_start - piece.addr),
        addr: gpa_start,
        size: gpa_end - gpa_start,
        perm: piece.perm,
    }
}

impl Layout<'_> {
    /// True when `p` is a cut point for every guest view (a `max_run` multiple or the edge of
    /// a usable IOVA range).
    pub fn is_forced_cut(&self, p: u64) -> bool {
        p.is_multiple_of(self.max_run) || self.valid.iter().any(|r| r.start == p || r.end == p)
    }

    /// Appends the canonical host mappings of `runs` (maximal, in IOVA order) to `out`;
    /// parts that cannot be mapped go to `report`.
    pub fn plan(&self, runs: &[Run], out: &mut Vec<Run>, report: &mut SyncReport) {
        for run in runs {
            self.by_valid(*run, &mut |piece, ok| {
                if !ok {
                    report.unmappable.push(piece);
                    return;
                }
                split_by_gpa(piece, self.excluded, &mut |p, excluded| {
                    if excluded {
                        report.excluded.push(p);
                    } else {
                        let not_planned = &mut report.not_planned;
                        split_by_gpa(p, self.page_granular, &mut |q, per_page| {
                            self.cut(q, per_page, out, not_planned);
                        });
                    }
                });
            });
        }
    }

    /// Splits by the usable IOVA ranges.
    fn by_valid(&self, run: Run, f: &mut dyn FnMut(Run, bool)) {
        if self.valid.is_empty() {
            return f(run, true);
        }
        let r = run.iova_range();
        let mut at = r.start;
        for v in self.valid.iter().filter(|v| v.overlaps(&r)) {
            let inside = v.intersect(&r);
            if inside.start > at {
                f(
                    run.clip(AddrRange::new(at, inside.start)).unwrap_or(run),
                    false,
                );
            }
            f(run.clip(inside).unwrap_or(run), true);
            at = inside.end;
        }
        if at < r.end {
            f(run.clip(AddrRange::new(at, r.end)).unwrap_or(run), false);
        }
    }

    /// Cuts at `max_run` multiples (or every page) and appends; past `max_pieces`, the rest
    /// of the run goes to `not_planned` whole.
    fn cut(&self, run: Run, per_page: bool, out: &mut Vec<Run>, not_planned: &mut Vec<Run>) {
        let step = if per_page { HOST_PAGE } else { self.max_run };
        let end = run.iova + run.size;
        let mut at = run.iova;
        while at < end {
            if out.len() >= self.max_pieces {
                not_planned.push(Run {
                    iova: at,
                    addr: run.addr + (at - run.iova),
                    size: end - at,
                    perm: run.perm,
                });
                return;
            }
            let next = align_down(at, step).saturating_add(step).min(end);
            out.push(Run {
                iova: at,
                addr: run.addr + (at - run.iova),
                size: next - at,
                perm: run.perm,
            });
            at = next;
        }
    }
}

/// Sorts and merges overlapping or touching ranges.
pub fn normalize(ranges: &mut Vec<AddrRange>) {
    ranges.retain(|r| !r.is_empty());
    ranges.sort();
    let mut out: Vec<AddrRange> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    *ranges = out;
}

/// Removes `cut` from every range in `ranges` (sorted, disjoint).
pub fn subtract(ranges: &mut Vec<AddrRange>, cut: AddrRange) {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for r in ranges.drain(..) {
        if !r.overlaps(&cut) {
            out.push(r);
            continue;
        }
        if r.start < cut.start {
            out.push(AddrRange::new(r.start, cut.start));
        }
        if cut.end < r.end {
            out.push(AddrRange::new(cut.end, r.end));
        }
    }
    *ranges = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perm::Perm;

    fn run(iova: u64, addr: u64, size: u64) -> Run {
        Run {
            iova,
            addr,
            size,
            perm: Perm::RW,
        }
    }

    #[test]
    fn cuts_at_max_run_reserved_excluded_and_pages() {
        let valid = [
            AddrRange::new(0, 0xfee0_0000),
            AddrRange::new(0xfef0_0000, 1 << 39),
        ];
        let excluded = [AddrRange::new(0x10_3000, 0x10_4000)];
        let pg = [AddrRange::new(0x20_0000, 0x20_2000)];
        let l = Layout {
            max_run: 0x20_0000,
            valid: &valid,
            excluded: &excluded,
            page_granular: &pg,
            max_pieces: usize::MAX,
        };
        let mut out = Vec::new();
        let mut rep = SyncReport::default();
        // Crosses a 2 MiB boundary, contains an excluded page.
        l.plan(&[run(0x1f_0000, 0x10_0000, 0x2_0000)], &mut out, &mut rep);
        assert_eq!(
            out,
            vec![
                run(0x1f_0000, 0x10_0000, 0x3000),
                run(0x1f_4000, 0x10_4000, 0xc000),
                run(0x20_0000, 0x11_0000, 0x1_0000),
            ]
        );
        assert_eq!(rep.excluded, vec![run(0x1f_3000, 0x10_3000, 0x1000)]);
        // Page-granular guest-physical pages become single pages.
        out.clear();
        l.plan(&[run(0x40_0000, 0x1f_f000, 0x4000)], &mut out, &mut rep);
        assert_eq!(
            out,
            vec![
                run(0x40_0000, 0x1f_f000, 0x1000),
                run(0x40_1000, 0x20_0000, 0x1000),
                run(0x40_2000, 0x20_1000, 0x1000),
                run(0x40_3000, 0x20_2000, 0x1000),
            ]
        );
        // The MSI window is not mapped.
        out.clear();
        l.plan(
            &[run(0xfed0_0000, 0x1_0000_0000, 0x30_0000)],
            &mut out,
            &mut rep,
        );
        assert_eq!(out.iter().map(|r| r.size).sum::<u64>(), 0x20_0000);
        assert_eq!(
            rep.unmappable,
            vec![run(0xfee0_0000, 0x1_0010_0000, 0x10_0000)]
        );
    }

    #[test]
    fn a_huge_page_is_planned_only_up_to_the_bound() {
        let l = Layout {
            max_run: 0x20_0000,
            valid: &[],
            excluded: &[],
            page_granular: &[],
            max_pieces: 3,
        };
        let mut out = Vec::new();
        let mut rep = SyncReport::default();
        // A 256 TiB page would be 2^27 pieces of 2 MiB.
        l.plan(
            &[run(0, 0, 1 << 48), run(1 << 48, 0, 0x1000)],
            &mut out,
            &mut rep,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(
            rep.not_planned,
            vec![
                run(0x60_0000, 0x60_0000, (1 << 48) - 0x60_0000),
                run(1 << 48, 0, 0x1000)
            ]
        );
    }

    #[test]
    fn range_set_helpers() {
        let mut v = vec![
            AddrRange::new(5, 9),
            AddrRange::new(0, 3),
            AddrRange::new(3, 4),
        ];
        normalize(&mut v);
        assert_eq!(v, vec![AddrRange::new(0, 4), AddrRange::new(5, 9)]);
        subtract(&mut v, AddrRange::new(2, 6));
        assert_eq!(v, vec![AddrRange::new(0, 2), AddrRange::new(6, 9)]);
    }
}
