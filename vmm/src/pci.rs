//! PCI: type-0 configuration spaces with write masks, BARs and an MSI capability, and bus 0
//! behind configuration mechanism #1 (`0xCF8` / `0xCFC`, PCI Local Bus spec 3.0 §3.2.2.3.2).

use viommu_shared::regs::Msi;

/// Size of a conventional configuration space.
pub const CONFIG_SIZE: usize = 256;
/// Command register bits a guest may set: I/O space, memory space, bus master, INTx disable.
const COMMAND_WRITABLE: u16 = 0x0407;
/// Command register: memory space enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: bus master enable.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Status register: capabilities list present.
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Offset of BAR 0.
const BAR0: usize = 0x10;
/// MSI capability id.
const CAP_ID_MSI: u8 = 0x05;

/// Identity of a function: what its configuration header reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciId {
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class code (base class, subclass, programming interface).
    pub class: u32,
    /// Revision id.
    pub revision: u8,
}

/// A type-0 configuration space: bytes plus a per-byte mask of guest-writable bits.
#[derive(Clone, Debug)]
pub struct ConfigSpace {
    data: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
    next_cap: usize,
    last_cap_next: Option<usize>,
    msi_cap: Option<usize>,
}

impl ConfigSpace {
    /// A header for `id` with no BARs and no capabilities; the command register is writable.
    pub fn new(id: PciId) -> ConfigSpace {
        let mut c = ConfigSpace {
            data: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
            next_cap: 0x40,
            last_cap_next: None,
            msi_cap: None,
        };
        c.set_u16(0x00, id.vendor);
        c.set_u16(0x02, id.device);
        c.data[0x08] = id.revision;
        c.data[0x09] = id.class as u8;
        c.data[0x0a] = (id.class >> 8) as u8;
        c.data[0x0b] = (id.class >> 16) as u8;
        c.wmask[0x04..0x06].copy_from_slice(&COMMAND_WRITABLE.to_le_bytes());
        // Interrupt line is scratch space for the OS.
        c.wmask[0x3c] = 0xff;
        c
    }

    fn set_u16(&mut self, off: usize, v: u16) {
        self.data[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn u16_at(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.data[off], self.data[off + 1]])
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes([
            self.data[off],
            self.data[off + 1],
            self.data[off + 2],
            self.data[off + 3],
        ])
    }

    /// Declares BAR `index` (0..=5) as a 32-bit, non-prefetchable memory BAR of `size` bytes
    /// (a power of two, at least 16). The guest sizes it by writing all ones.
    pub fn add_mem_bar(&mut self, index: usize, size: u32) {
        debug_assert!(index < 6 && size.is_power_of_two() && size >= 16);
        let off = BAR0 + 4 * index;
        self.wmask[off..off + 4].copy_from_slice(&(!(size - 1) & !0xf).to_le_bytes());
    }

    /// Sets the interrupt pin register (1 = INTA).
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.data[0x3d] = pin;
    }

    /// Appends a read-only capability with `body` (the bytes after the id and next
    /// pointer); returns its offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> usize {
        let off = self.next_cap;
        let len = (2 + body.len()).next_multiple_of(4);
        assert!(
            off + len <= CONFIG_SIZE,
            "capabilities overflow config space"
        );
        self.data[off] = id;
        self.data[off + 2..off + 2 + body.len()].copy_from_slice(body);
        match self.last_cap_next {
            Some(prev) => self.data[prev] = off as u8,
            None => {
                self.data[0x34] = off as u8;
                let s = self.u16_at(0x06) | STATUS_CAP_LIST;
                self.set_u16(0x06, s);
            }
        }
        self.last_cap_next = Some(off + 1);
        self.next_cap = off + len;
        off
    }

    /// Appends a 64-bit MSI capability with one vector and no per-vector masking.
    pub fn add_msi_capability(&mut self) -> usize {
        // Message control: 64-bit address capable; 1 vector requested.
        let mut body = [0u8; 12];
        body[0..2].copy_from_slice(&(1u16 << 7).to_le_bytes());
        let off = self.add_capability(CAP_ID_MSI, &body);
        // MSI enable and multiple message enable (the latter kept at 0: one vector).
        self.wmask[off + 2] = 0x01;
        self.wmask[off + 4..off + 8].copy_from_slice(&0xffff_fffcu32.to_le_bytes());
        self.wmask[off + 8..off + 12].fill(0xff);
        self.wmask[off + 12..off + 14].fill(0xff);
        self.msi_cap = Some(off);
        off
    }

    /// Guest read of `len` (1, 2 or 4) bytes at `off`; outside the space reads as ones.
    pub fn read(&self, off: usize, len: usize) -> u32 {
        let mut v = 0u32;
        for i in 0..len.min(4) {
            let b = self.data.get(off + i).copied().unwrap_or(0xff);
            v |= u32::from(b) << (8 * i);
        }
        v
    }

    /// Guest write of `len` (1, 2 or 4) bytes at `off`: only writable bits change.
    pub fn write(&mut self, off: usize, len: usize, value: u32) {
        for i in 0..len.min(4) {
            let Some(m) = self.wmask.get(off + i).copied() else {
                return;
            };
            let b = (value >> (8 * i)) as u8;
            self.data[off + i] = (self.data[off + i] & !m) | (b & m);
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.u16_at(0x04)
    }

    /// The guest-assigned address of memory BAR `index`, if memory decoding is enabled and
    /// the BAR has been given an address.
    pub fn mem_bar(&self, index: usize) -> Option<u64> {
        if self.command() & COMMAND_MEMORY == 0 || index >= 6 {
            return None;
        }
        let addr = u64::from(self.u32_at(BAR0 + 4 * index) & !0xf);
        (addr != 0).then_some(addr)
    }

    /// The enabled MSI message, if the MSI capability exists and is enabled.
    pub fn msi(&self) -> Option<Msi> {
        let off = self.msi_cap?;
        if self.data[off + 2] & 1 == 0 {
            return None;
        }
        let address = u64::from(self.u32_at(off + 4)) | (u64::from(self.u32_at(off + 8)) << 32);
        Some(Msi {
            address,
            data: u32::from(self.u16_at(off + 12)),
        })
    }
}

/// A PCI function on bus 0.
pub trait PciFunction: Send {
    /// Its configuration space.
    fn config(&self) -> &ConfigSpace;
    /// Guest configuration write; the default updates the space only.
    fn config_write(&mut self, off: usize, len: usize, value: u32);
    /// Guest read of `len` bytes at `offset` in memory BAR `bar`.
    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    /// Guest write of `data` at `offset` in memory BAR `bar`.
    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
    /// Sizes of its memory BARs, by index.
    fn bar_sizes(&self) -> &[(usize, u64)] {
        &[]
    }
}

/// The host bridge at 00:00.0 (Intel Q35 MCH ids, as QEMU's q35: Linux's type-1 sanity
/// check looks for a host bridge on bus 0).
#[derive(Debug)]
pub struct HostBridge {
    config: ConfigSpace,
}

impl HostBridge {
    /// A new host bridge.
    pub fn new() -> HostBridge {
        HostBridge {
            config: ConfigSpace::new(PciId {
                vendor: 0x8086,
                device: 0x29c0,
                class: 0x06_0000,
                revision: 0,
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        HostBridge::new()
    }
}

impl PciFunction for HostBridge {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }
    fn config_write(&mut self, off: usize, len: usize, value: u32) {
        self.config.write(off, len, value);
    }
}

/// Bus 0 with configuration mechanism #1.
pub struct PciBus {
    functions: Vec<(u8, Box<dyn PciFunction>)>,
    address: u32,
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciBus")
            .field(
                "devfns",
                &self.functions.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            )
            .field("address", &self.address)
            .finish()
    }
}

impl PciBus {
    /// An empty bus.
    pub fn new() -> PciBus {
        PciBus {
            functions: Vec::new(),
            address: 0,
        }
    }

    /// Puts `function` at `devfn` (device << 3 | function).
    pub fn add(&mut self, devfn: u8, function: Box<dyn PciFunction>) {
        self.functions.push((devfn, function));
    }

    /// The devfns of every function, in order.
    pub fn devfns(&self) -> Vec<u8> {
        self.functions.iter().map(|(d, _)| *d).collect()
    }

    /// The function at `devfn`.
    pub fn function_mut(&mut self, devfn: u8) -> Option<&mut (dyn PciFunction + 'static)> {
        self.functions
            .iter_mut()
            .find(|(d, _)| *d == devfn)
            .map(|(_, f)| f.as_mut())
    }

    /// The (devfn, offset) the address register selects, if enabled and on bus 0.
    fn selected(&self, port_off: u16) -> Option<(u8, usize)> {
        let a = self.address;
        if a & 0x8000_0000 == 0 || (a >> 16) & 0xff != 0 {
            return None;
        }
        Some((
            ((a >> 8) & 0xff) as u8,
            (a & 0xfc) as usize + usize::from(port_off),
        ))
    }

    /// Port read at `port` (0xCF8..=0xCFF).
    pub fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        let v = if (crate::layout::PCI_CONFIG_ADDRESS..crate::layout::PCI_CONFIG_DATA)
            .contains(&port)
        {
            // Linux's type-1 probe writes 0x80000000 and expects it back (4-byte access).
            self.address >> (8 * (port - crate::layout::PCI_CONFIG_ADDRESS))
        } else {
            let off = port - crate::layout::PCI_CONFIG_DATA;
            match self.selected(off) {
                Some((devfn, reg)) => match self.functions.iter().find(|(d, _)| *d == devfn) {
                    Some((_, f)) => f.config().read(reg, data.len()),
                    None => u32::MAX,
                },
                None => u32::MAX,
            }
        };
        for (i, b) in data.iter_mut().enumerate() {
            *b = (v >> (8 * i)) as u8;
        }
    }

    /// Port write at `port` (0xCF8..=0xCFF).
    pub fn pio_write(&mut self, port: u16, data: &[u8]) {
        let mut v = 0u32;
        for (i, b) in data.iter().enumerate().take(4) {
            v |= u32::from(*b) << (8 * i);
        }
        if port == crate::layout::PCI_CONFIG_ADDRESS && data.len() == 4 {
            self.address = v;
            return;
        }
        if port < crate::layout::PCI_CONFIG_DATA {
            return;
        }
        let off = port - crate::layout::PCI_CONFIG_DATA;
        if let Some((devfn, reg)) = self.selected(off)
            && let Some(f) = self.function_mut(devfn)
        {
            f.config_write(reg, data.len(), v);
        }
    }

    /// Guest MMIO read at `addr`; false if no BAR decodes it.
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        for (_, f) in self.functions.iter_mut() {
            if let Some((bar, off)) = decode_bar(f.as_ref(), addr) {
                f.bar_read(bar, off, data);
                return true;
            }
        }
        false
    }

    /// Guest MMIO write at `addr`; false if no BAR decodes it.
    pub fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        for (_, f) in self.functions.iter_mut() {
            if let Some((bar, off)) = decode_bar(f.as_ref(), addr) {
                f.bar_write(bar, off, data);
                return true;
            }
        }
        false
    }
}

impl Default for PciBus {
    fn default() -> Self {
        PciBus::new()
    }
}

fn decode_bar(f: &dyn PciFunction, addr: u64) -> Option<(usize, u64)> {
    f.bar_sizes().iter().find_map(|&(bar, size)| {
        let base = f.config().mem_bar(bar)?;
        (addr >= base && addr - base < size).then_some((bar, addr - base))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bar {
        config: ConfigSpace,
        last: Option<(u64, u8)>,
    }

    impl PciFunction for Bar {
        fn config(&self) -> &ConfigSpace {
            &self.config
        }
        fn config_write(&mut self, off: usize, len: usize, value: u32) {
            self.config.write(off, len, value);
        }
        fn bar_write(&mut self, _bar: usize, offset: u64, data: &[u8]) {
            self.last = Some((offset, data[0]));
        }
        fn bar_sizes(&self) -> &[(usize, u64)] {
            &[(0, 0x1000)]
        }
    }

    fn cfg(bus: &mut PciBus, devfn: u8, reg: u32) {
        bus.pio_write(
            0xcf8,
            &(0x8000_0000 | (u32::from(devfn) << 8) | reg).to_le_bytes(),
        );
    }

    fn read32(bus: &mut PciBus, devfn: u8, reg: u32) -> u32 {
        cfg(bus, devfn, reg);
        let mut d = [0u8; 4];
        bus.pio_read(0xcfc, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn address_register_reads_back_and_absent_functions_read_ones() {
        let mut bus = PciBus::new();
        bus.add(0, Box::new(HostBridge::new()));
        bus.pio_write(0xcf8, &0x8000_0000u32.to_le_bytes());
        let mut d = [0u8; 4];
        bus.pio_read(0xcf8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x8000_0000);
        assert_eq!(read32(&mut bus, 0, 0), 0x29c0_8086);
        assert_eq!(read32(&mut bus, 0, 8) >> 8, 0x06_0000);
        assert_eq!(read32(&mut bus, 8, 0), u32::MAX);
    }

    #[test]
    fn bar_sizing_assignment_and_decoding() {
        let mut config = ConfigSpace::new(PciId {
            vendor: 1,
            device: 2,
            class: 0xff_0000,
            revision: 0,
        });
        config.add_mem_bar(0, 0x1000);
        let mut bus = PciBus::new();
        bus.add(8, Box::new(Bar { config, last: None }));
        cfg(&mut bus, 8, 0x10);
        bus.pio_write(0xcfc, &u32::MAX.to_le_bytes());
        assert_eq!(read32(&mut bus, 8, 0x10), 0xffff_f000);
        cfg(&mut bus, 8, 0x10);
        bus.pio_write(0xcfc, &0xc000_0000u32.to_le_bytes());
        // Not decoded until memory space is enabled.
        assert!(!bus.mmio_write(0xc000_0010, &[7]));
        cfg(&mut bus, 8, 0x04);
        bus.pio_write(0xcfc, &0xffffu16.to_le_bytes());
        assert_eq!(read32(&mut bus, 8, 0x04) & 0xffff, 0x0407);
        assert!(bus.mmio_write(0xc000_0010, &[7]));
        assert!(!bus.mmio_write(0xc000_1000, &[7]));
    }

    #[test]
    fn msi_capability_is_listed_and_decoded() {
        let mut c = ConfigSpace::new(PciId {
            vendor: 1,
            device: 2,
            class: 0,
            revision: 0,
        });
        c.add_capability(0x0f, &[1, 2, 3, 4, 5, 6]);
        let off = c.add_msi_capability();
        assert_eq!(c.read(0x06, 2) & 0x10, 0x10);
        assert_eq!(c.read(0x34, 1), 0x40);
        assert_eq!(c.read(0x41, 1) as usize, off);
        assert_eq!(c.read(off, 1), 0x05);
        // Read-only capability bytes stay.
        c.write(0x42, 4, 0);
        assert_eq!(c.read(0x42, 1), 1);
        c.write(off + 4, 4, 0xfee0_1003);
        c.write(off + 12, 2, 0x41);
        assert_eq!(c.msi(), None);
        c.write(off + 2, 2, 0xffff);
        assert_eq!(c.read(off + 2, 2), 0x81);
        assert_eq!(
            c.msi(),
            Some(Msi {
                address: 0xfee0_1000,
                data: 0x41
            })
        );
    }
}
