//! The event log: IO_PAGE_FAULT contents, wrap-around, overflow and Linux's restart,
//! illegal and unreadable commands, illegal and unreadable device table entries.

mod common;

use common::*;
use viommu_amd_vi::regs::{LEN_SHIFT, control, offset, status};
use viommu_amd_vi::{Command, Config, Dte, Event, EventCode, EventFlags, EventOutcome};
use viommu_shared::dma::DmaFaultKind;
use viommu_shared::{AddrRange, Perm};

const DEV: u16 = 0x2a13; // 2a:02.3

fn page_fault(domain: u16, iova: u64, flags: EventFlags) -> Event {
    Event {
        code: EventCode::IoPageFault,
        device_id: DEV,
        domain_id: domain,
        flags,
        address: iova,
    }
}

fn translated(g: &mut Guest, domain: u16) {
    let pt = g.new_tables(3);
    pt.map(g, 0x1000, 0x50_0000, 0x1000, Perm::READ);
    g.attach(DEV, Dte::translated(domain, pt.root, 3, Perm::RW))
        .unwrap();
}

#[test]
fn io_page_fault_contents() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    translated(&mut g, 0x1234);
    g.msi.take();
    let tail = g.r32(offset::EVT_TAIL);
    // Not present, write.
    assert_eq!(
        g.dma(DEV, 0xdead_b000, Perm::WRITE).unwrap_err().kind,
        DmaFaultKind::NotPresent
    );
    assert_eq!(g.r32(offset::EVT_TAIL), tail + 16);
    assert_ne!(g.r32(offset::STATUS) & status::EVENT_LOG_INT, 0);
    assert_eq!(g.msi.take(), vec![MSI]);
    // The raw entry as Linux decodes it (iommu_print_event).
    let at = EVT_LOG + tail;
    let (w0, w1) = (g.load(at) as u32, (g.load(at) >> 32) as u32);
    assert_eq!((w1 >> 28) & 0xf, 2, "IO_PAGE_FAULT");
    assert_eq!(w0 & 0xffff, u32::from(DEV), "full DeviceID, bus included");
    assert_eq!(w1 & 0xffff, 0x1234, "DomainID");
    assert_eq!((w1 >> 16) & 0xfff, 0x020, "RW, not present");
    assert_eq!(g.load(at + 8), 0xdead_b000);
    // Present but read-only, write: PR | PE | RW.
    assert_eq!(
        g.dma(DEV, 0x1008, Perm::WRITE).unwrap_err().kind,
        DmaFaultKind::Permission
    );
    assert_eq!(
        g.poll_events(),
        vec![
            page_fault(0x1234, 0xdead_b000, EventFlags::RW),
            page_fault(
                0x1234,
                0x1008,
                EventFlags::PR | EventFlags::PE | EventFlags::RW
            ),
        ]
    );
    // Without EventIntEn: logged, no MSI.
    g.feature(control::EVENT_INT_EN, false).unwrap();
    g.msi.take();
    assert!(g.dma(DEV, 0x7000, Perm::READ).is_err());
    assert!(g.msi.take().is_empty());
    assert_eq!(
        g.poll_events(),
        vec![page_fault(0x1234, 0x7000, EventFlags::empty())]
    );
    // SA suppresses I/O page fault events.
    let pt = g.new_tables(3);
    g.attach(
        DEV,
        Dte::translated(5, pt.root, 3, Perm::RW).with_suppress_all_faults(true),
    )
    .unwrap();
    assert!(g.dma(DEV, 0x7000, Perm::READ).is_err());
    assert!(g.poll_events().is_empty());
    let last = *g.iommu.recent_events().last().unwrap();
    assert_eq!(last.outcome, EventOutcome::Suppressed);
    assert_eq!(last.event, page_fault(5, 0x7000, EventFlags::empty()));
    // V=1, TV=0: the walk is terminated, reported as not present.
    g.attach(DEV, Dte([1, 9, 0, 0])).unwrap();
    assert_eq!(
        g.dma(DEV, 0x1000, Perm::READ).unwrap_err().kind,
        DmaFaultKind::Blocked
    );
    assert_eq!(
        g.poll_events(),
        vec![page_fault(9, 0x1000, EventFlags::empty())]
    );
}

#[test]
fn wrap_overflow_and_linux_restart() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    translated(&mut g, 1);
    // Start 3 entries before the end of the 512-entry ring.
    g.feature(control::EVENT_LOG_EN, false).unwrap();
    g.w32(offset::EVT_HEAD, 0x1fd0).unwrap();
    g.w32(offset::EVT_TAIL, 0x1fd0).unwrap();
    g.feature(control::EVENT_LOG_EN, true).unwrap();
    for i in 0..5u64 {
        assert!(g.dma(DEV, 0x10_0000 + (i << 12), Perm::READ).is_err());
    }
    assert_eq!(g.r32(offset::EVT_TAIL), 0x20, "wrapped");
    let evs = g.poll_events();
    assert_eq!(evs.len(), 5);
    assert!(
        evs.iter()
            .enumerate()
            .all(|(i, e)| e.address == 0x10_0000 + ((i as u64) << 12))
    );
    assert_eq!(g.r32(offset::EVT_HEAD), 0x20);
    g.msi.take();

    // Fill the ring: 511 entries fit, the 512th overflows.
    for i in 0..511u64 {
        assert!(g.dma(DEV, 0x20_0000 + (i << 12), Perm::READ).is_err());
    }
    assert_eq!(g.r32(offset::EVT_TAIL), 0x10);
    assert_eq!(g.r32(offset::STATUS) & status::EVENT_OVERFLOW, 0);
    assert_eq!(g.msi.take().len(), 511);
    assert!(g.dma(DEV, 0x40_0000, Perm::READ).is_err());
    let st = g.r32(offset::STATUS);
    assert_ne!(st & status::EVENT_OVERFLOW, 0);
    assert_eq!(st & status::EVENT_LOG_RUN, 0, "logging stops");
    assert_eq!(g.msi.take(), vec![MSI], "overflow interrupt");
    assert!(g.dma(DEV, 0x40_1000, Perm::READ).is_err());
    assert_eq!(g.r32(offset::EVT_TAIL), 0x10, "dropped while stopped");
    let dropped = g.iommu.recent_events();
    assert_eq!(dropped.last().unwrap().outcome, EventOutcome::NotRunning);
    assert_eq!(dropped[dropped.len() - 2].outcome, EventOutcome::Overflow);

    // Linux: consume, then amd_iommu_restart_log (disable, W1C overflow, enable).
    assert_eq!(g.poll_events().len(), 511);
    g.feature(control::EVENT_LOG_EN, false).unwrap();
    g.feature(control::EVENT_INT_EN, false).unwrap();
    g.w32(offset::STATUS, status::EVENT_OVERFLOW).unwrap();
    g.feature(control::EVENT_INT_EN, true).unwrap();
    g.feature(control::EVENT_LOG_EN, true).unwrap();
    assert_ne!(g.r32(offset::STATUS) & status::EVENT_LOG_RUN, 0);
    assert!(g.dma(DEV, 0x50_0000, Perm::READ).is_err());
    assert_eq!(
        g.poll_events(),
        vec![page_fault(1, 0x50_0000, EventFlags::empty())]
    );
    let s = g.iommu.stats();
    assert_eq!((s.events_logged, s.events_dropped), (5 + 511 + 1, 2));
}

#[test]
fn illegal_command_stops_processing() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    let bad_at = CMD_BUF + g.cmd_tail();
    g.queue_raw_no_tail([0xf << 60, 0]);
    let good = Command::CompletionWait {
        store: true,
        interrupt: false,
        fence: false,
        address: SEM,
        data: 0x99,
    };
    g.queue(good).unwrap();
    assert_ne!(g.sem(), 0x99, "nothing after the illegal command runs");
    assert_eq!(g.r32(offset::CMD_HEAD), bad_at - CMD_BUF);
    assert_eq!(g.r32(offset::STATUS) & status::CMD_BUF_RUN, 0);
    assert_eq!(
        g.poll_events(),
        vec![Event {
            code: EventCode::IllegalCommand,
            device_id: 0,
            domain_id: 0,
            flags: EventFlags::empty(),
            address: bad_at,
        }]
    );
    // More tail writes do nothing while stopped.
    g.w32(offset::CMD_TAIL, g.cmd_tail()).unwrap();
    assert_ne!(g.sem(), 0x99);
    // The guest replaces the bad entry and restarts by toggling CmdBufEn.
    let [lo, hi] = Command::InvalidateInterruptTable { device_id: 1 }.encode();
    g.store(bad_at, lo);
    g.store(bad_at + 8, hi);
    g.feature(control::CMD_BUF_EN, false).unwrap();
    g.feature(control::CMD_BUF_EN, true).unwrap();
    assert_eq!(g.sem(), 0x99);
    assert_eq!(g.r32(offset::CMD_HEAD), g.cmd_tail());
    assert_eq!(g.iommu.stats().illegal_commands, 1);
}

#[test]
fn reserved_bits_and_unsupported_opcodes_are_illegal() {
    let mut g = Guest::new(Config {
        invalidate_all: false,
        ..Config::default()
    });
    // Linux without IASup flushes per device and domain; the init sequence here uses
    // INVALIDATE_IOMMU_ALL, which is now illegal: check it is rejected.
    g.base(offset::CMD_BUF_BASE, CMD_BUF | (9 << LEN_SHIFT))
        .unwrap();
    g.base(offset::EVT_LOG_BASE, EVT_LOG | (9 << LEN_SHIFT))
        .unwrap();
    g.feature(
        control::CMD_BUF_EN | control::EVENT_LOG_EN | control::IOMMU_EN,
        true,
    )
    .unwrap();
    g.queue(Command::InvalidateIommuAll).unwrap();
    let evs = g.poll_events();
    assert_eq!(
        (evs.len(), evs[0].code, evs[0].address),
        (1, EventCode::IllegalCommand, CMD_BUF)
    );
    // COMPLETE_PPR_REQUEST needs PPRSup.
    let mut g = Guest::new(Config::default());
    g.linux_init();
    let ppr = Command::CompletePprRequest {
        device_id: 1,
        pasid: 0,
        gn: false,
        tag: 1,
        status: 0,
    };
    g.queue(ppr).unwrap();
    assert_eq!(g.poll_events()[0].code, EventCode::IllegalCommand);
    let mut g = Guest::new(Config {
        ppr: true,
        ..Config::default()
    });
    g.linux_init();
    g.queue(ppr).unwrap();
    g.completion_wait().unwrap();
    assert!(g.poll_events().is_empty());

    // INVALIDATE_IOMMU_PAGES with dword 0 bits 31:20 set is not executed (AMD-10: QEMU
    // executes it anyway).
    let h = viommu_shared::host::SharedSimHost::new(viommu_shared::host::SimHostConfig::amd_vi());
    g.iommu.attach_host(DEV, Box::new(h.clone())).unwrap();
    let pt = g.new_tables(3);
    g.attach(DEV, Dte::translated(4, pt.root, 3, Perm::RW))
        .unwrap();
    pt.map(&mut g, 0x1000, 0x50_0000, 0x1000, Perm::RW);
    let mut raw = Command::invalidate_pages(4, AddrRange::from_len(0x1000, 0x1000), false).encode();
    raw[0] |= 0xfff0_0000;
    g.queue_raw(raw).unwrap();
    assert_eq!(h.with(|h| h.mapping_count()), 0);
    assert_eq!(g.poll_events()[0].code, EventCode::IllegalCommand);
}

#[test]
fn command_and_device_table_hardware_errors() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    // Device table outside RAM: DEV_TAB_HARDWARE_ERROR with the entry's address.
    g.base(offset::DEV_TAB_BASE, 0x8000_0000 | 0x1ff).unwrap();
    assert_eq!(
        g.dma(DEV, 0x1000, Perm::WRITE).unwrap_err().kind,
        DmaFaultKind::Malformed
    );
    // A device table of 128 entries: DeviceIDs beyond it are illegal.
    g.base(offset::DEV_TAB_BASE, DEV_TAB).unwrap();
    assert!(g.dma(DEV, 0x2000, Perm::READ).is_err());
    // Reserved DTE bits.
    g.base(offset::DEV_TAB_BASE, DEV_TAB | 0x1ff).unwrap();
    let mut bad = Dte::translated(1, 0x60_0000, 3, Perm::RW);
    bad.0[0] |= 1 << 63;
    g.set_dte(DEV, bad);
    assert!(g.dma(DEV, 0x3000, Perm::READ).is_err());
    let ill = |flags, address| Event {
        code: EventCode::IllegalDevTableEntry,
        device_id: DEV,
        domain_id: 0,
        flags,
        address,
    };
    assert_eq!(
        g.poll_events(),
        vec![
            Event {
                code: EventCode::DevTabHardwareError,
                device_id: DEV,
                domain_id: 0,
                flags: EventFlags::RW | EventFlags::MASTER_ABORT,
                address: 0x8000_0000 + u64::from(DEV) * 32,
            },
            ill(EventFlags::empty(), 0x2000),
            ill(EventFlags::RZ, 0x3000),
        ]
    );
    // Command buffer outside RAM: COMMAND_HARDWARE_ERROR, processing stops.
    g.base(offset::CMD_BUF_BASE, 0x9000_0000 | (9 << LEN_SHIFT))
        .unwrap();
    g.w32(offset::CMD_HEAD, 0x40).unwrap();
    g.w32(offset::CMD_TAIL, 0x50).unwrap();
    let evs = g.poll_events();
    assert_eq!(
        (evs[0].code, evs[0].address),
        (EventCode::CommandHardwareError, 0x9000_0040)
    );
    assert_eq!(g.r32(offset::STATUS) & status::CMD_BUF_RUN, 0);
    // A completion-wait store outside RAM is a hardware error too.
    g.base(offset::CMD_BUF_BASE, CMD_BUF | (9 << LEN_SHIFT))
        .unwrap();
    g.feature(control::CMD_BUF_EN, false).unwrap();
    g.w32(offset::CMD_HEAD, g.cmd_tail()).unwrap();
    g.w32(offset::CMD_TAIL, g.cmd_tail()).unwrap();
    g.feature(control::CMD_BUF_EN, true).unwrap();
    let at = CMD_BUF + g.cmd_tail();
    g.queue(Command::CompletionWait {
        store: true,
        interrupt: false,
        fence: false,
        address: 0xa000_0000,
        data: 1,
    })
    .unwrap();
    let evs = g.poll_events();
    assert_eq!(
        (evs[0].code, evs[0].address),
        (EventCode::CommandHardwareError, at)
    );
    assert_eq!(g.iommu.stats().command_hardware_errors, 2);
}
