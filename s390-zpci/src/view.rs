//! Guest views of a function's DMA address space for the shadow engine: the translation
//! tables clipped to the registered DMA range; emulated-DMA blocks of relaxed translation
//! (whose view is the shared [`IdentityView`] with an offset).

use viommu_shared::AddrRange;
use viommu_shared::pt::{Leaf, WalkFault, WalkStats};
use viommu_shared::shadow::{GuestView, IdentityView};

/// The part of `leaf` inside `window`, if any.
fn clip(leaf: Leaf, window: AddrRange) -> Option<Leaf> {
    let r = leaf.iova_range().intersect(&window);
    if r.is_empty() {
        return None;
    }
    Some(Leaf {
        iova: r.start,
        addr: leaf.addr.wrapping_add(r.start - leaf.iova),
        size: r.len(),
        perm: leaf.perm,
        level: leaf.level,
    })
}

/// `inner` seen only inside the registered DMA range `[pba, pal]`: DMA outside it is an
/// error (PEC 0x2), so nothing outside is ever mapped on the host, and walks never leave it.
pub struct ApertureView<'a> {
    inner: &'a dyn GuestView,
    aperture: AddrRange,
}

impl<'a> ApertureView<'a> {
    /// `inner` restricted to `aperture`.
    pub fn new(inner: &'a dyn GuestView, aperture: AddrRange) -> Self {
        ApertureView { inner, aperture }
    }
}

impl GuestView for ApertureView<'_> {
    fn leaves(
        &self,
        range: AddrRange,
        on_leaf: &mut dyn FnMut(Leaf),
        on_fault: &mut dyn FnMut(WalkFault),
    ) -> Result<WalkStats, WalkFault> {
        let r = range.intersect(&self.aperture);
        if r.is_empty() {
            return Ok(WalkStats::default());
        }
        let window = self.aperture;
        self.inner.leaves(
            r,
            &mut |leaf| {
                if let Some(c) = clip(leaf, window) {
                    on_leaf(c);
                }
            },
            on_fault,
        )
    }

    fn lookup(&self, iova: u64) -> Option<Leaf> {
        if !self.aperture.contains(iova) {
            return None;
        }
        clip(self.inner.lookup(iova)?, self.aperture)
    }
}

/// For emulated DMA under relaxed translation: the largest naturally aligned power-of-two
/// block (4 KiB to 1 GiB) around `iova` that `view` maps contiguously, as
/// `(iova_block, gpa_block, size)`.
pub fn relaxed_block(view: &IdentityView, iova: u64) -> Option<(u64, u64, u64)> {
    let page = view.lookup(iova)?;
    let mut size = 1u64 << 30;
    while size > 0x1000 {
        let start = iova & !(size - 1);
        if let Some(l) = view.lookup(start) {
            // The piece from `start` must reach the block's end, with the block's output
            // aligned the same way.
            let contiguous = l.iova == start
                && l.size >= size
                && l.addr & (size - 1) == 0
                && l.addr.wrapping_add(iova - start) == page.translate(iova);
            if contiguous {
                return Some((start, l.addr, size));
            }
        }
        size >>= 1;
    }
    Some((page.iova, page.addr, 0x1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::Perm;
    use viommu_shared::shadow::EmptyView;

    fn collect(v: &dyn GuestView, r: AddrRange) -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        v.leaves(r, &mut |l| out.push((l.iova, l.addr, l.size)), &mut |_| {})
            .unwrap();
        out
    }

    #[test]
    fn relaxed_blocks() {
        let ram = [
            AddrRange::new(0, 0x6000_0000),
            AddrRange::new(0x1_0000_0000, 0x1_0000_2000),
        ];
        let v = IdentityView::with_offset(&ram, 0x1_0000_0000).with_perm(Perm::READ);
        assert_eq!(
            relaxed_block(&v, 0x1_4000_1234),
            Some((0x1_4000_0000, 0x4000_0000, 0x2000_0000))
        );
        assert_eq!(
            relaxed_block(&v, 0x1_0000_0010),
            Some((0x1_0000_0000, 0, 0x4000_0000))
        );
        assert_eq!(
            relaxed_block(&v, 0x2_0000_1000),
            Some((0x2_0000_0000, 0x1_0000_0000, 0x2000))
        );
        assert_eq!(relaxed_block(&v, 0x9), None);
        // An offset that is not 2 MiB aligned limits the block size.
        let v = IdentityView::with_offset(&ram, 0x1_0000_1000);
        assert_eq!(
            relaxed_block(&v, 0x1_0000_5234),
            Some((0x1_0000_5000, 0x4000, 0x1000))
        );
    }

    #[test]
    fn aperture_clips() {
        let ram = [AddrRange::new(0, 0x10_0000)];
        let inner = IdentityView::with_offset(&ram, 0x1000_0000);
        let v = ApertureView::new(&inner, AddrRange::new(0x1000_8000, 0x1000_a000));
        assert_eq!(
            collect(&v, AddrRange::new(0, u64::MAX)),
            vec![(0x1000_8000, 0x8000, 0x2000)]
        );
        assert!(v.lookup(0x1000_a000).is_none());
        assert_eq!(v.lookup(0x1000_9fff).unwrap().iova, 0x1000_9000);
        let e = ApertureView::new(&EmptyView, AddrRange::new(0, 0x1000));
        assert!(collect(&e, AddrRange::new(0, 0x1000)).is_empty());
    }
}
