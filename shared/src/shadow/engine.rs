//! [`ShadowEngine`]: one per host address space.

use super::config::ShadowConfig;
use super::error::{ShadowError, SyncBatch, SyncReport};
use super::plan::{self, HOST_PAGE, Layout};
use super::record::{Record, ShadowMapping};
use super::view::GuestView;
use crate::addr::{AddrRange, align_down, align_up};
use crate::host::{HostDma, HostError};
use crate::pt::{Run, RunMerger};

/// Keeps a host address space equal to the guest's view. See the [module](super) docs.
///
/// Every host mapping it creates is in its [`Record`]; [`teardown`](Self::teardown) (also run
/// on drop) removes them all. Do not map or unmap on the host behind its back.
#[derive(Debug)]
pub struct ShadowEngine<H: HostDma> {
    host: H,
    config: ShadowConfig,
    record: Record,
    valid: Vec<AddrRange>,
    /// Guest-physical ranges never mapped (`reserve_gpa`: interrupt window, holes).
    reserved: Vec<AddrRange>,
    /// Guest-physical ranges not mapped until restored (`discard_gpa` / `restore_gpa`).
    discarded: Vec<AddrRange>,
    /// `reserved` ∪ `discarded`, what the layout leaves out.
    excluded: Vec<AddrRange>,
    page_granular: Vec<AddrRange>,
    /// Guest translations the layout left out because their output is excluded, as of the
    /// last sync of their IOVAs, indexed by guest-physical address: what `restore_gpa` must
    /// map again without walking the whole space.
    withheld: Record,
    /// `withheld` overflowed its bound (`max_mappings`) and is incomplete: the next
    /// `restore_gpa` re-syncs the whole space.
    withheld_lossy: bool,
    /// Hull of the guest runs syncs left unmapped for lack of host resources.
    missing: Option<AddrRange>,
}

impl SyncReport {
    /// Adds what `other` did to `self`.
    pub fn absorb(&mut self, other: SyncReport) {
        self.unmap_calls += other.unmap_calls;
        self.map_calls += other.map_calls;
        self.unmappable.extend(other.unmappable);
        self.excluded.extend(other.excluded);
        self.not_planned.extend(other.not_planned);
        self.refused.extend(other.refused);
        self.walk_faults += other.walk_faults;
        self.first_fault = self.first_fault.or(other.first_fault);
        self.walk_incomplete |= other.walk_incomplete;
        self.reclaimed |= other.reclaimed;
    }

    /// Host calls made (maps and unmaps).
    pub fn host_calls(&self) -> u64 {
        self.unmap_calls + self.map_calls
    }
}

impl<H: HostDma> ShadowEngine<H> {
    /// An engine over `host` (which should hold no mappings yet). The host's usable IOVA
    /// ranges are read once here.
    pub fn new(host: H, config: ShadowConfig) -> Self {
        let config = config.clone().with_max_run(config.max_run);
        let mut valid = host.iova_ranges();
        plan::normalize(&mut valid);
        ShadowEngine {
            host,
            config,
            record: Record::default(),
            valid,
            reserved: Vec::new(),
            discarded: Vec::new(),
            excluded: Vec::new(),
            page_granular: Vec::new(),
            withheld: Record::default(),
            withheld_lossy: false,
            missing: None,
        }
    }

    /// The host backend.
    pub fn host(&self) -> &H {
        &self.host
    }

    /// The host backend, mutably (for backend-specific settings; mapping behind the engine's
    /// back breaks its accounting).
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    /// The configuration in force.
    pub fn config(&self) -> &ShadowConfig {
        &self.config
    }

    /// What is mapped on the host.
    pub fn record(&self) -> &Record {
        &self.record
    }

    fn layout(&self) -> Layout<'_> {
        Layout {
            max_run: self.config.max_run,
            valid: &self.valid,
            excluded: &self.excluded,
            page_granular: &self.page_granular,
            max_pieces: self.config.max_mappings,
        }
    }

    /// True when the guest view certainly continues one host mapping across `p`: pages on
    /// both sides, contiguous, same permissions, and no forced cut at `p`.
    fn joins(&self, view: &dyn GuestView, p: u64) -> bool {
        if p == 0 || self.layout().is_forced_cut(p) {
            return false;
        }
        match (view.lookup(p - 1), view.lookup(p)) {
            (Some(a), Some(b)) => {
                a.perm == b.perm && a.translate(p - 1).wrapping_add(1) == b.translate(p)
            }
            _ => false,
        }
    }

    /// Grows `range` to the smallest window whose edges are cut points of both the host
    /// layout now (the record) and the canonical layout of the current guest view, so that
    /// syncing the window alone yields the canonical layout.
    ///
    /// Left edge `p`: a recorded mapping spanning it moves it to that mapping's start (a cut
    /// point of the old layout whose neighbourhood the guest did not change); if the guest
    /// view joins across `p`, to the start of the mapping ending at `p`, or — when the host
    /// has none there (an earlier refusal) — to the `max_run` boundary below, which is
    /// always a cut point. The right edge is symmetric.
    fn window(&self, view: &dyn GuestView, range: AddrRange) -> AddrRange {
        let top = !(HOST_PAGE - 1);
        let mut start = align_down(range.start, HOST_PAGE);
        let mut end = align_up(range.end, HOST_PAGE).min(top);
        if end <= start {
            return AddrRange::default();
        }
        if let Some(m) = self.record.spanning(start) {
            start = m.iova;
        } else if self.joins(view, start) {
            start = match self.record.containing(start - 1) {
                Some(m) => m.iova,
                None => align_down(start - 1, self.config.max_run),
            };
        }
        if let Some(m) = self.record.spanning(end) {
            end = m.iova + m.size;
        } else if end < top && self.joins(view, end) {
            end = match self.record.starting_at(end) {
                Some(m) => m.iova + m.size,
                None => align_up(end + 1, self.config.max_run).min(top),
            };
        }
        AddrRange::new(start, end)
    }

    /// Brings the host to the guest view over `range` (plus whatever host mappings straddle
    /// its edges) with the fewest host calls: unmaps every recorded mapping that differs
    /// from the canonical layout, then maps what is missing. A guest change inside part of a
    /// coalesced host mapping unmaps it whole and re-maps the surviving pieces.
    ///
    /// On out-of-resources it stops; the record still equals the host and the error lists
    /// what is not mapped. Other host refusals of a map are reported and skipped.
    pub fn sync(
        &mut self,
        view: &dyn GuestView,
        range: AddrRange,
    ) -> Result<SyncReport, ShadowError> {
        self.sync_prioritized(view, range, None)
    }

    /// [`sync`](Self::sync), mapping the runs that overlap `first` before the others, so a
    /// host with few free entries spends them where the guest asked.
    fn sync_prioritized(
        &mut self,
        view: &dyn GuestView,
        range: AddrRange,
        first: Option<AddrRange>,
    ) -> Result<SyncReport, ShadowError> {
        let result = self.sync_planned(view, range, first);
        self.note_missing(range, &result);
        result
    }

    /// Updates [`missing`](Self::missing) after a sync of `range`: a sync covering the old
    /// span decided all of it again; one stopped by an unmap refusal decided nothing.
    fn note_missing(&mut self, range: AddrRange, result: &Result<SyncReport, ShadowError>) {
        let new = match result {
            Ok(_) => None,
            Err(ShadowError::OutOfResources { not_mapped, .. }) => hull(not_mapped),
            Err(ShadowError::Unmap { .. }) => return,
        };
        let old = self
            .missing
            .filter(|m| !(range.start <= m.start && m.end <= range.end));
        self.missing = match (old, new) {
            (Some(a), Some(b)) => Some(a.union_hull(&b)),
            (a, b) => a.or(b),
        };
    }

    /// The span (hull) of the guest runs that syncs left unmapped for lack of host
    /// resources and no later sync has mapped; `None` when nothing is known to be missing.
    pub fn missing(&self) -> Option<AddrRange> {
        self.missing
    }

    /// Syncs the [`missing`](Self::missing) span again, so what an out-of-resources left
    /// out comes back as soon as host entries are free. What still does not fit stays
    /// missing and is not an error (it was reported when first left out): only a host unmap
    /// refusal fails.
    pub fn retry_missing(&mut self, view: &dyn GuestView) -> Result<SyncReport, ShadowError> {
        let Some(span) = self.missing else {
            return Ok(SyncReport::default());
        };
        match self.sync(view, span) {
            Err(ShadowError::OutOfResources { report, .. }) => Ok(*report),
            other => other,
        }
    }

    /// What the x86 models do for an invalidation of `range`:
    /// [`sync_or_reclaim`](Self::sync_or_reclaim), then, if that succeeded,
    /// [`retry_missing`](Self::retry_missing) (the reports summed).
    pub fn sync_reclaim_retry(
        &mut self,
        view: &dyn GuestView,
        range: AddrRange,
    ) -> Result<SyncReport, ShadowError> {
        let mut report = self.sync_or_reclaim(view, range)?;
        match self.retry_missing(view) {
            Ok(more) => {
                report.absorb(more);
                Ok(report)
            }
            Err(ShadowError::Unmap {
                run,
                error,
                report: more,
            }) => {
                report.absorb(*more);
                Err(ShadowError::Unmap {
                    run,
                    error,
                    report: Box::new(report),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The body of [`sync_prioritized`](Self::sync_prioritized).
    fn sync_planned(
        &mut self,
        view: &dyn GuestView,
        range: AddrRange,
        first: Option<AddrRange>,
    ) -> Result<SyncReport, ShadowError> {
        let mut report = SyncReport::default();
        let w = self.window(view, range);
        if w.is_empty() {
            return Ok(report);
        }
        let mut merger = RunMerger::new(w);
        let walked = view.leaves(w, &mut |leaf| merger.push(leaf), &mut |fault| {
            report.walk_faults += 1;
            report.first_fault.get_or_insert(fault);
        });
        if let Err(fault) = walked {
            // Nothing after the stop is known: treat it as unmapped, so no stale host
            // mapping survives.
            report.walk_incomplete = true;
            report.first_fault.get_or_insert(fault);
        }
        let runs = merger.finish();
        let mut desired = Vec::with_capacity(runs.len());
        self.layout().plan(&runs, &mut desired, &mut report);
        self.note_withheld(w, &report.excluded);
        let old = self.record.starting_in(w);

        let (to_unmap, mut to_map) = diff(&old, &desired);
        if let Some(p) = first {
            // Stable: IOVA order within each group.
            to_map.sort_by_key(|r| !r.iova_range().overlaps(&p));
        }
        for m in to_unmap {
            report.unmap_calls += 1;
            match self.host.unmap(m.iova, m.size) {
                Ok(n) => {
                    self.record.remove(m.iova);
                    if n != m.size {
                        // The host held something other than what we recorded.
                        return Err(ShadowError::Unmap {
                            run: m.run(),
                            error: HostError::NotFound,
                            report: Box::new(report),
                        });
                    }
                }
                Err(error) => {
                    return Err(ShadowError::Unmap {
                        run: m.run(),
                        error,
                        report: Box::new(report),
                    });
                }
            }
        }
        for (i, run) in to_map.iter().enumerate() {
            if self.record.len() >= self.config.max_mappings {
                return Err(ShadowError::OutOfResources {
                    report: Box::new(report),
                    not_mapped: to_map[i..].to_vec(),
                });
            }
            report.map_calls += 1;
            match self.host.map(run.iova, run.addr, run.size, run.perm) {
                Ok(()) => self.record.insert(ShadowMapping::from(*run)),
                Err(HostError::OutOfResources) => {
                    return Err(ShadowError::OutOfResources {
                        report: Box::new(report),
                        not_mapped: to_map[i..].to_vec(),
                    });
                }
                Err(e) => report.refused.push((*run, e)),
            }
        }
        if !report.not_planned.is_empty() {
            // More than the engine may hold: what it could lay out is mapped, the rest is
            // reported (and its old mappings are gone: nothing stale stays).
            let not_mapped = report.not_planned.clone();
            return Err(ShadowError::OutOfResources {
                report: Box::new(report),
                not_mapped,
            });
        }
        Ok(report)
    }

    /// Full re-sync of the whole address space: unmaps everything the guest no longer maps
    /// (freeing host entries) and maps what is missing.
    pub fn reclaim(&mut self, view: &dyn GuestView) -> Result<SyncReport, ShadowError> {
        self.sync(view, AddrRange::new(0, u64::MAX))
    }

    /// "Global flush and retry": syncs `range`; if the host runs out of entries, re-syncs the
    /// whole space — unmapping everything the guest no longer maps, so those entries are
    /// free again — mapping the runs of `range` before any other. That full sync covers
    /// `range`, so no separate retry is needed (one would only repeat refused calls). An
    /// error left after that is the architecture's to surface (s390 RPCIT CC 1 status 16, a
    /// typed error to the VMM on x86); its `not_mapped` may include runs outside `range`.
    pub fn sync_or_reclaim(
        &mut self,
        view: &dyn GuestView,
        range: AddrRange,
    ) -> Result<SyncReport, ShadowError> {
        let first = match self.sync(view, range) {
            Err(ShadowError::OutOfResources { report, .. }) => *report,
            other => return other,
        };
        let whole = AddrRange::new(0, u64::MAX);
        match self.sync_prioritized(view, whole, Some(range)) {
            Ok(mut report) => {
                report.absorb(first);
                report.reclaimed = true;
                Ok(report)
            }
            Err(ShadowError::OutOfResources {
                mut report,
                not_mapped,
            }) => {
                report.absorb(first);
                report.reclaimed = true;
                Err(ShadowError::OutOfResources { report, not_mapped })
            }
            Err(e) => Err(e),
        }
    }

    /// True when any guest-physical byte in `range` is the target of a host DMA mapping
    /// (pinned for a passthrough device).
    pub fn is_gpa_mapped(&self, range: AddrRange) -> bool {
        !self.record.overlapping_gpa(range).is_empty()
    }

    /// Host mappings whose guest-physical range overlaps `range`.
    pub fn mappings_for_gpa(&self, range: AddrRange) -> Vec<ShadowMapping> {
        self.record.overlapping_gpa(range)
    }

    /// Re-syncs every host mapping whose guest-physical range overlaps `range` (after a
    /// policy change about that memory).
    fn resync_gpa(
        &mut self,
        view: &dyn GuestView,
        range: AddrRange,
    ) -> Result<SyncReport, ShadowError> {
        let mut batch = SyncBatch::default();
        for m in self.record.overlapping_gpa(range) {
            // An earlier resync in this loop may already have replaced it. A failure does
            // not stop the loop: every mapping into `range` must be re-synced.
            if self.record.starting_at(m.iova) == Some(m) {
                batch.add(self.sync(view, m.iova_range()));
            }
        }
        batch.finish()
    }

    /// Replaces what the record of withheld translations says about window `w` with
    /// `pieces` (this sync's, all inside `w`); parts of older pieces outside `w` stay.
    fn note_withheld(&mut self, w: AddrRange, pieces: &[Run]) {
        let mut old = self.withheld.starting_in(w);
        old.extend(self.withheld.spanning(w.start));
        for m in old {
            self.withheld.remove(m.iova);
            for keep in [
                AddrRange::new(m.iova, w.start.max(m.iova)),
                AddrRange::new(w.end.min(m.iova + m.size), m.iova + m.size),
            ] {
                if let Some(part) = m.run().clip(keep) {
                    self.withheld.insert(ShadowMapping::from(part));
                }
            }
        }
        for p in pieces {
            if self.withheld.len() >= self.config.max_mappings {
                self.withheld_lossy = true;
                break;
            }
            self.withheld.insert(ShadowMapping::from(*p));
        }
        if w.start == 0 && w.end >= !(HOST_PAGE - 1) {
            // A whole-space sync saw every translation: the record is exact again (unless
            // this very sync overflowed it).
            self.withheld_lossy = self.withheld.len() >= self.config.max_mappings;
        }
    }

    fn rebuild_excluded(&mut self) {
        self.excluded = self.reserved.clone();
        self.excluded.extend_from_slice(&self.discarded);
        plan::normalize(&mut self.excluded);
    }

    /// Never maps guest-physical `range` (the interrupt window, a hole that is not RAM);
    /// unlike [`discard_gpa`](Self::discard_gpa) no [`restore_gpa`](Self::restore_gpa) undoes
    /// it. Mappings already there are removed.
    pub fn reserve_gpa(
        &mut self,
        view: &dyn GuestView,
        range: AddrRange,
    ) -> Result<SyncReport, ShadowError> {
        self.reserved.push(range);
        plan::normalize(&mut self.reserved);
        self.rebuild_excluded();
        self.resync_gpa(view, range)
    }

    /// Guest memory `range` was discarded (balloon inflate, virtio-mem unplug, conversion
    /// to private): unmaps it from the host — surviving parts of coalesced mappings are
    /// re-mapped — and keeps it unmapped until [`restore_gpa`](Self::restore_gpa). Only the
    /// mappings the reverse index finds are touched: no guest walk beyond their IOVAs.
    pub fn discard_gpa(
        &mut self,
        view: &dyn GuestView,
        range: AddrRange,
    ) -> Result<SyncReport, ShadowError> {
        self.discard_gpa_ranges(view, &[range])
    }

    /// [`discard_gpa`](Self::discard_gpa) of several ranges at once: every range is excluded
    /// before any host call, so no survivor is re-mapped only to be unmapped again.
    pub fn discard_gpa_ranges(
        &mut self,
        view: &dyn GuestView,
        ranges: &[AddrRange],
    ) -> Result<SyncReport, ShadowError> {
        self.discarded.extend_from_slice(ranges);
        plan::normalize(&mut self.discarded);
        self.rebuild_excluded();
        let mut batch = SyncBatch::default();
        for r in ranges {
            batch.add(self.resync_gpa(view, *r));
        }
        batch.finish()
    }

    /// Guest memory `range` is usable again (balloon deflate, virtio-mem plug, conversion to
    /// shared): maps whatever the guest maps onto it. The engine remembers which IOVAs it
    /// left out because their output was discarded (as of their last sync), so only those
    /// are re-synced; if that memory overflowed its bound, this is a full re-sync.
    pub fn restore_gpa(
        &mut self,
        view: &dyn GuestView,
        range: AddrRange,
    ) -> Result<SyncReport, ShadowError> {
        self.restore_gpa_ranges(view, &[range])
    }

    /// [`restore_gpa`](Self::restore_gpa) of several ranges at once: all are restored before
    /// any host call, so a mapping joining two of them is mapped once, whole.
    pub fn restore_gpa_ranges(
        &mut self,
        view: &dyn GuestView,
        ranges: &[AddrRange],
    ) -> Result<SyncReport, ShadowError> {
        for r in ranges {
            plan::subtract(&mut self.discarded, *r);
        }
        self.rebuild_excluded();
        if self.withheld_lossy {
            return self.reclaim(view);
        }
        let mut batch = SyncBatch::default();
        for range in ranges {
            for m in self.withheld.overlapping_gpa(*range) {
                // An earlier sync in this loop may already have re-planned all or part of
                // it (a window cuts a withheld piece and keeps the parts outside): sync what
                // is still withheld of it and lands in `range`.
                let mut rest = self.withheld.starting_in(m.iova_range());
                rest.extend(self.withheld.spanning(m.iova));
                let hull = rest
                    .iter()
                    .filter(|r| AddrRange::from_len(r.gpa, r.size).overlaps(range))
                    .map(|r| r.iova_range().intersect(&m.iova_range()))
                    .reduce(|a, b| a.union_hull(&b));
                if let Some(h) = hull.filter(|h| !h.is_empty()) {
                    batch.add(self.sync(view, self.aligned(h)));
                }
            }
        }
        batch.finish()
    }

    /// `r` grown to `max_run` multiples, which are cut points of every layout: syncing such
    /// a window yields the canonical layout even when the policy became coarser (a restored
    /// range or a cleared page-granular range no longer cuts runs), which the record-based
    /// window of [`sync`](Self::sync) assumes it did not.
    fn aligned(&self, r: AddrRange) -> AddrRange {
        let top = !(HOST_PAGE - 1);
        let start = align_down(r.start, self.config.max_run);
        let end = r
            .end
            .checked_next_multiple_of(self.config.max_run)
            .unwrap_or(top)
            .min(top);
        AddrRange::new(start, end)
    }

    /// Guest-physical ranges the engine does not map now (reserved or discarded), sorted.
    pub fn excluded_gpa(&self) -> &[AddrRange] {
        &self.excluded
    }

    /// Guest-physical ranges mapped one host page per mapping, sorted.
    pub fn page_granular_gpa(&self) -> &[AddrRange] {
        &self.page_granular
    }

    /// Guest translations the host does not have because their output is discarded or
    /// reserved, as of their last sync, by IOVA (bounded by `max_mappings`).
    pub fn withheld(&self) -> &Record {
        &self.withheld
    }

    /// Maps guest-physical `range` one host page per mapping from now on (memory that a
    /// confidential guest converts between shared and private 4 KiB at a time), re-laying
    /// what is already mapped.
    pub fn set_page_granular(
        &mut self,
        view: &dyn GuestView,
        range: AddrRange,
    ) -> Result<SyncReport, ShadowError> {
        self.page_granular.push(range);
        plan::normalize(&mut self.page_granular);
        self.resync_gpa(view, range)
    }

    /// Lays guest-physical `range` out coalesced again (undoes
    /// [`set_page_granular`](Self::set_page_granular)), re-laying what is already mapped.
    pub fn clear_page_granular(
        &mut self,
        view: &dyn GuestView,
        range: AddrRange,
    ) -> Result<SyncReport, ShadowError> {
        plan::subtract(&mut self.page_granular, range);
        let mut batch = SyncBatch::default();
        for m in self.record.overlapping_gpa(range) {
            if self.record.starting_at(m.iova) == Some(m) {
                batch.add(self.sync(view, self.aligned(m.iova_range())));
            }
        }
        batch.finish()
    }

    /// Removes every host mapping this engine created; returns the bytes unmapped. On a
    /// host refusal it stops; the record keeps what is still mapped.
    pub fn teardown(&mut self) -> Result<u64, ShadowError> {
        let mut bytes = 0;
        let all: Vec<ShadowMapping> = self.record.iter().copied().collect();
        for m in all {
            let error = match self.host.unmap(m.iova, m.size) {
                Ok(n) if n == m.size => {
                    self.record.remove(m.iova);
                    bytes += n;
                    continue;
                }
                Ok(_) => HostError::NotFound,
                Err(e) => e,
            };
            return Err(ShadowError::Unmap {
                run: m.run(),
                error,
                report: Box::default(),
            });
        }
        Ok(bytes)
    }
}

impl<H: HostDma> Drop for ShadowEngine<H> {
    fn drop(&mut self) {
        // Best effort; call `teardown` first to see errors.
        let _ = self.teardown();
    }
}

/// The smallest range covering `runs` (in any order: a prioritized sync lists the runs it
/// could not map with the prioritized ones first).
fn hull(runs: &[Run]) -> Option<AddrRange> {
    runs.iter()
        .map(|r| AddrRange::new(r.iova, r.iova.saturating_add(r.size)))
        .reduce(|a, b| a.union_hull(&b))
}

/// Splits old host mappings and desired runs (both in IOVA order, each disjoint) into what
/// to unmap and what to map; identical mappings are kept.
fn diff(old: &[ShadowMapping], desired: &[Run]) -> (Vec<ShadowMapping>, Vec<Run>) {
    let (mut unmap, mut map) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < desired.len() {
        let (o, d) = (old[i], desired[j]);
        if o.run() == d {
            i += 1;
            j += 1;
        } else if o.iova < d.iova {
            unmap.push(o);
            i += 1;
        } else if o.iova > d.iova {
            map.push(d);
            j += 1;
        } else {
            unmap.push(o);
            map.push(d);
            i += 1;
            j += 1;
        }
    }
    unmap.extend_from_slice(&old[i..]);
    map.extend_from_slice(&desired[j..]);
    (unmap, map)
}
