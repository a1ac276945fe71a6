//! [`Interrupt`]: what an MSI asks the local APICs to do, after remapping.

use crate::regs::Msi;

/// Base of the x86 MSI address window (0xFEEx_xxxx).
pub const MSI_WINDOW: u64 = 0xfee0_0000;
/// Mask selecting the window part of an MSI address (bits 31:20).
pub const MSI_WINDOW_MASK: u64 = 0xfff0_0000;

/// Interrupt delivery mode (MSI data bits 10:8, IRTE delivery-mode fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryMode {
    /// Fixed (000b).
    Fixed,
    /// Lowest priority / arbitrated (001b).
    LowestPriority,
    /// SMI (010b).
    Smi,
    /// NMI (100b).
    Nmi,
    /// INIT (101b).
    Init,
    /// ExtINT (111b).
    ExtInt,
}

impl DeliveryMode {
    /// Decodes the 3-bit encoding shared by MSI data, VT-d IRTEs and AMD-Vi IRTEs; the
    /// reserved encodings 011b and 110b yield `None`.
    pub fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            7 => Self::ExtInt,
            _ => return None,
        })
    }

    /// The 3-bit encoding.
    pub fn bits(self) -> u8 {
        match self {
            Self::Fixed => 0,
            Self::LowestPriority => 1,
            Self::Smi => 2,
            Self::Nmi => 4,
            Self::Init => 5,
            Self::ExtInt => 7,
        }
    }
}

/// How the destination is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DestinationMode {
    /// Destination is an APIC ID.
    Physical,
    /// Destination is a logical APIC destination.
    Logical,
}

/// Edge or level triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TriggerMode {
    /// Edge triggered.
    Edge,
    /// Level triggered.
    Level,
}

/// An interrupt to deliver: what a remapping entry (or a compatibility-format MSI) says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interrupt {
    /// Destination APIC ID: 8 bits in xAPIC mode, 32 bits in x2APIC mode.
    pub destination: u32,
    /// Vector.
    pub vector: u8,
    /// Delivery mode.
    pub delivery: DeliveryMode,
    /// Physical or logical destination.
    pub destination_mode: DestinationMode,
    /// Edge or level.
    pub trigger: TriggerMode,
    /// Redirection hint (lowest-priority redirection among the destinations).
    pub redirection_hint: bool,
}

impl Interrupt {
    /// Decodes a compatibility-format MSI (address bit 4 clear): destination in address
    /// bits 19:12, extended destination (x2APIC, as KVM's `KVM_X2APIC_API` and Linux's
    /// "extended destination ID" use it) in address bits 63:40 → destination bits 31:8.
    /// Returns `None` for a reserved delivery mode or an address outside the MSI window.
    pub fn from_compat_msi(msi: Msi) -> Option<Self> {
        if msi.address & MSI_WINDOW_MASK & 0xffff_ffff != MSI_WINDOW {
            return None;
        }
        let dest_lo = ((msi.address >> 12) & 0xff) as u32;
        let dest_hi = ((msi.address >> 40) & 0xff_ffff) as u32;
        Some(Interrupt {
            destination: dest_lo | (dest_hi << 8),
            vector: (msi.data & 0xff) as u8,
            delivery: DeliveryMode::from_bits(((msi.data >> 8) & 7) as u8)?,
            destination_mode: if msi.address & (1 << 2) != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            trigger: if msi.data & (1 << 15) != 0 {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
            redirection_hint: msi.address & (1 << 3) != 0,
        })
    }

    /// Encodes the interrupt as a compatibility-format MSI a VMM can hand to its interrupt
    /// controller (e.g. a KVM MSI route): destination bits 7:0 in address bits 19:12 and,
    /// for x2APIC destinations, bits 31:8 in address bits 63:40 (KVM's `KVM_X2APIC_API`
    /// layout). The inverse of [`from_compat_msi`](Self::from_compat_msi).
    pub fn to_msi(&self) -> Msi {
        let mut address = MSI_WINDOW | (u64::from(self.destination & 0xff) << 12);
        address |= u64::from(self.destination >> 8) << 40;
        if self.redirection_hint {
            address |= 1 << 3;
        }
        if self.destination_mode == DestinationMode::Logical {
            address |= 1 << 2;
        }
        let mut data = u32::from(self.vector) | (u32::from(self.delivery.bits()) << 8);
        if self.trigger == TriggerMode::Level {
            // Level-triggered MSIs are asserted (bit 14).
            data |= (1 << 15) | (1 << 14);
        }
        Msi { address, data }
    }
}

/// Whether `address` lies in the x86 MSI window (a device write there is an interrupt
/// request, not DMA).
pub fn is_msi_address(address: u64) -> bool {
    address & !0xf_ffff == MSI_WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compat_round_trip_keeps_every_field() {
        let irq = Interrupt {
            destination: 0x0012_3456,
            vector: 0x41,
            delivery: DeliveryMode::LowestPriority,
            destination_mode: DestinationMode::Logical,
            trigger: TriggerMode::Level,
            redirection_hint: true,
        };
        let msi = irq.to_msi();
        assert_eq!(msi.address, 0x0012_3400_fee5_600c);
        assert_eq!(Interrupt::from_compat_msi(msi), Some(irq));
    }

    #[test]
    fn reserved_delivery_mode_and_foreign_address_do_not_decode() {
        let ok = Msi {
            address: 0xfee0_1000,
            data: 0x30,
        };
        let irq = Interrupt::from_compat_msi(ok).unwrap();
        assert_eq!((irq.destination, irq.vector), (1, 0x30));
        assert_eq!(irq.delivery, DeliveryMode::Fixed);
        let reserved = Msi { data: 0x330, ..ok };
        assert_eq!(Interrupt::from_compat_msi(reserved), None);
        let foreign = Msi {
            address: 0xfed0_1000,
            ..ok
        };
        assert_eq!(Interrupt::from_compat_msi(foreign), None);
        assert!(is_msi_address(0xfee0_0ffc) && !is_msi_address(0xfef0_0000));
    }
}
