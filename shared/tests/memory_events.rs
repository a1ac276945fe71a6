//! Property test of memory events on the shadow engine: random interleavings of guest table
//! edits (each followed by its invalidation), discards, populates, shared/private conversions
//! and page-granular hints. After every step the host holds exactly the guest's translations
//! restricted to populated shared memory, laid out canonically (so the engine converges
//! whatever the order), with exactly the minimum number of host calls; teardown leaves the
//! host empty.

use proptest::prelude::*;
use std::collections::BTreeSet;
use viommu_shared::host::{HostFlavour, SimHost, SimHostConfig};
use viommu_shared::memory::{GuestMemoryState, MemoryEvent};
use viommu_shared::pt::{ByteOrder, Walker};
use viommu_shared::shadow::{GuestView, IdentityView, ShadowConfig, ShadowEngine};
use viommu_shared::testing::guest::{Mapping, PAGE};
use viommu_shared::testing::{Edit, GuestTables, RadixFormat, Truth, guest_memory};
use viommu_shared::{AddrRange, Perm};

const SPACE_PAGES: u64 = 2048;
const MAX_RUN: u64 = 64 << 10;
const TABLES: (u64, u64) = (0x100_0000, 0x140_0000);
/// Guest pages the edits map to: 256 distinct frames (1 MiB), so events hit mappings often.
const FRAMES: u64 = 256;

#[derive(Clone, Debug)]
enum Step {
    Edit(Edit),
    Event(MemoryEvent),
}

fn perm() -> impl Strategy<Value = Perm> {
    prop_oneof![Just(Perm::RW), Just(Perm::READ)]
}

fn gpa_range() -> impl Strategy<Value = AddrRange> {
    (0..FRAMES, 1..48u64).prop_map(|(f, n)| AddrRange::from_len(f * PAGE, n.min(FRAMES - f) * PAGE))
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..SPACE_PAGES, 1..64u64, 0..FRAMES / 16, perm()).prop_map(|(at, pages, g, perm)| {
            Step::Edit(Edit::Map { at, pages, gpa: (g * 16 + at % 16) % FRAMES, perm })
        }),
        2 => (0..SPACE_PAGES, 1..96u64).prop_map(|(at, pages)| Step::Edit(Edit::Unmap { at, pages })),
        2 => gpa_range().prop_map(|r| Step::Event(MemoryEvent::Discard(r))),
        2 => gpa_range().prop_map(|r| Step::Event(MemoryEvent::Populate(r))),
        2 => gpa_range().prop_map(|r| Step::Event(MemoryEvent::ConvertToPrivate(r))),
        2 => gpa_range().prop_map(|r| Step::Event(MemoryEvent::ConvertToShared(r))),
        1 => gpa_range().prop_map(|r| Step::Event(MemoryEvent::ExpectConversions(r))),
    ]
}

/// Reference layout, written independently of the engine: the truth restricted to usable
/// guest pages, contiguous pages merged unless a `max_run` multiple or a page-granular page
/// separates them.
fn reference(truth: &Truth, state: &GuestMemoryState) -> BTreeSet<Mapping> {
    let inside = |set: &[AddrRange], g: u64| set.iter().any(|r| r.contains(g));
    let unusable = state.unusable();
    let mut out = BTreeSet::new();
    let mut cur: Option<Mapping> = None;
    for (&iova, &(gpa, perm)) in truth {
        // Guest pages outside the first FRAMES are never touched by events.
        if inside(&unusable, gpa) {
            continue;
        }
        let granular = inside(state.page_granular(), gpa);
        if let Some((s, g, len, p)) = cur {
            let prev_granular = inside(state.page_granular(), g + len - PAGE);
            if s + len == iova
                && g + len == gpa
                && p == perm
                && !iova.is_multiple_of(MAX_RUN)
                && !granular
                && !prev_granular
            {
                cur = Some((s, g, len + PAGE, p));
                continue;
            }
            out.insert((s, g, len, p));
        }
        cur = Some((iova, gpa, PAGE, perm));
    }
    out.extend(cur);
    out
}

fn host_set(host: &SimHost) -> BTreeSet<Mapping> {
    host.mappings()
        .iter()
        .map(|m| (m.iova, m.gpa, m.size, m.perm))
        .collect()
}

fn engine(flavour: HostFlavour) -> ShadowEngine<SimHost> {
    let host = SimHost::new(SimHostConfig::vtd().with_flavour(flavour));
    ShadowEngine::new(host, ShadowConfig::default().with_max_run(MAX_RUN))
}

fn flavour() -> impl Strategy<Value = HostFlavour> {
    prop_oneof![Just(HostFlavour::Type1v2), Just(HostFlavour::Iommufd)]
}

/// Applies one step to the engine with `view` (the guest after the step).
fn run_step(
    eng: &mut ShadowEngine<SimHost>,
    state: &mut GuestMemoryState,
    view: &dyn GuestView,
    step: &Step,
    invalidated: Option<AddrRange>,
) -> u64 {
    match step {
        Step::Edit(_) => eng
            .sync(view, invalidated.unwrap_or_default())
            .expect("sync")
            .host_calls(),
        Step::Event(ev) => {
            let change = state.apply(*ev);
            GuestMemoryState::apply_to_engine(eng, view, &change)
                .expect("event")
                .host_calls()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn translated_space_follows_memory_events(
        steps in prop::collection::vec(step(), 1..40),
        flavour in flavour(),
    ) {
        let mem = guest_memory(&[(TABLES.0, (TABLES.1 - TABLES.0) as usize)]);
        let fmt = RadixFormat::x86_like(4, ByteOrder::Little);
        let mut g = GuestTables::new(&fmt, &mem, AddrRange::new(TABLES.0, TABLES.1), SPACE_PAGES).unwrap();
        let root = g.root();
        let mut eng = engine(flavour);
        let mut state = GuestMemoryState::new();
        let mut before = BTreeSet::new();
        for s in &steps {
            let inv = match s {
                Step::Edit(e) => Some(g.apply(e).unwrap()),
                Step::Event(_) => None,
            };
            let view = Walker::new(&fmt, &mem, root);
            let calls = run_step(&mut eng, &mut state, &view, s, inv);
            let after = reference(g.truth(), &state);
            prop_assert_eq!(&host_set(eng.host()), &after, "after {:?}", s);
            let minimum = before.symmetric_difference(&after).count() as u64;
            prop_assert_eq!(calls, minimum, "host calls for {:?}", s);
            // The reverse index answers the balloon's question exactly.
            for ev in [0u64, 17, 101, 255] {
                let r = AddrRange::from_len(ev * PAGE, PAGE);
                let mapped = after.iter().any(|&(_, g, len, _)| AddrRange::from_len(g, len).overlaps(&r));
                prop_assert_eq!(eng.is_gpa_mapped(r), mapped);
            }
            before = after;
        }
        eng.teardown().unwrap();
        prop_assert_eq!(eng.host().mapping_count(), 0);
    }

    #[test]
    fn identity_space_drops_and_restores_exactly_the_range(
        events in prop::collection::vec(step().prop_filter("events only", |s| matches!(s, Step::Event(_))), 1..40),
    ) {
        // Pass-through over 1 MiB of RAM at 0 and 1 MiB at 4 MiB.
        let ram = [AddrRange::new(0, FRAMES * PAGE), AddrRange::new(4 << 20, 5 << 20)];
        let view = IdentityView::new(&ram);
        let mut eng = engine(HostFlavour::Type1v2);
        eng.reclaim(&view).unwrap();
        let mut state = GuestMemoryState::new();
        let truth: Truth = ram
            .iter()
            .flat_map(|r| (r.start..r.end).step_by(PAGE as usize))
            .map(|p| (p, (p, Perm::RW)))
            .collect();
        let mut before = reference(&truth, &state);
        prop_assert_eq!(&host_set(eng.host()), &before);
        for s in &events {
            let calls = run_step(&mut eng, &mut state, &view, s, None);
            let after = reference(&truth, &state);
            prop_assert_eq!(&host_set(eng.host()), &after, "after {:?}", s);
            prop_assert_eq!(calls, before.symmetric_difference(&after).count() as u64);
            before = after;
        }
        eng.teardown().unwrap();
        prop_assert_eq!(eng.host().mapping_count(), 0);
    }
}

#[test]
fn leaf_switch_between_2m_and_4k_makes_no_host_call() {
    let mem = guest_memory(&[(TABLES.0, (TABLES.1 - TABLES.0) as usize)]);
    let fmt = RadixFormat::x86_like(4, ByteOrder::Little);
    let mut g = GuestTables::new(&fmt, &mem, AddrRange::new(TABLES.0, TABLES.1), 2048).unwrap();
    let root = g.root();
    let mut eng = ShadowEngine::new(SimHost::new(SimHostConfig::vtd()), ShadowConfig::default());
    // A 2 MiB leaf at slot 1 → frame 0 above 1 GiB.
    let inv = g
        .apply(&Edit::MapBig {
            slot: 1,
            frame: 0,
            perm: Perm::RW,
        })
        .unwrap();
    eng.sync(&Walker::new(&fmt, &mem, root), inv).unwrap();
    let mapped = host_set(eng.host());
    assert_eq!(mapped.len(), 1);
    let (iova, gpa, size, _) = *mapped.iter().next().unwrap();
    assert_eq!(size, 2 << 20);
    eng.host_mut().take_calls();
    // The same translation as 512 4 KiB leaves (a table replaces the big leaf).
    let small = Edit::Map {
        at: iova / PAGE,
        pages: 512,
        gpa: gpa / PAGE,
        perm: Perm::RW,
    };
    let inv = g.apply(&small).unwrap();
    let r = eng.sync(&Walker::new(&fmt, &mem, root), inv).unwrap();
    assert_eq!(r.host_calls(), 0);
    // A real change of one 4 KiB translation: only that page changes on the host (the
    // 2 MiB mapping is split: unmapped whole, the two survivors and the new page mapped).
    let one = Edit::Map {
        at: iova / PAGE + 3,
        pages: 1,
        gpa: 1,
        perm: Perm::RW,
    };
    let inv = g.apply(&one).unwrap();
    let r = eng.sync(&Walker::new(&fmt, &mem, root), inv).unwrap();
    assert_eq!((r.unmap_calls, r.map_calls), (1, 3));
    let back = Edit::Map {
        at: iova / PAGE + 3,
        pages: 1,
        gpa: gpa / PAGE + 3,
        perm: Perm::RW,
    };
    let inv = g.apply(&back).unwrap();
    let r = eng.sync(&Walker::new(&fmt, &mem, root), inv).unwrap();
    assert_eq!((r.unmap_calls, r.map_calls), (3, 1));
    eng.host_mut().take_calls();
    // Back to one 2 MiB leaf with the same translation.
    let inv = g
        .apply(&Edit::MapBig {
            slot: 1,
            frame: 0,
            perm: Perm::RW,
        })
        .unwrap();
    let r = eng.sync(&Walker::new(&fmt, &mem, root), inv).unwrap();
    assert_eq!(r.host_calls(), 0);
    assert!(eng.host().calls().is_empty());
    assert_eq!(host_set(eng.host()), mapped);
}

#[test]
fn clearing_the_page_granular_hint_coalesces_again() {
    let ram = [AddrRange::new(0, 0x40_0000)];
    let view = IdentityView::new(&ram);
    let mut eng = engine(HostFlavour::Iommufd);
    eng.reclaim(&view).unwrap();
    let coalesced = host_set(eng.host());
    assert_eq!(coalesced.len(), 0x40_0000 / MAX_RUN as usize);
    let r = eng
        .set_page_granular(&view, AddrRange::new(0x1_0000, 0x3_0000))
        .unwrap();
    // Two 64 KiB mappings become 32 pages.
    assert_eq!((r.unmap_calls, r.map_calls), (2, 32));
    assert_eq!(
        eng.page_granular_gpa(),
        &[AddrRange::new(0x1_0000, 0x3_0000)]
    );
    let r = eng
        .clear_page_granular(&view, AddrRange::new(0, 0x40_0000))
        .unwrap();
    assert_eq!((r.unmap_calls, r.map_calls), (32, 2));
    assert!(eng.page_granular_gpa().is_empty());
    assert_eq!(host_set(eng.host()), coalesced);
}

#[test]
fn a_full_host_never_keeps_a_mapping_into_discarded_memory() {
    let ram = [AddrRange::new(0, 0x60_0000)];
    let view = IdentityView::new(&ram);
    let host = SimHost::new(SimHostConfig::vtd());
    let mut eng = ShadowEngine::new(host, ShadowConfig::default());
    eng.reclaim(&view).unwrap();
    assert_eq!(eng.host().mapping_count(), 3);
    // No free entry: each split can re-map only one of its two survivors.
    eng.host_mut().set_remaining(0);
    let holes = [
        AddrRange::from_len(0x10_0000, PAGE),
        AddrRange::from_len(0x30_0000, PAGE),
        AddrRange::from_len(0x50_0000, PAGE),
    ];
    let r = eng.discard_gpa_ranges(&view, &holes);
    match r {
        Err(viommu_shared::shadow::ShadowError::OutOfResources { not_mapped, report }) => {
            assert_eq!(not_mapped.len(), 3, "one survivor per split is missing");
            assert_eq!(report.unmap_calls, 3);
        }
        other => panic!("expected out of resources, got {other:?}"),
    }
    // Every mapping into discarded memory is gone, and the record still equals the host.
    for h in holes {
        assert!(!eng.is_gpa_mapped(h));
        assert!(
            eng.host()
                .mappings()
                .iter()
                .all(|m| !AddrRange::from_len(m.gpa, m.size).overlaps(&h))
        );
    }
    assert_eq!(eng.record().len(), eng.host().mapping_count());
    // With entries back, restoring maps everything again.
    eng.host_mut().set_remaining(100);
    eng.restore_gpa_ranges(&view, &holes).unwrap();
    eng.reclaim(&view).unwrap();
    assert_eq!(eng.host().mapping_count(), 3);
}
