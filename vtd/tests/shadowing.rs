//! Shadowing passthrough devices into a simulated host (caching mode): page-selective and
//! domain invalidations, live PDE switches, context changes, pass-through, aliasing, scalable
//! mode, and host out-of-resources.

mod common;

use common::*;
use viommu_shared::host::{PinBudget, SharedSimHost, SimHostConfig};
use viommu_shared::pt::TableBuilder;
use viommu_shared::{AddrRange, Perm};
use viommu_vtd::regs::*;
use viommu_vtd::testing::{DriverError, GuestDriver, desc, entry};
use viommu_vtd::{Config, SecondStage, Space, VtdError};
use vm_memory::GuestMemoryMmap;

const DEV: u16 = 0x0028; // 00:05.0
const DID: u16 = 3;

/// Booted unit (QI, root table, TE) with DEV attached to a host and in domain DID over an
/// empty 4-level table.
fn booted<'a>(fx: &'a Fixture, host: &SharedSimHost) -> GuestDriver<'a> {
    fx.vtd
        .attach_host(u32::from(DEV), Box::new(host.clone()))
        .unwrap();
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    drv.set_root_table(false).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    take_calls(host);
    drv
}

fn attach_domain(drv: &mut GuestDriver<'_>, root: u64, tt: u64) {
    drv.write_context(DEV, entry::context(root, 2, DID, tt, false))
        .unwrap();
    drv.flush_context_present(DEV, DID).unwrap();
}

#[test]
fn live_pde_switch_touches_only_what_changed() {
    let fx = Fixture::new(Config::default());
    let host = sim_host();
    let mut drv = booted(&fx, &host);
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    attach_domain(&mut drv, tb.root(), 0);
    assert_eq!(take_calls(&host), vec![]);

    // A 2 MiB leaf and a neighbouring 4 KiB page.
    let big = 0x4000_0000;
    tb.map_page(1, big, DATA, RW).unwrap();
    tb.map_range(big + 0x20_0000, DATA + 0x20_0000, 0x1000, RW)
        .unwrap();
    drv.flush_range(DID, big, 0x20_1000, false).unwrap();
    // Contiguous in both spaces, but host mappings are cut at 2 MiB boundaries.
    assert_eq!(
        host_maps(&host),
        vec![
            (big, DATA, 0x20_0000),
            (big + 0x20_0000, DATA + 0x20_0000, 0x1000)
        ]
    );
    take_calls(&host);

    // Replace the PDE by a table of 512 PTEs mapping exactly the same pages: nothing changes
    // on the host.
    let pde = tb.entry_for(1, big).unwrap();
    let pt = drv.alloc(1).unwrap();
    let ptes: Vec<u64> = (0..512u64).map(|i| (DATA + i * 0x1000) | 3).collect();
    drv.write(pt, &ptes).unwrap();
    drv.write(pde, &[pt | 3]).unwrap();
    drv.flush_range(DID, big, 0x20_0000, false).unwrap();
    assert_eq!(take_calls(&host), vec![]);

    // Now change one page and drop another inside the table: the 2 MiB host mapping is
    // replaced by its surviving pieces; the neighbour mapping is untouched.
    drv.write(pt + 8 * 5, &[(DATA + 0x80_0000) | 3]).unwrap();
    drv.write(pt + 8 * 10, &[0]).unwrap();
    drv.flush_range(DID, big, 0x20_0000, false).unwrap();
    assert_eq!(
        take_calls(&host),
        vec![
            ("unmap", big, 0x20_0000),
            ("map", big, 0x5000),
            ("map", big + 0x5000, 0x1000),
            ("map", big + 0x6000, 0x4000),
            ("map", big + 0xb000, 0x1f_5000),
        ]
    );
    assert!(host_maps(&host).contains(&(big + 0x5000, DATA + 0x80_0000, 0x1000)));
    assert!(host_maps(&host).contains(&(big + 0x20_0000, DATA + 0x20_0000, 0x1000)));
}

#[test]
fn page_selective_flush_syncs_only_its_range() {
    let fx = Fixture::new(Config::default());
    let host = sim_host();
    let mut drv = booted(&fx, &host);
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    attach_domain(&mut drv, tb.root(), 0);
    // Two pages mapped, only the first flushed: only it reaches the host (caching mode
    // allows the unflushed one to stay invisible).
    tb.map_range(0x1000, DATA, 0x1000, RW).unwrap();
    tb.map_range(0x10_0000, DATA + 0x10_0000, 0x1000, RW)
        .unwrap();
    drv.submit(&[desc::iotlb_page(DID, 0x1000, 0, false)])
        .unwrap();
    assert_eq!(host_maps(&host), vec![(0x1000, DATA, 0x1000)]);
    // A flush of another domain does nothing here.
    drv.submit(&[desc::iotlb_domain(DID + 1)]).unwrap();
    assert_eq!(host_maps(&host).len(), 1);
    // The domain flush brings everything.
    drv.submit(&[desc::iotlb_domain(DID)]).unwrap();
    assert_eq!(host_maps(&host).len(), 2);
    // Read-only pages are mapped read-only.
    tb.map_range(0x20_0000, DATA, 0x1000, Perm::READ).unwrap();
    drv.flush_range(DID, 0x20_0000, 0x1000, false).unwrap();
    let ro = host.with(|h| h.mappings().into_iter().find(|m| m.iova == 0x20_0000));
    assert_eq!(ro.map(|m| m.perm), Some(Perm::READ));
}

#[test]
fn pass_through_context_maps_guest_ram_identity() {
    let fx = Fixture::new(Config::default());
    let host = sim_host();
    let mut drv = booted(&fx, &host);
    // Blocked (no context) after TE: nothing mapped.
    assert_eq!(host_maps(&host), vec![]);
    // Linux's identity domain: TT=2, AW = max SAGAW, DID 1.
    drv.write_context(DEV, entry::context(0, 2, 1, 2, false))
        .unwrap();
    drv.flush_context_present(DEV, 1).unwrap();
    assert_eq!(
        fx.vtd.shadow_space(u32::from(DEV)),
        Some(Space::PassThrough {
            did: 1,
            input_bits: 48
        })
    );
    let maps = host_maps(&host);
    assert!(maps.iter().all(|&(i, g, _)| i == g));
    assert_eq!(maps.iter().map(|m| m.2).sum::<u64>(), RAM);
    // Back to not present: everything is unmapped.
    drv.write_context(DEV, [0, 0]).unwrap();
    drv.submit(&[desc::context_device(1, DEV, 0)]).unwrap();
    assert_eq!(host_maps(&host), vec![]);
}

#[test]
fn context_switch_to_another_domain_resyncs_fully() {
    let fx = Fixture::new(Config::default());
    let host = sim_host();
    let mut drv = booted(&fx, &host);
    let format = fx.format();
    let mut a = builder(&format, &fx.mem);
    a.map_range(0x1000, DATA, 0x3000, RW).unwrap();
    attach_domain(&mut drv, a.root(), 0);
    assert_eq!(host_maps(&host), vec![(0x1000, DATA, 0x3000)]);
    // Domain B in another table area.
    let mut b =
        viommu_shared::pt::TableBuilder::new(&format, &fx.mem, 0x300_0000, 0x340_0000).unwrap();
    b.map_range(0x2000, DATA + 0x10_0000, 0x1000, RW).unwrap();
    drv.write_context(DEV, entry::context(b.root(), 2, DID + 1, 0, false))
        .unwrap();
    // Function-masked device-selective invalidation (FM=3 covers the whole device).
    drv.submit(&[desc::context_device(DID, DEV | 7, 3)])
        .unwrap();
    assert_eq!(host_maps(&host), vec![(0x2000, DATA + 0x10_0000, 0x1000)]);
    // TE off: back to the identity map of RAM.
    drv.gcmd(GCMD_TE, false).unwrap();
    assert_eq!(host_maps(&host).iter().map(|m| m.2).sum::<u64>(), RAM);
}

#[test]
fn aliased_devices_share_the_bridge_context() {
    let fx = Fixture::new(Config::default());
    let host = sim_host();
    let bridge: u16 = 0x0200; // 02:00.0 as seen upstream of a PCIe-to-PCI bridge
    let behind: u16 = 0x0308; // 03:01.0 behind it
    fx.vtd
        .set_alias(u32::from(behind), u32::from(bridge))
        .unwrap();
    fx.vtd
        .attach_host(u32::from(behind), Box::new(host.clone()))
        .unwrap();
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    drv.set_root_table(false).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_range(0x5000, DATA, 0x1000, RW).unwrap();
    drv.write_context(bridge, entry::context(tb.root(), 2, DID, 0, false))
        .unwrap();
    drv.flush_context_present(bridge, DID).unwrap();
    assert_eq!(host_maps(&host), vec![(0x5000, DATA, 0x1000)]);
    // Faults carry the alias as source id.
    dma(&fx.vtd, behind, None, 0x9000, Perm::READ).unwrap_err();
    assert_eq!(take_fault(&fx.vtd).source_id, bridge);
    assert_eq!(
        dma(&fx.vtd, behind, None, 0x5000, Perm::READ).unwrap().addr,
        DATA
    );
}

/// The device and the (iova, size) runs of a `HostOutOfResources` error.
fn out_of_resources(err: DriverError) -> (u32, Vec<(u64, u64)>) {
    match err {
        DriverError::Host(VtdError::HostOutOfResources {
            device_id,
            not_mapped,
        }) => (
            device_id,
            not_mapped.iter().map(|r| (r.iova, r.size)).collect(),
        ),
        other => panic!("not out of resources: {other:?}"),
    }
}

#[test]
fn host_out_of_resources_is_reclaimed_then_reported() {
    let fx = Fixture::new(Config::default());
    let host = SharedSimHost::new(SimHostConfig::vtd().with_entry_limit(4));
    // Attach after translation is on, so the identity map never needs the host.
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    drv.set_root_table(false).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    fx.vtd
        .attach_host(u32::from(DEV), Box::new(host.clone()))
        .unwrap();
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    attach_domain(&mut drv, tb.root(), 0);

    // Three scattered pages (256 MiB apart, so never coalesced) fit.
    let at = |i: u64| i << 28;
    for i in 0..3u64 {
        tb.map_range(at(i), DATA + i * 0x2000, 0x1000, RW).unwrap();
    }
    drv.submit(&[desc::iotlb_domain(DID)]).unwrap();
    assert_eq!(host_maps(&host).len(), 3);

    // The guest unmaps one lazily (no flush) and maps two more, one flush each: the second
    // runs out, the reclaim drops the stale mapping, the retry fits.
    tb.unmap_page(at(0)).unwrap();
    for i in 3..5u64 {
        tb.map_range(at(i), DATA + i * 0x2000, 0x1000, RW).unwrap();
        drv.flush_range(DID, at(i), 0x1000, false).unwrap();
    }
    assert_eq!(host_maps(&host).len(), 4);
    assert!(!host_maps(&host).iter().any(|m| m.0 == at(0)));
    let st = fx.vtd.stats();
    assert_eq!((st.host_reclaims, st.host_out_of_resources), (1, 0));

    // Two more do not fit even after reclaim: the guest's queue still completes (the
    // driver saw its wait status), the call reports what is unmapped.
    for i in 5..7u64 {
        tb.map_range(at(i), DATA + i * 0x2000, 0x1000, RW).unwrap();
    }
    let err = drv
        .flush_range(DID, at(5), at(6) + 0x1000 - at(5), false)
        .unwrap_err();
    assert_eq!(
        out_of_resources(err),
        (u32::from(DEV), vec![(at(5), 0x1000), (at(6), 0x1000)])
    );
    assert_eq!(host_maps(&host).len(), 4);
    assert_eq!(fx.vtd.stats().host_out_of_resources, 1);
    assert_eq!(fx.vtd.mmio_read(FSTS, 4) & FSTS_IQE, 0);

    assert_eq!(
        fx.vtd.unmapped_range(u32::from(DEV)),
        Some(AddrRange::new(at(5), at(6) + 0x1000))
    );

    // The guest frees one entry with a page-selective flush of its own range: the missing
    // span is retried after it, and the entry goes to the first missing page.
    tb.unmap_page(at(1)).unwrap();
    drv.flush_range(DID, at(1), 0x1000, false).unwrap();
    assert_eq!(
        host_maps(&host).iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![at(2), at(3), at(4), at(5)]
    );
    assert_eq!(
        fx.vtd.unmapped_range(u32::from(DEV)),
        Some(AddrRange::new(at(6), at(6) + 0x1000))
    );

    // Once the guest unmaps enough, a domain flush brings the host back in line.
    for i in 2..5u64 {
        tb.unmap_page(at(i)).unwrap();
    }
    drv.submit(&[desc::iotlb_domain(DID)]).unwrap();
    assert_eq!(
        host_maps(&host),
        vec![
            (at(5), DATA + 0xa000, 0x1000),
            (at(6), DATA + 0xc000, 0x1000)
        ]
    );
    assert_eq!(fx.vtd.unmapped_range(u32::from(DEV)), None);
}

type Builder<'a> = TableBuilder<'a, SecondStage, GuestMemoryMmap>;

/// Booted unit (QI, root table, TE) with DEV in domain DID over `tb` and its peer DEV + 1 in
/// DID + 1 over `tb2` (both tables empty), attached to `dev_host` and `peer_host`.
fn two_devices<'a>(
    fx: &'a Fixture,
    format: &'a SecondStage,
    dev_host: &SharedSimHost,
    peer_host: &SharedSimHost,
) -> (GuestDriver<'a>, Builder<'a>, Builder<'a>) {
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    drv.set_root_table(false).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    let peer: u16 = DEV + 1;
    fx.vtd
        .attach_host(u32::from(DEV), Box::new(dev_host.clone()))
        .unwrap();
    fx.vtd
        .attach_host(u32::from(peer), Box::new(peer_host.clone()))
        .unwrap();
    let tb = builder(format, &fx.mem);
    let tb2 = TableBuilder::new(format, &fx.mem, 0x300_0000, 0x340_0000).unwrap();
    attach_domain(&mut drv, tb.root(), 0);
    drv.write_context(peer, entry::context(tb2.root(), 2, DID + 1, 0, false))
        .unwrap();
    drv.flush_context_present(peer, DID + 1).unwrap();
    (drv, tb, tb2)
}

#[test]
fn other_devices_are_reclaimed_and_the_retry_happens_only_if_that_freed_entries() {
    let fx = Fixture::new(Config::default());
    let full = SharedSimHost::new(SimHostConfig::vtd().with_entry_limit(1));
    let other = sim_host();
    let format = fx.format();
    let (mut drv, mut tb, mut tb2) = two_devices(&fx, &format, &full, &other);
    tb.map_range(0x1000, DATA, 0x1000, RW).unwrap();
    tb2.map_range(0x1000, DATA, 0x1000, RW).unwrap();
    drv.submit(&[desc::iotlb_global()]).unwrap();
    take_calls(&full);
    take_calls(&other);

    // DEV's host is full and the peer has nothing stale: the engine's own try and its
    // reclaim (whose full sync tries the invalidated range first), then the peer's reclaim
    // (no host call) and no further retry.
    tb.map_range(0x3000, DATA + 0x3000, 0x1000, RW).unwrap();
    let err = drv.flush_range(DID, 0x3000, 0x1000, false).unwrap_err();
    assert!(matches!(
        err,
        DriverError::Host(VtdError::HostOutOfResources { .. })
    ));
    assert_eq!(take_calls(&full), vec![("map", 0x3000, 0x1000); 2]);
    assert_eq!(take_calls(&other), vec![]);

    // The peer's guest dropped a page without flushing: reclaiming it unmaps, so DEV's sync
    // is retried (a shared container would now have room; these hosts are separate).
    tb2.unmap_page(0x1000).unwrap();
    let err = drv.flush_range(DID, 0x3000, 0x1000, false).unwrap_err();
    assert!(matches!(
        err,
        DriverError::Host(VtdError::HostOutOfResources { .. })
    ));
    assert_eq!(take_calls(&other), vec![("unmap", 0x1000, 0x1000)]);
    assert_eq!(take_calls(&full), vec![("map", 0x3000, 0x1000); 4]);
}

/// DEV (domain DID) and a peer (DID + 1, one host entry) whose hosts share a pin budget of
/// four pages, all used: the peer maps three contiguous pages (one host mapping), DEV one.
/// Then the peer's guest drops a page without flushing (its middle one if `middle`) and DEV
/// maps another.
fn sharing_a_pin_budget(middle: bool) {
    let fx = Fixture::new(Config::default());
    let budget = PinBudget::new(0x4000);
    let dev_host = SharedSimHost::new(SimHostConfig::vtd().with_pin_budget(budget.clone()));
    let peer_host = SharedSimHost::new(
        SimHostConfig::vtd()
            .with_entry_limit(1)
            .with_pin_budget(budget.clone()),
    );
    let peer: u16 = DEV + 1;
    let format = fx.format();
    let (mut drv, mut tb, mut tb2) = two_devices(&fx, &format, &dev_host, &peer_host);
    tb.map_range(0x1000, DATA, 0x1000, RW).unwrap();
    tb2.map_range(0x10000, DATA + 0x10_0000, 0x3000, RW)
        .unwrap();
    drv.submit(&[desc::iotlb_global()]).unwrap();
    assert_eq!(
        host_maps(&peer_host),
        vec![(0x10000, DATA + 0x10_0000, 0x3000)]
    );
    assert_eq!(budget.used(), 0x4000);
    let reclaims = fx.vtd.stats().host_reclaims;

    if !middle {
        // DEV's full sync runs out, the peer's reclaim drops the stale page, the retry fits.
        tb2.unmap_page(0x12000).unwrap();
        tb.map_range(0x3000, DATA + 0x3000, 0x1000, RW).unwrap();
        drv.submit(&[desc::iotlb_domain(DID)]).unwrap();
        assert_eq!(
            host_maps(&dev_host),
            vec![(0x1000, DATA, 0x1000), (0x3000, DATA + 0x3000, 0x1000)]
        );
        assert_eq!(
            host_maps(&peer_host),
            vec![(0x10000, DATA + 0x10_0000, 0x2000)]
        );
        // A domain flush already re-syncs DEV in full: the peers' reclaim is the only one.
        let st = fx.vtd.stats();
        assert_eq!(
            (st.host_reclaims - reclaims, st.host_out_of_resources),
            (1, 0)
        );
    } else {
        // Re-laying the peer out around its middle page needs two entries and its container
        // has one. DEV gets its page; the flush reports the peer's loss.
        tb2.unmap_page(0x11000).unwrap();
        tb.map_range(0x3000, DATA + 0x3000, 0x1000, RW).unwrap();
        let err = drv.submit(&[desc::iotlb_domain(DID)]).unwrap_err();
        assert_eq!(
            out_of_resources(err),
            (u32::from(peer), vec![(0x12000, 0x1000)])
        );
        assert_eq!(host_maps(&dev_host).len(), 2);
        assert_eq!(
            host_maps(&peer_host),
            vec![(0x10000, DATA + 0x10_0000, 0x1000)]
        );
        assert_eq!(fx.vtd.stats().host_out_of_resources, 1);
    }
    fx.vtd.detach_host(u32::from(DEV)).unwrap();
    fx.vtd.detach_host(u32::from(peer)).unwrap();
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_peers_stale_mappings_make_room_in_a_shared_pin_budget() {
    sharing_a_pin_budget(false);
}

#[test]
fn a_peer_left_short_by_its_reclaim_is_reported() {
    sharing_a_pin_budget(true);
}

#[test]
fn out_of_resources_on_attach_and_register_interface() {
    let fx = Fixture::new(Config::default());
    let host = SharedSimHost::new(SimHostConfig::vtd().with_entry_limit(2));
    // Untranslated: the identity map of 256 MiB needs 128 entries.
    let err = fx
        .vtd
        .attach_host(u32::from(DEV), Box::new(host.clone()))
        .unwrap_err();
    assert!(matches!(err, VtdError::HostOutOfResources { .. }));
    assert_eq!(host_maps(&host).len(), 2);
    // Still attached; the register-based flush path reports too.
    let mut drv = fx.driver();
    drv.set_root_table(false).unwrap();
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_range(0x1000, DATA, 0x1000, RW).unwrap();
    drv.write_context(DEV, entry::context(tb.root(), 2, DID, 0, false))
        .unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    assert_eq!(host_maps(&host), vec![(0x1000, DATA, 0x1000)]);
    fx.vtd.detach_host(u32::from(DEV)).unwrap();
    assert_eq!(host_maps(&host), vec![]);
}

#[test]
fn scalable_mode_pasid_entry_shadowing() {
    let fx = Fixture::new(Config {
        scalable_mode: true,
        ..Config::default()
    });
    let host = sim_host();
    fx.vtd
        .attach_host(u32::from(DEV), Box::new(host.clone()))
        .unwrap();
    let mut drv = fx.driver();
    drv.enable_qi(true).unwrap();
    drv.set_root_table(true).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    assert_eq!(host_maps(&host), vec![]);
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_range(0x8000, DATA, 0x2000, RW).unwrap();
    let dir = drv.alloc(1).unwrap();
    let table = drv.alloc(1).unwrap();
    drv.write_sm_context(DEV, entry::sm_context(dir, 0, 0, true, false))
        .unwrap();
    drv.write(dir, &[entry::pasid_dir(table, false)]).unwrap();
    drv.write(table, &entry::pasid_second_stage(tb.root(), 2, DID, false))
        .unwrap();
    // Linux's scalable attach under CM: PASID-cache (PASID-selective) + PASID-IOTLB.
    drv.submit(&[
        desc::pasid_cache(1, DID, 0),
        desc::pasid_iotlb(DID, 0, None),
    ])
    .unwrap();
    assert_eq!(host_maps(&host), vec![(0x8000, DATA, 0x2000)]);
    // Page-selective PASID-IOTLB flush of a new page.
    tb.map_range(0xa000, DATA + 0x2000, 0x1000, RW).unwrap();
    drv.submit(&[desc::pasid_iotlb(DID, 0, Some((0xa000, 0)))])
        .unwrap();
    assert_eq!(host_maps(&host), vec![(0x8000, DATA, 0x3000)]);
    // Switch the PASID entry to pass-through (identity domain).
    drv.write(table, &entry::pasid_pass_through(1)).unwrap();
    drv.submit(&[desc::pasid_cache(1, DID, 0)]).unwrap();
    assert_eq!(host_maps(&host).iter().map(|m| m.2).sum::<u64>(), RAM);
}

#[test]
fn attach_needs_caching_mode_and_valid_ids() {
    let fx = Fixture::new(Config {
        caching_mode: false,
        ..Config::default()
    });
    assert_eq!(
        fx.vtd.attach_host(0x10, Box::new(sim_host())),
        Err(VtdError::CachingModeOff)
    );
    let fx = Fixture::new(Config::default());
    assert_eq!(
        fx.vtd.attach_host(0x1_0000, Box::new(sim_host())),
        Err(VtdError::InvalidDeviceId {
            device_id: 0x1_0000
        })
    );
    fx.vtd.attach_host(0x10, Box::new(sim_host())).unwrap();
    assert_eq!(
        fx.vtd.attach_host(0x10, Box::new(sim_host())),
        Err(VtdError::AlreadyAttached { device_id: 0x10 })
    );
    assert_eq!(
        fx.vtd.detach_host(0x11),
        Err(VtdError::NotAttached { device_id: 0x11 })
    );
}

#[test]
fn vm_device_bus_keeps_host_errors_for_the_vmm() {
    use viommu_shared::regs::{ByteOrder, MmioAdapter};
    use vm_device::DeviceMmio;
    use vm_device::bus::MmioAddress;

    let fx = Fixture::new(Config::default());
    let host = SharedSimHost::new(SimHostConfig::vtd().with_entry_limit(300));
    fx.vtd
        .attach_host(u32::from(DEV), Box::new(host.clone()))
        .unwrap();
    let dev = MmioAdapter::new(fx.vtd.clone(), ByteOrder::Little);
    let base = MmioAddress(0xfed9_0000);
    let mut ver = [0u8; 4];
    dev.mmio_read(base, VER, &mut ver);
    assert_eq!(ver, [0x10, 0, 0, 0]);
    // TE through the bus: DEV has no context yet, so its host space empties.
    let mut drv = fx.driver();
    drv.set_root_table(false).unwrap();
    dev.mmio_write(base, GCMD, &GCMD_TE.to_le_bytes()[..4]);
    assert!(fx.vtd.translation_enabled());
    assert!(fx.vtd.take_deferred_errors().is_empty());
    assert_eq!(host_maps(&host), vec![]);
    // The guest attaches DEV to a domain while the host has no room left: the error
    // surfaces through take_deferred_errors.
    host.with(|h| h.set_remaining(0));
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_range(0x1000, DATA, 0x1000, RW).unwrap();
    drv.write_context(DEV, entry::context(tb.root(), 2, DID, 0, false))
        .unwrap();
    // Register-based device-selective context invalidation through the bus.
    let ccmd: u64 = (1 << 63) | (3 << 61) | (u64::from(DEV) << 16);
    dev.mmio_write(base, CCMD, &ccmd.to_le_bytes());
    let errs = fx.vtd.take_deferred_errors();
    assert!(
        matches!(errs.as_slice(), [VtdError::HostOutOfResources { .. }]),
        "{errs:?}"
    );
    // The guest saw the invalidation complete.
    let mut v = [0u8; 8];
    dev.mmio_read(base, CCMD, &mut v);
    assert_eq!(u64::from_le_bytes(v) >> 63, 0);
}
