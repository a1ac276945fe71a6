//! Walker tests: one per fault kind, hostile tables (self-reference, RAM holes, level loops),
//! byte order, subtree skipping and run merging.

use viommu_shared::pt::{
    ByteOrder, Decoded, PageTableFormat, RunMerger, TableBuilder, WalkFault, WalkLimits, Walker,
};
use viommu_shared::testing::{RadixFormat, guest_memory};
use viommu_shared::{AddrRange, Perm};

const T0: u64 = 0x10_0000;
const T1: u64 = 0x40_0000;

fn setup() -> (RadixFormat, vm_memory::GuestMemoryMmap) {
    // RAM [0, 4 MiB) and [8 MiB, 12 MiB): a hole in between.
    let mem = guest_memory(&[(0, 0x40_0000), (0x80_0000, 0x40_0000)]);
    (RadixFormat::x86_like(4, ByteOrder::Little), mem)
}

#[test]
fn lookup_pages_of_each_size_and_permissions_anded() {
    let (fmt, mem) = setup();
    let mut b = TableBuilder::new(&fmt, &mem, T0, T1).unwrap();
    b.map_page(0, 0x1000, 0x5000, Perm::RW).unwrap();
    b.map_page(1, 0x40_0000, 0x20_0000, Perm::READ).unwrap();
    let w = Walker::new(&fmt, &mem, b.root());
    let l = w.lookup(0x1abc).unwrap();
    assert_eq!(
        (l.iova, l.addr, l.size, l.perm, l.level),
        (0x1000, 0x5000, 0x1000, Perm::RW, 0)
    );
    assert_eq!(l.translate(0x1abc), 0x5abc);
    let l = w.lookup(0x5f_ffff).unwrap();
    assert_eq!(
        (l.iova, l.addr, l.size, l.level),
        (0x40_0000, 0x20_0000, 0x20_0000, 1)
    );
    assert_eq!(w.translate(0x40_0010, Perm::READ).unwrap().0, 0x20_0010);

    // A table entry granting only READ makes everything below read-only.
    let pde = b.entry_for(1, 0x1000).unwrap();
    let raw = {
        use std::sync::atomic::Ordering;
        use vm_memory::Bytes;
        u64::from_le(
            mem.load::<u64>(vm_memory::GuestAddress(pde), Ordering::Acquire)
                .unwrap(),
        )
    };
    b.store(pde, raw & !2).unwrap();
    let w = Walker::new(&fmt, &mem, b.root());
    assert_eq!(w.lookup(0x1000).unwrap().perm, Perm::READ);
}

#[test]
fn fault_not_present_at_each_level() {
    let (fmt, mem) = setup();
    let mut b = TableBuilder::new(&fmt, &mem, T0, T1).unwrap();
    b.map_page(0, 0x1000, 0x5000, Perm::RW).unwrap();
    let w = Walker::new(&fmt, &mem, b.root());
    assert_eq!(
        w.lookup(0x2000),
        Err(WalkFault::NotPresent {
            level: 0,
            iova: 0x2000
        })
    );
    assert_eq!(
        w.lookup(0x20_0000),
        Err(WalkFault::NotPresent {
            level: 1,
            iova: 0x20_0000
        })
    );
    assert_eq!(
        w.lookup(1 << 30),
        Err(WalkFault::NotPresent {
            level: 2,
            iova: 1 << 30
        })
    );
    assert_eq!(
        w.lookup(1 << 39),
        Err(WalkFault::NotPresent {
            level: 3,
            iova: 1 << 39
        })
    );
}

#[test]
fn fault_reserved_bits() {
    let (fmt, mem) = setup();
    let mut b = TableBuilder::new(&fmt, &mem, T0, T1).unwrap();
    b.map_page(0, 0x1000, 0x5000, Perm::RW).unwrap();
    let pte = b.entry_for(0, 0x1000).unwrap();
    b.store(pte, 0x5003 | (1 << 52)).unwrap();
    let w = Walker::new(&fmt, &mem, b.root());
    assert_eq!(
        w.lookup(0x1000),
        Err(WalkFault::Reserved {
            level: 0,
            entry: 0x5003 | (1 << 52),
            iova: 0x1000
        })
    );
    // Enumeration reports it and treats it as unmapped.
    let mut faults = Vec::new();
    let st = w
        .for_each_leaf(
            AddrRange::new(0, 0x10_0000),
            &mut |_| panic!("no leaf"),
            &mut |f| faults.push(f),
        )
        .unwrap();
    assert_eq!(st.faults, 1);
    assert!(matches!(faults[0], WalkFault::Reserved { level: 0, .. }));
}

#[test]
fn fault_iova_beyond_width() {
    let (fmt, mem) = setup();
    let b = TableBuilder::new(&fmt, &mem, T0, T1).unwrap();
    let w = Walker::new(&fmt, &mem, b.root());
    assert_eq!(
        w.lookup(1 << 48),
        Err(WalkFault::IovaTooWide {
            iova: 1 << 48,
            bits: 48
        })
    );
    assert_eq!(
        w.lookup(u64::MAX),
        Err(WalkFault::IovaTooWide {
            iova: u64::MAX,
            bits: 48
        })
    );
}

#[test]
fn fault_permission() {
    let (fmt, mem) = setup();
    let mut b = TableBuilder::new(&fmt, &mem, T0, T1).unwrap();
    b.map_page(0, 0x1000, 0x5000, Perm::READ).unwrap();
    let w = Walker::new(&fmt, &mem, b.root());
    assert_eq!(
        w.translate(0x1000, Perm::WRITE),
        Err(WalkFault::Permission {
            iova: 0x1000,
            needed: Perm::WRITE,
            granted: Perm::READ
        })
    );
}

#[test]
fn fault_table_in_ram_hole_and_root_outside_ram() {
    let (fmt, mem) = setup();
    let mut b = TableBuilder::new(&fmt, &mem, T0, T1).unwrap();
    b.map_page(0, 0x1000, 0x5000, Perm::RW).unwrap();
    // Point the level-2 entry at the RAM hole (4 MiB .. 8 MiB).
    let e = b.entry_for(2, 0).unwrap();
    b.store(e, 0x60_0000 | 3).unwrap();
    let w = Walker::new(&fmt, &mem, b.root());
    assert_eq!(
        w.lookup(0x1000),
        Err(WalkFault::TableOutsideRam {
            level: 1,
            addr: 0x60_0000
        })
    );
    let mut faults = Vec::new();
    w.for_each_leaf(
        AddrRange::new(0, 1 << 39),
        &mut |_| panic!("no leaf"),
        &mut |f| faults.push(f),
    )
    .unwrap();
    assert_eq!(
        faults,
        vec![WalkFault::TableOutsideRam {
            level: 1,
            addr: 0x60_0000
        }]
    );

    let w = Walker::new(&fmt, &mem, 0xffff_f000_0000);
    assert!(matches!(
        w.lookup(0),
        Err(WalkFault::TableOutsideRam { level: 3, .. })
    ));
    // Misaligned root.
    let w = Walker::new(&fmt, &mem, T0 + 4);
    assert!(matches!(
        w.lookup(0),
        Err(WalkFault::TableOutsideRam { .. })
    ));
}

#[test]
fn self_referencing_table_terminates() {
    let (fmt, mem) = setup();
    let b = TableBuilder::new(&fmt, &mem, T0, T1).unwrap();
    let root = b.root();
    // Every root entry points back at the root: every level reads the same page.
    for i in 0..512 {
        b.store(root + i * 8, root | 3).unwrap();
    }
    let w = Walker::new(&fmt, &mem, root);
    // At level 0 the self-pointer decodes as a page: bounded depth, a (nonsense) leaf.
    let l = w.lookup(0x1234_5000).unwrap();
    assert_eq!(l.addr, root);
    // Enumerating the whole space would be 512^4 leaves: the work limit stops it.
    let limits = WalkLimits {
        max_entries: 100_000,
    };
    let mut leaves = 0u64;
    let r = w.with_limits(limits).for_each_leaf(
        AddrRange::new(0, u64::MAX),
        &mut |_| leaves += 1,
        &mut |_| {},
    );
    assert_eq!(
        r,
        Err(WalkFault::WorkLimit {
            entries_read: 100_000
        })
    );
    assert!(leaves < 100_000);
}

/// A format whose table pointers claim not to go down a level (as a hostile AMD-Vi
/// next-level field can).
struct LoopFormat;

impl PageTableFormat for LoopFormat {
    fn byte_order(&self) -> ByteOrder {
        ByteOrder::Little
    }
    fn top_level(&self) -> u8 {
        3
    }
    fn index_bits(&self, _level: u8) -> u32 {
        9
    }
    fn iova_bits(&self) -> u32 {
        48
    }
    fn decode(&self, level: u8, raw: u64) -> Decoded {
        if raw == 0 {
            return Decoded::Empty;
        }
        Decoded::Table {
            addr: raw & !0xfff,
            level: level + (raw & 1) as u8,
            perm: Perm::RW,
        }
    }
}

#[test]
fn table_pointer_that_does_not_descend_is_reserved() {
    let (fmt, mem) = setup();
    let b = TableBuilder::new(&fmt, &mem, T0, T1).unwrap();
    let root = b.root();
    b.store(root, root | 1).unwrap(); // claims level 4 from level 3
    b.store(root + 8, root).unwrap(); // claims level 3 from level 3
    let w = Walker::new(&LoopFormat, &mem, root);
    assert!(matches!(
        w.lookup(0),
        Err(WalkFault::Reserved { level: 3, .. })
    ));
    assert!(matches!(
        w.lookup(1 << 39),
        Err(WalkFault::Reserved { level: 3, .. })
    ));
    let mut faults = 0;
    w.for_each_leaf(AddrRange::new(0, 1 << 48), &mut |_| {}, &mut |_| {
        faults += 1
    })
    .unwrap();
    assert_eq!(faults, 2);
}

#[test]
fn big_endian_format_reads_big_endian_entries() {
    let mem = guest_memory(&[(0, 0x80_0000)]);
    let be = RadixFormat::s390_like();
    let mut b = TableBuilder::new(&be, &mem, T0, 0x80_0000).unwrap();
    b.map_page(0, 0x12_3000, 0x7000, Perm::READ).unwrap();
    let w = Walker::new(&be, &mem, b.root());
    let l = w.lookup(0x12_3456).unwrap();
    assert_eq!((l.addr, l.size, l.perm), (0x7000, 0x1000, Perm::READ));
    // The s390 geometry: 256-entry page tables, 2048-entry segment tables.
    assert_eq!(be.level_shift(1), 20);
    assert_eq!(be.level_shift(2), 31);
    // The same bytes read as little-endian are not the same table.
    let le = RadixFormat::x86_like(3, ByteOrder::Little);
    assert_ne!(
        Walker::new(&le, &mem, b.root()).lookup(0x12_3456).ok(),
        Some(l)
    );
}

#[test]
fn enumeration_skips_empty_subtrees_and_merges_runs() {
    let (fmt, mem) = setup();
    let mut b = TableBuilder::new(&fmt, &mem, T0, T1).unwrap();
    b.map_range(0x10_0000, 0x90_0000, 0x4000, Perm::RW).unwrap();
    b.map_page(0, 0x10_4000, 0x90_4000, Perm::READ).unwrap(); // perm change
    b.map_page(0, 0x10_5000, 0x99_0000, Perm::READ).unwrap(); // address gap
    b.map_page(0, 0x7f00_0000_0000, 0x5000, Perm::RW).unwrap();
    let w = Walker::new(&fmt, &mem, b.root());
    let window = AddrRange::new(0, 1 << 48);
    let mut m = RunMerger::new(window);
    let st = w
        .for_each_leaf(window, &mut |l| m.push(l), &mut |_| {})
        .unwrap();
    // Root + two paths of three tables each; never the 512^4 slots.
    assert_eq!(st.entries_read, 512 + 2 * 3 * 512);
    assert_eq!(st.leaves, 7);
    let runs = m.finish();
    let shape: Vec<(u64, u64, u64)> = runs.iter().map(|r| (r.iova, r.addr, r.size)).collect();
    assert_eq!(
        shape,
        vec![
            (0x10_0000, 0x90_0000, 0x4000),
            (0x10_4000, 0x90_4000, 0x1000),
            (0x10_5000, 0x99_0000, 0x1000),
            (0x7f00_0000_0000, 0x5000, 0x1000)
        ]
    );
    // Clipping to a window cuts runs at its edges.
    let mut m = RunMerger::new(AddrRange::new(0x10_1000, 0x10_3000));
    w.for_each_leaf(
        AddrRange::new(0x10_1000, 0x10_3000),
        &mut |l| m.push(l),
        &mut |_| {},
    )
    .unwrap();
    let runs = m.finish();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].iova, runs[0].addr, runs[0].size),
        (0x10_1000, 0x90_1000, 0x2000)
    );
}
