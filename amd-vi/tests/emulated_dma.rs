//! Emulated devices DMA through `vm_memory::iommu::IommuMemory` backed by the model: cached
//! translations, invalidation as a barrier, device and domain flushes.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;
use viommu_amd_vi::regs::{control, offset};
use viommu_amd_vi::{Command, Config, Dte, EventCode};
use viommu_shared::dma::DeviceIommu;
use viommu_shared::{AddrRange, Perm};
use vm_memory::iommu::{Iommu, IommuMemory};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, Permissions};

const DEV: u16 = 0x0308;

fn device(g: &Guest) -> IommuMemory<GuestMemoryMmap, DeviceIommu> {
    IommuMemory::new(g.mem.clone(), g.iommu.device_iommu(DEV), true, ())
}

#[test]
fn dma_through_the_iommu() {
    let mut g = Guest::new(Config::default());
    // Before the IOMMU is enabled DMA is untranslated.
    let dev = device(&g);
    dev.write_slice(b"boot", GuestAddress(0x70_0000)).unwrap();
    let mut buf = [0u8; 4];
    g.mem.read_slice(&mut buf, GuestAddress(0x70_0000)).unwrap();
    assert_eq!(&buf, b"boot");

    g.linux_init();
    // linux_init flushed everything: the device is now blocked.
    assert!(dev.read_slice(&mut buf, GuestAddress(0x70_0000)).is_err());
    let pt = g.new_tables(3);
    pt.map(&mut g, 0x1000, 0x80_0000, 0x1000, Perm::RW);
    pt.map(&mut g, 0x2000, 0x90_0000, 0x1000, Perm::READ);
    g.attach(DEV, Dte::translated(4, pt.root, 3, Perm::RW))
        .unwrap();
    g.poll_events();

    // A write spanning two pages lands in two places; the read-only page refuses writes.
    assert!(dev.write_slice(b"hello", GuestAddress(0x1ffe)).is_err());
    dev.write_slice(b"hi", GuestAddress(0x1ffe)).unwrap();
    g.mem
        .read_slice(&mut buf[..2], GuestAddress(0x80_0ffe))
        .unwrap();
    assert_eq!(&buf[..2], b"hi");
    let evs = g.poll_events();
    assert_eq!(evs.len(), 1);
    assert_eq!(
        (evs[0].code, evs[0].address, evs[0].device_id),
        (EventCode::IoPageFault, 0x2000, DEV)
    );
    g.mem.write_slice(b"data", GuestAddress(0x90_0000)).unwrap();
    dev.read_slice(&mut buf, GuestAddress(0x2000)).unwrap();
    assert_eq!(&buf, b"data");

    // Unmapped without invalidation: the cached translation may still be used.
    pt.unmap(&mut g, 0x1000, 0x1000);
    dev.read_slice(&mut buf, GuestAddress(0x1000)).unwrap();
    // After the guest's INVALIDATE_IOMMU_PAGES + COMPLETION_WAIT, it is gone.
    g.flush_pages(4, AddrRange::from_len(0x1000, 0x1000))
        .unwrap();
    assert!(dev.read_slice(&mut buf, GuestAddress(0x1000)).is_err());
    assert_eq!(g.poll_events()[0].address, 0x1000);
    // INVALIDATE_DEVTAB_ENTRY drops the device's cache too.
    dev.read_slice(&mut buf, GuestAddress(0x2000)).unwrap();
    g.set_dte(DEV, Dte::untranslated(0, Perm::empty()));
    dev.read_slice(&mut buf, GuestAddress(0x2000)).unwrap();
    g.queue(Command::InvalidateDevtabEntry { device_id: DEV })
        .unwrap();
    g.completion_wait().unwrap();
    assert!(dev.read_slice(&mut buf, GuestAddress(0x2000)).is_err());
    // So does INVALIDATE_IOTLB_PAGES (the device's remote IOTLB).
    g.set_dte(DEV, Dte::translated(4, pt.root, 3, Perm::RW));
    g.queue(Command::InvalidateDevtabEntry { device_id: DEV })
        .unwrap();
    dev.read_slice(&mut buf, GuestAddress(0x2000)).unwrap();
    g.set_dte(DEV, Dte::untranslated(0, Perm::empty()));
    g.queue(Command::InvalidateIotlbPages {
        device_id: DEV,
        max_pending: 0,
        pasid: 0,
        queue_id: DEV,
        size: true,
        gn: false,
        address: viommu_amd_vi::command::ALL_PAGES_ADDRESS,
    })
    .unwrap();
    assert!(dev.read_slice(&mut buf, GuestAddress(0x2000)).is_err());
    // Disabling the IOMMU: untranslated again.
    g.feature(control::IOMMU_EN, false).unwrap();
    dev.read_slice(&mut buf, GuestAddress(0x90_0000)).unwrap();
    assert_eq!(&buf, b"data");
}

#[test]
fn invalidation_waits_for_inflight_dma() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    let pt = g.new_tables(3);
    pt.map(&mut g, 0x1000, 0x80_0000, 0x1000, Perm::RW);
    g.attach(DEV, Dte::translated(4, pt.root, 3, Perm::RW))
        .unwrap();
    let dev = device(&g);
    let iommu = dev.iommu();
    // The guest queues an invalidation but has not written TAIL yet.
    g.queue_raw_no_tail(
        Command::invalidate_pages(4, AddrRange::from_len(0x1000, 0x1000), false).encode(),
    );
    let tail = g.cmd_tail();
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let held = iommu
            .translate(GuestAddress(0x1000), 0x100, Permissions::Write)
            .unwrap();
        let vcpu = g.iommu.clone();
        let h = s.spawn(|| {
            let vcpu = vcpu;
            vcpu.mmio_write(offset::CMD_TAIL, 4, tail).unwrap();
            done.store(true, Ordering::SeqCst);
        });
        thread::sleep(Duration::from_millis(50));
        assert!(
            !done.load(Ordering::SeqCst),
            "invalidation completed during DMA"
        );
        let ranges: Vec<_> = held.collect();
        assert_eq!(ranges[0].base, GuestAddress(0x80_0000));
        h.join().unwrap();
    });
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(g.r32(offset::CMD_HEAD), tail);
}

#[test]
fn concurrent_dma_and_invalidations() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    let pt = g.new_tables(3);
    for i in 0..16u64 {
        pt.map(
            &mut g,
            0x10_0000 + (i << 12),
            0x80_0000 + (i << 12),
            0x1000,
            Perm::RW,
        );
    }
    g.attach(DEV, Dte::translated(4, pt.root, 3, Perm::RW))
        .unwrap();
    let h = viommu_shared::host::SharedSimHost::new(viommu_shared::host::SimHostConfig::amd_vi());
    g.iommu.attach_host(0x0400, Box::new(h.clone())).unwrap();
    g.attach(0x0400, Dte::translated(4, pt.root, 3, Perm::RW))
        .unwrap();
    let stop = AtomicBool::new(false);
    let devs = [
        device(&g),
        IommuMemory::new(g.mem.clone(), g.iommu.device_iommu(DEV + 1), true, ()),
    ];
    g.set_dte(DEV + 1, Dte::translated(4, pt.root, 3, Perm::RW));
    thread::scope(|s| {
        for (n, dev) in devs.iter().enumerate() {
            let stop = &stop;
            s.spawn(move || {
                let mut buf = [0u8; 64];
                let mut i = n as u64;
                while !stop.load(Ordering::Relaxed) {
                    // Pages come and go; failures are expected, hangs and panics are not.
                    let _ = dev.read_slice(&mut buf, GuestAddress(0x10_0000 + ((i % 16) << 12)));
                    let _ = dev.write_slice(&buf[..8], GuestAddress(0x10_0ff8 + ((i % 15) << 12)));
                    i += 1;
                }
            });
        }
        for round in 0..64u64 {
            let page = 0x10_0000 + ((round % 16) << 12);
            pt.unmap(&mut g, page, 0x1000);
            g.flush_pages(4, AddrRange::from_len(page, 0x1000)).unwrap();
            assert!(
                devs[0]
                    .read_slice(&mut [0u8; 4], GuestAddress(page))
                    .is_err()
            );
            pt.map(
                &mut g,
                page,
                0x80_0000 + ((round % 16) << 12),
                0x1000,
                Perm::RW,
            );
            g.flush_pages(4, AddrRange::from_len(page, 0x1000)).unwrap();
            assert!(
                devs[0]
                    .read_slice(&mut [0u8; 4], GuestAddress(page))
                    .is_ok()
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
    // The passthrough device followed every change: all 16 pages, coalesced.
    let m = h.with(|h| h.mappings());
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].iova, m[0].gpa, m[0].size),
        (0x10_0000, 0x80_0000, 0x1_0000)
    );
}
