//! Emulated DMA from several threads while the guest remaps and invalidates: no deadlock,
//! and once an invalidation (with its wait descriptor) completes, no DMA sees the old page.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use viommu_vtd::regs::GCMD_TE;
use viommu_vtd::testing::entry;
use viommu_vtd::{Config, Vtd};
use vm_memory::iommu::IommuMemory;
use vm_memory::{Bytes, GuestAddress};

const DID: u16 = 2;
const IOVA: u64 = 0x7000;
const PAGES: [u64; 2] = [DATA, DATA + 0x10_0000];

#[test]
fn dma_threads_race_with_remapping() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Vtd>();

    let fx = Fixture::new(Config::default());
    for (i, &p) in PAGES.iter().enumerate() {
        fx.mem.write_obj(i as u64 + 1, GuestAddress(p)).unwrap();
    }
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    drv.set_root_table(false).unwrap();
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_page(0, IOVA, PAGES[0], RW).unwrap();
    let sids = [0x40u16, 0x41, 0x42];
    for sid in sids {
        drv.write_context(sid, entry::context(tb.root(), 2, DID, 0, false))
            .unwrap();
        drv.flush_context_present(sid, DID).unwrap();
    }
    drv.gcmd(GCMD_TE, true).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    // Workers start together with the remapping loop and read at least once, however the
    // threads are scheduled on a loaded machine.
    let start = Arc::new(Barrier::new(sids.len()));
    let workers: Vec<_> = sids[1..]
        .iter()
        .map(|&sid| {
            let mem = IommuMemory::new(
                fx.mem.clone(),
                fx.vtd.device_iommu(u32::from(sid)),
                true,
                (),
            );
            let stop = stop.clone();
            let start = start.clone();
            thread::spawn(move || {
                let mut seen = 0u64;
                start.wait();
                loop {
                    let v: u64 = mem.read_obj(GuestAddress(IOVA)).unwrap();
                    assert!(v == 1 || v == 2, "DMA read {v}");
                    seen += 1;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                seen
            })
        })
        .collect();

    let checker = IommuMemory::new(
        fx.mem.clone(),
        fx.vtd.device_iommu(u32::from(sids[0])),
        true,
        (),
    );
    start.wait();
    for round in 1..200u64 {
        let target = (round % 2) as usize;
        tb.map_page(0, IOVA, PAGES[target], RW).unwrap();
        drv.flush_range(DID, IOVA, 0x1000, false).unwrap();
        let v: u64 = checker.read_obj(GuestAddress(IOVA)).unwrap();
        assert_eq!(v, target as u64 + 1, "stale translation after flush");
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        assert!(w.join().unwrap() > 0);
    }
}
