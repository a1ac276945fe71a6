//! [`GuestMemoryState`]: which guest-physical memory may be DMA-mapped, and how.

use crate::addr::AddrRange;
use crate::host::HostDma;
use crate::shadow::{EmptyView, GuestView, ShadowEngine, ShadowError, SyncBatch, SyncReport, plan};

/// One memory event from the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryEvent {
    /// The range is no longer backed (balloon inflate, virtio-mem unplug).
    Discard(AddrRange),
    /// The range is backed again (balloon deflate, virtio-mem plug).
    Populate(AddrRange),
    /// A confidential guest made the range private: devices must not reach it.
    ConvertToPrivate(AddrRange),
    /// A confidential guest made the range shared again.
    ConvertToShared(AddrRange),
    /// The VMM expects the range to be converted piecemeal: map it one 4 KiB page per host
    /// mapping from now on, so conversions never split a coalesced mapping.
    ExpectConversions(AddrRange),
}

impl MemoryEvent {
    /// The guest-physical range the event is about.
    pub fn range(&self) -> AddrRange {
        match *self {
            MemoryEvent::Discard(r)
            | MemoryEvent::Populate(r)
            | MemoryEvent::ConvertToPrivate(r)
            | MemoryEvent::ConvertToShared(r)
            | MemoryEvent::ExpectConversions(r) => r,
        }
    }
}

/// What one event changed: ranges that stopped or started being DMA-mappable, and ranges
/// that became page-granular. Each list is sorted and disjoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateChange {
    /// Memory that may no longer be mapped (was usable before).
    pub unusable: Vec<AddrRange>,
    /// Memory that may be mapped again (was unusable before).
    pub usable: Vec<AddrRange>,
    /// Memory laid out page by page from now on.
    pub page_granular: Vec<AddrRange>,
}

impl StateChange {
    /// True when the event changed nothing a shadow engine must act on.
    pub fn is_empty(&self) -> bool {
        self.unusable.is_empty() && self.usable.is_empty() && self.page_granular.is_empty()
    }
}

/// Which guest memory is discarded, which is private and where conversions are expected.
/// One per model; applied to every shadow engine the model owns (and to each new one
/// before its first sync, with [`prepare`](Self::prepare)).
///
/// Memory is DMA-mappable when it is neither discarded nor private; the two are tracked
/// apart so that populating private memory leaves it private and the reverse.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestMemoryState {
    discarded: Vec<AddrRange>,
    private: Vec<AddrRange>,
    page_granular: Vec<AddrRange>,
}

/// Page-aligns `r` outward (a host mapping covers whole pages: a partly discarded page is
/// not DMA-mappable).
fn pages(r: AddrRange) -> AddrRange {
    let start = r.start & !4095;
    let end = r.end.checked_next_multiple_of(4096).unwrap_or(!4095);
    AddrRange::new(start, end.max(start))
}

/// `a` minus every range of `b` (both sorted, disjoint).
fn difference(a: &[AddrRange], b: &[AddrRange]) -> Vec<AddrRange> {
    let mut out = a.to_vec();
    for r in b {
        plan::subtract(&mut out, *r);
    }
    out
}

impl GuestMemoryState {
    /// Everything usable, nothing page-granular.
    pub fn new() -> Self {
        Self::default()
    }

    /// Discarded ranges, sorted and disjoint.
    pub fn discarded(&self) -> &[AddrRange] {
        &self.discarded
    }

    /// Private ranges, sorted and disjoint.
    pub fn private(&self) -> &[AddrRange] {
        &self.private
    }

    /// Ranges laid out page by page, sorted and disjoint.
    pub fn page_granular(&self) -> &[AddrRange] {
        &self.page_granular
    }

    /// Memory that must not be DMA-mapped (discarded or private), sorted and disjoint.
    pub fn unusable(&self) -> Vec<AddrRange> {
        let mut u = self.discarded.clone();
        u.extend_from_slice(&self.private);
        plan::normalize(&mut u);
        u
    }

    /// True when every byte of `range` may be DMA-mapped.
    pub fn is_usable(&self, range: AddrRange) -> bool {
        !self.unusable().iter().any(|r| r.overlaps(&range))
    }

    /// Records `event`; returns what changed for the shadow engines.
    pub fn apply(&mut self, event: MemoryEvent) -> StateChange {
        let r = pages(event.range());
        let before = self.unusable();
        let mut change = StateChange::default();
        match event {
            MemoryEvent::Discard(_) => {
                self.discarded.push(r);
                plan::normalize(&mut self.discarded);
            }
            MemoryEvent::Populate(_) => plan::subtract(&mut self.discarded, r),
            MemoryEvent::ConvertToPrivate(_) => {
                self.private.push(r);
                plan::normalize(&mut self.private);
            }
            MemoryEvent::ConvertToShared(_) => plan::subtract(&mut self.private, r),
            MemoryEvent::ExpectConversions(_) => {
                change.page_granular = difference(&[r], &self.page_granular);
                self.page_granular.push(r);
                plan::normalize(&mut self.page_granular);
            }
        }
        let after = self.unusable();
        change.unusable = difference(&after, &before);
        change.usable = difference(&before, &after);
        change
    }

    /// Gives a new engine (holding no mappings) the current state, with no host call.
    pub fn prepare<H: HostDma>(&self, engine: &mut ShadowEngine<H>) {
        let change = StateChange {
            unusable: self.unusable(),
            usable: Vec::new(),
            page_granular: self.page_granular.clone(),
        };
        // With nothing mapped and an empty view there is nothing to sync, so this cannot
        // fail or call the host.
        let _ = Self::apply_to_engine(engine, &EmptyView, &change);
    }

    /// Applies `change` to `engine`, whose guest view is `view`: unmaps the translations
    /// into newly unusable memory first, then re-lays page-granular memory, then maps the
    /// translations into memory usable again. A host failure does not stop the rest (no
    /// mapping into unusable memory may stay because another failed); the first (worst) one
    /// is returned with the summed report.
    pub fn apply_to_engine<H: HostDma>(
        engine: &mut ShadowEngine<H>,
        view: &dyn GuestView,
        change: &StateChange,
    ) -> Result<SyncReport, ShadowError> {
        let mut batch = SyncBatch::default();
        if !change.unusable.is_empty() {
            batch.add(engine.discard_gpa_ranges(view, &change.unusable));
        }
        for r in &change.page_granular {
            batch.add(engine.set_page_granular(view, *r));
        }
        if !change.usable.is_empty() {
            batch.add(engine.restore_gpa_ranges(view, &change.usable));
        }
        batch.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u64, b: u64) -> AddrRange {
        AddrRange::new(a, b)
    }

    #[test]
    fn discarded_and_private_are_tracked_apart() {
        let mut s = GuestMemoryState::new();
        let c = s.apply(MemoryEvent::Discard(r(0x1000, 0x3000)));
        assert_eq!(c.unusable, vec![r(0x1000, 0x3000)]);
        assert!(c.usable.is_empty());
        let c = s.apply(MemoryEvent::ConvertToPrivate(r(0x2000, 0x5000)));
        assert_eq!(c.unusable, vec![r(0x3000, 0x5000)]);
        // Populating private memory leaves it unusable.
        let c = s.apply(MemoryEvent::Populate(r(0, 0x10000)));
        assert_eq!(c.usable, vec![r(0x1000, 0x2000)]);
        assert!(!s.is_usable(r(0x4000, 0x4001)));
        let c = s.apply(MemoryEvent::ConvertToShared(r(0x2000, 0x3000)));
        assert_eq!(c.usable, vec![r(0x2000, 0x3000)]);
        assert_eq!(s.unusable(), vec![r(0x3000, 0x5000)]);
        // Repeating an event changes nothing.
        assert!(
            s.apply(MemoryEvent::ConvertToShared(r(0x2000, 0x3000)))
                .is_empty()
        );
    }

    #[test]
    fn partial_pages_count_whole_and_page_granular_accumulates() {
        let mut s = GuestMemoryState::new();
        let c = s.apply(MemoryEvent::Discard(r(0x1800, 0x2001)));
        assert_eq!(c.unusable, vec![r(0x1000, 0x3000)]);
        let c = s.apply(MemoryEvent::ExpectConversions(r(0, 0x4000)));
        assert_eq!(c.page_granular, vec![r(0, 0x4000)]);
        let c = s.apply(MemoryEvent::ExpectConversions(r(0x2000, 0x8000)));
        assert_eq!(c.page_granular, vec![r(0x4000, 0x8000)]);
        assert_eq!(s.page_granular(), &[r(0, 0x8000)]);
        // The top page cannot be expressed (nor host-mapped): nothing wraps.
        assert!(
            s.apply(MemoryEvent::Discard(r(u64::MAX - 10, u64::MAX)))
                .is_empty()
        );
    }
}
