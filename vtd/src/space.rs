//! What one device's DMA goes through: [`Space`], the result of looking the device up in the
//! root/context (and PASID) tables, and the [`GuestView`] the shadow engine syncs from.

use crate::fault::FaultReason;
use crate::format::SecondStage;
use viommu_shared::AddrRange;
use viommu_shared::pt::{Leaf, WalkFault, WalkLimits, WalkStats, Walker};
use viommu_shared::shadow::{EmptyView, GuestView, IdentityView};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// How the unit treats DMA from one device (and PASID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    /// Translation is disabled (GSTS.TES = 0): DMA addresses are guest-physical.
    Untranslated,
    /// Pass-through context (TT = 10b) or PASID entry (PGTT = 100b): IOVA = GPA below
    /// 2^`input_bits`.
    PassThrough {
        /// Domain id of the context or PASID entry.
        did: u16,
        /// Input address width.
        input_bits: u32,
    },
    /// Second-stage translation through the table at `root`.
    Translated {
        /// Domain id (context entry in legacy mode, PASID entry in scalable mode).
        did: u16,
        /// PASID whose entry was used (scalable mode; the context's RID_PASID for requests
        /// without PASID), `None` in legacy mode.
        pasid: Option<u32>,
        /// Guest-physical address of the top-level table.
        root: u64,
        /// The table format (depth, reserved bits, large pages).
        format: SecondStage,
        /// Whether the scalable-mode fault codes apply.
        scalable: bool,
    },
    /// Every DMA faults with `reason` (not-present or malformed structures).
    Blocked {
        /// Why.
        reason: FaultReason,
    },
}

impl Space {
    /// The domain id DMA through this space is tagged with, if any.
    pub fn did(&self) -> Option<u16> {
        match *self {
            Space::PassThrough { did, .. } | Space::Translated { did, .. } => Some(did),
            _ => None,
        }
    }

    /// The PASID whose entry defined this space (scalable mode).
    pub fn pasid(&self) -> Option<u32> {
        match *self {
            Space::Translated { pasid, .. } => pasid,
            _ => None,
        }
    }
}

/// Guest RAM as a list of ranges (the identity map of an untranslated or pass-through space).
pub(crate) fn ram_ranges(mem: &GuestMemoryMmap) -> Vec<AddrRange> {
    mem.iter()
        .map(|r| AddrRange::from_len(r.start_addr().0, r.len()))
        .collect()
}

/// The guest view of a [`Space`], borrowing guest memory.
pub(crate) enum SpaceView<'a> {
    Walk(Walker<'a, SecondStage, GuestMemoryMmap>),
    Identity(IdentityView),
    Empty(EmptyView),
}

impl<'a> SpaceView<'a> {
    /// The view of `space`; `format` must be the space's format (kept by the caller so the
    /// walker can borrow it).
    pub(crate) fn new(
        space: &Space,
        format: &'a SecondStage,
        mem: &'a GuestMemoryMmap,
        limits: WalkLimits,
    ) -> Self {
        match *space {
            Space::Untranslated => SpaceView::Identity(IdentityView::new(&ram_ranges(mem))),
            Space::PassThrough { input_bits, .. } => {
                let limit = if input_bits >= 64 {
                    u64::MAX
                } else {
                    1u64 << input_bits
                };
                let ranges: Vec<AddrRange> = ram_ranges(mem)
                    .iter()
                    .map(|r| r.intersect(&AddrRange::new(0, limit)))
                    .filter(|r| !r.is_empty())
                    .collect();
                SpaceView::Identity(IdentityView::new(&ranges))
            }
            Space::Translated { root, .. } => {
                SpaceView::Walk(Walker::new(format, mem, root).with_limits(limits))
            }
            Space::Blocked { .. } => SpaceView::Empty(EmptyView),
        }
    }
}

impl GuestView for SpaceView<'_> {
    fn leaves(
        &self,
        range: AddrRange,
        on_leaf: &mut dyn FnMut(Leaf),
        on_fault: &mut dyn FnMut(WalkFault),
    ) -> Result<WalkStats, WalkFault> {
        match self {
            SpaceView::Walk(w) => w.leaves(range, on_leaf, on_fault),
            SpaceView::Identity(v) => v.leaves(range, on_leaf, on_fault),
            SpaceView::Empty(v) => v.leaves(range, on_leaf, on_fault),
        }
    }

    fn lookup(&self, iova: u64) -> Option<Leaf> {
        match self {
            SpaceView::Walk(w) => GuestView::lookup(w, iova),
            SpaceView::Identity(v) => v.lookup(iova),
            SpaceView::Empty(v) => v.lookup(iova),
        }
    }
}

/// The format of a space, or a placeholder for spaces that have none.
pub(crate) fn format_of(space: &Space) -> SecondStage {
    match *space {
        Space::Translated { format, .. } => format,
        _ => SecondStage::new(3, 39, false, false, false),
    }
}
