//! A walkthrough of the shared core alone (the main demonstration is `viommu-demo`): a guest builds I/O page tables in its memory, invalidates, and the
//! shadow engine mirrors them into a simulated host container — coalesced, minimal, and
//! recovering from a full host by reclaim + retry.
//!
//! Run: `cargo run --release -p viommu-shared --example demo`

use viommu_shared::host::{HostCall, HostDma, SharedSimHost, SimHostConfig};
use viommu_shared::pt::{ByteOrder, TableBuilder, Walker};
use viommu_shared::shadow::{ShadowConfig, ShadowEngine, ShadowError, SyncReport};
use viommu_shared::testing::{RadixFormat, guest_memory};
use viommu_shared::{AddrRange, Perm};

const TABLES: u64 = 0x100_0000;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn show_host(host: &SharedSimHost) {
    host.with(|h| {
        println!(
            "  host now holds {} mapping(s), {} entries left:",
            h.mapping_count(),
            h.remaining_entries()
                .map_or("unlimited".into(), |n| n.to_string())
        );
        for m in h.mappings() {
            println!(
                "    iova {:#012x}..{:#012x} -> gpa {:#012x}  {:>8} KiB  {:?}",
                m.iova,
                m.iova + m.size,
                m.gpa,
                m.size / KIB,
                m.perm
            );
        }
    });
}

fn show_calls(host: &SharedSimHost) {
    for c in host.with(|h| h.take_calls()) {
        match c {
            HostCall::Map {
                iova,
                gpa,
                size,
                perm,
                result,
            } => println!(
                "    MAP   iova {iova:#x} gpa {gpa:#x} size {:>6} KiB {perm:?} -> {result:?}",
                size / KIB
            ),
            HostCall::Unmap { iova, size, result } => {
                println!(
                    "    UNMAP iova {iova:#x} size {:>6} KiB -> {result:?}",
                    size / KIB
                )
            }
            HostCall::UnmapAll { result } => println!("    UNMAP_ALL -> {result:?}"),
        }
    }
}

fn report(r: &SyncReport, per_page: u64) {
    println!(
        "  sync: {} unmap + {} map host calls (a per-page shadow would have made {per_page})",
        r.unmap_calls, r.map_calls
    );
}

fn main() {
    // Guest RAM for the page tables; the DMA buffers' addresses need no backing here.
    let mem = guest_memory(&[(TABLES, (16 * MIB) as usize)]);
    let fmt = RadixFormat::x86_like(4, ByteOrder::Little);
    let mut guest = TableBuilder::new(&fmt, &mem, TABLES, TABLES + 16 * MIB).expect("tables");
    let root = guest.root();

    let host = SharedSimHost::new(SimHostConfig::vtd().with_entry_limit(8));
    let mut engine = ShadowEngine::new(host.clone(), ShadowConfig::default());
    println!(
        "viommu shadow demo: 4-level x86-style tables, type1 v2 host with dma_entry_limit=8\n"
    );

    println!("1. The guest maps a 1 MiB buffer (256 x 4 KiB pages, contiguous), a scattered");
    println!("   3-page buffer and a read-only 64 KiB buffer, then invalidates each range.");
    guest
        .map_range(0x10_0000, 0x4000_0000, MIB, Perm::RW)
        .unwrap();
    for (i, gpa) in [0x5000_0000u64, 0x5123_4000, 0x5200_0000]
        .iter()
        .enumerate()
    {
        guest
            .map_page(0, 0x20_0000 + i as u64 * 4096, *gpa, Perm::RW)
            .unwrap();
    }
    guest
        .map_range(0x30_0000, 0x6000_0000, 64 * KIB, Perm::READ)
        .unwrap();
    let view = Walker::new(&fmt, &mem, root);
    let mut total = SyncReport::default();
    for (r, pages) in [
        (AddrRange::from_len(0x10_0000, MIB), 256),
        (AddrRange::from_len(0x20_0000, 3 * 4096), 3),
        (AddrRange::from_len(0x30_0000, 64 * KIB), 16),
    ] {
        let rep = engine.sync(&view, r).expect("sync");
        report(&rep, pages);
        total.absorb(rep);
    }
    show_calls(&host);
    show_host(&host);

    println!(
        "\n2. The guest unmaps one page in the middle of the 1 MiB buffer and invalidates it."
    );
    println!("   The host refuses partial unmaps, so the coalesced mapping goes whole and the");
    println!("   two surviving pieces come back:");
    guest.unmap_page(0x14_0000).unwrap();
    let rep = engine
        .sync(&view, AddrRange::from_len(0x14_0000, 4096))
        .expect("sync");
    report(&rep, 1);
    show_calls(&host);
    show_host(&host);

    println!("\n3. The guest changes mappings without invalidating (lazily, as s390 Linux does),");
    println!("   then maps 4 new scattered pages: the host is full (ENOSPC). A reclaim (global");
    println!("   flush) drops what the guest no longer maps, and the retry succeeds.");
    guest.unmap_page(0x20_0000).unwrap();
    guest.unmap_page(0x20_1000).unwrap();
    guest.unmap_page(0x20_2000).unwrap();
    for i in 0..4u64 {
        guest
            .map_page(
                0,
                0x80_0000 + i * 0x2000,
                0x7000_0000 + i * 0x10000,
                Perm::RW,
            )
            .unwrap();
    }
    let new_range = AddrRange::from_len(0x80_0000, 8 * 4096);
    match engine.sync(&view, new_range) {
        Err(ShadowError::OutOfResources { not_mapped, .. }) => println!(
            "  plain sync: out of resources, {} run(s) not mapped (reported, not dropped)",
            not_mapped.len()
        ),
        other => println!("  plain sync: {other:?}"),
    }
    let rep = engine
        .sync_or_reclaim(&view, new_range)
        .expect("retry after reclaim");
    println!(
        "  sync_or_reclaim: reclaimed={} and {} unmap + {} map calls",
        rep.reclaimed, rep.unmap_calls, rep.map_calls
    );
    show_calls(&host);
    show_host(&host);

    println!("\n4. Is guest memory pinned for DMA? (what a balloon or virtio-mem driver asks)");
    for gpa in [0x4000_8000u64, 0x5000_0000] {
        println!(
            "  gpa {gpa:#x}: {}",
            if engine.is_gpa_mapped(AddrRange::from_len(gpa, 4096)) {
                "mapped for DMA"
            } else {
                "not mapped"
            }
        );
    }

    println!("\n5. Teardown removes every host mapping the engine created:");
    let bytes = engine.teardown().expect("teardown");
    println!("  unmapped {} KiB", bytes / KIB);
    show_host(&host);
}
