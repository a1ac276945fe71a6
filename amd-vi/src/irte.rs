//! Interrupt remapping table entries (spec §2.2.5.1 32-bit format, §2.2.5.2 128-bit format).
//!
//! 32-bit entry (Linux `union irte`): RemapEn (0), SupIOPF (1), IntType (4:2), RqEoi (5),
//! DM (6), bit 7 reserved (GuestMode exists only in the 128-bit format), Destination (15:8),
//! Vector (23:16), 31:24 reserved.
//!
//! 128-bit entry (Linux `struct irte_ga`, remapped mode): low quadword RemapEn (0), SupIOPF
//! (1), IntType (4:2), RqEoi (5), DM (6), GuestMode (7), Destination 23:0 (31:8), GATag
//! (63:32, only meaningful in guest mode); high quadword Vector (7:0), 11:8 reserved, GA root
//! pointer (51:12, guest mode only), 55:52 reserved, Destination 31:24 (63:56). With
//! Control.XTEn the destination is all 32 bits; without it only bits 7:0 are used (the
//! upper bits are ignored, as in QEMU: Linux in xAPIC mode never sets them).

/// Size of a 32-bit entry in bytes.
pub const LEGACY_SIZE: u64 = 4;
/// Size of a 128-bit entry in bytes.
pub const GA_SIZE: u64 = 16;

const RESERVED_LEGACY: u32 = 0xff00_0080;
const RESERVED_GA_HI: u64 = (0xf << 8) | (0xf << 52);

/// A decoded entry, either format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Irte {
    /// RemapEn: the entry is valid.
    pub remap_en: bool,
    /// SupIOPF: no IO_PAGE_FAULT event for requests using this entry.
    pub suppress_faults: bool,
    /// IntType: the delivery mode (only fixed 000b and arbitrated 001b are legal).
    pub int_type: u8,
    /// RqEoi: the interrupt requests an EOI broadcast (stored; not modelled further).
    pub rq_eoi: bool,
    /// DM: logical destination mode.
    pub dest_logical: bool,
    /// GuestMode (128-bit format): posted to a guest virtual APIC.
    pub guest_mode: bool,
    /// Destination APIC ID.
    pub destination: u32,
    /// Vector.
    pub vector: u8,
    /// A reserved bit is set.
    pub reserved: bool,
}

impl Irte {
    /// A valid remapped-mode entry delivering `vector` to `destination` with delivery mode
    /// `int_type` (0 fixed, 1 arbitrated), as Linux builds it.
    pub fn remapped(vector: u8, destination: u32, dest_logical: bool, int_type: u8) -> Irte {
        Irte {
            remap_en: true,
            int_type: int_type & 7,
            dest_logical,
            destination,
            vector,
            ..Irte::default()
        }
    }

    /// Decodes a 32-bit entry.
    pub fn from_legacy(v: u32) -> Irte {
        let bit = |n: u32| v & (1 << n) != 0;
        Irte {
            remap_en: bit(0),
            suppress_faults: bit(1),
            int_type: ((v >> 2) & 7) as u8,
            rq_eoi: bit(5),
            dest_logical: bit(6),
            guest_mode: false,
            destination: (v >> 8) & 0xff,
            vector: (v >> 16) as u8,
            reserved: v & RESERVED_LEGACY != 0,
        }
    }

    /// Decodes a 128-bit entry; `x2apic` (Control.XTEn) selects 32-bit destinations.
    pub fn from_ga(lo: u64, hi: u64, x2apic: bool) -> Irte {
        let bit = |n: u32| lo & (1 << n) != 0;
        let dest = ((lo >> 8) & 0xff_ffff) as u32 | (((hi >> 56) as u32) << 24);
        Irte {
            remap_en: bit(0),
            suppress_faults: bit(1),
            int_type: ((lo >> 2) & 7) as u8,
            rq_eoi: bit(5),
            dest_logical: bit(6),
            guest_mode: bit(7),
            destination: if x2apic { dest } else { dest & 0xff },
            vector: hi as u8,
            reserved: hi & RESERVED_GA_HI != 0,
        }
    }

    /// The 32-bit encoding (destination bits above 7 are dropped; `guest_mode` and
    /// `reserved` cannot be expressed and are ignored).
    pub fn encode_legacy(&self) -> u32 {
        u32::from(self.remap_en)
            | (u32::from(self.suppress_faults) << 1)
            | (u32::from(self.int_type & 7) << 2)
            | (u32::from(self.rq_eoi) << 5)
            | (u32::from(self.dest_logical) << 6)
            | ((self.destination & 0xff) << 8)
            | (u32::from(self.vector) << 16)
    }

    /// The 128-bit encoding as two quadwords (`reserved` is ignored).
    pub fn encode_ga(&self) -> [u64; 2] {
        let lo = u64::from(self.remap_en)
            | (u64::from(self.suppress_faults) << 1)
            | (u64::from(self.int_type & 7) << 2)
            | (u64::from(self.rq_eoi) << 5)
            | (u64::from(self.dest_logical) << 6)
            | (u64::from(self.guest_mode) << 7)
            | (u64::from(self.destination & 0xff_ffff) << 8);
        let hi = u64::from(self.vector) | (u64::from(self.destination >> 24) << 56);
        [lo, hi]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_layout_matches_linux() {
        // Linux: valid 0, no_fault 1, int_type 4:2, rq_eoi 5, dm 6, destination 15:8,
        // vector 23:16.
        let e = Irte::from_legacy(0x0041_2345);
        assert_eq!(
            e,
            Irte {
                remap_en: true,
                suppress_faults: false,
                int_type: 1,
                rq_eoi: false,
                dest_logical: true,
                guest_mode: false,
                destination: 0x23,
                vector: 0x41,
                reserved: false,
            }
        );
        assert_eq!(e.encode_legacy(), 0x0041_2345);
        assert!(Irte::from_legacy(0x80).reserved);
        assert!(Irte::from_legacy(0x0100_0001).reserved);
    }

    #[test]
    fn ga_destination_depends_on_xten() {
        let e = Irte::remapped(0x31, 0x1234_5678, false, 0);
        let [lo, hi] = e.encode_ga();
        assert_eq!(lo, 0x3456_7801);
        assert_eq!(hi, 0x1200_0000_0000_0031);
        assert_eq!(Irte::from_ga(lo, hi, true), e);
        assert_eq!(Irte::from_ga(lo, hi, false).destination, 0x78);
        assert!(Irte::from_ga(lo | 0x80, hi, true).guest_mode);
        assert!(Irte::from_ga(lo, hi | 0x100, true).reserved);
        assert!(Irte::from_ga(lo, hi | (1 << 52), true).reserved);
        // The GA tag and root pointer are not reserved (Linux writes the tag in remapped
        // mode).
        assert!(!Irte::from_ga(lo | (0xdead << 32), hi | (0xabc << 12), true).reserved);
    }
}
