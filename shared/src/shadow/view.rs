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

/// A linear map: IOVA = guest-physical address + a fixed offset over the given guest-physical
/// ranges, with fixed permissions — pass-through / translation disabled (offset 0, read-write),
/// s390 relaxed translation (offset = aperture start), or an identity domain restricted to
/// read-only. Reported as pieces that never cross a 1 GiB IOVA boundary.
#[derive(Clone, Debug, Default)]
pub struct IdentityView {
    /// (IOVA range, guest-physical start), sorted by IOVA.
    ranges: Vec<(AddrRange, u64)>,
    perm: Perm,
}

impl IdentityView {
    /// IOVA = guest-physical address over `ranges` (page-aligned inward; typically guest
    /// RAM), read-write.
    pub fn new(ranges: &[AddrRange]) -> Self {
        Self::with_offset(ranges, 0)
    }

    /// IOVA = guest-physical address + `offset` over `ranges`, read-write. Ranges whose
    /// IOVA would pass the top of the 64-bit space are cut there.
    pub fn with_offset(ranges: &[AddrRange], offset: u64) -> Self {
        let mut out: Vec<(AddrRange, u64)> = ranges
            .iter()
            .map(|r| AddrRange::new(crate::addr::align_up(r.start, 4096), r.end & !4095))
            .filter(|r| !r.is_empty())
            .filter_map(|r| {
                let start = r.start.checked_add(offset)?;
                let end = r.end.saturating_add(offset) & !4095;
                (end > start).then_some((AddrRange::new(start, end), r.start))
            })
            .collect();
        out.sort();
        IdentityView {
            ranges: out,
            perm: Perm::RW,
        }
    }

    /// The same map with permissions `perm` instead of read-write.
    pub fn with_perm(mut self, perm: Perm) -> Self {
        self.perm = perm;
        self
    }

    /// Permissions of every translation.
    pub fn perm(&self) -> Perm {
        self.perm
    }

    fn piece(&self, iova: u64) -> Option<Leaf> {
        if self.perm.is_empty() {
            return None;
        }
        let (r, gpa) = self.ranges.iter().find(|(r, _)| r.contains(iova))?;
        let page = iova & !4095;
        // The largest piece up to the next 1 GiB boundary inside the range.
        let next_gib = (page | ((1 << 30) - 1)).saturating_add(1);
        let end = r.end.min(next_gib);
        Some(Leaf {
            iova: page,
            addr: gpa + (page - r.start),
            size: end - page,
            perm: self.perm,
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
        for (r, _) in &self.ranges {
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

/// Another view with its permissions ANDed with a mask (pages left with none disappear):
/// e.g. an AMD-Vi device-table entry's IR/IW over its page table.
pub struct MaskedView<'a> {
    inner: &'a dyn GuestView,
    perm: Perm,
}

impl<'a> MaskedView<'a> {
    /// `inner` with every permission outside `perm` removed.
    pub fn new(inner: &'a dyn GuestView, perm: Perm) -> Self {
        MaskedView { inner, perm }
    }

    fn mask(&self, mut leaf: Leaf) -> Option<Leaf> {
        leaf.perm &= self.perm;
        (!leaf.perm.is_empty()).then_some(leaf)
    }
}

impl GuestView for MaskedView<'_> {
    fn leaves(
        &self,
        range: AddrRange,
        on_leaf: &mut dyn FnMut(Leaf),
        on_fault: &mut dyn FnMut(WalkFault),
    ) -> Result<WalkStats, WalkFault> {
        self.inner.leaves(
            range,
            &mut |leaf| {
                if let Some(l) = self.mask(leaf) {
                    on_leaf(l);
                }
            },
            on_fault,
        )
    }

    fn lookup(&self, iova: u64) -> Option<Leaf> {
        self.inner.lookup(iova).and_then(|l| self.mask(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(v: &dyn GuestView, r: AddrRange) -> Vec<(u64, u64, u64, Perm)> {
        let mut out = Vec::new();
        v.leaves(
            r,
            &mut |l| out.push((l.iova, l.addr, l.size, l.perm)),
            &mut |_| {},
        )
        .unwrap();
        out
    }

    #[test]
    fn identity_offset_and_permissions() {
        let ram = [
            AddrRange::new(0, 0x5000_0000),
            AddrRange::new(0x1_0000_0000, 0x1_0000_3000),
        ];
        let id = IdentityView::new(&ram);
        assert_eq!(
            collect(&id, AddrRange::new(0x3fff_f000, 0x4000_2000)),
            vec![
                (0x3fff_f000, 0x3fff_f000, 0x1000, Perm::RW),
                (0x4000_0000, 0x4000_0000, 0x1000_0000, Perm::RW)
            ]
        );
        let off = IdentityView::with_offset(&ram, 1 << 32).with_perm(Perm::READ);
        let l = off.lookup(0x1_0000_1234).unwrap();
        assert_eq!(
            (l.iova, l.addr, l.perm),
            (0x1_0000_1000, 0x1000, Perm::READ)
        );
        assert_eq!(l.translate(0x1_0000_1234), 0x1234);
        assert!(off.lookup(0x1000).is_none());
        let l = off.lookup(0x2_0000_2000).unwrap();
        assert_eq!((l.addr, l.size), (0x1_0000_2000, 0x1000));
        // Cut at the top of the 64-bit space instead of wrapping.
        let top = IdentityView::with_offset(&[AddrRange::new(0, 0x4000)], u64::MAX - 0x1fff);
        assert!(top.lookup(0).is_none());
        assert_eq!(collect(&top, AddrRange::new(0, u64::MAX)).len(), 1);
        // No permissions: nothing mapped.
        assert!(
            IdentityView::new(&ram)
                .with_perm(Perm::empty())
                .lookup(0)
                .is_none()
        );
    }

    #[test]
    fn masked_view_removes_permissions() {
        let id = IdentityView::new(&[AddrRange::new(0, 0x2000)]);
        let ro = MaskedView::new(&id, Perm::READ);
        assert_eq!(ro.lookup(0).unwrap().perm, Perm::READ);
        assert_eq!(collect(&ro, AddrRange::new(0, 0x2000))[0].3, Perm::READ);
        let none = MaskedView::new(&id, Perm::empty());
        assert!(none.lookup(0).is_none());
        assert!(collect(&none, AddrRange::new(0, 0x2000)).is_empty());
    }
}
