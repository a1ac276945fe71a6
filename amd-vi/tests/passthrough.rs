//! Passthrough devices: host mappings follow the guest through the NpCache map path,
//! device-table invalidations, INVALIDATE_IOMMU_ALL, IommuEn, aliases, reset and detach.

mod common;

use common::*;
use viommu_amd_vi::pagetable::{NEXT_LEVEL_SHIFT, PTE_IR, PTE_IW, PTE_PR};
use viommu_amd_vi::regs::control;
use viommu_amd_vi::{Command, Config, DeviceMode, Dte, EventCode};
use viommu_shared::host::{HostCall, HostMapping, SharedSimHost, SimHostConfig};
use viommu_shared::{AddrRange, Perm};

const DEV: u16 = 0x0010; // 00:02.0

fn host() -> SharedSimHost {
    SharedSimHost::new(SimHostConfig::amd_vi())
}

fn mappings(h: &SharedSimHost) -> Vec<HostMapping> {
    h.with(|h| h.mappings())
}

fn calls(h: &SharedSimHost) -> Vec<HostCall> {
    h.with(|h| h.take_calls())
}

fn map(iova: u64, gpa: u64, size: u64) -> HostCall {
    HostCall::Map {
        iova,
        gpa,
        size,
        perm: Perm::RW,
        result: Ok(()),
    }
}

fn unmap(iova: u64, size: u64) -> HostCall {
    HostCall::Unmap {
        iova,
        size,
        result: Ok(size),
    }
}

/// Identity over the 64 MiB of RAM, coalesced into 2 MiB host mappings.
fn is_identity(m: &[HostMapping], perm: Perm) -> bool {
    m.len() == 32
        && m.iter().enumerate().all(|(i, x)| {
            x.iova == (i as u64) << 21 && x.gpa == x.iova && x.size == 1 << 21 && x.perm == perm
        })
}

#[test]
fn np_cache_map_path() {
    let mut g = Guest::new(Config::default());
    let h = host();
    g.iommu.attach_host(DEV, Box::new(h.clone())).unwrap();
    // IOMMU disabled: DMA untranslated, so the host maps guest RAM one to one.
    assert!(is_identity(&mappings(&h), Perm::RW));
    g.linux_init();
    // IommuEn with Linux's blocking entries: everything unmapped.
    assert!(mappings(&h).is_empty());
    assert_eq!(g.iommu.attached_mode(DEV), Some(g.iommu.device_mode(DEV)));
    calls(&h);

    let pt = g.new_tables(3);
    g.attach(DEV, Dte::translated(5, pt.root, 3, Perm::RW))
        .unwrap();
    assert!(calls(&h).is_empty(), "empty table: nothing to map");

    // iommu_map of 12 KiB at IOVA 0x1000: a 4K PTE and an 8K NextLevel-7 pair.
    pt.map(&mut g, 0x1000, 0x90_1000, 0x1000, Perm::RW);
    pt.map(&mut g, 0x2000, 0x90_2000, 0x2000, Perm::RW);
    let l0 = pt.table_for(&mut g, 0, 0x1000);
    assert_eq!(g.load(l0 + 8), 0x90_1000 | PTE_PR | PTE_IR | PTE_IW);
    let pair = 0x90_2000 | PTE_PR | PTE_IR | PTE_IW | (7 << NEXT_LEVEL_SHIFT);
    assert_eq!((g.load(l0 + 16), g.load(l0 + 24)), (pair, pair));
    let tail = g.cmd_tail();
    g.flush_pages(5, AddrRange::new(0x1000, 0x4000)).unwrap();
    // The guest sent 4K@0x1000 (S=0) and 8K@0x2000 (S=1), then a completion wait.
    let cmd = |i: u64| {
        let at = CMD_BUF + (tail + 16 * i) % 8192;
        [g.load(at), g.load(at + 8)]
    };
    assert_eq!(cmd(0), [(3 << 60) | (5 << 32), 0x1000]);
    assert_eq!(cmd(1), [(3 << 60) | (5 << 32), 0x2000 | 1]);
    assert_eq!(cmd(2)[0] >> 60, 1);
    // One coalesced host mapping for the three guest pages.
    assert_eq!(calls(&h), vec![map(0x1000, 0x90_1000, 0x3000)]);
    assert_eq!(
        mappings(&h),
        vec![HostMapping {
            iova: 0x1000,
            gpa: 0x90_1000,
            size: 0x3000,
            perm: Perm::RW
        }]
    );
    // Repeating the flush changes nothing on the host.
    g.flush_pages(5, AddrRange::new(0x1000, 0x4000)).unwrap();
    assert!(calls(&h).is_empty());

    // Unmap the 8K page: the coalesced mapping is replaced by its surviving 4K.
    pt.unmap(&mut g, 0x2000, 0x2000);
    g.flush_pages(5, AddrRange::new(0x2000, 0x4000)).unwrap();
    assert_eq!(
        calls(&h),
        vec![unmap(0x1000, 0x3000), map(0x1000, 0x90_1000, 0x1000)]
    );

    // A 2 MiB default-size leaf (NextLevel 0 at level 1) maps 2 MiB, offsets preserved.
    pt.map(&mut g, 0x4000_0000, 0x120_0000, 0x20_0000, Perm::RW);
    g.flush_pages(5, AddrRange::from_len(0x4000_0000, 0x20_0000))
        .unwrap();
    assert_eq!(calls(&h), vec![map(0x4000_0000, 0x120_0000, 0x20_0000)]);
    let t = g.dma(DEV, 0x4000_5123, Perm::READ).unwrap();
    assert_eq!(
        (t.iova, t.addr, t.size),
        (0x4000_0000, 0x120_0000, 0x20_0000)
    );
    assert_eq!(g.iommu.host_mappings(DEV).unwrap().len(), 2);
    assert_eq!(g.iommu.stats().host_out_of_resources, 0);

    // Another domain's invalidation does not touch this device.
    pt.unmap(&mut g, 0x1000, 0x1000);
    g.flush_pages(6, AddrRange::from_len(0x1000, 0x1000))
        .unwrap();
    assert!(calls(&h).is_empty());
    g.flush_pages(5, AddrRange::from_len(0x1000, 0x1000))
        .unwrap();
    assert_eq!(calls(&h), vec![unmap(0x1000, 0x1000)]);

    // Detach removes everything.
    g.iommu.detach_host(DEV).unwrap();
    assert!(mappings(&h).is_empty());
    assert_eq!(calls(&h), vec![unmap(0x4000_0000, 0x20_0000)]);
    assert!(g.iommu.detach_host(DEV).is_err());
}

#[test]
fn modes_follow_devtab_invalidation() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    let h = host();
    g.iommu.attach_host(DEV, Box::new(h.clone())).unwrap();
    assert!(g.iommu.attach_host(DEV, Box::new(host())).is_err());
    assert!(mappings(&h).is_empty());

    // A new entry is not used until it is invalidated (the IOMMU may cache entries).
    g.set_dte(DEV, Dte::untranslated(1, Perm::RW));
    g.completion_wait().unwrap();
    assert!(mappings(&h).is_empty());
    g.queue(Command::InvalidateDevtabEntry { device_id: DEV })
        .unwrap();
    assert!(is_identity(&mappings(&h), Perm::RW));

    // Mode 0 honours IR/IW: read-only identity.
    g.attach(DEV, Dte::untranslated(1, Perm::READ)).unwrap();
    assert!(is_identity(&mappings(&h), Perm::READ));

    // V=1, TV=0: no translation information, nothing mapped.
    g.attach(DEV, Dte([1, 1, 0, 0])).unwrap();
    assert!(mappings(&h).is_empty());
    assert!(matches!(
        g.iommu.attached_mode(DEV),
        Some(DeviceMode::NoTranslation { .. })
    ));

    // Mode 7 with IR/IW (a guest-reachable assert in QEMU): blocked, no panic.
    let pt = g.new_tables(3);
    pt.map(&mut g, 0x5000, 0x70_0000, 0x1000, Perm::RW);
    g.attach(DEV, Dte::translated(2, pt.root, 7, Perm::RW))
        .unwrap();
    assert!(mappings(&h).is_empty());
    assert_eq!(
        g.iommu.attached_mode(DEV),
        Some(DeviceMode::Illegal { reserved: false })
    );

    // Translated: the table.
    g.attach(DEV, Dte::translated(2, pt.root, 3, Perm::RW))
        .unwrap();
    assert_eq!(
        mappings(&h),
        vec![HostMapping {
            iova: 0x5000,
            gpa: 0x70_0000,
            size: 0x1000,
            perm: Perm::RW
        }]
    );
    // The DTE's IR/IW limit the tables' permissions.
    g.attach(DEV, Dte::translated(2, pt.root, 3, Perm::READ))
        .unwrap();
    assert_eq!(mappings(&h)[0].perm, Perm::READ);

    // Reserved DTE bits: blocked.
    let mut bad = Dte::translated(2, pt.root, 3, Perm::RW);
    bad.0[0] |= 1 << 4;
    g.attach(DEV, bad).unwrap();
    assert!(mappings(&h).is_empty());

    // INVALIDATE_IOMMU_ALL re-syncs everything: a PTE changed without a page invalidation.
    g.attach(DEV, Dte::translated(2, pt.root, 3, Perm::RW))
        .unwrap();
    pt.map(&mut g, 0x5000, 0x71_0000, 0x1000, Perm::RW);
    g.completion_wait().unwrap();
    assert_eq!(mappings(&h)[0].gpa, 0x70_0000);
    g.queue(Command::InvalidateIommuAll).unwrap();
    g.completion_wait().unwrap();
    assert_eq!(mappings(&h)[0].gpa, 0x71_0000);

    // Turning the IOMMU off makes DMA untranslated; back on, the entry applies again.
    g.feature(control::IOMMU_EN, false).unwrap();
    assert!(is_identity(&mappings(&h), Perm::RW));
    g.feature(control::IOMMU_EN, true).unwrap();
    assert_eq!(mappings(&h).len(), 1);

    // System reset: untranslated.
    g.iommu.reset().unwrap();
    assert!(is_identity(&mappings(&h), Perm::RW));
    assert_eq!(g.iommu.attached_devices(), vec![DEV]);
}

#[test]
fn aliases_share_an_entry() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    // Devices behind a PCIe-to-PCI bridge at 01:00.0 reach the IOMMU as 01:00.0.
    let (bridge, behind) = (0x0100u16, 0x0208u16);
    g.iommu.set_alias(behind, bridge).unwrap();
    assert_eq!(g.iommu.alias_of(behind), bridge);
    let h = host();
    g.iommu.attach_host(behind, Box::new(h.clone())).unwrap();
    let pt = g.new_tables(4);
    pt.map(&mut g, 0x8000, 0x60_0000, 0x1000, Perm::RW);
    // Linux clones the entry to the alias; here only the alias's entry is written, and the
    // device's own entry stays blocked.
    g.attach(bridge, Dte::translated(3, pt.root, 4, Perm::RW))
        .unwrap();
    assert_eq!(mappings(&h).len(), 1);
    let t = g.dma(behind, 0x8010, Perm::WRITE).unwrap();
    assert_eq!(t.addr, 0x60_0000);
    // Faults name the alias (the DeviceID the IOMMU saw).
    g.iommu.set_alias(behind + 1, bridge).unwrap();
    assert!(g.dma(behind + 1, 0x9000, Perm::READ).is_err());
    let evs = g.poll_events();
    assert_eq!(
        evs.last().map(|e| (e.code, e.device_id)),
        Some((EventCode::IoPageFault, bridge))
    );
    // Removing the alias: the device's own (blocked) entry governs it.
    g.iommu.set_alias(behind, behind).unwrap();
    assert!(mappings(&h).is_empty());
}

#[test]
fn large_page_unmap_and_whole_space_invalidation() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    let h = host();
    g.iommu.attach_host(DEV, Box::new(h.clone())).unwrap();
    let pt = g.new_tables(4);
    g.attach(DEV, Dte::translated(5, pt.root, 4, Perm::RW))
        .unwrap();
    calls(&h);
    // AMD-15/17: a 32 KiB NextLevel-7 page is one host mapping; unmapping it removes the
    // whole mapping even though the guest's PTEs no longer say how big it was.
    pt.map(&mut g, 0x10_0000, 0x98_0000, 0x8000, Perm::RW);
    g.flush_pages(5, AddrRange::from_len(0x10_0000, 0x8000))
        .unwrap();
    assert_eq!(calls(&h), vec![map(0x10_0000, 0x98_0000, 0x8000)]);
    pt.unmap(&mut g, 0x10_0000, 0x8000);
    g.queue(Command::InvalidateIommuPages {
        pasid: 0,
        domain_id: 5,
        size: true,
        pde: false,
        gn: false,
        address: 0x10_3000, // bits 13:12 set: 32 KiB
    })
    .unwrap();
    g.completion_wait().unwrap();
    assert_eq!(calls(&h), vec![unmap(0x10_0000, 0x8000)]);
    // AMD-18: the all-ones address with S invalidates the whole space of the domain.
    pt.map(&mut g, 0x7f_0000_0000, 0x99_0000, 0x1000, Perm::RW);
    pt.map(&mut g, 0x2000, 0x9a_0000, 0x1000, Perm::RW);
    g.queue(Command::InvalidateIommuPages {
        pasid: 0,
        domain_id: 5,
        size: true,
        pde: true,
        gn: false,
        address: viommu_amd_vi::command::ALL_PAGES_ADDRESS,
    })
    .unwrap();
    g.completion_wait().unwrap();
    assert_eq!(
        calls(&h),
        vec![
            map(0x2000, 0x9a_0000, 0x1000),
            map(0x7f_0000_0000, 0x99_0000, 0x1000)
        ]
    );
    // GN = 1 names guest (PASID) tables: host mappings are untouched.
    pt.unmap(&mut g, 0x2000, 0x1000);
    g.queue(Command::InvalidateIommuPages {
        pasid: 1,
        domain_id: 5,
        size: true,
        pde: true,
        gn: true,
        address: viommu_amd_vi::command::ALL_PAGES_ADDRESS,
    })
    .unwrap();
    g.completion_wait().unwrap();
    assert!(calls(&h).is_empty());
}
