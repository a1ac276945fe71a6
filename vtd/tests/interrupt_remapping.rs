//! Interrupt remapping (VT-d spec chapter 5, 9.10, 6.5.2.7, 7.1): IRTE decoding, source-id
//! validation, fault recording with FPD, and invalidation notifications feeding a VMM's
//! `RouteTable`.

mod common;

use common::*;
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use viommu_shared::irq::{
    DeliveryMode, DestinationMode, Interrupt, InterruptRemapper, IrFaultKind, IrInvalidation,
    IrListener, RemapMode, RemappingMsiSink, RouteTable, TriggerMode,
};
use viommu_shared::regs::Msi;
use viommu_vtd::irte::{self, Irte, IrteError, SourceValidation};
use viommu_vtd::testing::{GuestDriver, desc};
use viommu_vtd::{Config, FaultReason};

fn ir_config() -> Config {
    Config {
        interrupt_remapping: true,
        ..Config::default()
    }
}

/// Turns on queued invalidation, the fault interrupt and x2APIC-mode remapping the way
/// Linux does; returns the driver and the table address.
fn ir_setup(fx: &Fixture) -> (GuestDriver<'_>, u64) {
    let mut drv = fx.driver();
    drv.enable_qi(false).unwrap();
    drv.enable_fault_interrupt(FAULT_MSI.0, FAULT_MSI.1)
        .unwrap();
    let table = drv.enable_interrupt_remapping(true).unwrap();
    (drv, table)
}

fn fixed(destination: u32, vector: u8) -> Interrupt {
    Interrupt {
        destination,
        vector,
        delivery: DeliveryMode::Fixed,
        destination_mode: DestinationMode::Physical,
        trigger: TriggerMode::Edge,
        redirection_hint: false,
    }
}

fn write_irte(drv: &GuestDriver<'_>, table: u64, index: u16, e: [u64; 2]) {
    drv.write(table + u64::from(index) * 16, &e).unwrap();
}

/// Records every notification.
#[derive(Default)]
struct Log(Mutex<Vec<IrInvalidation>>);

impl IrListener for Log {
    fn invalidated(&self, what: IrInvalidation) {
        self.0.lock().unwrap().push(what);
    }
}

impl Log {
    fn take(&self) -> Vec<IrInvalidation> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn delivery() -> impl Strategy<Value = DeliveryMode> {
    prop::sample::select(vec![
        DeliveryMode::Fixed,
        DeliveryMode::LowestPriority,
        DeliveryMode::Smi,
        DeliveryMode::Nmi,
        DeliveryMode::Init,
        DeliveryMode::ExtInt,
    ])
}

fn validation() -> impl Strategy<Value = SourceValidation> {
    prop_oneof![
        Just(SourceValidation::None),
        (any::<u16>(), 0u8..4).prop_map(|(sid, sq)| SourceValidation::Requester { sid, sq }),
        (any::<u8>(), any::<u8>())
            .prop_map(|(start, end)| SourceValidation::BusRange { start, end }),
    ]
}

fn irte_strategy() -> impl Strategy<Value = (Irte, bool)> {
    (
        any::<bool>(),
        any::<u32>(),
        any::<u8>(),
        delivery(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        validation(),
        any::<bool>(),
    )
        .prop_map(
            |(fpd, dest, vector, delivery, logical, level, rh, validation, x2apic)| {
                let destination = if x2apic { dest } else { dest & 0xff };
                let irte = Irte {
                    fpd,
                    interrupt: Interrupt {
                        destination,
                        vector,
                        delivery,
                        destination_mode: if logical {
                            DestinationMode::Logical
                        } else {
                            DestinationMode::Physical
                        },
                        trigger: if level {
                            TriggerMode::Level
                        } else {
                            TriggerMode::Edge
                        },
                        redirection_hint: rh,
                    },
                    validation,
                };
                (irte, x2apic)
            },
        )
}

proptest! {
    /// Every valid entry decodes to what was encoded; any one reserved bit makes it 0x24's
    /// `Reserved`; P = 0 is `NotPresent` whatever else is set.
    #[test]
    fn irte_round_trip_and_reserved_bits((e, x2apic) in irte_strategy(), bit in 0u32..128) {
        let [lo, hi] = irte::encode(&e, x2apic);
        prop_assert_eq!(irte::decode(lo, hi, x2apic), Ok(e));
        prop_assert_eq!(
            irte::decode(lo & !1, hi, x2apic),
            Err(IrteError::NotPresent { fpd: e.fpd })
        );
        // Reserved positions of a remapped-format IRTE (spec 9.10), independent of the
        // decoder's constants: 12..=15 (15 = IM, reserved without posted interrupts),
        // 24..=31, in xAPIC mode 32..=39 and 48..=63, and 84..=127.
        let reserved = matches!(bit, 12..=15 | 24..=31 | 84..=127)
            || (!x2apic && matches!(bit, 32..=39 | 48..=63));
        let (lo2, hi2) = if bit < 64 {
            (lo | (1 << bit), hi)
        } else {
            (lo, hi | (1 << (bit - 64)))
        };
        let already_set = (lo, hi) == (lo2, hi2);
        if reserved && !already_set {
            prop_assert_eq!(irte::decode(lo2, hi2, x2apic), Err(IrteError::Reserved));
        }
    }
}

#[test]
fn reserved_encodings_of_delivery_mode_and_svt() {
    let e = Irte {
        fpd: false,
        interrupt: fixed(1, 0x30),
        validation: SourceValidation::None,
    };
    let [lo, hi] = irte::encode(&e, true);
    for dlm in [3u64, 6] {
        assert_eq!(
            irte::decode(lo | (dlm << 5), hi, true),
            Err(IrteError::Reserved)
        );
    }
    assert_eq!(
        irte::decode(lo, hi | (3 << 18), true),
        Err(IrteError::Reserved)
    );
    // AVAIL (11:8) belongs to software.
    assert_eq!(irte::decode(lo | 0xf00, hi, true), Ok(e));
}

/// SVT = 01b against a reference written in terms of bus/device/function: SQ masks
/// function bits (bit 2; bits 2:1; bits 2:0), never bus or device bits. Exhaustive over all
/// 65536 requesters for a few SIDs.
#[test]
fn sq_masks_compare_exactly_the_unmasked_function_bits() {
    for sid in [0x0000u16, 0x001a, 0x00ff, 0x3a5d, 0xffff] {
        for sq in 0u8..4 {
            let v = SourceValidation::Requester { sid, sq };
            let ignored_fn_bits: u16 = match sq {
                0 => 0,
                1 => 0b100,
                2 => 0b110,
                _ => 0b111,
            };
            for rid in 0..=u16::MAX {
                let same_bus_dev = rid >> 3 == sid >> 3;
                let fn_diff = (rid ^ sid) & 7;
                let want = same_bus_dev && fn_diff & !ignored_fn_bits == 0;
                assert_eq!(v.allows(rid), want, "sid {sid:#x} sq {sq} rid {rid:#x}");
            }
        }
    }
}

#[test]
fn bus_range_validation_is_inclusive_and_ignores_devfn() {
    for (start, end) in [(0u8, 0u8), (2, 5), (5, 2), (0, 255), (255, 255)] {
        let v = SourceValidation::BusRange { start, end };
        for rid in 0..=u16::MAX {
            let bus = (rid >> 8) as u8;
            assert_eq!(
                v.allows(rid),
                start <= bus && bus <= end,
                "{start}..={end} {rid:#x}"
            );
        }
    }
    assert!((0..=u16::MAX).all(|rid| SourceValidation::None.allows(rid)));
}

#[test]
fn remapped_request_delivers_and_faults_honour_fpd() {
    let fx = Fixture::new(ir_config());
    let (drv, table) = ir_setup(&fx);
    let dev = 0x18u16;
    let good = Irte {
        fpd: false,
        interrupt: fixed(0x1_0005, 0x44),
        validation: SourceValidation::Requester { sid: dev, sq: 0 },
    };
    write_irte(&drv, table, 3, irte::encode(&good, true));
    fx.msi.take();

    let r = fx.vtd.deliver_msi(dev, irte::remappable_msi(3)).unwrap();
    assert_eq!((r.interrupt, r.index), (good.interrupt, Some(3)));
    assert_eq!(fx.msi.take(), vec![good.interrupt.to_msi()]);

    // Source mismatch without FPD: recorded with FI = index, fault event sent.
    let f = fx
        .vtd
        .deliver_msi(0x20, irte::remappable_msi(3))
        .unwrap_err();
    assert_eq!(
        (f.kind, f.code, f.index, f.recorded),
        (IrFaultKind::SourceMismatch, 0x26, Some(3), true)
    );
    let recs = fx.vtd.fault_records();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (
            recs[0].source_id,
            recs[0].reason,
            recs[0].address,
            recs[0].is_read,
            recs[0].pasid
        ),
        (
            0x20,
            FaultReason::IrSourceMismatch.code(),
            3 << 48,
            false,
            None
        )
    );
    assert_eq!(
        fx.msi.take(),
        vec![Msi {
            address: FAULT_MSI.0,
            data: FAULT_MSI.1
        }]
    );
    take_fault(&fx.vtd);

    // The same entry with FPD: suppressed (counted), no record, no interrupt.
    let quiet = Irte { fpd: true, ..good };
    write_irte(&drv, table, 3, irte::encode(&quiet, true));
    let before = fx.vtd.stats();
    let f = fx
        .vtd
        .deliver_msi(0x20, irte::remappable_msi(3))
        .unwrap_err();
    assert!(!f.recorded);
    assert!(fx.vtd.fault_records().is_empty());
    assert_eq!(
        fx.vtd.stats().faults_suppressed,
        before.faults_suppressed + 1
    );
    assert_eq!(
        fx.vtd.last_fault().unwrap().reason,
        FaultReason::IrSourceMismatch
    );
    assert!(fx.msi.take().is_empty());

    // Not present with FPD: suppressed; without: recorded.
    write_irte(&drv, table, 4, [2, 0]);
    assert!(
        !fx.vtd
            .deliver_msi(dev, irte::remappable_msi(4))
            .unwrap_err()
            .recorded
    );
    assert!(fx.vtd.fault_records().is_empty());
    write_irte(&drv, table, 4, [0, 0]);
    let f = fx
        .vtd
        .deliver_msi(dev, irte::remappable_msi(4))
        .unwrap_err();
    assert_eq!((f.code, f.recorded), (0x22, true));
    assert_eq!(take_fault(&fx.vtd).address, 4 << 48);

    // Reserved bits are reported even with FPD (0x24 is not a qualified fault).
    let [lo, hi] = irte::encode(&quiet, true);
    write_irte(&drv, table, 5, [lo | (1 << 13), hi]);
    let f = fx
        .vtd
        .deliver_msi(dev, irte::remappable_msi(5))
        .unwrap_err();
    assert_eq!(
        (f.kind, f.code, f.recorded),
        (IrFaultKind::Reserved, 0x24, true)
    );
    assert_eq!(take_fault(&fx.vtd).reason, 0x24);

    // Route mode never records, whatever the fault.
    let before = fx.vtd.stats();
    for i in [4u16, 5] {
        let f = fx
            .vtd
            .remap(dev, irte::remappable_msi(i), RemapMode::Route)
            .unwrap_err();
        assert!(!f.recorded);
    }
    assert_eq!(fx.vtd.stats(), before);
    assert!(fx.vtd.fault_records().is_empty());
}

#[test]
fn interrupt_window_dma_is_not_translated() {
    let fx = Fixture::new(ir_config());
    let _ir = ir_setup(&fx);
    let before = fx.vtd.stats();
    let e = dma(&fx.vtd, 0x18, None, 0xfee0_0018, viommu_shared::Perm::WRITE).unwrap_err();
    assert_eq!(e.kind, viommu_shared::dma::DmaFaultKind::Blocked);
    assert_eq!(fx.vtd.stats(), before);
    assert!(fx.vtd.fault_records().is_empty());
}

#[test]
fn iec_notifications_update_exactly_the_affected_routes() {
    let fx = Fixture::new(ir_config());
    let (mut drv, table) = ir_setup(&fx);
    let vtd: Arc<dyn InterruptRemapper> = Arc::new(fx.vtd.clone());
    let log = Arc::new(Log::default());
    vtd.add_listener(log.clone());
    let routes = RouteTable::new(vtd.clone(), None);
    let dev = 0x18u16;
    for i in 0..8u16 {
        let e = Irte {
            fpd: false,
            interrupt: fixed(1, 0x30 + i as u8),
            validation: SourceValidation::None,
        };
        write_irte(&drv, table, i, irte::encode(&e, true));
        routes
            .set(u32::from(i), dev, irte::remappable_msi(i))
            .unwrap();
    }
    assert!(routes.take_updates().is_empty());

    // The guest changes entry 5 and invalidates entries 4..=5 (IIDX 5, IM 1).
    let e = Irte {
        fpd: false,
        interrupt: fixed(2, 0x99),
        validation: SourceValidation::None,
    };
    drv.write(table + 5 * 16, &irte::encode(&e, true)).unwrap();
    drv.submit(&[desc::iec_index(5, 1)]).unwrap();
    assert_eq!(
        log.take(),
        vec![IrInvalidation::Indices { first: 4, count: 2 }]
    );
    let up = routes.take_updates();
    assert_eq!(
        up.iter().map(|u| (u.id, u.changed)).collect::<Vec<_>>(),
        [(4, false), (5, true)]
    );
    assert_eq!(up[1].result.unwrap().interrupt, e.interrupt);

    // A global IEC re-resolves all of them.
    drv.submit(&[desc::iec_global()]).unwrap();
    assert_eq!(log.take(), vec![IrInvalidation::All]);
    assert_eq!(routes.take_updates().len(), 8);

    // Disabling remapping notifies: routes now resolve as compatibility MSIs would (the
    // remappable-format address is not a valid compatibility one, but decodes).
    drv.gcmd(viommu_vtd::regs::GCMD_IRE, false).unwrap();
    assert_eq!(log.take(), vec![IrInvalidation::All]);
    assert!(routes.take_updates().iter().all(|u| u.changed));
}

/// A listener may call back into the unit (notifications are sent with its lock released).
#[test]
fn listener_may_call_back_into_the_unit() {
    struct Reentrant {
        vtd: viommu_vtd::Vtd,
        seen: Mutex<Vec<bool>>,
    }
    impl IrListener for Reentrant {
        fn invalidated(&self, _what: IrInvalidation) {
            let ok = self
                .vtd
                .remap(0x18, irte::remappable_msi(0), RemapMode::Route)
                .is_ok();
            self.seen.lock().unwrap().push(ok);
        }
    }
    let fx = Fixture::new(ir_config());
    let (mut drv, table) = ir_setup(&fx);
    let l = Arc::new(Reentrant {
        vtd: fx.vtd.clone(),
        seen: Mutex::new(Vec::new()),
    });
    fx.vtd.add_listener(l.clone());
    let e = Irte {
        fpd: false,
        interrupt: fixed(1, 0x30),
        validation: SourceValidation::None,
    };
    drv.write(table, &irte::encode(&e, true)).unwrap();
    drv.submit(&[desc::iec_index(0, 0)]).unwrap();
    assert_eq!(*l.seen.lock().unwrap(), [true]);
}

#[test]
fn alias_applies_to_interrupts_and_notifies_the_source() {
    let fx = Fixture::new(ir_config());
    let (drv, table) = ir_setup(&fx);
    let log = Arc::new(Log::default());
    fx.vtd.add_listener(log.clone());
    // Entry 0 accepts only the bridge 02:00.0 (a device behind a PCIe-to-PCI bridge
    // requests with the bridge's id).
    let e = Irte {
        fpd: false,
        interrupt: fixed(1, 0x30),
        validation: SourceValidation::Requester { sid: 0x0200, sq: 0 },
    };
    write_irte(&drv, table, 0, irte::encode(&e, true));
    let behind = 0x0308u16;
    let f = fx
        .vtd
        .remap(behind, irte::remappable_msi(0), RemapMode::Route)
        .unwrap_err();
    assert_eq!(f.code, 0x26);
    fx.vtd.set_alias(u32::from(behind), 0x0200).unwrap();
    assert_eq!(log.take(), vec![IrInvalidation::Source(behind)]);
    assert!(
        fx.vtd
            .remap(behind, irte::remappable_msi(0), RemapMode::Route)
            .is_ok()
    );
}

#[test]
fn remapping_msi_sink_wires_an_emulated_device() {
    let fx = Fixture::new(ir_config());
    let (drv, table) = ir_setup(&fx);
    let e = Irte {
        fpd: false,
        interrupt: fixed(0x300, 0x61),
        validation: SourceValidation::Requester { sid: 0x28, sq: 0 },
    };
    write_irte(&drv, table, 9, irte::encode(&e, true));
    fx.msi.take();
    let out = Arc::new(viommu_shared::regs::RecordingMsiSink::new());
    let nic = RemappingMsiSink::new(Arc::new(fx.vtd.clone()), 0x28, out.clone());
    use viommu_shared::regs::MsiSink;
    nic.send(irte::remappable_msi(9));
    assert_eq!(out.take(), vec![e.interrupt.to_msi()]);
    // A forged source is refused and recorded in the unit (the fault event goes to the
    // unit's own sink, nothing to the device's output).
    let forged = RemappingMsiSink::new(Arc::new(fx.vtd.clone()), 0x30, out.clone());
    forged.send(irte::remappable_msi(9));
    assert!(out.take().is_empty());
    assert_eq!(take_fault(&fx.vtd).reason, 0x26);
}

#[test]
fn reset_and_restore_notify_and_keep_the_ir_state() {
    let fx = Fixture::new(ir_config());
    let (drv, table) = ir_setup(&fx);
    let e = Irte {
        fpd: false,
        interrupt: fixed(7, 0x70),
        validation: SourceValidation::None,
    };
    write_irte(&drv, table, 1, irte::encode(&e, true));
    let log = Arc::new(Log::default());
    fx.vtd.add_listener(log.clone());
    let snap = fx.vtd.save();

    fx.vtd.reset().unwrap();
    assert_eq!(log.take(), vec![IrInvalidation::All]);
    let r = fx.vtd.remap(1, irte::remappable_msi(1), RemapMode::Route);
    // Remapping is off after reset: the request is treated in compatibility format.
    assert_eq!(r.unwrap().index, None);

    fx.vtd.restore(&snap).unwrap();
    assert_eq!(log.take(), vec![IrInvalidation::All]);
    let ir = fx.vtd.interrupt_remapping();
    assert!(ir.enabled && ir.extended && ir.latched && !ir.compatibility);
    assert_eq!((ir.table, ir.entries), (table, 65536));
    let r = fx
        .vtd
        .remap(1, irte::remappable_msi(1), RemapMode::Route)
        .unwrap();
    assert_eq!((r.interrupt, r.index), (e.interrupt, Some(1)));
}

#[test]
fn ir_off_and_malformed_compat_messages() {
    let fx = Fixture::new(ir_config());
    // Remapping off: compatibility decode, no fault.
    let r = fx
        .vtd
        .remap(
            1,
            Msi {
                address: 0xfee0_2000,
                data: 0x31,
            },
            RemapMode::Request,
        )
        .unwrap();
    assert_eq!(
        (r.interrupt.destination, r.interrupt.vector, r.index),
        (2, 0x31, None)
    );
    // A reserved delivery mode is not an interrupt: nothing architected to record.
    let f = fx
        .vtd
        .remap(
            1,
            Msi {
                address: 0xfee0_2000,
                data: 0x331,
            },
            RemapMode::Request,
        )
        .unwrap_err();
    assert_eq!(
        (f.kind, f.code, f.recorded),
        (IrFaultKind::Malformed, 0, false)
    );
    assert!(fx.vtd.fault_records().is_empty());
}
