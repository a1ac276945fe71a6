//! Where the shadow engine reads the guest's truth from.

use crate::addr::AddrRange;
use crate::perm::Perm;
use crate::pt::{Leaf, PageTableFormat, WalkFault, WalkStats, Walker};
use vm_memory::GuestMemory;

/// A guest I/O address space as the guest currently defines it.
pub trait GuestView {
    /// Calls `on_leaf` for every page intersecting `range` in IOVA order (pages may extend
    /// beyond it); malformed parts go to `on_fault` and count as unmapped. `Err` means the
    /// enumeration stopped early (work limit): nothing after the last reported page is known.
    fn leaves(
        &self,
        range: AddrRange,
        on_leaf: &mut dyn FnMut(Leaf),
        on_fault: &mut dyn FnMut(WalkFault),
    ) -> Result<WalkStats, WalkFault>;

    /// The page containing `iova`, if mapped.
    fn lookup(&self, iova: u64) -> Option<Leaf>;
}

impl<F: PageTableFormat + ?Sized, M: GuestMemory + ?Sized> GuestView for Walker<'_, F, M> {
    fn leaves(
        &self,
        range: AddrRange,
        on_leaf: &mut dyn FnMut(Leaf),
        on_fault: &mut dyn FnMut(WalkFault),
    ) -> Result<WalkStats, WalkFault> {
        self.for_each_leaf(range, on_leaf, on_fault)
    }

    fn lookup(&self, iova: u64) -> Option<Leaf> {
        Walker::lookup(self, iova).ok()
    }
}

/// Nothing mapped: a blocked or disabled domain. Syncing with it unmaps everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptyView;

impl GuestView for EmptyView {
    fn leaves(
        &self,
        _range: AddrRange,
        _on_leaf: &mut dyn FnMut(Leaf),
        _on_fault: &mut dyn FnMut(WalkFault),
    ) -> Result<WalkStats, WalkFault> {
        Ok(WalkStats::default())
    }

    fn lookup(&self, _iova: u64) -> Option<Leaf> {
        None
    }
}

/// IOVA equals guest-physical address over the given ranges (pass-through / translation
/// disabled), read-write, reported as 1 GiB-aligned pieces.
#[derive(Clone, Debug, Default)]
pub struct IdentityView {
    ranges: Vec<AddrRange>,
}

impl IdentityView {
    /// Identity over `ranges` (page-aligned inward; typically guest RAM).
    pub fn new(ranges: &[AddrRange]) -> Self {
        let mut ranges: Vec<AddrRange> = ranges
            .iter()
            .map(|r| AddrRange::new(crate::addr::align_up(r.start, 4096), r.end & !4095))
            .filter(|r| !r.is_empty())
            .collect();
        ranges.sort();
        IdentityView { ranges }
    }

    fn piece(&self, iova: u64) -> Option<Leaf> {
        let r = self.ranges.iter().find(|r| r.contains(iova))?;
        let page = iova & !4095;
        // The largest piece up to the next 1 GiB boundary inside the range.
        let end = r.end.min(crate::addr::align_up(page + 1, 1 << 30));
        Some(Leaf {
            iova: page,
            addr: page,
            size: end - page,
            perm: Perm::RW,
            level: 0,
        })
    }
}

impl GuestView for IdentityView {
    fn leaves(
        &self,
        range: AddrRange,
        on_leaf: &mut dyn FnMut(Leaf),
        _on_fault: &mut dyn FnMut(WalkFault),
    ) -> Result<WalkStats, WalkFault> {
        let mut st = WalkStats::default();
        for r in &self.ranges {
            let c = r.intersect(&range);
            let mut at = c.start & !4095;
            while at < c.end {
                let Some(leaf) = self.piece(at) else { break };
                st.leaves += 1;
                at = leaf.iova + leaf.size;
                on_leaf(leaf);
            }
        }
        Ok(st)
    }

    fn lookup(&self, iova: u64) -> Option<Leaf> {
        self.piece(iova)
    }
}
