//! Guest views for the shadow engine: a device's address space as its entry defines it.

use crate::dte::DeviceMode;
use crate::pagetable::AmdV1Format;
use viommu_shared::Perm;
use viommu_shared::pt::{WalkLimits, Walker};
use viommu_shared::shadow::{EmptyView, GuestView, IdentityView, MaskedView};
use vm_memory::GuestMemoryMmap;

/// Calls `f` with the view of a device in `mode`: identity over guest RAM when DMA is not
/// remapped, the DTE-masked table walk when translated, nothing when blocked.
pub fn with_view<R>(
    mode: &DeviceMode,
    mem: &GuestMemoryMmap,
    identity: &IdentityView,
    limits: WalkLimits,
    f: impl FnOnce(&dyn GuestView) -> R,
) -> R {
    match *mode {
        DeviceMode::IommuDisabled | DeviceMode::PassThrough => f(identity),
        DeviceMode::Untranslated { perm, .. } if !(perm & Perm::RW).is_empty() => {
            f(&MaskedView::new(identity, perm & Perm::RW))
        }
        DeviceMode::Translated {
            root, levels, perm, ..
        } => match AmdV1Format::new(levels) {
            Some(fmt) => {
                let walker = Walker::new(&fmt, mem, root).with_limits(limits);
                // The DTE's IR/IW are ANDed with the tables' (AMD IOMMU spec 2.2.2).
                f(&MaskedView::new(&walker, perm & Perm::RW))
            }
            None => f(&EmptyView),
        },
        _ => f(&EmptyView),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::AddrRange;
    use viommu_shared::pt::TableBuilder;
    use viommu_shared::testing::guest_memory;

    #[test]
    fn masks_and_drops() {
        let mem = guest_memory(&[(0, 0x40_0000)]);
        let fmt = AmdV1Format::new(3).unwrap();
        let mut b = TableBuilder::new(&fmt, &mem, 0x10_0000, 0x20_0000).unwrap();
        b.map_page(0, 0x1000, 0x5000, Perm::RW).unwrap();
        b.map_page(0, 0x2000, 0x6000, Perm::WRITE).unwrap();
        let mode = DeviceMode::Translated {
            domain_id: 1,
            root: b.root(),
            levels: 3,
            perm: Perm::READ,
            suppress_faults: false,
        };
        let identity = IdentityView::new(&[AddrRange::new(0, 0x40_0000)]);
        let leaves = with_view(&mode, &mem, &identity, WalkLimits::default(), |v| {
            let mut out = Vec::new();
            v.leaves(
                AddrRange::new(0, 1 << 39),
                &mut |l| out.push(l),
                &mut |_| {},
            )
            .unwrap();
            assert!(v.lookup(0x2000).is_none());
            assert_eq!(v.lookup(0x1000).unwrap().perm, Perm::READ);
            out
        });
        assert_eq!(leaves.len(), 1);
        assert_eq!((leaves[0].iova, leaves[0].perm), (0x1000, Perm::READ));
        let blocked = DeviceMode::Untranslated {
            domain_id: 0,
            perm: Perm::empty(),
            suppress_faults: false,
        };
        assert!(with_view(
            &blocked,
            &mem,
            &identity,
            WalkLimits::default(),
            |v| v.lookup(0x1000).is_none()
        ));
        let ro = DeviceMode::Untranslated {
            domain_id: 0,
            perm: Perm::READ,
            suppress_faults: false,
        };
        let l = with_view(&ro, &mem, &identity, WalkLimits::default(), |v| {
            v.lookup(0x1000)
        });
        assert_eq!(l.unwrap().perm, Perm::READ);
    }
}
