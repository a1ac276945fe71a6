//! The register file: masks, and 64-bit base registers written as two 32-bit halves in
//! either order (or byte by byte) with tables above 4 GiB.

use std::sync::Arc;
use viommu_amd_vi::regs::{LEN_SHIFT, control, offset, status};
use viommu_amd_vi::{AmdVi, Command, Config, Dte, EventCode};
use viommu_shared::Perm;
use viommu_shared::dma::{DmaRequest, DmaTranslate};
use viommu_shared::regs::RecordingMsiSink;
use viommu_shared::testing::guest_memory;
use vm_memory::{Bytes, GuestAddress};

const HIGH: u64 = 0x1_0000_0000;
const DEV_TAB: u64 = HIGH;
const CMD_BUF: u64 = HIGH + 0x20_0000;
const EVT_LOG: u64 = HIGH + 0x20_2000;
const SEM: u64 = HIGH + 0x20_4000;

#[derive(Clone, Copy, Debug)]
enum Split {
    LowFirst,
    HighFirst,
    Bytes,
}

fn write_base(iommu: &AmdVi, off: u64, v: u64, how: Split) {
    match how {
        Split::LowFirst => {
            iommu.mmio_write(off, 4, v & 0xffff_ffff).unwrap();
            iommu.mmio_write(off + 4, 4, v >> 32).unwrap();
        }
        Split::HighFirst => {
            iommu.mmio_write(off + 4, 4, v >> 32).unwrap();
            iommu.mmio_write(off, 4, v & 0xffff_ffff).unwrap();
        }
        Split::Bytes => {
            for i in 0..8 {
                iommu.mmio_write(off + i, 1, (v >> (8 * i)) & 0xff).unwrap();
            }
        }
    }
}

#[test]
fn split_base_writes_latch_in_any_order() {
    for how in [Split::LowFirst, Split::HighFirst, Split::Bytes] {
        let mem = guest_memory(&[(0, 0x100_0000), (HIGH, 0x40_0000)]);
        let iommu = AmdVi::new(
            Config::default(),
            mem.clone(),
            Arc::new(RecordingMsiSink::new()),
        );
        // Stale values first, as after firmware: the new value must replace both halves.
        iommu
            .mmio_write(offset::DEV_TAB_BASE, 8, 0x0000_0002_0000_0000)
            .unwrap();
        write_base(&iommu, offset::DEV_TAB_BASE, DEV_TAB | 0x1ff, how);
        write_base(
            &iommu,
            offset::CMD_BUF_BASE,
            CMD_BUF | (9 << LEN_SHIFT),
            how,
        );
        write_base(
            &iommu,
            offset::EVT_LOG_BASE,
            EVT_LOG | (8 << LEN_SHIFT),
            how,
        );
        write_base(
            &iommu,
            offset::PPR_LOG_BASE,
            (HIGH + 0x30_0000) | (9 << LEN_SHIFT),
            how,
        );
        write_base(&iommu, offset::EXCL_BASE, (HIGH + 0x3) | 0x31_0000, how);
        write_base(&iommu, offset::EXCL_LIMIT, HIGH + 0x32_0fff, how);
        assert_eq!(
            iommu.mmio_read(offset::DEV_TAB_BASE, 8),
            DEV_TAB | 0x1ff,
            "{how:?}"
        );
        assert_eq!(
            iommu.mmio_read(offset::PPR_LOG_BASE, 8),
            (HIGH + 0x30_0000) | (9 << LEN_SHIFT)
        );
        assert_eq!(iommu.mmio_read(offset::EXCL_BASE, 8), HIGH + 0x31_0003);
        assert_eq!(iommu.mmio_read(offset::EXCL_LIMIT, 8), HIGH + 0x32_0000);
        iommu
            .mmio_write(
                offset::CONTROL,
                8,
                control::IOMMU_EN | control::CMD_BUF_EN | control::EVENT_LOG_EN,
            )
            .unwrap();
        // The command buffer above 4 GiB is used.
        let [lo, hi] = Command::CompletionWait {
            store: true,
            interrupt: false,
            fence: false,
            address: SEM,
            data: 7,
        }
        .encode();
        mem.write_obj(lo, GuestAddress(CMD_BUF)).unwrap();
        mem.write_obj(hi, GuestAddress(CMD_BUF + 8)).unwrap();
        iommu.mmio_write(offset::CMD_TAIL, 4, 0x10).unwrap();
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(SEM)).unwrap(),
            7,
            "{how:?}"
        );
        // The device table above 4 GiB is used: device 5 blocked, its fault logged above
        // 4 GiB.
        Dte::untranslated(3, Perm::empty())
            .write(&mem, DEV_TAB + 5 * 32)
            .unwrap();
        let req = DmaRequest {
            requester_id: 5,
            pasid: None,
            iova: 0x1000,
            perm: Perm::READ,
        };
        assert!(iommu.translate(&req).is_err());
        assert!(
            iommu
                .translate(&DmaRequest {
                    requester_id: 6,
                    ..req
                })
                .is_ok()
        );
        assert_eq!(iommu.mmio_read(offset::EVT_TAIL, 4), 0x10);
        let q0: u64 = mem.read_obj(GuestAddress(EVT_LOG)).unwrap();
        assert_eq!(q0 >> 60, EventCode::IoPageFault as u64, "{how:?}");
    }
}

#[test]
fn masks_and_unmapped_offsets() {
    let mem = guest_memory(&[(0, 0x100_0000)]);
    let iommu = AmdVi::new(Config::default(), mem, Arc::new(RecordingMsiSink::new()));
    let efr = iommu.efr();
    let cases = [
        (offset::DEV_TAB_BASE, 0x000f_ffff_ffff_f1ff),
        (offset::CMD_BUF_BASE, 0x0f0f_ffff_ffff_f000),
        (offset::EVT_LOG_BASE, 0x0f0f_ffff_ffff_f000),
        (offset::EXCL_BASE, 0x000f_ffff_ffff_f003),
        (offset::EXCL_LIMIT, 0x000f_ffff_ffff_f000),
        (offset::EXT_FEATURES, efr),
        (offset::PPR_LOG_BASE, 0x0f0f_ffff_ffff_f000),
        (offset::CMD_HEAD, 0x7_fff0),
        (offset::EVT_HEAD, 0x7_fff0),
        (offset::EVT_TAIL, 0x7_fff0),
        (offset::PPR_HEAD, 0x7_fff0),
        (offset::PPR_TAIL, 0x7_fff0),
    ];
    for (off, want) in cases {
        iommu.mmio_write(off, 8, u64::MAX).unwrap();
        assert_eq!(iommu.mmio_read(off, 8), want, "{off:#x}");
        iommu.mmio_write(off, 8, 0).unwrap();
    }
    // Control: only defined bits, features not advertised read as zero.
    iommu.mmio_write(offset::CONTROL, 8, u64::MAX).unwrap();
    assert_eq!(iommu.mmio_read(offset::CONTROL, 8), control::WRITABLE);
    // Run bits are read-only; W1C bits clear; IommuEn + CmdBufEn + EventLogEn run.
    let st = iommu.mmio_read(offset::STATUS, 8);
    assert_eq!(st, status::CMD_BUF_RUN | status::EVENT_LOG_RUN);
    iommu.mmio_write(offset::STATUS, 8, u64::MAX).unwrap();
    assert_eq!(iommu.mmio_read(offset::STATUS, 8), st);
    // 32-bit reads of 64-bit registers, partial reads.
    iommu
        .mmio_write(offset::DEV_TAB_BASE, 8, 0x1234_5678_9abc_d1ff)
        .unwrap();
    assert_eq!(iommu.mmio_read(offset::DEV_TAB_BASE + 4, 4), 0x0004_5678);
    assert_eq!(iommu.mmio_read(offset::DEV_TAB_BASE, 2), 0xd1ff);
    // Unmapped, beyond the window, misaligned or odd-sized: zero, no effect.
    for (off, len) in [
        (0x40, 8),
        (0x1000, 4),
        (0x3ff8, 8),
        (0x4000, 8),
        (u64::MAX, 1),
        (u64::MAX - 3, 4),
        (offset::CONTROL + 1, 4),
        (offset::CONTROL, 3),
        (offset::CONTROL, 16),
        (offset::CONTROL, 0),
    ] {
        assert_eq!(iommu.mmio_read(off, len), 0, "{off:#x}/{len}");
        iommu.mmio_write(off, len, u64::MAX).unwrap();
    }
    assert_eq!(iommu.mmio_read(offset::CONTROL, 8), control::WRITABLE);
    assert_eq!(iommu.mmio_read(offset::EXT_FEATURES, 8), efr);
}

#[test]
fn vm_device_bus_access() {
    use vm_device::DeviceMmio;
    use vm_device::bus::MmioAddress;
    let mem = guest_memory(&[(0, 0x100_0000)]);
    let iommu = AmdVi::new(Config::default(), mem, Arc::new(RecordingMsiSink::new()));
    let base = MmioAddress(0xfed8_0000);
    DeviceMmio::mmio_write(
        &iommu,
        base,
        offset::DEV_TAB_BASE,
        &0x1234_5000u32.to_le_bytes(),
    );
    DeviceMmio::mmio_write(&iommu, base, offset::DEV_TAB_BASE + 4, &[0x01, 0, 0, 0]);
    assert_eq!(iommu.mmio_read(offset::DEV_TAB_BASE, 8), 0x1_1234_5000);
    let mut efr = [0u8; 8];
    DeviceMmio::mmio_read(&iommu, base, offset::EXT_FEATURES, &mut efr);
    assert_eq!(u64::from_le_bytes(efr), iommu.efr());
    let mut odd = [0xffu8; 3];
    DeviceMmio::mmio_read(&iommu, base, offset::EXT_FEATURES, &mut odd);
    assert_eq!(odd, [0; 3]);
    DeviceMmio::mmio_write(&iommu, base, offset::DEV_TAB_BASE, &[0xff; 3]);
    assert_eq!(iommu.mmio_read(offset::DEV_TAB_BASE, 8), 0x1_1234_5000);
    // Through the shared adapter too (MmioHandler).
    let adapter = viommu_shared::regs::MmioAdapter::new(
        iommu.clone(),
        viommu_shared::regs::ByteOrder::Little,
    );
    DeviceMmio::mmio_write(&adapter, base, offset::CONTROL, &[1]);
    assert_eq!(iommu.mmio_read(offset::CONTROL, 8), control::IOMMU_EN);
    assert_eq!(iommu.mmio_read(offset::STATUS, 4) & status::CMD_BUF_RUN, 0);
}
