//! Interrupt remapping (spec 48882 §2.2.5) through the public API: IRTE formats, IntCtl and
//! the pass bits, IntTabLen, events only for interrupt requests, and the invalidation
//! notifications a VMM's `RouteTable` follows.

mod common;

use common::*;
use std::sync::{Arc, Mutex};
use viommu_amd_vi::dte::DTE_IG;
use viommu_amd_vi::regs::{control, efr, offset};
use viommu_amd_vi::{
    Command, Config, Dte, DteIrq, EventCode, EventFlags, InvalidRequest, Irte, SpecialDevice,
    SpecialKind,
};
use viommu_shared::Perm;
use viommu_shared::dma::DmaFaultKind;
use viommu_shared::irq::{
    DeliveryMode, DestinationMode, InterruptRemapper, IrFaultKind, IrInvalidation, IrListener,
    RemapMode, RouteTable, TriggerMode,
};
use viommu_shared::regs::Msi;
use vm_memory::{Bytes, GuestAddress};

const DEV: u16 = 0x18;
const OTHER: u16 = 0x20;
const IRT: u64 = 0x80_0000;
const IRT_OTHER: u64 = 0x81_0000;
const DOMAIN: u16 = 5;

fn msi(data: u32) -> Msi {
    Msi {
        address: 0xfee0_0000,
        data,
    }
}

/// A Linux-initialised IOMMU with `DEV` remapping through a 256-entry table at `IRT`.
fn guest(config: Config) -> Guest {
    let mut g = Guest::new(config);
    g.linux_init();
    let dte = Dte::untranslated(DOMAIN, Perm::RW).with_irq(DteIrq::remapped(IRT, 8));
    g.set_dte(DEV, dte);
    g.queue(Command::InvalidateDevtabEntry { device_id: DEV })
        .unwrap();
    g.completion_wait().unwrap();
    g.poll_events();
    g.msi.take();
    g
}

fn legacy(g: &Guest, table: u64, index: u64, irte: u32) {
    g.mem
        .write_obj(irte.to_le(), GuestAddress(table + index * 4))
        .unwrap();
}

fn ga(g: &Guest, table: u64, index: u64, irte: [u64; 2]) {
    g.store(table + index * 16, irte[0]);
    g.store(table + index * 16 + 8, irte[1]);
}

#[test]
fn legacy_entries_remap_and_only_requests_log() {
    let g = guest(Config::default());
    legacy(
        &g,
        IRT,
        3,
        Irte::remapped(0x41, 7, false, 0).encode_legacy(),
    );
    legacy(
        &g,
        IRT,
        4,
        Irte::remapped(0x42, 0x0c, true, 1).encode_legacy(),
    );
    let r = g.iommu.remap(DEV, msi(3), RemapMode::Request).unwrap();
    assert_eq!(r.index, Some(3));
    let i = r.interrupt;
    assert_eq!((i.destination, i.vector), (7, 0x41));
    assert_eq!(i.delivery, DeliveryMode::Fixed);
    assert_eq!(i.destination_mode, DestinationMode::Physical);
    assert_eq!(i.trigger, TriggerMode::Edge);
    let i = g
        .iommu
        .remap(DEV, msi(0x8004), RemapMode::Route)
        .unwrap()
        .interrupt;
    assert_eq!((i.destination, i.vector), (0x0c, 0x42));
    assert_eq!(i.delivery, DeliveryMode::LowestPriority);
    assert_eq!(i.destination_mode, DestinationMode::Logical);
    assert_eq!(i.trigger, TriggerMode::Level);
    assert!(g.poll_events().is_empty());

    // Entry 5 is not valid: a route resolution records nothing, a request logs.
    let f = g.iommu.remap(DEV, msi(5), RemapMode::Route).unwrap_err();
    assert_eq!(
        (f.kind, f.code, f.index),
        (IrFaultKind::NotPresent, 2, Some(5))
    );
    assert!(!f.recorded);
    assert!(g.poll_events().is_empty());
    assert!(g.msi.take().is_empty());
    let f = g.iommu.remap(DEV, msi(5), RemapMode::Request).unwrap_err();
    assert!(f.recorded);
    let ev = g.poll_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].code, EventCode::IoPageFault);
    assert_eq!(ev[0].flags, EventFlags::I);
    assert_eq!((ev[0].device_id, ev[0].domain_id), (DEV, DOMAIN));
    assert_eq!(ev[0].address, 0xfee0_0000);
    assert_eq!(g.msi.take(), vec![MSI]);
    let s = g.iommu.stats();
    assert_eq!((s.interrupts_delivered, s.interrupt_faults), (1, 1));

    // SupIOPF and the DTE's IG suppress the event, not the fault.
    let mut quiet = Irte::remapped(0x43, 1, false, 0);
    quiet.remap_en = false;
    quiet.suppress_faults = true;
    legacy(&g, IRT, 6, quiet.encode_legacy());
    let f = g.iommu.remap(DEV, msi(6), RemapMode::Request).unwrap_err();
    assert_eq!((f.kind, f.recorded), (IrFaultKind::NotPresent, false));
    let mut dte = g.iommu.device_entry(DEV).unwrap();
    dte.0[2] |= DTE_IG;
    g.set_dte(DEV, dte);
    assert!(
        !g.iommu
            .remap(DEV, msi(5), RemapMode::Request)
            .unwrap_err()
            .recorded
    );
    assert!(g.poll_events().is_empty());
    // Reserved bits or a delivery mode other than fixed/arbitrated: PR and RZ.
    dte.0[2] &= !DTE_IG;
    g.set_dte(DEV, dte);
    legacy(
        &g,
        IRT,
        7,
        Irte::remapped(0x44, 1, false, 0).encode_legacy() | 0x0100_0000,
    );
    legacy(
        &g,
        IRT,
        8,
        Irte::remapped(0x44, 1, false, 4).encode_legacy(),
    );
    for index in [7, 8] {
        let f = g
            .iommu
            .remap(DEV, msi(index), RemapMode::Request)
            .unwrap_err();
        assert_eq!(f.kind, IrFaultKind::Reserved);
    }
    let ev = g.poll_events();
    assert!(
        ev.iter()
            .all(|e| e.flags == EventFlags::I | EventFlags::PR | EventFlags::RZ)
    );
    assert_eq!(ev.len(), 2);
}

#[test]
fn int_ctl_and_pass_bits() {
    let g = guest(Config::default());
    legacy(
        &g,
        IRT,
        1,
        Irte::remapped(0x41, 7, false, 0).encode_legacy(),
    );
    let base = DteIrq::remapped(IRT, 8).0 & !(3 << 60);
    // (IntCtl, pass bits, MSI data) -> Ok(vector, index) or Err(kind, event code).
    type Want = Result<(u8, Option<u32>), (IrFaultKind, u16)>;
    let cases: &[(u64, u64, u32, Want)] = &[
        (2, 0, 0x001, Ok((0x41, Some(1)))),
        (1, 0, 0x031, Ok((0x31, None))),
        (0, 0, 0x031, Err((IrFaultKind::Blocked, 8))),
        (3, 0, 0x031, Err((IrFaultKind::Reserved, 1))),
        // SMI always passes; NMI, INIT, ExtINT only with NMIPass, INITPass, EIntPass.
        (0, 0, 0x200, Ok((0, None))),
        (2, 0, 0x402, Err((IrFaultKind::Blocked, 0))),
        (2, 1 << 58, 0x402, Ok((2, None))),
        (2, 0, 0x503, Err((IrFaultKind::Blocked, 0))),
        (2, 1 << 56, 0x503, Ok((3, None))),
        (2, 0, 0x704, Err((IrFaultKind::Blocked, 0))),
        (2, 1 << 57, 0x704, Ok((4, None))),
        // NMIPass does not pass INIT; the reserved modes 011b and 110b never pass.
        (2, 1 << 58, 0x503, Err((IrFaultKind::Blocked, 0))),
        (1, 7 << 56, 0x300, Err((IrFaultKind::Malformed, 0))),
        (1, 7 << 56, 0x600, Err((IrFaultKind::Malformed, 0))),
    ];
    for &(ctl, pass, data, want) in cases {
        g.set_dte(
            DEV,
            Dte::untranslated(DOMAIN, Perm::RW).with_irq(DteIrq(base | (ctl << 60) | pass)),
        );
        let got = g.iommu.remap(DEV, msi(data), RemapMode::Request);
        let got = got
            .map(|r| (r.interrupt.vector, r.index))
            .map_err(|f| (f.kind, f.code));
        assert_eq!(got, want, "IntCtl {ctl} pass {pass:#x} data {data:#x}");
    }
    // IntCtl = 00b is INVALID_DEVICE_REQUEST type 101b; IntCtl = 11b ILLEGAL_DEV_TABLE_ENTRY.
    let ev = g.poll_events();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].code, EventCode::InvalidDeviceRequest);
    assert_eq!(
        ev[0].flags,
        EventFlags::request_type(InvalidRequest::InterruptAborted)
    );
    assert_eq!(ev[1].code, EventCode::IllegalDevTableEntry);
    assert_eq!(ev[1].flags, EventFlags::I | EventFlags::RZ);
    // IV = 0: everything passes, whatever IntCtl says.
    g.set_dte(DEV, Dte::untranslated(DOMAIN, Perm::RW));
    let r = g.iommu.remap(DEV, msi(0x31), RemapMode::Request).unwrap();
    assert_eq!((r.interrupt.vector, r.index), (0x31, None));
    // Not an interrupt address: malformed, nothing logged.
    let f = g
        .iommu
        .remap(
            DEV,
            Msi {
                address: 0xfed0_0000,
                data: 1,
            },
            RemapMode::Request,
        )
        .unwrap_err();
    assert_eq!((f.kind, f.recorded), (IrFaultKind::Malformed, false));
    assert!(g.poll_events().is_empty());
}

#[test]
fn int_tab_len_is_enforced() {
    let g = guest(Config::default());
    // A valid-looking entry everywhere, so only IntTabLen can refuse.
    for i in 0..0x200 {
        legacy(
            &g,
            IRT,
            i,
            Irte::remapped(i as u8, 1, false, 0).encode_legacy(),
        );
    }
    for len in 0..=8u8 {
        g.set_dte(
            DEV,
            Dte::untranslated(DOMAIN, Perm::RW).with_irq(DteIrq::remapped(IRT, len)),
        );
        let last = (1u32 << len) - 1;
        let r = g.iommu.remap(DEV, msi(last), RemapMode::Request).unwrap();
        assert_eq!(r.index, Some(last), "IntTabLen {len}");
        let f = g
            .iommu
            .remap(DEV, msi(last + 1), RemapMode::Request)
            .unwrap_err();
        assert_eq!(f.kind, IrFaultKind::IndexOutOfRange, "IntTabLen {len}");
        assert_eq!((f.code, f.index, f.recorded), (2, Some(last + 1), true));
    }
    let ev = g.poll_events();
    assert_eq!(ev.len(), 9);
    assert!(ev.iter().all(|e| e.flags == EventFlags::I));
    // 1100b..1111b are reserved: an illegal entry.
    for len in 12..16 {
        g.set_dte(
            DEV,
            Dte::untranslated(DOMAIN, Perm::RW).with_irq(DteIrq::remapped(IRT, len)),
        );
        let f = g.iommu.remap(DEV, msi(0), RemapMode::Request).unwrap_err();
        assert_eq!((f.kind, f.code), (IrFaultKind::Reserved, 1));
    }
    // A 16-entry table ending at the top of RAM works; 32 entries there reach past RAM:
    // PAGE_TAB_HARDWARE_ERROR with the entry's address.
    g.set_dte(
        DEV,
        Dte::untranslated(DOMAIN, Perm::RW).with_irq(DteIrq::remapped(RAM - 0x40, 4)),
    );
    legacy(
        &g,
        RAM - 0x40,
        15,
        Irte::remapped(0x78, 1, false, 0).encode_legacy(),
    );
    assert_eq!(
        g.iommu
            .remap(DEV, msi(15), RemapMode::Request)
            .unwrap()
            .interrupt
            .vector,
        0x78
    );
    g.set_dte(
        DEV,
        Dte::untranslated(DOMAIN, Perm::RW).with_irq(DteIrq::remapped(RAM - 0x40, 5)),
    );
    g.poll_events();
    let f = g.iommu.remap(DEV, msi(16), RemapMode::Request).unwrap_err();
    assert_eq!((f.kind, f.code), (IrFaultKind::TableReadError, 4));
    let ev = g.poll_events();
    assert_eq!(ev[0].code, EventCode::PageTabHardwareError);
    assert_eq!(ev[0].address, RAM);
    assert_eq!(ev[0].flags, EventFlags::I | EventFlags::MASTER_ABORT);
}

#[test]
fn ga_entries_x2apic_and_guest_mode() {
    let g = guest(Config::default());
    assert_eq!(
        g.iommu.efr() & (efr::GA_SUP | efr::XT_SUP),
        efr::GA_SUP | efr::XT_SUP
    );
    ga(
        &g,
        IRT,
        2,
        Irte::remapped(0x51, 0x1234_5678, false, 0).encode_ga(),
    );
    let mut posted = Irte::remapped(0x52, 1, false, 0);
    posted.guest_mode = true;
    ga(&g, IRT, 3, posted.encode_ga());
    g.feature(control::GA_EN, true).unwrap();
    let dest = |g: &Guest| {
        g.iommu
            .remap(DEV, msi(2), RemapMode::Request)
            .unwrap()
            .interrupt
            .destination
    };
    assert_eq!(dest(&g), 0x78);
    g.feature(control::XT_EN, true).unwrap();
    assert_eq!(dest(&g), 0x1234_5678);
    let f = g.iommu.remap(DEV, msi(3), RemapMode::Request).unwrap_err();
    assert_eq!(
        (f.kind, f.code, f.recorded),
        (IrFaultKind::Unsupported, 2, true)
    );
    let ev = g.poll_events();
    assert_eq!(ev[0].flags, EventFlags::I | EventFlags::PR | EventFlags::RZ);
    // Delivered through the model: destination bits 31:8 in address bits 63:40.
    g.msi.take();
    let r = g.iommu.deliver_msi(DEV, msi(2)).unwrap();
    assert_eq!(r.interrupt.destination, 0x1234_5678);
    assert_eq!(
        g.msi.take(),
        vec![Msi {
            address: 0x1234_5600_fee7_8000,
            data: 0x51
        }]
    );

    // Without GASup/XTSup the Control bits do not stick: entries stay 32-bit.
    let g = guest(Config {
        ga: false,
        x2apic: false,
        ..Config::default()
    });
    assert_eq!(g.iommu.efr() & (efr::GA_SUP | efr::XT_SUP), 0);
    g.feature(
        control::GA_EN | control::XT_EN | control::INT_CAP_XT_EN,
        true,
    )
    .unwrap();
    assert_eq!(
        g.r64(offset::CONTROL) & (control::GA_EN | control::XT_EN | control::INT_CAP_XT_EN),
        0
    );
    legacy(
        &g,
        IRT,
        8,
        Irte::remapped(0x61, 9, false, 0).encode_legacy(),
    );
    let r = g.iommu.remap(DEV, msi(8), RemapMode::Request).unwrap();
    assert_eq!((r.interrupt.destination, r.interrupt.vector), (9, 0x61));
}

/// Records notifications, and the completion semaphore's value when each arrived.
struct Recorder {
    mem: vm_memory::GuestMemoryMmap,
    seen: Mutex<Vec<(IrInvalidation, u64)>>,
}

impl IrListener for Recorder {
    fn invalidated(&self, what: IrInvalidation) {
        let sem: u64 = self.mem.read_obj(GuestAddress(SEM)).unwrap();
        self.seen.lock().unwrap().push((what, sem));
    }
}

impl Recorder {
    fn take(&self) -> Vec<(IrInvalidation, u64)> {
        std::mem::take(&mut self.seen.lock().unwrap())
    }
}

#[test]
fn invalidations_reach_the_route_table() {
    let mut g = guest(Config::default());
    let other = Dte::untranslated(DOMAIN, Perm::RW).with_irq(DteIrq::remapped(IRT_OTHER, 8));
    g.set_dte(OTHER, other);
    legacy(
        &g,
        IRT,
        0,
        Irte::remapped(0x30, 1, false, 0).encode_legacy(),
    );
    legacy(
        &g,
        IRT,
        1,
        Irte::remapped(0x31, 1, false, 0).encode_legacy(),
    );
    legacy(
        &g,
        IRT_OTHER,
        0,
        Irte::remapped(0x40, 2, false, 0).encode_legacy(),
    );
    let recorder = Arc::new(Recorder {
        mem: g.mem.clone(),
        seen: Mutex::new(Vec::new()),
    });
    g.iommu.add_listener(recorder.clone());
    let remapper: Arc<dyn InterruptRemapper> = Arc::new(g.iommu.clone());
    let table = RouteTable::new(remapper, None);
    table.set(1, DEV, msi(0)).unwrap();
    table.set(2, DEV, msi(1)).unwrap();
    table.set(3, OTHER, msi(0)).unwrap();
    let events_before = g.iommu.stats().events_logged;

    // The guest retargets DEV's entry 1 and flushes its table: DEV's routes only, told
    // before the completion wait's store lands.
    legacy(
        &g,
        IRT,
        1,
        Irte::remapped(0x55, 4, false, 0).encode_legacy(),
    );
    g.queue(Command::InvalidateInterruptTable { device_id: DEV })
        .unwrap();
    let seq_before = g.sem();
    g.completion_wait().unwrap();
    assert_eq!(
        recorder.take(),
        vec![(IrInvalidation::Source(DEV), seq_before)]
    );
    let up = table.take_updates();
    assert_eq!(
        up.iter().map(|u| (u.id, u.changed)).collect::<Vec<_>>(),
        [(1, false), (2, true)]
    );
    assert_eq!(table.get(2).unwrap().unwrap().interrupt.vector, 0x55);
    assert_eq!(table.get(3).unwrap().unwrap().interrupt.vector, 0x40);

    // DTE invalidation reaches the device and its aliases; so does set_alias itself.
    g.iommu.set_alias(0x28, OTHER).unwrap();
    assert_eq!(
        recorder.take(),
        vec![(IrInvalidation::Source(0x28), g.sem())]
    );
    g.queue(Command::InvalidateDevtabEntry { device_id: OTHER })
        .unwrap();
    let seen: Vec<IrInvalidation> = recorder.take().into_iter().map(|(w, _)| w).collect();
    assert_eq!(
        seen,
        [IrInvalidation::Source(0x28), IrInvalidation::Source(OTHER)]
    );
    assert_eq!(
        table
            .take_updates()
            .iter()
            .map(|u| u.id)
            .collect::<Vec<_>>(),
        [3]
    );
    // An alias remaps through the entry it aliases.
    let r = g.iommu.remap(0x28, msi(0), RemapMode::Request).unwrap();
    assert_eq!(r.interrupt.vector, 0x40);

    // INVALIDATE_IOMMU_ALL, Control changes and reset: everything.
    g.queue(Command::InvalidateIommuAll).unwrap();
    g.feature(control::GA_EN, true).unwrap();
    g.feature(control::EVENT_INT_EN, false).unwrap();
    let seen: Vec<IrInvalidation> = recorder.take().into_iter().map(|(w, _)| w).collect();
    assert_eq!(seen, [IrInvalidation::All, IrInvalidation::All]);
    assert_eq!(table.take_updates().len(), 3);
    g.iommu.reset().unwrap();
    assert_eq!(recorder.take().len(), 1);
    // Nothing was logged for any route resolution.
    assert_eq!(g.iommu.stats().events_logged, events_before);
    assert!(g.iommu.stats().irq_invalidations >= 6);
}

#[test]
fn without_interrupt_remapping_everything_passes() {
    let mut g = guest(Config {
        interrupt_remapping: false,
        ..Config::default()
    });
    assert_eq!(g.iommu.efr() & (efr::GA_SUP | efr::XT_SUP), 0);
    let recorder = Arc::new(Recorder {
        mem: g.mem.clone(),
        seen: Mutex::new(Vec::new()),
    });
    g.iommu.add_listener(recorder.clone());
    let r = g.iommu.remap(DEV, msi(0x4031), RemapMode::Request).unwrap();
    assert_eq!((r.interrupt.vector, r.index), (0x31, None));
    g.queue(Command::InvalidateInterruptTable { device_id: DEV })
        .unwrap();
    g.completion_wait().unwrap();
    assert!(recorder.take().is_empty());
}

#[test]
fn the_interrupt_range_is_not_memory() {
    let mut g = guest(Config::default());
    // A read there is an INVALID_DEVICE_REQUEST (type 000b); a write is refused without an
    // event (it is an interrupt, which the VMM routes to deliver_msi).
    let f = g.dma(DEV, 0xfee0_0000, Perm::READ).unwrap_err();
    assert_eq!(f.kind, DmaFaultKind::Blocked);
    let f = g.dma(DEV, 0xfee0_1000, Perm::WRITE).unwrap_err();
    assert_eq!(f.kind, DmaFaultKind::Blocked);
    let ev = g.poll_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].code, EventCode::InvalidDeviceRequest);
    assert_eq!(
        ev[0].flags,
        EventFlags::request_type(InvalidRequest::InterruptRangeRead)
    );
    // A 1 GiB page covering the range is cut so no cached translation reaches it.
    let pt = g.new_tables(3);
    pt.map(&mut g, 0xc000_0000, 0, 1 << 30, Perm::RW);
    g.attach(
        DEV,
        Dte::translated(DOMAIN, pt.root, 3, Perm::RW).with_irq(DteIrq::remapped(IRT, 8)),
    )
    .unwrap();
    let t = g.dma(DEV, 0xc000_1000, Perm::READ).unwrap();
    assert_eq!((t.iova, t.size, t.addr), (0xc000_0000, 1 << 29, 0));
    let t = g.dma(DEV, 0xfef0_0000, Perm::WRITE).unwrap();
    assert_eq!(
        (t.iova, t.size, t.addr),
        (0xfef0_0000, 1 << 20, 0x3ef0_0000)
    );
    assert!(g.dma(DEV, 0xfeef_f000, Perm::WRITE).is_err());
    assert!(g.poll_events().is_empty());
}

#[test]
fn special_devices_are_published() {
    let g = Guest::new(Config::default());
    assert_eq!(g.iommu.special_source(SpecialKind::IoApic, 0), Some(0xa0));
    assert_eq!(g.iommu.special_source(SpecialKind::Hpet, 0), None);
    let hpet = SpecialDevice {
        kind: SpecialKind::Hpet,
        handle: 0,
        device_id: 0xa2,
    };
    let g = Guest::new(Config {
        special_devices: vec![SpecialDevice::QEMU_IOAPIC, hpet],
        ..Config::default()
    });
    assert_eq!(g.iommu.special_source(SpecialKind::Hpet, 0), Some(0xa2));
    assert_eq!(hpet.ivhd_entry()[7], 2);
}

#[test]
fn restore_invalidates_every_route() {
    use viommu_shared::irq::{IrInvalidation, IrListener};
    #[derive(Default)]
    struct Log(std::sync::Mutex<Vec<IrInvalidation>>);
    impl IrListener for Log {
        fn invalidated(&self, what: IrInvalidation) {
            self.0.lock().unwrap().push(what);
        }
    }
    let mut g = Guest::new(Config::default());
    g.linux_init();
    let snap = g.iommu.save();
    let log = Arc::new(Log::default());
    viommu_shared::irq::InterruptRemapper::add_listener(&g.iommu, log.clone());
    g.iommu.restore(&snap).unwrap();
    assert_eq!(*log.0.lock().unwrap(), [IrInvalidation::All]);
}
