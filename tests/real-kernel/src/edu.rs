//! QEMU's `edu` device (1234:11e8) driven through vfio-pci: BAR0 registers and its DMA
//! engine (QEMU hw/misc/edu.c).
//!
//! BAR0: 0x00 ident (0x010000ed), 0x04 liveness (reads back the complement), 0x80 DMA source,
//! 0x88 DMA destination, 0x90 DMA count, 0x98 DMA command (bit 0 start/busy, bit 1 direction:
//! 1 = device buffer to RAM). The device buffer is at 0x40000 (4 KiB). Transfers are 2048
//! bytes: a 4096-byte transfer ending at the end of the buffer kills QEMU 7.2 (off-by-one in
//! `edu_check_range`, reference real-kernel.md §3). DMA addresses are masked to 28 bits, so
//! IOVAs stay below 256 MiB.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vfio_bindings::bindings::vfio::{VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX};
use vfio_ioctls::{VfioContainer, VfioDevice};

/// Address of the device's DMA buffer in its own address space.
pub const BUFFER: u64 = 0x40000;
/// Bytes per transfer.
pub const XFER: u64 = 2048;
/// `edu` identification register value (version 1.0).
pub const IDENT: u32 = 0x0100_00ed;

const REG_IDENT: u64 = 0x00;
const REG_LIVENESS: u64 = 0x04;
const REG_DMA_SRC: u64 = 0x80;
const REG_DMA_DST: u64 = 0x88;
const REG_DMA_CNT: u64 = 0x90;
const REG_DMA_CMD: u64 = 0x98;
const CMD_START: u64 = 1;
const CMD_TO_RAM: u64 = 2;
/// PCI command register: memory space + bus master.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEM_MASTER: u16 = 0x6;

/// The device, opened through a type1 v2 container (vfio-ioctls attaches its group).
pub struct Edu {
    dev: VfioDevice,
}

impl Edu {
    /// Opens `bdf` through `container` and enables memory space and bus mastering.
    pub fn open(bdf: &str, container: Arc<VfioContainer>) -> Result<Edu, String> {
        let path = Path::new("/sys/bus/pci/devices").join(bdf);
        let dev = VfioDevice::new(&path, container, false)
            .map_err(|e| format!("VfioDevice::new({}): {e}", path.display()))?;
        let mut id = [0u8; 4];
        dev.region_read(VFIO_PCI_CONFIG_REGION_INDEX, &mut id, 0);
        let id = u32::from_le_bytes(id);
        if id != 0x11e8_1234 {
            return Err(format!(
                "{bdf} is {:04x}:{:04x}, not edu",
                id & 0xffff,
                id >> 16
            ));
        }
        let mut cmd = [0u8; 2];
        dev.region_read(VFIO_PCI_CONFIG_REGION_INDEX, &mut cmd, PCI_COMMAND);
        let cmd = u16::from_le_bytes(cmd) | PCI_COMMAND_MEM_MASTER;
        dev.region_write(
            VFIO_PCI_CONFIG_REGION_INDEX,
            &cmd.to_le_bytes(),
            PCI_COMMAND,
        );
        Ok(Edu { dev })
    }

    fn read32(&self, reg: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev
            .region_read(VFIO_PCI_BAR0_REGION_INDEX, &mut b, reg);
        u32::from_le_bytes(b)
    }

    fn write32(&self, reg: u64, v: u32) {
        self.dev
            .region_write(VFIO_PCI_BAR0_REGION_INDEX, &v.to_le_bytes(), reg);
    }

    fn read64(&self, reg: u64) -> u64 {
        let mut b = [0u8; 8];
        self.dev
            .region_read(VFIO_PCI_BAR0_REGION_INDEX, &mut b, reg);
        u64::from_le_bytes(b)
    }

    fn write64(&self, reg: u64, v: u64) {
        self.dev
            .region_write(VFIO_PCI_BAR0_REGION_INDEX, &v.to_le_bytes(), reg);
    }

    /// The identification register.
    pub fn ident(&self) -> u32 {
        self.read32(REG_IDENT)
    }

    /// Writes `v` to the liveness register and reads it back (the device returns `!v`).
    pub fn liveness(&self, v: u32) -> u32 {
        self.write32(REG_LIVENESS, v);
        self.read32(REG_LIVENESS)
    }

    /// One DMA of `cnt` bytes from `src` to `dst`; `to_ram` when the device buffer is the
    /// source. Waits (up to 5 s) until the device reports it done. A transfer the IOMMU
    /// blocks also completes: only memory tells whether it landed.
    pub fn dma(&self, src: u64, dst: u64, cnt: u64, to_ram: bool) -> Result<(), String> {
        self.write64(REG_DMA_SRC, src);
        self.write64(REG_DMA_DST, dst);
        self.write64(REG_DMA_CNT, cnt);
        self.write64(REG_DMA_CMD, CMD_START | if to_ram { CMD_TO_RAM } else { 0 });
        let t0 = Instant::now();
        while self.read64(REG_DMA_CMD) & CMD_START != 0 {
            if t0.elapsed() > Duration::from_secs(5) {
                return Err(format!("edu DMA {src:#x} -> {dst:#x} still busy after 5 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Device buffer ← RAM at `iova`.
    pub fn load(&self, iova: u64) -> Result<(), String> {
        self.dma(iova, BUFFER, XFER, false)
    }

    /// RAM at `iova` ← device buffer.
    pub fn store(&self, iova: u64) -> Result<(), String> {
        self.dma(BUFFER, iova, XFER, true)
    }
}
