//! Linux's init and attach sequences (anchors-x86 §3.2) replayed through `mmio_write`, with
//! the tables in guest memory.

mod common;

use common::*;
use viommu_amd_vi::regs::{control, efr, offset, status};
use viommu_amd_vi::{Command, Config, DeviceMode, Dte, EventCode, EventFlags, PciCapability};
use viommu_shared::Perm;
use viommu_shared::dma::DmaFaultKind;
use viommu_shared::regs::Msi;

#[test]
fn discovery_values() {
    let g = Guest::new(Config::default());
    let cap = g.iommu.pci_capability();
    assert_eq!(cap, PciCapability::new(&Config::default()));
    // Linux iommu_init_pci: NpCache (bit 26) -> strict mode; EFRSup (27).
    assert_eq!((cap.header >> 26) & 3, 3);
    assert_eq!(cap.header & 0xff, 0x0f);
    assert_eq!(
        u64::from(cap.base_low & !1) | (u64::from(cap.base_high) << 32),
        0xfed8_0000
    );
    let efr_reg = g.r64(offset::EXT_FEATURES);
    assert_eq!(efr_reg, g.iommu.efr());
    assert_eq!(
        efr_reg,
        efr::PREF_SUP | efr::IA_SUP | efr::GA_SUP | efr::XT_SUP | (2 << efr::HATS_SHIFT)
    );
    // The same value in the IVHD.
    assert_eq!(g.iommu.ivrs(0x40).efr, efr_reg);
    // Reset state: everything zero but the EFR; DMA untranslated.
    for off in [
        offset::CONTROL,
        offset::STATUS,
        offset::CMD_HEAD,
        offset::EVT_TAIL,
    ] {
        assert_eq!(g.r64(off), 0, "{off:#x}");
    }
    assert_eq!(g.iommu.device_mode(0x10), DeviceMode::IommuDisabled);
    let t = g.dma(0x10, 0x1234_5678, Perm::WRITE).unwrap();
    assert_eq!(t.addr + (0x1234_5678 - t.iova), 0x1234_5678);
}

#[test]
fn init_sequence_flush_and_attach() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    // Two commands ran: INVALIDATE_IOMMU_ALL and COMPLETION_WAIT.
    assert_eq!(g.r32(offset::CMD_HEAD), 0x20);
    assert_eq!(g.r32(offset::CMD_TAIL), 0x20);
    assert_eq!(g.sem(), 1);
    assert_eq!(g.iommu.stats().commands, 2);
    let c = g.r64(offset::CONTROL);
    assert_eq!(
        c & (control::IOMMU_EN
            | control::CMD_BUF_EN
            | control::EVENT_LOG_EN
            | control::EVENT_INT_EN),
        control::IOMMU_EN | control::CMD_BUF_EN | control::EVENT_LOG_EN | control::EVENT_INT_EN
    );
    assert_eq!((c >> 5) & 7, 4, "InvTimeOut stored");
    // Every device is blocked (Linux's V|TV entries) and its DMA faults with an event.
    let dev = 0x0118; // 01:03.0
    assert_eq!(
        g.iommu.device_mode(dev),
        DeviceMode::Untranslated {
            domain_id: 0,
            perm: Perm::empty(),
            suppress_faults: false
        }
    );
    assert!(g.msi.take().is_empty());
    let f = g.dma(dev, 0x1000, Perm::READ).unwrap_err();
    assert_eq!(f.kind, DmaFaultKind::Blocked);
    let evs = g.poll_events();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].code, EventCode::IoPageFault);
    assert_eq!(evs[0].device_id, dev);
    assert_eq!(g.msi.take(), vec![MSI]);
    assert_ne!(g.r32(offset::STATUS) & status::EVENT_LOG_INT, 0);
    g.w32(offset::STATUS, status::EVENT_LOG_INT).unwrap();
    assert_eq!(g.r32(offset::STATUS) & status::EVENT_LOG_INT, 0);

    // Attach to a 3-level domain 7 mapping IOVA 0x10_0000 -> 0x30_0000.
    let pt = g.new_tables(3);
    pt.map(&mut g, 0x10_0000, 0x30_0000, 0x1000, Perm::RW);
    g.attach(dev, Dte::translated(7, pt.root, 3, Perm::RW))
        .unwrap();
    let t = g.dma(dev, 0x10_0abc, Perm::WRITE).unwrap();
    assert_eq!(
        (t.domain, t.iova, t.addr, t.size),
        (7, 0x10_0000, 0x30_0000, 0x1000)
    );
    assert!(g.poll_events().is_empty());
    // Identity domain (Mode 0, IR|IW): untranslated.
    g.attach(dev, Dte::untranslated(8, Perm::RW)).unwrap();
    let t = g.dma(dev, 0x77_7000, Perm::WRITE).unwrap();
    assert_eq!(t.addr, t.iova);
    assert!(t.iova <= 0x77_7000 && 0x77_7000 - t.iova < t.size);
    // Detach (clear_dte_entry: V|TV only): blocked again.
    g.attach(dev, Dte::untranslated(0, Perm::empty())).unwrap();
    assert!(g.dma(dev, 0x10_0000, Perm::READ).is_err());
    assert_eq!(g.iommu.stats().illegal_commands, 0);
}

#[test]
fn completion_wait_interrupt_honours_com_wait_int_en() {
    let mut g = Guest::new(Config::default());
    g.linux_init();
    g.msi.take();
    let cw = Command::CompletionWait {
        store: false,
        interrupt: true,
        fence: true,
        address: 0,
        data: 0,
    };
    g.queue(cw).unwrap();
    // Status set, but no MSI: ComWaitIntEn is clear.
    assert_ne!(g.r32(offset::STATUS) & status::COM_WAIT_INT, 0);
    assert!(g.msi.take().is_empty());
    g.w32(offset::STATUS, status::COM_WAIT_INT).unwrap();
    assert_eq!(g.r32(offset::STATUS) & status::COM_WAIT_INT, 0);
    g.feature(control::COM_WAIT_INT_EN, true).unwrap();
    g.queue(cw).unwrap();
    assert_eq!(g.msi.take(), vec![MSI]);
    // With the function's MSI disabled nothing is sent, the status bit still is set.
    g.iommu.set_msi(None);
    g.w32(offset::STATUS, status::COM_WAIT_INT).unwrap();
    g.queue(cw).unwrap();
    assert!(g.msi.take().is_empty());
    assert_ne!(g.r32(offset::STATUS) & status::COM_WAIT_INT, 0);
    g.iommu.set_msi(Some(Msi {
        address: 0xfee0_1000,
        data: 1,
    }));
    assert_eq!(g.iommu.msi().map(|m| m.data), Some(1));
}

#[test]
fn commands_wait_for_iommu_enable() {
    let mut g = Guest::new(Config::default());
    g.base(offset::CMD_BUF_BASE, CMD_BUF | (9 << 56)).unwrap();
    g.feature(control::CMD_BUF_EN, true).unwrap();
    g.queue(Command::CompletionWait {
        store: true,
        interrupt: false,
        fence: false,
        address: SEM,
        data: 5,
    })
    .unwrap();
    // CmdBufRun needs IommuEn (anchors-x86 AMD-04).
    assert_eq!(g.r32(offset::STATUS) & status::CMD_BUF_RUN, 0);
    assert_eq!(g.sem(), 0);
    assert_eq!(g.r32(offset::CMD_HEAD), 0);
    g.feature(control::IOMMU_EN, true).unwrap();
    assert_ne!(g.r32(offset::STATUS) & status::CMD_BUF_RUN, 0);
    assert_eq!(g.sem(), 5);
    assert_eq!(g.r32(offset::CMD_HEAD), 0x10);
    // Disabling clears the run bits.
    g.feature(control::IOMMU_EN, false).unwrap();
    assert_eq!(g.r32(offset::STATUS) & status::CMD_BUF_RUN, 0);
    assert_eq!(g.iommu.device_mode(1), DeviceMode::IommuDisabled);
    let _ = EventFlags::empty();
}
