//! Property tests of the shadow engine against SimHost: after any sequence of guest
//! page-table edits and syncs, the host equals the canonical coalesced guest truth, each sync
//! makes exactly the minimum number of host calls, nothing is lost silently under a small
//! entry limit with reclaim + retry, and teardown leaves the host empty.

use proptest::prelude::*;
use std::collections::BTreeSet;
use viommu_shared::host::{HostCall, HostDma, HostFlavour, SimHost, SimHostConfig};
use viommu_shared::pt::{ByteOrder, Walker};
use viommu_shared::shadow::{ShadowConfig, ShadowEngine, ShadowError};
use viommu_shared::testing::guest::{BIG, PAGE};
use viommu_shared::testing::{Edit, GuestTables, RadixFormat, Truth, canonical, guest_memory};
use viommu_shared::{AddrRange, Perm};

/// IOVA space exercised: 16 MiB.
const SPACE_PAGES: u64 = 4096;
const MAX_RUN: u64 = 64 << 10;
/// A host-reserved hole (like the MSI window) inside the exercised space.
const HOLE: AddrRange = AddrRange::new(0x80_0000, 0x81_0000);
const TABLES: (u64, u64) = (0x100_0000, 0x140_0000);

type Mapping = (u64, u64, u64, Perm);

fn perm() -> impl Strategy<Value = Perm> {
    prop_oneof![Just(Perm::RW), Just(Perm::READ), Just(Perm::WRITE)]
}

/// An edit, or a spurious invalidation of a range with no edit.
#[derive(Clone, Debug)]
enum Step {
    Edit(Edit),
    Resync { at: u64, pages: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..SPACE_PAGES, 1..64u64, 0..64u64, perm()).prop_map(|(at, pages, g, perm)| Step::Edit(Edit::Map {
            at,
            pages,
            // Few distinct frames so that contiguity with neighbours happens often.
            gpa: g * 16 + at % 16,
            perm
        })),
        1 => (0..SPACE_PAGES * PAGE / BIG, 0..4u64, perm())
            .prop_map(|(slot, frame, perm)| Step::Edit(Edit::MapBig { slot, frame, perm })),
        3 => (0..SPACE_PAGES, 1..96u64).prop_map(|(at, pages)| Step::Edit(Edit::Unmap { at, pages })),
        1 => (0..SPACE_PAGES, 1..128u64).prop_map(|(at, pages)| Step::Resync { at, pages }),
    ]
}

type Guest<'a> = GuestTables<'a, RadixFormat, vm_memory::GuestMemoryMmap>;

/// Applies the step; returns the IOVA range the guest invalidates.
fn apply(g: &mut Guest<'_>, s: &Step) -> AddrRange {
    match s {
        Step::Edit(e) => g.apply(e).unwrap(),
        Step::Resync { at, pages } => {
            AddrRange::from_len(at * PAGE, (*pages).min(SPACE_PAGES - at) * PAGE)
        }
    }
}

fn truth_layout(t: &Truth) -> BTreeSet<Mapping> {
    canonical(t, MAX_RUN, &[HOLE])
}

/// Guest RAM holding the tables.
fn table_memory() -> vm_memory::GuestMemoryMmap {
    guest_memory(&[(TABLES.0, (TABLES.1 - TABLES.0) as usize)])
}

/// Steps, each with whether the guest invalidates it (only unmaps may go without).
fn edits_maybe_invalidated() -> impl Strategy<Value = Vec<(Step, bool)>> {
    prop::collection::vec((step(), any::<bool>()), 1..40)
}

/// An engine over a type1 v2 host with `limit` entries.
fn type1_engine(limit: u32) -> ShadowEngine<SimHost> {
    ShadowEngine::new(
        SimHost::new(config(HostFlavour::Type1v2, limit)),
        ShadowConfig::default().with_max_run(MAX_RUN),
    )
}

fn host_set(host: &SimHost) -> BTreeSet<Mapping> {
    host.mappings()
        .iter()
        .map(|m| (m.iova, m.gpa, m.size, m.perm))
        .collect()
}

fn config(flavour: HostFlavour, limit: u32) -> SimHostConfig {
    SimHostConfig {
        iova_ranges: vec![
            AddrRange::new(0, HOLE.start),
            AddrRange::new(HOLE.end, 1 << 39),
        ],
        ..SimHostConfig::vtd()
            .with_flavour(flavour)
            .with_entry_limit(limit)
    }
}

fn flavour() -> impl Strategy<Value = HostFlavour> {
    prop_oneof![
        Just(HostFlavour::Type1v2),
        Just(HostFlavour::Type1v1),
        Just(HostFlavour::Iommufd)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn host_equals_coalesced_truth_with_minimal_calls(
        edits in prop::collection::vec(step(), 1..40),
        flavour in flavour(),
    ) {
        let mem = table_memory();
        let fmt = RadixFormat::x86_like(4, ByteOrder::Little);
        let mut g = Guest::new(&fmt, &mem, AddrRange::new(TABLES.0, TABLES.1), SPACE_PAGES).unwrap();
        let root = g.root();
        let mut eng = ShadowEngine::new(SimHost::new(config(flavour, 65535)), ShadowConfig::default().with_max_run(MAX_RUN));
        let mut before = BTreeSet::new();
        for e in &edits {
            let inv = apply(&mut g, e);
            let view = Walker::new(&fmt, &mem, root);
            let report = eng.sync(&view, inv).expect("sync");
            let after = truth_layout(g.truth());
            prop_assert_eq!(&host_set(eng.host()), &after, "after {:?}", e);
            let minimum = before.symmetric_difference(&after).count() as u64;
            prop_assert_eq!(report.host_calls(), minimum, "calls for {:?}", e);
            prop_assert!(report.refused.is_empty());
            // Every host call succeeded: exact unmaps only, no overlap.
            let all_ok = eng.host().calls().iter().all(|c| match c {
                HostCall::Map { result, .. } => result.is_ok(),
                HostCall::Unmap { result, size, .. } => result == &Ok(*size),
                _ => true,
            });
            prop_assert!(all_ok, "a host call failed");
            before = after;
        }
        let mut eng = eng;
        eng.teardown().unwrap();
        prop_assert_eq!(eng.host().mapping_count(), 0);
        prop_assert_eq!(eng.host().remaining_entries(), match flavour { HostFlavour::Iommufd => None, _ => Some(65535) });
    }

    #[test]
    fn small_entry_limit_never_loses_a_mapping(
        edits in edits_maybe_invalidated(),
        limit in 1u32..24,
    ) {
        let mem = table_memory();
        let fmt = RadixFormat::x86_like(4, ByteOrder::Little);
        let mut g = Guest::new(&fmt, &mem, AddrRange::new(TABLES.0, TABLES.1), SPACE_PAGES).unwrap();
        let root = g.root();
        let mut eng = type1_engine(limit);
        // Ranges the guest changed without invalidating (lazy unmap, as s390 Linux does).
        let mut lazy: Vec<AddrRange> = Vec::new();
        for (e, invalidate) in &edits {
            let inv = apply(&mut g, e);
            let lazy_edit = matches!(e, Step::Edit(Edit::Unmap { .. })) && !invalidate;
            if lazy_edit {
                lazy.push(inv);
                continue;
            }
            let view = Walker::new(&fmt, &mem, root);
            let truth_now = truth_layout(g.truth());
            match eng.sync_or_reclaim(&view, inv) {
                Ok(report) => {
                    if report.reclaimed {
                        lazy.clear();
                        if truth_now.len() <= limit as usize {
                            prop_assert_eq!(&host_set(eng.host()), &truth_now);
                        }
                    }
                    // Everything the guest maps in the invalidated range is on the host.
                    for (&iova, &(gpa, perm)) in g.truth().range(inv.start..inv.end) {
                        if HOLE.contains(iova) { continue; }
                        let m = eng.host().mappings().into_iter().find(|m| m.iova <= iova && iova < m.iova + m.size);
                        prop_assert!(m.is_some_and(|m| m.gpa + (iova - m.iova) == gpa && m.perm == perm), "page {iova:#x} missing");
                    }
                }
                Err(ShadowError::OutOfResources { not_mapped, .. }) => {
                    // Only when the truth genuinely does not fit, after a full reclaim.
                    lazy.clear();
                    prop_assert!(truth_now.len() > limit as usize, "{} mappings fit in {}", truth_now.len(), limit);
                    prop_assert!(!not_mapped.is_empty());
                    // Every guest page in the range is on the host or reported.
                    for (&iova, &(gpa, _)) in g.truth().range(inv.start..inv.end) {
                        if HOLE.contains(iova) { continue; }
                        let on_host = eng.host().mappings().iter().any(|m| m.iova <= iova && iova < m.iova + m.size && m.gpa + (iova - m.iova) == gpa);
                        let reported = not_mapped.iter().any(|r| r.iova <= iova && iova < r.iova + r.size);
                        prop_assert!(on_host || reported, "page {iova:#x} lost silently");
                    }
                }
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
            // The record always equals the host.
            let rec: BTreeSet<Mapping> = eng.record().iter().map(|m| (m.iova, m.gpa, m.size, m.perm)).collect();
            prop_assert_eq!(&rec, &host_set(eng.host()));
            // The host never holds a mapping the guest removed and invalidated.
            for m in eng.host().mappings() {
                for off in (0..m.size).step_by(PAGE as usize) {
                    let iova = m.iova + off;
                    let in_truth = g.truth().get(&iova) == Some(&(m.gpa + off, m.perm));
                    let lazily = lazy.iter().any(|r| r.contains(iova));
                    prop_assert!(in_truth || lazily, "stale host page {iova:#x}");
                }
            }
        }
        eng.teardown().unwrap();
        prop_assert_eq!(eng.host().mapping_count(), 0);
        prop_assert_eq!(eng.host().remaining_entries(), Some(limit));
    }
}

/// Guest pages (outside the hole) the host does not translate as the guest does.
fn pages_not_on_host(g: &Guest<'_>, host: &SimHost) -> Vec<u64> {
    let maps = host.mappings();
    g.truth()
        .iter()
        .filter(|(iova, _)| !HOLE.contains(**iova))
        .filter(|&(&iova, &(gpa, perm))| {
            !maps.iter().any(|m| {
                m.iova <= iova
                    && iova < m.iova + m.size
                    && m.gpa + (iova - m.iova) == gpa
                    && m.perm == perm
            })
        })
        .map(|(&iova, _)| iova)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// With `sync_reclaim_retry`, every page an out-of-resources left out is inside the
    /// engine's `missing` span, and once the host has room again one `retry_missing` maps
    /// all of them.
    #[test]
    fn missing_span_covers_what_is_left_out_until_it_fits(
        (edits, limit) in (edits_maybe_invalidated(), 1u32..24),
    ) {
        let mem = table_memory();
        let fmt = RadixFormat::x86_like(4, ByteOrder::Little);
        let mut g = Guest::new(&fmt, &mem, AddrRange::new(TABLES.0, TABLES.1), SPACE_PAGES).unwrap();
        let root = g.root();
        let mut eng = type1_engine(limit);
        for (e, invalidate) in &edits {
            let inv = apply(&mut g, e);
            if matches!(e, Step::Edit(Edit::Unmap { .. })) && !invalidate {
                continue;
            }
            let view = Walker::new(&fmt, &mem, root);
            match eng.sync_reclaim_retry(&view, inv) {
                Ok(_) | Err(ShadowError::OutOfResources { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
            let missing = eng.missing();
            for iova in pages_not_on_host(&g, eng.host()) {
                prop_assert!(missing.is_some_and(|m| m.contains(iova)), "page {iova:#x} left out but not in {missing:x?}");
            }
        }
        // The host gets room: one retry brings back everything left out.
        eng.host_mut().set_remaining(65535);
        let view = Walker::new(&fmt, &mem, root);
        eng.retry_missing(&view).unwrap();
        prop_assert_eq!(eng.missing(), None);
        prop_assert_eq!(pages_not_on_host(&g, eng.host()), Vec::<u64>::new());
    }
}
