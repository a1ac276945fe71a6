//! `IommufdBackend` against SimHost's iommufd flavour, without a kernel: the backend's
//! requests go to a request layer that decodes them exactly as the kernel reads them (size,
//! flags, host virtual address → guest-physical, length) and hands them to a `SimHost` in
//! the iommufd flavour. Random map/unmap sequences through the backend must answer and leave
//! the same mappings as the same calls on a `SimHost` directly, and the shadow engine on the
//! backend must keep the host equal to the guest through memory events.

use iommufd_bindings::iommufd::{iommu_ioas_map, iommu_ioas_unmap};
use proptest::prelude::*;
use std::sync::Arc;
use viommu_shared::host::iommufd::{IoasOps, IoasRanges, IommufdBackend};
use viommu_shared::host::{HostDma, HostError, HostFlavour, HostMapping, SimHost, SimHostConfig};
use viommu_shared::memory::{GuestMemoryState, MemoryEvent};
use viommu_shared::shadow::{IdentityView, ShadowConfig, ShadowEngine};
use viommu_shared::testing::guest_memory;
use viommu_shared::{AddrRange, Perm};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Guest RAM: two regions with a hole between them.
const RAM: [(u64, usize); 2] = [(0, 0x40_0000), (0x80_0000, 0x20_0000)];

/// The kernel side: decodes each request as `drivers/iommu/iommufd/ioas.c` reads it.
struct SimIoas {
    host: SimHost,
    mem: Arc<GuestMemoryMmap>,
}

impl SimIoas {
    fn gpa_of(&self, hva: u64, len: u64) -> Option<u64> {
        self.mem.iter().find_map(|r| {
            let base = r.get_host_address(vm_memory::MemoryRegionAddress(0)).ok()? as u64;
            let size = r.len();
            (hva >= base && hva - base < size && len <= size - (hva - base))
                .then(|| r.start_addr().0 + (hva - base))
        })
    }
}

impl IoasOps for SimIoas {
    fn ioas_id(&self) -> u32 {
        9
    }

    fn map(&mut self, req: &iommu_ioas_map) -> Result<(), HostError> {
        assert_eq!(req.size as usize, std::mem::size_of::<iommu_ioas_map>());
        assert_eq!(req.ioas_id, 9);
        assert_eq!(req.__reserved, 0);
        assert_eq!(req.flags & 1, 1, "FIXED_IOVA always set");
        assert_eq!(req.flags & !7, 0, "unknown flags");
        let mut perm = Perm::empty();
        if req.flags & 4 != 0 {
            perm |= Perm::READ;
        }
        if req.flags & 2 != 0 {
            perm |= Perm::WRITE;
        }
        // The kernel pins user memory: an address outside guest memory is EFAULT.
        let gpa = self
            .gpa_of(req.user_va, req.length)
            .ok_or(HostError::BadAddress)?;
        self.host.map(req.iova, gpa, req.length, perm)
    }

    fn unmap(&mut self, req: &mut iommu_ioas_unmap) -> Result<(), HostError> {
        assert_eq!(req.size as usize, std::mem::size_of::<iommu_ioas_unmap>());
        assert_eq!(req.ioas_id, 9);
        let n = self.host.unmap(req.iova, req.length)?;
        req.length = n;
        Ok(())
    }

    fn iova_ranges(&self) -> Result<IoasRanges, HostError> {
        Ok(IoasRanges {
            ranges: self.host.iova_ranges(),
            alignment: 4096,
        })
    }
}

fn config() -> SimHostConfig {
    let mut c = SimHostConfig::vtd().with_flavour(HostFlavour::Iommufd);
    // The direct SimHost sees guest-physical addresses: same backing as the backend.
    c.backed = Some(
        RAM.iter()
            .map(|&(s, l)| AddrRange::from_len(s, l as u64))
            .collect(),
    );
    c
}

fn backend() -> IommufdBackend<GuestMemoryMmap, SimIoas> {
    let mem = Arc::new(guest_memory(&RAM));
    let ioas = SimIoas {
        host: SimHost::new(config()),
        mem: mem.clone(),
    };
    IommufdBackend::new(ioas, mem)
}

#[derive(Clone, Debug)]
enum Call {
    Map {
        iova: u64,
        gpa: u64,
        pages: u64,
        perm: Perm,
    },
    Unmap {
        iova: u64,
        pages: u64,
    },
    UnmapAll,
}

fn call() -> impl Strategy<Value = Call> {
    let perm = prop_oneof![
        Just(Perm::RW),
        Just(Perm::READ),
        Just(Perm::WRITE),
        Just(Perm::EXEC)
    ];
    prop_oneof![
        5 => (0..64u64, 0..0xa00u64, 0..16u64, perm)
            .prop_map(|(i, g, pages, perm)| Call::Map { iova: i * 0x1000, gpa: g * 0x1000, pages, perm }),
        4 => (0..64u64, 0..24u64).prop_map(|(i, pages)| Call::Unmap { iova: i * 0x1000, pages }),
        1 => Just(Call::UnmapAll),
    ]
}

proptest! {
    #[test]
    fn backend_answers_like_the_iommufd_flavour(calls in prop::collection::vec(call(), 1..60)) {
        let mut b = backend();
        let mut sim = SimHost::new(config());
        for c in &calls {
            match *c {
                Call::Map { iova, gpa, pages, perm } => {
                    let got = b.map(iova, gpa, pages * 0x1000, perm);
                    let want = sim.map(iova, gpa, pages * 0x1000, perm);
                    prop_assert_eq!(got, want, "{:?}", c);
                }
                Call::Unmap { iova, pages } => {
                    prop_assert_eq!(b.unmap(iova, pages * 0x1000), sim.unmap(iova, pages * 0x1000), "{:?}", c);
                }
                Call::UnmapAll => {
                    let want = match sim.unmap_all() { Ok(n) => n, Err(e) => panic!("{e}") };
                    prop_assert_eq!(b.unmap_all(), Ok(want));
                }
            }
            let got: Vec<HostMapping> = b.ops().host.mappings();
            prop_assert_eq!(got, sim.mappings());
        }
        prop_assert_eq!(b.remaining_entries(), None);
        prop_assert_eq!(b.iova_ranges(), sim.iova_ranges());
        prop_assert_eq!(b.page_sizes() & 0xfff, 0);
    }
}

#[test]
fn refusals_before_the_kernel() {
    let mut b = backend();
    // Spanning the hole between the regions, or outside RAM: EFAULT without a request.
    assert_eq!(
        b.map(0, 0x3f_f000, 0x2000, Perm::RW),
        Err(HostError::BadAddress)
    );
    assert_eq!(
        b.map(0, 0x100_0000, 0x1000, Perm::RW),
        Err(HostError::BadAddress)
    );
    assert_eq!(b.map(0, 0, 0x1000, Perm::empty()), Err(HostError::Invalid));
    assert_eq!(b.map(0, 0, 0, Perm::RW), Err(HostError::Invalid));
    assert!(b.ops().host.calls().is_empty());
    // iommufd: an unmap that cuts an area, or finds nothing, is ENOENT.
    b.map(0x1_0000, 0x1000, 0x3000, Perm::RW).unwrap();
    assert_eq!(b.unmap(0x1_1000, 0x1000), Err(HostError::NotFound));
    assert_eq!(b.unmap(0x9_0000, 0x1000), Err(HostError::NotFound));
    assert_eq!(b.unmap(0x1_0000, 0x3000), Ok(0x3000));
    assert_eq!(
        b.unmap_all(),
        Ok(0),
        "empty IOAS: unmap-all succeeds with 0"
    );
    assert!(!b.enforces_coherency());
    assert!(backend().with_coherency(true).enforces_coherency());
}

#[test]
fn shadow_engine_on_the_backend_follows_memory_events() {
    let ram: Vec<AddrRange> = RAM
        .iter()
        .map(|&(s, l)| AddrRange::from_len(s, l as u64))
        .collect();
    let view = IdentityView::new(&ram);
    let mut eng = ShadowEngine::new(backend(), ShadowConfig::default());
    eng.reclaim(&view).unwrap();
    let pages = |e: &ShadowEngine<IommufdBackend<GuestMemoryMmap, SimIoas>>| -> u64 {
        e.host()
            .ops()
            .host
            .mappings()
            .iter()
            .map(|m| m.size / 0x1000)
            .sum()
    };
    assert_eq!(pages(&eng), 0x600);
    let mut state = GuestMemoryState::new();
    for (ev, want) in [
        (
            MemoryEvent::Discard(AddrRange::new(0x10_3000, 0x10_5000)),
            0x5fe,
        ),
        (
            MemoryEvent::ConvertToPrivate(AddrRange::new(0x80_0000, 0x90_0000)),
            0x4fe,
        ),
        (
            MemoryEvent::Populate(AddrRange::new(0x10_3000, 0x10_4000)),
            0x4ff,
        ),
        (
            MemoryEvent::ConvertToShared(AddrRange::new(0, 0x100_0000)),
            0x5ff,
        ),
        (MemoryEvent::Populate(AddrRange::new(0, 0x100_0000)), 0x600),
    ] {
        let change = state.apply(ev);
        GuestMemoryState::apply_to_engine(&mut eng, &view, &change).unwrap();
        assert_eq!(pages(&eng), want, "{ev:?}");
    }
    // Every call succeeded (whole-area unmaps only), and teardown leaves nothing.
    assert!(eng.host().ops().host.calls().iter().all(|c| match c {
        viommu_shared::host::HostCall::Map { result, .. } => result.is_ok(),
        viommu_shared::host::HostCall::Unmap { result, .. } => result.is_ok(),
        _ => true,
    }));
    eng.teardown().unwrap();
    assert_eq!(eng.host().ops().host.mapping_count(), 0);
}
