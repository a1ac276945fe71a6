//! A Linux-like guest against a host limited to 1000 DMA entries (A.14): one RPCIT per map,
//! lazy unmaps queued without RPCIT, a global RPCIT when RPCIT reports exhaustion and when
//! the flush queue is flushed.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use common::*;
use viommu_s390_zpci::{AperturePolicy, Cc, Config, Designation, FunctionState, status};
use viommu_shared::Perm;
use viommu_shared::host::{HostFlavour, SimHostConfig};

const LIMIT: usize = 1000;
const PAGES: u64 = 16384; // 64 MiB DMA range
const PAL: u64 = SDMA + PAGES * 0x1000 - 1;
const LIVE_TARGET: usize = 700;
const QUEUE_FLUSH: usize = 600;
const STEPS: u64 = 6000;

/// The guest's target page for its `n`-th mapping: pages two apart, so no two mappings are
/// ever contiguous and each needs its own host entry (the oracle stays exact).
fn gpa_for(n: u64) -> u64 {
    DATA + (n % 4096) * 0x2000
}

#[test]
fn linux_like_guest_under_a_1000_entry_host() {
    linux_like_guest(HostFlavour::Type1v2);
}

#[test]
fn linux_like_guest_under_a_1000_entry_type1v1_host() {
    linux_like_guest(HostFlavour::Type1v1);
}

fn linux_like_guest(flavour: HostFlavour) {
    let config = Config {
        aperture: AperturePolicy::Full,
        ..Config::default()
    };
    let env = env_with(
        config,
        Some(
            SimHostConfig::s390(HOST_APERTURE)
                .with_entry_limit(LIMIT as u32)
                .with_flavour(flavour),
        ),
    );
    let fh = env.enable();
    let mut cpu = env.cpu();
    // The guest sees the refresh bit: it must RPCIT its maps.
    assert_eq!(cpu.query_group(0xff).unwrap().flags & 0x01, 0x01);
    let q = cpu.query_function(fh).unwrap();
    assert!(q.edma >= PAL, "full DMA range advertised");
    let mut t = env.tables(Designation::RegionThird);
    assert_eq!(
        cpu.register_ioat(fh, SDMA, PAL, t.iota().0).unwrap().cc,
        Cc::Ok
    );

    // Guest state.
    let mut live: BTreeMap<u64, u64> = BTreeMap::new(); // iova -> gpa
    let mut order: VecDeque<u64> = VecDeque::new(); // live iovas, oldest first
    let mut queue: Vec<u64> = Vec::new(); // lazily unmapped, IOVA not yet free
    let mut next_iova = SDMA;
    // What the host must hold: synced live mappings plus lazy unmaps not yet refreshed.
    let mut host: BTreeSet<u64> = BTreeSet::new();
    let (mut exhausted, mut retries_ok, mut flushes) = (0, 0, 0);

    for n in 0..STEPS {
        // Next-fit IOVA allocation over the range, skipping IOVAs in use or queued.
        let iova = loop {
            let cand = next_iova;
            next_iova = if next_iova + 0x1000 > PAL {
                SDMA
            } else {
                next_iova + 0x1000
            };
            if !live.contains_key(&cand) && !queue.contains(&cand) {
                break cand;
            }
        };
        let gpa = gpa_for(n);
        t.map(iova, gpa, Perm::RW).unwrap();
        let host_full = host.len() == LIMIT;
        let c = cpu.rpcit(fh, iova, 0x1000).unwrap();
        if host_full {
            // Exactly when the host is full, and only then.
            assert_eq!(
                (c.cc, c.status),
                (Cc::Error, Some(status::INSUFFICIENT_RESOURCES)),
                "step {n}"
            );
            exhausted += 1;
            // Linux: global RPCIT, which frees the lazily invalidated entries and makes
            // the new mapping in the same pass.
            let g = cpu.rpcit(fh, SDMA, PAL - SDMA + 1).unwrap();
            live.insert(iova, gpa);
            assert!(live.len() <= LIMIT);
            assert_eq!(g.cc, Cc::Ok, "step {n}: global RPCIT retry");
            retries_ok += 1;
            host = live.keys().copied().collect();
        } else {
            assert_eq!(c.cc, Cc::Ok, "step {n}: host has {} entries", host.len());
            live.insert(iova, gpa);
            host.insert(iova);
        }
        order.push_back(iova);

        // Lazy unmap of the oldest mapping: PTE invalidated, no RPCIT (flush queue).
        if live.len() > LIVE_TARGET {
            let old = order.pop_front().unwrap();
            live.remove(&old);
            assert!(t.unmap(old).unwrap());
            queue.push(old);
        }
        // Flush-queue flush: global RPCIT, then the IOVAs are free again.
        if queue.len() >= QUEUE_FLUSH {
            let g = cpu.rpcit(fh, SDMA, PAL - SDMA + 1).unwrap();
            assert_eq!(g.cc, Cc::Ok, "step {n}: flush");
            flushes += 1;
            queue.clear();
            host = live.keys().copied().collect();
        }

        // The host holds exactly what the oracle says, and the budget is the host's own.
        assert_eq!(env.host_count(), host.len(), "step {n}");
        let info = env.zpci.function(FID).unwrap();
        assert_eq!(info.host_remaining, Some((LIMIT - host.len()) as u32));
        assert_eq!(info.state, FunctionState::Enabled);
    }
    assert!(exhausted > 3, "exhaustion happened {exhausted} times");
    assert_eq!(retries_ok, exhausted);
    assert!(flushes > 3);

    // Final global RPCIT: host mappings equal the guest tables.
    assert_eq!(cpu.rpcit(fh, SDMA, PAL - SDMA + 1).unwrap().cc, Cc::Ok);
    let want: Vec<(u64, u64, u64, Perm)> = live
        .iter()
        .map(|(&i, &g)| (i, g, 0x1000, Perm::RW))
        .collect();
    assert_eq!(env.host_mappings(), want);
    assert!(env.zpci.take_events().is_empty());
    let info = env.zpci.function(FID).unwrap();
    assert_eq!(info.stats.insufficient_resources, exhausted);
    assert_eq!(info.counters.rpcits, info.stats.rpcits);

    // Deregistration returns every entry to the host.
    assert_eq!(cpu.deregister_ioat(fh).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_count(), 0);
    assert_eq!(
        env.zpci.function(FID).unwrap().host_remaining,
        Some(LIMIT as u32)
    );
}

#[test]
fn global_rpcit_fails_only_when_live_mappings_do_not_fit() {
    let env = env_limit(16);
    let fh = env.enable();
    let mut cpu = env.cpu();
    let mut t = env.tables(Designation::RegionThird);
    let pal = SDMA + (1 << 20) - 1;
    cpu.register_ioat(fh, SDMA, pal, t.iota().0).unwrap();
    for p in 0..16u64 {
        t.map(SDMA + p * 0x1000, gpa_for(p), Perm::RW).unwrap();
        assert_eq!(cpu.rpcit(fh, SDMA + p * 0x1000, 0x1000).unwrap().cc, Cc::Ok);
    }
    t.map(SDMA + 0x10_000, gpa_for(16), Perm::RW).unwrap();
    let c = cpu.rpcit(fh, SDMA + 0x10_000, 0x1000).unwrap();
    assert_eq!(c.status, Some(status::INSUFFICIENT_RESOURCES));
    // 17 live mappings do not fit in 16 entries: the global RPCIT reports it too.
    let g = cpu.rpcit(fh, SDMA, pal - SDMA + 1).unwrap();
    assert_eq!(g.status, Some(status::INSUFFICIENT_RESOURCES));
    // Linux then unmaps the new mapping and refreshes it: back to a consistent host.
    t.unmap(SDMA + 0x10_000).unwrap();
    assert_eq!(cpu.rpcit(fh, SDMA + 0x10_000, 0x1000).unwrap().cc, Cc::Ok);
    assert_eq!(cpu.rpcit(fh, SDMA, pal - SDMA + 1).unwrap().cc, Cc::Ok);
    assert_eq!(env.host_count(), 16);
    assert!(!env.zpci.function(FID).unwrap().full_sync_pending);
}
