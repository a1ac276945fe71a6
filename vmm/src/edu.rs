//! An `edu`-compatible PCI device (QEMU `docs/specs/edu.rst`): identification, liveness check,
//! factorial, interrupt raise/acknowledge and a 4 KiB DMA engine. Its DMA goes through the
//! memory it is given — for a device behind the IOMMU, an
//! `IommuMemory<GuestMemoryMmap, DeviceIommu>`, so every access is translated (and faults
//! recorded) by the model — and its interrupts are MSIs.
//!
//! Where this differs from QEMU's device: DMA runs synchronously when the command register is
//! written (QEMU starts a 100 ms timer; guests poll the run bit either way); a transfer whose
//! device-side range lies outside the 4 KiB buffer is refused and counted (QEMU calls
//! `hw_error`, ending the VMM: the guest is hostile); DMA with bus mastering disabled is
//! refused, as QEMU's PCI core does; there is no INTx (MSI only).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use viommu_shared::regs::MsiSink;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::pci::{COMMAND_BUS_MASTER, ConfigSpace, PciFunction, PciId};

/// PCI vendor id of the edu device.
pub const VENDOR_ID: u16 = 0x1234;
/// PCI device id of the edu device.
pub const DEVICE_ID: u16 = 0x11e8;
/// Size of BAR 0.
pub const BAR0_SIZE: u64 = 1 << 20;
/// Value of the identification register (major 1, minor 0, "ed").
pub const ID: u32 = 0x0100_00ed;
/// Device-side address of the DMA buffer.
pub const DMA_START: u64 = 0x4_0000;
/// Size of the DMA buffer.
pub const DMA_SIZE: u64 = 4096;
/// Interrupt status bit raised after a factorial (with status bit 0x80).
pub const FACT_IRQ: u32 = 0x1;
/// Interrupt status bit raised after a DMA (with command bit 0x4).
pub const DMA_IRQ: u32 = 0x100;

/// Register offsets (edu.rst).
pub mod reg {
    /// Identification (RO).
    pub const ID: u64 = 0x00;
    /// Liveness check: reads the inverse of what was written.
    pub const LIVENESS: u64 = 0x04;
    /// Factorial computation.
    pub const FACTORIAL: u64 = 0x08;
    /// Status: 0x01 computing (RO), 0x80 raise interrupt after factorial.
    pub const STATUS: u64 = 0x20;
    /// Interrupt status (RO).
    pub const IRQ_STATUS: u64 = 0x24;
    /// Interrupt raise: ORs the value into the interrupt status.
    pub const IRQ_RAISE: u64 = 0x60;
    /// Interrupt acknowledge: clears the value's bits.
    pub const IRQ_ACK: u64 = 0x64;
    /// DMA source address.
    pub const DMA_SRC: u64 = 0x80;
    /// DMA destination address.
    pub const DMA_DST: u64 = 0x88;
    /// DMA transfer count.
    pub const DMA_COUNT: u64 = 0x90;
    /// DMA command: 0x1 start, 0x2 direction (1 = device to RAM), 0x4 interrupt when done.
    pub const DMA_CMD: u64 = 0x98;
}

const STATUS_COMPUTING: u32 = 0x01;
const STATUS_IRQFACT: u32 = 0x80;
const CMD_RUN: u64 = 0x1;
const CMD_TO_RAM: u64 = 0x2;
const CMD_IRQ: u64 = 0x4;

/// Counters of one edu device, shared with the VMM for its exit report.
#[derive(Debug, Default)]
pub struct EduCounters {
    /// DMA transfers that completed.
    pub dma_ok: AtomicU64,
    /// DMA transfers whose memory access failed (an IOMMU fault or unbacked address).
    pub dma_failed: AtomicU64,
    /// DMA commands refused (device range outside the buffer, or bus mastering disabled).
    pub dma_refused: AtomicU64,
    /// MSIs sent.
    pub msis: AtomicU64,
    /// Interrupts raised while MSI was disabled (not delivered: the device has no INTx).
    pub irqs_dropped: AtomicU64,
}

/// The edu device; `M` is the memory its DMA sees (IOVAs when behind an IOMMU).
pub struct Edu<M> {
    config: ConfigSpace,
    dma: M,
    msi: Arc<dyn MsiSink>,
    counters: Arc<EduCounters>,
    dma_mask: u64,
    liveness: u32,
    fact: u32,
    status: u32,
    irq_status: u32,
    src: u64,
    dst: u64,
    count: u64,
    cmd: u64,
    buffer: Vec<u8>,
}

impl<M> std::fmt::Debug for Edu<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edu")
            .field("irq_status", &self.irq_status)
            .field("cmd", &self.cmd)
            .finish_non_exhaustive()
    }
}

impl<M: Bytes<GuestAddress, E = GuestMemoryError> + Send> Edu<M> {
    /// A device doing DMA through `dma`, signalling MSIs to `msi`. Like QEMU's, DMA addresses
    /// are clamped to 28 bits (its default `dma_mask`).
    pub fn new(dma: M, msi: Arc<dyn MsiSink>) -> Edu<M> {
        let mut config = ConfigSpace::new(PciId {
            vendor: VENDOR_ID,
            device: DEVICE_ID,
            class: 0x00_ff00,
            revision: 0x10,
        });
        config.add_mem_bar(0, BAR0_SIZE as u32);
        config.set_interrupt_pin(1);
        config.add_msi_capability();
        Edu {
            config,
            dma,
            msi,
            counters: Arc::default(),
            dma_mask: (1 << 28) - 1,
            liveness: 0,
            fact: 0,
            status: 0,
            irq_status: 0,
            src: 0,
            dst: 0,
            count: 0,
            cmd: 0,
            buffer: vec![0; DMA_SIZE as usize],
        }
    }

    /// The device's counters.
    pub fn counters(&self) -> Arc<EduCounters> {
        self.counters.clone()
    }

    fn raise(&mut self, bits: u32) {
        self.irq_status |= bits;
        if self.irq_status == 0 {
            return;
        }
        match self.config.msi() {
            Some(m) => {
                self.counters.msis.fetch_add(1, Ordering::Relaxed);
                self.msi.send(m);
            }
            None => {
                self.counters.irqs_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Offset of `[addr, addr + len)` in the DMA buffer, if it lies inside.
    fn buffer_range(addr: u64, len: u64) -> Option<usize> {
        let off = addr.checked_sub(DMA_START)?;
        (off.checked_add(len)? <= DMA_SIZE).then_some(off as usize)
    }

    fn run_dma(&mut self) {
        let len = self.count;
        let to_ram = self.cmd & CMD_TO_RAM != 0;
        let (dev, ram) = if to_ram {
            (self.src, self.dst)
        } else {
            (self.dst, self.src)
        };
        let bus_master = self.config.command() & COMMAND_BUS_MASTER != 0;
        match Self::buffer_range(dev, len) {
            Some(off) if bus_master => {
                let ram = GuestAddress(ram & self.dma_mask);
                let buf = &mut self.buffer[off..off + len as usize];
                let r = if to_ram {
                    self.dma.write_slice(buf, ram)
                } else {
                    self.dma.read_slice(buf, ram)
                };
                let c = if r.is_ok() {
                    &self.counters.dma_ok
                } else {
                    &self.counters.dma_failed
                };
                c.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.counters.dma_refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.cmd &= !CMD_RUN;
        if self.cmd & CMD_IRQ != 0 {
            self.raise(DMA_IRQ);
        }
    }

    /// Register read (BAR 0).
    pub fn read(&self, offset: u64, len: usize) -> u64 {
        let ok = if offset < 0x80 {
            len == 4
        } else {
            len == 4 || len == 8
        };
        if !ok {
            return u64::MAX;
        }
        let v = match offset {
            reg::ID => u64::from(ID),
            reg::LIVENESS => u64::from(self.liveness),
            reg::FACTORIAL => u64::from(self.fact),
            reg::STATUS => u64::from(self.status),
            reg::IRQ_STATUS => u64::from(self.irq_status),
            reg::DMA_SRC => self.src,
            reg::DMA_DST => self.dst,
            reg::DMA_COUNT => self.count,
            reg::DMA_CMD => self.cmd,
            _ => u64::MAX,
        };
        if len == 4 { v & 0xffff_ffff } else { v }
    }

    /// Register write (BAR 0).
    pub fn write(&mut self, offset: u64, len: usize, value: u64) {
        let ok = if offset < 0x80 {
            len == 4
        } else {
            len == 4 || len == 8
        };
        if !ok {
            return;
        }
        let v32 = value as u32;
        match offset {
            reg::LIVENESS => self.liveness = !v32,
            // Computed at once: the computing bit is never seen set.
            reg::FACTORIAL if self.status & STATUS_COMPUTING == 0 => {
                self.fact = factorial(v32);
                if self.status & STATUS_IRQFACT != 0 {
                    self.raise(FACT_IRQ);
                }
            }
            reg::STATUS => {
                self.status = (self.status & !STATUS_IRQFACT) | (v32 & STATUS_IRQFACT);
            }
            reg::IRQ_RAISE => self.raise(v32),
            reg::IRQ_ACK => self.irq_status &= !v32,
            // Registers are not writable while a transfer runs (never observable here:
            // transfers complete within the command write).
            reg::DMA_SRC => self.src = value,
            reg::DMA_DST => self.dst = value,
            reg::DMA_COUNT => self.count = value,
            reg::DMA_CMD if value & CMD_RUN != 0 => {
                self.cmd = value;
                self.run_dma();
            }
            _ => {}
        }
    }
}

/// `n!` modulo 2^32 (QEMU's edu computes it in a 32-bit register), in bounded time: from
/// 34 on the product has at least 32 factors of two, so it is 0.
fn factorial(n: u32) -> u32 {
    if n >= 34 {
        return 0;
    }
    (1..=n).fold(1u32, |a, x| a.wrapping_mul(x))
}

fn le(data: &[u8]) -> u64 {
    data.iter()
        .take(8)
        .enumerate()
        .fold(0, |a, (i, b)| a | (u64::from(*b) << (8 * i)))
}

impl<M: Bytes<GuestAddress, E = GuestMemoryError> + Send> PciFunction for Edu<M> {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_write(&mut self, off: usize, len: usize, value: u32) {
        self.config.write(off, len, value);
    }

    fn bar_read(&mut self, _bar: usize, offset: u64, data: &mut [u8]) {
        let v = self.read(offset, data.len());
        for (i, b) in data.iter_mut().enumerate() {
            *b = (v >> (8 * i)) as u8;
        }
    }

    fn bar_write(&mut self, _bar: usize, offset: u64, data: &[u8]) {
        self.write(offset, data.len(), le(data));
    }

    fn bar_sizes(&self) -> &[(usize, u64)] {
        &[(0, BAR0_SIZE)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::Perm;
    use viommu_shared::pt::TableBuilder;
    use viommu_shared::regs::{Msi, RecordingMsiSink};
    use viommu_shared::testing::guest_memory;
    use viommu_vtd::regs::GCMD_TE;
    use viommu_vtd::testing::{GuestDriver, entry};
    use viommu_vtd::{Config, SecondStage, Vtd};
    use vm_memory::iommu::IommuMemory;

    const BDF: u32 = 0x08;

    fn enable(edu: &mut impl PciFunction) {
        // Memory space + bus master; MSI at 0xfee00000 / vector 0x45.
        edu.config_write(0x04, 2, 0x6);
        let msi = 0x40;
        edu.config_write(msi + 4, 4, 0xfee0_0000);
        edu.config_write(msi + 12, 2, 0x45);
        edu.config_write(msi + 2, 2, 1);
    }

    #[test]
    fn registers_follow_the_edu_spec_without_an_iommu() {
        let mem = guest_memory(&[(0, 1 << 20)]);
        let sink = Arc::new(RecordingMsiSink::new());
        let mut edu = Edu::new(mem.clone(), sink.clone());
        enable(&mut edu);
        assert_eq!(edu.read(reg::ID, 4), 0x0100_00ed);
        edu.write(reg::LIVENESS, 4, 0x1234_5678);
        assert_eq!(edu.read(reg::LIVENESS, 4), 0xedcb_a987);
        // Wrong widths are ignored / read as ones.
        assert_eq!(edu.read(reg::ID, 2), u64::MAX);
        edu.write(reg::FACTORIAL, 4, 5);
        assert_eq!(edu.read(reg::FACTORIAL, 4), 120);
        // 33! has 31 factors of two, so 33! mod 2^32 = 2^31; 34! mod 2^32 = 0, the
        // shortcut for every larger operand.
        assert_eq!(factorial(33), 1 << 31);
        assert_eq!((1..=34u32).fold(1u32, |a, x| a.wrapping_mul(x)), 0);
        edu.write(reg::FACTORIAL, 4, u64::from(u32::MAX));
        assert_eq!(edu.read(reg::FACTORIAL, 4), 0);
        edu.write(reg::STATUS, 4, 0x80);
        edu.write(reg::FACTORIAL, 4, 3);
        assert_eq!(edu.read(reg::IRQ_STATUS, 4), 1);
        edu.write(reg::IRQ_ACK, 4, 1);
        edu.write(reg::IRQ_RAISE, 4, 0x20);
        assert_eq!(edu.read(reg::IRQ_STATUS, 4), 0x20);
        let m = Msi {
            address: 0xfee0_0000,
            data: 0x45,
        };
        assert_eq!(sink.take(), vec![m, m]);
        edu.write(reg::IRQ_ACK, 4, 0x20);
        assert_eq!(edu.read(reg::IRQ_STATUS, 4), 0);

        // RAM -> device -> RAM.
        mem.write_slice(b"hello edu", GuestAddress(0x1000)).unwrap();
        edu.write(reg::DMA_SRC, 8, 0x1000);
        edu.write(reg::DMA_DST, 8, DMA_START);
        edu.write(reg::DMA_COUNT, 8, 9);
        edu.write(reg::DMA_CMD, 8, CMD_RUN);
        edu.write(reg::DMA_SRC, 8, DMA_START);
        edu.write(reg::DMA_DST, 8, 0x2000);
        edu.write(reg::DMA_CMD, 8, CMD_RUN | CMD_TO_RAM | CMD_IRQ);
        assert_eq!(edu.read(reg::DMA_CMD, 8) & CMD_RUN, 0);
        let mut out = [0u8; 9];
        mem.read_slice(&mut out, GuestAddress(0x2000)).unwrap();
        assert_eq!(&out, b"hello edu");
        assert_eq!(edu.read(reg::IRQ_STATUS, 4), u64::from(DMA_IRQ));
        // Device range outside the buffer: refused, nothing written.
        edu.write(reg::DMA_SRC, 8, DMA_START + 4090);
        edu.write(reg::DMA_DST, 8, 0x3000);
        edu.write(reg::DMA_CMD, 8, CMD_RUN | CMD_TO_RAM);
        let c = edu.counters();
        assert_eq!(c.dma_ok.load(Ordering::Relaxed), 2);
        assert_eq!(c.dma_refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn dma_is_translated_by_vtd_and_faults_when_unmapped() {
        let mem = guest_memory(&[(0, 64 << 20)]);
        let sink = Arc::new(RecordingMsiSink::new());
        let vtd = Arc::new(Vtd::new(Config::default(), mem.clone(), sink.clone()));
        // A Linux-like driver maps IOVA 0x10_0000 -> GPA 0x30_0000 for the device.
        let mut drv = GuestDriver::new(&vtd, mem.clone(), 0x100_0000, 0x180_0000);
        drv.set_root_table(false).unwrap();
        drv.gcmd(GCMD_TE, true).unwrap();
        let format = SecondStage::new(4, 48, false, true, true);
        let mut tb = TableBuilder::new(&format, &mem, 0x180_0000, 0x300_0000).unwrap();
        tb.map_range(0x10_0000, 0x30_0000, 0x1000, Perm::RW)
            .unwrap();
        drv.write_context(BDF as u16, entry::context(tb.root(), 2, 1, 0, false))
            .unwrap();
        let dma = IommuMemory::new(mem.clone(), vtd.device_iommu(BDF), true, ());
        let mut edu = Edu::new(dma, sink.clone());
        enable(&mut edu);
        mem.write_slice(&[0xab; 64], GuestAddress(0x30_0000))
            .unwrap();
        edu.write(reg::DMA_SRC, 8, 0x10_0000);
        edu.write(reg::DMA_DST, 8, DMA_START);
        edu.write(reg::DMA_COUNT, 8, 64);
        edu.write(reg::DMA_CMD, 8, CMD_RUN);
        edu.write(reg::DMA_SRC, 8, DMA_START);
        edu.write(reg::DMA_DST, 8, 0x10_0800);
        edu.write(reg::DMA_CMD, 8, CMD_RUN | CMD_TO_RAM);
        let mut out = [0u8; 64];
        mem.read_slice(&mut out, GuestAddress(0x30_0800)).unwrap();
        assert_eq!(out, [0xab; 64]);
        assert!(vtd.fault_records().is_empty());
        // Unmapped IOVA: the DMA fails and the model records a fault.
        edu.write(reg::DMA_DST, 8, 0x20_0000);
        edu.write(reg::DMA_CMD, 8, CMD_RUN | CMD_TO_RAM);
        let c = edu.counters();
        assert_eq!(c.dma_ok.load(Ordering::Relaxed), 2);
        assert_eq!(c.dma_failed.load(Ordering::Relaxed), 1);
        let faults = vtd.fault_records();
        assert_eq!(faults.len(), 1);
        assert_eq!(faults[0].source_id, BDF as u16);
    }
}
