//! A userspace IO-APIC (82093AA register interface, version 0x11 like KVM's in-kernel one)
//! for split-irqchip mode: KVM keeps the local APIC, the VMM the IO-APIC, whose interrupts
//! are messages built from the redirection table entry and sent through an [`MsiSink`] — in
//! this VMM the IOMMU's interrupt remapper with the IO-APIC's source id, then
//! `KVM_SIGNAL_MSI`.
//!
//! Message format: the RTE's bits 63:48 go to address bits 19:4 and bit 11 to address bit 2.
//! For a compatibility-format RTE that is the destination (63:56 → 19:12) and the
//! destination mode (11 → 2); for a remappable-format RTE (bit 48 set, VT-d spec 5.1.5.1,
//! Linux `struct IO_APIC_route_entry` `ir_format`/`ir_index_0_14`/`ir_index_15`) it is the
//! interrupt format bit (48 → 4), handle\[14:0\] (63:49 → 19:5) and handle\[15\] (11 → 2),
//! the remappable MSI address of VT-d spec 5.1.2.2 with SHV = 0. QEMU's `ioapic_entry_parse`
//! builds its message the same way. The data carries vector, delivery mode and trigger mode
//! (plus assert for level), as in [`Interrupt::to_msi`](viommu_shared::irq::Interrupt::to_msi).
//!
//! Level-triggered pins keep Remote IRR until the guest's EOI of that vector reaches the VMM
//! (`KVM_EXIT_IOAPIC_EOI`, [`Ioapic::eoi`]); polarity is recorded but the VMM's lines are
//! given as logical levels (asserted / deasserted).

use std::sync::Arc;

use viommu_shared::regs::{Msi, MsiSink};

/// Number of redirection table entries (pins); KVM's split irqchip reserves as many GSIs.
pub const PINS: usize = 24;
/// Version register value: version 0x11, maximum redirection entry `PINS - 1`.
const VERSION: u32 = 0x11 | ((PINS as u32 - 1) << 16);
/// IOREGSEL's offset in the window.
const IOREGSEL: u64 = 0x00;
/// IOWIN's offset in the window.
const IOWIN: u64 = 0x10;
/// Size of the register window.
pub const WINDOW: u64 = 0x1000;

/// RTE bits.
const RTE_VECTOR: u64 = 0xff;
const RTE_DELIVERY_SHIFT: u32 = 8;
const RTE_DEST_MODE: u64 = 1 << 11;
const RTE_DELIVERY_STATUS: u64 = 1 << 12;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASK: u64 = 1 << 16;
/// Bits the guest may write: vector, delivery mode, destination mode, polarity, trigger
/// mode, mask (low dword) and bits 63:48 (destination, or format and handle). Delivery
/// status and Remote IRR are read-only; the rest is reserved (reads 0).
const RTE_WRITABLE: u64 = 0xffff_0000_0001_afff;
/// Reset value of an RTE: masked.
const RTE_RESET: u64 = RTE_MASK;

/// The IO-APIC.
pub struct Ioapic {
    id: u8,
    select: u32,
    rtes: [u64; PINS],
    /// Asserted level of each pin.
    levels: u32,
    output: Arc<dyn MsiSink>,
    sent: u64,
}

impl Ioapic {
    /// An IO-APIC with APIC id `id` (its MADT entry's), all pins masked, sending to `output`.
    pub fn new(id: u8, output: Arc<dyn MsiSink>) -> Ioapic {
        Ioapic {
            id,
            select: 0,
            rtes: [RTE_RESET; PINS],
            levels: 0,
            output,
            sent: 0,
        }
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The redirection table entry of `pin` (None beyond the table).
    pub fn rte(&self, pin: usize) -> Option<u64> {
        self.rtes.get(pin).copied()
    }

    /// Guest read at `offset` in the window; IOREGSEL and IOWIN are 32-bit registers, other
    /// offsets read as zero.
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            IOREGSEL => self.select,
            IOWIN => self.register(self.select),
            _ => 0,
        };
        let bytes = v.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0);
        }
    }

    /// Guest write at `offset` in the window.
    pub fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 4];
        for (b, d) in bytes.iter_mut().zip(data) {
            *b = *d;
        }
        let v = u32::from_le_bytes(bytes);
        match offset {
            IOREGSEL => self.select = v & 0xff,
            IOWIN => self.set_register(self.select, v),
            _ => {}
        }
    }

    fn register(&self, index: u32) -> u32 {
        match index {
            0x00 | 0x02 => u32::from(self.id) << 24,
            0x01 => VERSION,
            i if (0x10..0x10 + 2 * PINS as u32).contains(&i) => {
                let rte = self.rtes[((i - 0x10) / 2) as usize];
                if i & 1 == 0 {
                    rte as u32
                } else {
                    (rte >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn set_register(&mut self, index: u32, v: u32) {
        match index {
            0x00 => self.id = (v >> 24) as u8 & 0xf,
            i if (0x10..0x10 + 2 * PINS as u32).contains(&i) => {
                let pin = ((i - 0x10) / 2) as usize;
                let old = self.rtes[pin];
                let written = if i & 1 == 0 {
                    (old & !0xffff_ffff) | u64::from(v)
                } else {
                    (old & 0xffff_ffff) | (u64::from(v) << 32)
                };
                let kept = RTE_DELIVERY_STATUS | RTE_REMOTE_IRR;
                let mut rte = (written & RTE_WRITABLE) | (old & kept);
                if rte & RTE_LEVEL == 0 {
                    // Remote IRR is undefined for edge-triggered interrupts (82093AA 3.2.4);
                    // like KVM, clear it.
                    rte &= !RTE_REMOTE_IRR;
                }
                self.rtes[pin] = rte;
                // A level interrupt still asserted fires when unmasked.
                self.service(pin);
            }
            _ => {}
        }
    }

    /// Sets the level of `pin` (ignored beyond the table): an edge-triggered pin sends on the
    /// rising edge, a level-triggered one while asserted and Remote IRR is clear.
    pub fn set_irq(&mut self, pin: usize, asserted: bool) {
        let Some(rte) = self.rtes.get(pin).copied() else {
            return;
        };
        let bit = 1u32 << pin;
        let was = self.levels & bit != 0;
        if asserted {
            self.levels |= bit;
        } else {
            self.levels &= !bit;
        }
        if rte & RTE_LEVEL == 0 {
            if asserted && !was && rte & RTE_MASK == 0 {
                self.send(pin);
            }
        } else {
            self.service(pin);
        }
    }

    /// An edge on `pin`: asserted then deasserted.
    pub fn pulse(&mut self, pin: usize) {
        self.set_irq(pin, true);
        self.set_irq(pin, false);
    }

    /// The guest's EOI of `vector` (`KVM_EXIT_IOAPIC_EOI`): clears Remote IRR of the
    /// level-triggered entries with that vector and resends those still asserted.
    pub fn eoi(&mut self, vector: u8) {
        for pin in 0..PINS {
            let rte = self.rtes[pin];
            if rte & RTE_LEVEL != 0
                && rte & RTE_REMOTE_IRR != 0
                && (rte & RTE_VECTOR) as u8 == vector
            {
                self.rtes[pin] &= !RTE_REMOTE_IRR;
                self.service(pin);
            }
        }
    }

    /// Sends a level-triggered pin's interrupt if it is asserted, unmasked and not in
    /// service.
    fn service(&mut self, pin: usize) {
        let rte = self.rtes[pin];
        if rte & RTE_LEVEL != 0
            && self.levels & (1 << pin) != 0
            && rte & (RTE_MASK | RTE_REMOTE_IRR) == 0
        {
            self.rtes[pin] |= RTE_REMOTE_IRR;
            self.send(pin);
        }
    }

    fn send(&mut self, pin: usize) {
        self.sent += 1;
        self.output.send(message(self.rtes[pin]));
    }
}

/// The interrupt message of `rte` (see the module documentation).
pub fn message(rte: u64) -> Msi {
    let mut address = 0xfee0_0000 | ((rte >> 48) << 4);
    if rte & RTE_DEST_MODE != 0 {
        address |= 1 << 2;
    }
    let mut data = (rte & RTE_VECTOR) as u32 | ((((rte >> RTE_DELIVERY_SHIFT) & 7) as u32) << 8);
    if rte & RTE_LEVEL != 0 {
        data |= (1 << 15) | (1 << 14);
    }
    Msi { address, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::regs::RecordingMsiSink;

    fn write_rte(io: &mut Ioapic, pin: u32, rte: u64) {
        io.mmio_write(IOREGSEL, &(0x10 + 2 * pin).to_le_bytes());
        io.mmio_write(IOWIN, &(rte as u32).to_le_bytes());
        io.mmio_write(IOREGSEL, &(0x11 + 2 * pin).to_le_bytes());
        io.mmio_write(IOWIN, &((rte >> 32) as u32).to_le_bytes());
    }

    fn read(io: &mut Ioapic, index: u32) -> u32 {
        io.mmio_write(IOREGSEL, &index.to_le_bytes());
        let mut d = [0u8; 4];
        io.mmio_read(IOWIN, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn identification_registers() {
        let mut io = Ioapic::new(0, Arc::new(RecordingMsiSink::new()));
        assert_eq!(read(&mut io, 1), 0x0017_0011);
        io.mmio_write(IOREGSEL, &0u32.to_le_bytes());
        io.mmio_write(IOWIN, &(0x0300_0000u32).to_le_bytes());
        let mut d = [0u8; 4];
        io.mmio_read(IOWIN, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x0300_0000);
        assert_eq!(read(&mut io, 2), 0x0300_0000);
        // Reset: every pin masked.
        assert_eq!(io.rte(23), Some(RTE_MASK));
        assert_eq!(io.rte(24), None);
    }

    #[test]
    fn compatibility_edge_rte_sends_on_rising_edge_only_when_unmasked() {
        let sink = Arc::new(RecordingMsiSink::new());
        let mut io = Ioapic::new(0, sink.clone());
        io.pulse(4);
        assert!(sink.take().is_empty(), "masked pin sent");
        // Vector 0x31, fixed, physical, destination 3; reserved bits and RO bits ignored.
        write_rte(&mut io, 4, (3 << 56) | 0x31 | RTE_REMOTE_IRR | (1 << 20));
        assert_eq!(io.rte(4), Some((3 << 56) | 0x31));
        io.pulse(4);
        io.set_irq(4, true);
        io.set_irq(4, true);
        assert_eq!(
            sink.take(),
            vec![
                Msi {
                    address: 0xfee0_3000,
                    data: 0x31
                };
                2
            ]
        );
        io.set_irq(99, true);
        assert_eq!(io.sent(), 2);
    }

    #[test]
    fn level_rte_holds_remote_irr_until_eoi() {
        let sink = Arc::new(RecordingMsiSink::new());
        let mut io = Ioapic::new(0, sink.clone());
        write_rte(&mut io, 9, RTE_LEVEL | RTE_DEST_MODE | (1 << 8) | 0x41);
        io.set_irq(9, true);
        io.set_irq(9, true);
        let m = Msi {
            address: 0xfee0_0004,
            data: 0xc141,
        };
        assert_eq!(sink.take(), vec![m]);
        assert_ne!(io.rte(9).unwrap() & RTE_REMOTE_IRR, 0);
        io.eoi(0x42);
        assert!(sink.take().is_empty());
        // Still asserted: resent after the EOI.
        io.eoi(0x41);
        assert_eq!(sink.take(), vec![m]);
        io.set_irq(9, false);
        io.eoi(0x41);
        assert!(sink.take().is_empty());
        assert_eq!(io.rte(9).unwrap() & RTE_REMOTE_IRR, 0);
    }

    #[test]
    fn remappable_rte_becomes_a_remappable_message() {
        // Handle 0x8005: format (48), handle[14:0] in 63:49, handle[15] in 11.
        let handle = 0x8005u64;
        let rte = ((handle & 0x7fff) << 49) | (1 << 48) | (((handle >> 15) & 1) << 11) | 0x33;
        let m = message(rte);
        assert_eq!(m.address, 0xfee0_0000 | (5 << 5) | (1 << 4) | (1 << 2));
        assert_eq!(m.data, 0x33);
        // Decoded as VT-d 5.1.2.2 does.
        let a = m.address;
        let decoded = ((a >> 5) & 0x7fff) | (((a >> 2) & 1) << 15);
        assert_eq!(decoded, handle);
        assert_eq!(a & (1 << 3), 0, "SHV clear");
    }
}
