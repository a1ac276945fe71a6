//! v1 table walks through emulated DMA: level skipping, default-size large leaves with their
//! offsets, NextLevel-7 pages, permissions across levels, address width, malformed tables.

mod common;

use common::*;
use viommu_amd_vi::pagetable::{PTE_PR, PTE_RESERVED};
use viommu_amd_vi::{Config, Dte, Event, EventCode, EventFlags};
use viommu_shared::Perm;
use viommu_shared::dma::DmaFaultKind;
use viommu_shared::pt::EncodeFormat;

const DEV: u16 = 0x0300; // 03:00.0

fn setup() -> Guest {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    g
}

fn fault(domain: u16, iova: u64, flags: EventFlags) -> Event {
    Event {
        code: EventCode::IoPageFault,
        device_id: DEV,
        domain_id: domain,
        flags,
        address: iova,
    }
}

#[test]
fn level_skipping() {
    let mut g = setup();
    let pt = g.new_tables(4);
    let (l1, l0) = (g.alloc_table(), g.alloc_table());
    // Root (level 3) -> level 1 directly (NextLevel 2): IOVA bits 38:30 must be zero.
    let iova = 0x20_3000;
    g.store(
        pt.entry_addr(pt.root, 3, iova),
        pt.fmt.encode_table_to(3, l1, 1, Perm::RW).unwrap(),
    );
    g.store(
        pt.entry_addr(l1, 1, iova),
        pt.fmt.encode_table_to(1, l0, 0, Perm::RW).unwrap(),
    );
    g.store(
        pt.entry_addr(l0, 0, iova),
        pt.fmt.encode_leaf(0, 0x55_5000, Perm::RW).unwrap(),
    );
    g.attach(DEV, Dte::translated(4, pt.root, 4, Perm::RW))
        .unwrap();
    let t = g.dma(DEV, iova + 0xabc, Perm::WRITE).unwrap();
    assert_eq!(
        (t.iova, t.addr, t.size, t.domain),
        (iova, 0x55_5000, 0x1000, 4)
    );
    // Same table indices, but a skipped bit set: no translation.
    let bad = iova | (1 << 30);
    assert_eq!(
        g.dma(DEV, bad, Perm::READ).unwrap_err().kind,
        DmaFaultKind::NotPresent
    );
    assert_eq!(g.poll_events(), vec![fault(4, bad, EventFlags::empty())]);

    // Root of a 3-level table straight to level 0 (NextLevel 1).
    let pt3 = g.new_tables(3);
    let l0b = g.alloc_table();
    g.store(
        pt3.root,
        pt3.fmt.encode_table_to(2, l0b, 0, Perm::RW).unwrap(),
    );
    g.store(
        l0b + 5 * 8,
        pt3.fmt.encode_leaf(0, 0x66_6000, Perm::READ).unwrap(),
    );
    g.attach(DEV, Dte::translated(9, pt3.root, 3, Perm::RW))
        .unwrap();
    assert_eq!(g.dma(DEV, 0x5008, Perm::READ).unwrap().addr, 0x66_6000);
    assert!(g.dma(DEV, 0x20_5000, Perm::READ).is_err());
    // A pointer that does not go down (level 2 entry naming level 2): malformed, RZ.
    g.store(pt3.root, l0b | PTE_PR | (3 << 9) | (3 << 61));
    g.poll_events();
    assert_eq!(
        g.dma(DEV, 0x5000, Perm::READ).unwrap_err().kind,
        DmaFaultKind::Malformed
    );
    assert_eq!(
        g.poll_events(),
        vec![fault(9, 0x5000, EventFlags::PR | EventFlags::RZ)]
    );
}

#[test]
fn default_size_leaves_keep_the_offset() {
    let mut g = setup();
    let pt = g.new_tables(3);
    // Linux: a 2 MiB mapping is one level-1 PTE with NextLevel 0; 1 GiB one level-2 PTE.
    pt.map(&mut g, 0x4060_0000, 0x120_0000, 1 << 21, Perm::RW);
    pt.map(&mut g, 0x8000_0000, 0x4000_0000, 1 << 30, Perm::READ);
    g.attach(DEV, Dte::translated(1, pt.root, 3, Perm::RW))
        .unwrap();
    // QEMU returns 4K at the page base for both (anchors-x86 §2.4, AMD-14).
    let t = g.dma(DEV, 0x4060_5123, Perm::WRITE).unwrap();
    assert_eq!((t.iova, t.addr, t.size), (0x4060_0000, 0x120_0000, 1 << 21));
    let t = g.dma(DEV, 0xa345_6789, Perm::READ).unwrap();
    assert_eq!(
        (t.iova, t.addr, t.size),
        (0x8000_0000, 0x4000_0000, 1 << 30)
    );
    assert_eq!(t.addr + (0xa345_6789 - t.iova), 0x6345_6789);
    assert!(g.dma(DEV, 0xa345_6789, Perm::WRITE).is_err());
    assert_eq!(
        g.poll_events(),
        vec![fault(
            1,
            0xa345_6789,
            EventFlags::PR | EventFlags::PE | EventFlags::RW
        )]
    );
}

#[test]
fn next_level_7_pages() {
    let mut g = setup();
    let pt = g.new_tables(3);
    // 32 KiB: eight level-0 PTEs with address bits 13:12 set (AMD-15).
    pt.map(&mut g, 0x10_8000, 0x78_0000, 0x8000, Perm::RW);
    // 4 MiB: two level-1 PTEs with NextLevel 7.
    pt.map(&mut g, 0x80_0000, 0x180_0000, 4 << 20, Perm::RW);
    g.attach(DEV, Dte::translated(2, pt.root, 3, Perm::RW))
        .unwrap();
    for off in [0u64, 0x1234, 0x7fff] {
        let t = g.dma(DEV, 0x10_8000 + off, Perm::READ).unwrap();
        assert_eq!(
            (t.iova, t.addr, t.size),
            (0x10_8000, 0x78_0000, 0x8000),
            "{off:#x}"
        );
    }
    let t = g.dma(DEV, 0xa0_0010, Perm::WRITE).unwrap();
    assert_eq!((t.iova, t.addr, t.size), (0x80_0000, 0x180_0000, 4 << 20));
    assert!(g.dma(DEV, 0x11_0000, Perm::READ).is_err());
}

#[test]
fn permissions_are_anded_across_levels_and_the_dte() {
    let mut g = setup();
    let pt = g.new_tables(3);
    pt.map(&mut g, 0x1000, 0x50_0000, 0x1000, Perm::RW);
    // The level-1 pointer above the leaf grants only reads.
    let l1 = pt.table_for(&mut g, 1, 0x1000);
    let pde = g.load(l1);
    g.store(l1, pde & !(1 << 62));
    g.attach(DEV, Dte::translated(3, pt.root, 3, Perm::RW))
        .unwrap();
    let t = g.dma(DEV, 0x1000, Perm::READ).unwrap();
    assert_eq!(t.perm, Perm::READ);
    // QEMU lets this write through (it returns the leaf's own IR/IW).
    assert_eq!(
        g.dma(DEV, 0x1000, Perm::WRITE).unwrap_err().kind,
        DmaFaultKind::Permission
    );
    g.store(l1, pde);
    // Write-only DTE: reads fault.
    g.attach(DEV, Dte::translated(3, pt.root, 3, Perm::WRITE))
        .unwrap();
    assert_eq!(g.dma(DEV, 0x1000, Perm::WRITE).unwrap().perm, Perm::WRITE);
    assert!(g.dma(DEV, 0x1000, Perm::READ).is_err());
    let evs = g.poll_events();
    assert_eq!(
        evs,
        vec![
            fault(3, 0x1000, EventFlags::PR | EventFlags::PE | EventFlags::RW),
            fault(3, 0x1000, EventFlags::PR | EventFlags::PE),
        ]
    );
}

#[test]
fn address_width_and_six_levels() {
    let mut g = setup();
    let pt = g.new_tables(3);
    pt.map(&mut g, 0x1000, 0x50_0000, 0x1000, Perm::RW);
    g.attach(DEV, Dte::translated(3, pt.root, 3, Perm::RW))
        .unwrap();
    // 3 levels translate 39 bits.
    assert_eq!(
        g.dma(DEV, 1 << 39, Perm::READ).unwrap_err().kind,
        DmaFaultKind::NotPresent
    );
    assert_eq!(
        g.poll_events(),
        vec![fault(3, 1 << 39, EventFlags::empty())]
    );
    // Six levels reach the top of the 64-bit space (the top table uses 7 index bits).
    let pt6 = g.new_tables(6);
    let top = 0xffff_ffff_ffff_f000;
    pt6.map(&mut g, top, 0x51_0000, 0x1000, Perm::RW);
    pt6.map(&mut g, 0x1000, 0x52_0000, 0x1000, Perm::RW);
    g.attach(DEV, Dte::translated(6, pt6.root, 6, Perm::RW))
        .unwrap();
    assert_eq!(g.dma(DEV, u64::MAX, Perm::READ).unwrap().addr, 0x51_0000);
    assert_eq!(g.dma(DEV, 0x1fff, Perm::READ).unwrap().addr, 0x52_0000);
    assert!(g.dma(DEV, 0x8000_0000_0000_0000, Perm::READ).is_err());
}

#[test]
fn malformed_tables_raise_their_events() {
    let mut g = setup();
    let pt = g.new_tables(3);
    pt.map(&mut g, 0x1000, 0x50_0000, 0x1000, Perm::RW);
    pt.map(&mut g, 0x2000, 0x50_1000, 0x1000, Perm::RW);
    let l0 = pt.table_for(&mut g, 0, 0x1000);
    // Reserved bits in a PTE.
    let pte = g.load(l0 + 16);
    g.store(l0 + 16, pte | (PTE_RESERVED & (1 << 55)));
    // A level-1 table outside guest RAM.
    pt.map(&mut g, 0x4000_0000, 0x50_2000, 0x1000, Perm::RW);
    let l2e = pt.entry_addr(pt.root, 2, 0x4000_0000);
    let far = 0x8000_0000u64;
    g.store(l2e, pt.fmt.encode_table_to(2, far, 1, Perm::RW).unwrap());
    g.attach(DEV, Dte::translated(3, pt.root, 3, Perm::RW))
        .unwrap();
    assert!(g.dma(DEV, 0x1000, Perm::READ).is_ok());
    assert_eq!(
        g.dma(DEV, 0x2000, Perm::WRITE).unwrap_err().kind,
        DmaFaultKind::Malformed
    );
    assert_eq!(
        g.dma(DEV, 0x4000_0000, Perm::READ).unwrap_err().kind,
        DmaFaultKind::Malformed
    );
    let evs = g.poll_events();
    assert_eq!(
        evs,
        vec![
            fault(3, 0x2000, EventFlags::PR | EventFlags::RZ | EventFlags::RW),
            Event {
                code: EventCode::PageTabHardwareError,
                device_id: DEV,
                domain_id: 3,
                flags: EventFlags::MASTER_ABORT,
                address: far,
            },
        ]
    );
}

#[test]
fn mode_beyond_hats_is_illegal() {
    let mut g = Guest::new(Config {
        host_levels: 4,
        ..Config::default()
    });
    g.linux_init();
    assert_eq!(g.iommu.efr() >> 10 & 3, 0);
    let pt = g.new_tables(5);
    pt.map(&mut g, 0x1000, 0x50_0000, 0x1000, Perm::RW);
    g.attach(DEV, Dte::translated(3, pt.root, 5, Perm::RW))
        .unwrap();
    assert_eq!(
        g.dma(DEV, 0x1000, Perm::WRITE).unwrap_err().kind,
        DmaFaultKind::Malformed
    );
    assert_eq!(
        g.poll_events(),
        vec![Event {
            code: EventCode::IllegalDevTableEntry,
            device_id: DEV,
            domain_id: 0,
            flags: EventFlags::RW,
            address: 0x1000,
        }]
    );
}

#[test]
fn inconsistently_replicated_next_level_7_page_is_malformed_and_never_overlaps() {
    use viommu_amd_vi::pagetable::AmdV1Format;
    use viommu_shared::AddrRange;
    use viommu_shared::pt::{Leaf, Walker};

    let mut g = setup();
    let pt = g.new_tables(3);
    // A 32 KiB page over eight level-0 slots, then its first slot overwritten by a 4 KiB
    // leaf elsewhere (only a hostile guest writes this: spec 2.2.3 wants the same PTE in
    // every slot the page covers).
    pt.map(&mut g, 0x10_8000, 0x78_0000, 0x8000, Perm::RW);
    pt.map(&mut g, 0x10_8000, 0x90_0000, 0x1000, Perm::RW);
    g.attach(DEV, Dte::translated(2, pt.root, 3, Perm::RW))
        .unwrap();
    let t = g.dma(DEV, 0x10_8010, Perm::READ).unwrap();
    assert_eq!((t.iova, t.addr, t.size), (0x10_8000, 0x90_0000, 0x1000));
    // The other slots name a page whose first slot disagrees: malformed, not translated.
    for iova in [0x10_9000u64, 0x10_f000] {
        assert_eq!(
            g.dma(DEV, iova, Perm::READ).unwrap_err().kind,
            DmaFaultKind::Malformed,
            "{iova:#x}"
        );
    }
    // The enumeration (what the shadow engine maps) agrees: the 4 KiB leaf only, the seven
    // other slots reported as malformed, nothing overlapping.
    let fmt = AmdV1Format::new(3).unwrap();
    let w = Walker::new(&fmt, &g.mem, pt.root);
    let mut leaves: Vec<Leaf> = Vec::new();
    let mut faults = 0;
    w.for_each_leaf(
        AddrRange::new(0x10_0000, 0x11_0000),
        &mut |l| leaves.push(l),
        &mut |_| faults += 1,
    )
    .unwrap();
    assert_eq!(
        leaves
            .iter()
            .map(|l| (l.iova, l.addr, l.size))
            .collect::<Vec<_>>(),
        [(0x10_8000, 0x90_0000, 0x1000)]
    );
    assert_eq!(faults, 7);
    // Seen from the middle of the page (its first slot outside the range) as well.
    let mut mid = Vec::new();
    w.for_each_leaf(
        AddrRange::new(0x10_a000, 0x10_b000),
        &mut |l| mid.push(l),
        &mut |_| {},
    )
    .unwrap();
    assert!(mid.is_empty(), "{mid:?}");
    // Restoring the first slot makes the page whole again, from any slot.
    pt.map(&mut g, 0x10_8000, 0x78_0000, 0x8000, Perm::RW);
    let t = Walker::new(&fmt, &g.mem, pt.root)
        .lookup(0x10_b000)
        .unwrap();
    assert_eq!((t.iova, t.addr, t.size), (0x10_8000, 0x78_0000, 0x8000));
}
