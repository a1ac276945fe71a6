//! Save/restore (scenario VTD-37): registers, queue pointers, fault records and translation
//! state survive; passthrough devices are re-synced on the destination.

mod common;

use common::*;
use std::sync::Arc;
use viommu_shared::Perm;
use viommu_shared::regs::RecordingMsiSink;
use viommu_shared::snapshot::SnapshotError;
use viommu_vtd::regs::*;
use viommu_vtd::testing::{desc, entry};
use viommu_vtd::{Config, Vtd, VtdError};

#[test]
fn save_and_restore_round_trip() {
    let config = Config {
        interrupt_remapping: true,
        ..Config::default()
    };
    let fx = Fixture::new(config.clone());
    let mut drv = fx.driver();
    fx.vtd.mmio_write(IRTA, 8, 0x30_0000 | 0xf).unwrap();
    drv.gcmd(GCMD_SIRTP, true).unwrap();
    drv.gcmd(GCMD_IRE, true).unwrap();
    drv.enable_qi(false).unwrap();
    drv.set_root_table(false).unwrap();
    let format = fx.format();
    let mut tb = builder(&format, &fx.mem);
    tb.map_range(0x4000, DATA, 0x2000, RW).unwrap();
    drv.write_context(0x18, entry::context(tb.root(), 2, 7, 0, false))
        .unwrap();
    drv.flush_context_present(0x18, 7).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    for _ in 0..5 {
        drv.submit(&[desc::iotlb_domain(7)]).unwrap();
    }
    // A pending fault.
    dma(&fx.vtd, 0x20, None, 0x9000, Perm::READ).unwrap_err();
    let snap = fx.vtd.save();

    // The destination: same memory contents (shared here), a fresh unit with the device's
    // host attached before the state is loaded.
    let dst = Vtd::new(config, fx.mem.clone(), Arc::new(RecordingMsiSink::new()));
    let host = sim_host();
    dst.attach_host(0x18, Box::new(host.clone())).unwrap();
    dst.restore(&snap).unwrap();
    assert_eq!(dst.save(), snap);
    for off in [GSTS, RTADDR, IQA, IQH, IQT, FSTS, FECTL, IRTA, CAP, ECAP] {
        assert_eq!(dst.mmio_read(off, 8), fx.vtd.mmio_read(off, 8), "{off:#x}");
    }
    assert_eq!(dst.fault_records(), fx.vtd.fault_records());
    let ir = dst.interrupt_remapping();
    assert!(ir.enabled && ir.latched);
    assert_eq!((ir.table, ir.entries), (0x30_0000, 65536));
    // Translation state: DMA and the shadow follow the guest tables.
    assert_eq!(
        dma(&dst, 0x18, None, 0x5000, Perm::READ).unwrap().addr,
        DATA + 0x1000
    );
    assert_eq!(host_maps(&host), vec![(0x4000, DATA, 0x2000)]);
    // The queue continues where it was: a descriptor at the old tail runs.
    let iqt = dst.mmio_read(IQT, 8);
    let queue = dst.mmio_read(IQA, 8) & !0xfff;
    let status = 0x170_0000;
    let slot = queue + iqt;
    drv.write(slot, &desc::wait(Some((status, 9)), false))
        .unwrap();
    dst.mmio_write(IQT, 8, iqt + 0x10).unwrap();
    let got: u32 = vm_memory::Bytes::read_obj(&fx.mem, vm_memory::GuestAddress(status)).unwrap();
    assert_eq!(got, 9);

    // A snapshot from a unit with another fault record count is refused untouched.
    let other = Vtd::new(
        Config {
            fault_records: 2,
            ..Config::default()
        },
        fx.mem.clone(),
        Arc::new(RecordingMsiSink::new()),
    );
    assert_eq!(
        other.restore(&snap),
        Err(VtdError::Snapshot(SnapshotError::Mismatch {
            field: "fault_records"
        }))
    );
    assert_eq!(other.mmio_read(GSTS, 4), 0);
}

/// A state no unit could hold — a register bit the guest cannot write, status bits that
/// contradict the latched state — is refused with a typed error naming the field, and the
/// unit is reset: translation off, so its passthrough device is back on the identity map.
#[test]
fn hostile_states_are_refused_and_reset_the_unit() {
    let fx = Fixture::new(Config::default());
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    drv.set_root_table(false).unwrap();
    drv.gcmd(GCMD_TE, true).unwrap();
    let good = fx.vtd.save();
    let set = |s: &mut viommu_vtd::VtdSnapshot, off: u64, v: u64| {
        s.registers
            .iter_mut()
            .find(|r| r.offset == off)
            .unwrap()
            .value = v;
    };
    let mut iqt_bit0 = good.clone();
    set(&mut iqt_bit0, IQT, 1);
    let mut te_off = good.clone();
    te_off.translating = false;
    let mut wide_legacy = good.clone();
    wide_legacy.queue.wide = true;
    let mut queue_off_with_head = good.clone();
    queue_off_with_head.queue.enabled = false;
    let mut ttm_legacy = good.clone();
    let rtaddr = ttm_legacy
        .registers
        .iter()
        .find(|r| r.offset == RTADDR)
        .unwrap()
        .value;
    set(&mut ttm_legacy, RTADDR, rtaddr | RTADDR_TTM_SCALABLE);
    for (bad, want) in [
        (iqt_bit0, SnapshotError::Invalid { field: "IQT" }),
        (te_off, SnapshotError::Invalid { field: "GSTS" }),
        (wide_legacy, SnapshotError::Mismatch { field: "queue" }),
        (
            queue_off_with_head,
            SnapshotError::Invalid { field: "queue" },
        ),
        (
            ttm_legacy,
            SnapshotError::Mismatch {
                field: "RTADDR/IQA",
            },
        ),
    ] {
        let dst = Vtd::new(
            Config::default(),
            fx.mem.clone(),
            Arc::new(RecordingMsiSink::new()),
        );
        let host = sim_host();
        dst.attach_host(0x18, Box::new(host.clone())).unwrap();
        dst.restore(&good).unwrap();
        assert!(dst.translation_enabled());
        assert_eq!(dst.restore(&bad), Err(VtdError::Snapshot(want)));
        assert_eq!(dst.mmio_read(GSTS, 4), 0);
        assert!(!dst.translation_enabled());
        assert_eq!(
            dst.save(),
            Vtd::new(
                Config::default(),
                fx.mem.clone(),
                Arc::new(RecordingMsiSink::new())
            )
            .save()
        );
        // Untranslated: the host maps guest RAM 1:1 again.
        assert!(host_maps(&host).iter().all(|&(iova, gpa, _)| iova == gpa));
        assert!(!host_maps(&host).is_empty());
    }
}
