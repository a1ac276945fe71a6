//! The function information block (FIB) of MPCIFC and STPCIFC (A.8.1), big-endian.

use crate::operand::be;

/// Function-controls bits of [`Fib::fc`] (Linux `ZPCI_FIB_FC_*`).
pub mod fc {
    /// The function is enabled.
    pub const ENABLED: u8 = 0x80;
    /// The function is in an error state.
    pub const ERROR: u8 = 0x40;
    /// Loads and stores are blocked.
    pub const LS_BLOCKED: u8 = 0x20;
    /// A DMA address space is registered.
    pub const DMAAS_REGISTERED: u8 = 0x10;
}

/// A decoded format-0 FIB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fib {
    /// Format; only 0 is defined.
    pub fmt: u8,
    /// Function controls (STPCIFC output).
    pub fc: u8,
    /// PCI base address: start of the DMA range.
    pub pba: u64,
    /// PCI address limit: last byte of the DMA range.
    pub pal: u64,
    /// I/O translation anchor.
    pub iota: u64,
    /// Interruption subclass (3 bits).
    pub isc: u8,
    /// Number of interrupts (12 bits).
    pub noi: u16,
    /// Adapter interrupt bit-vector offset (6 bits).
    pub aibvo: u8,
    /// Summary-bit enable.
    pub sum: bool,
    /// Adapter interrupt summary-bit offset (6 bits).
    pub aisbo: u8,
    /// Adapter interrupt bit-vector address.
    pub aibv: u64,
    /// Adapter interrupt summary-bit address.
    pub aisb: u64,
    /// Function measurement block address; the low 4 bits are a storage key.
    pub fmb_addr: u64,
    /// Guest designation (GISA), used by interpretation.
    pub gd: u32,
}

impl Fib {
    /// Size in bytes.
    pub const SIZE: usize = 80;

    /// Decodes a FIB from its big-endian bytes.
    pub fn from_bytes(b: &[u8; Fib::SIZE]) -> Fib {
        let data = be::u32_at(b, 0x28);
        Fib {
            fmt: b[0],
            fc: b[8],
            pba: be::u64_at(b, 0x10),
            pal: be::u64_at(b, 0x18),
            iota: be::u64_at(b, 0x20),
            isc: ((data >> 28) & 0x7) as u8,
            noi: ((data >> 16) & 0xfff) as u16,
            aibvo: ((data >> 8) & 0x3f) as u8,
            sum: (data >> 7) & 1 != 0,
            aisbo: (data & 0x3f) as u8,
            aibv: be::u64_at(b, 0x30),
            aisb: be::u64_at(b, 0x38),
            fmb_addr: be::u64_at(b, 0x40),
            gd: be::u32_at(b, 0x4c),
        }
    }

    /// Encodes the FIB as big-endian bytes (reserved fields zero).
    pub fn to_bytes(&self) -> [u8; Fib::SIZE] {
        let mut b = [0u8; Fib::SIZE];
        b[0] = self.fmt;
        b[8] = self.fc;
        be::put_u64(&mut b, 0x10, self.pba);
        be::put_u64(&mut b, 0x18, self.pal);
        be::put_u64(&mut b, 0x20, self.iota);
        be::put_u32(&mut b, 0x28, self.data_word());
        be::put_u64(&mut b, 0x30, self.aibv);
        be::put_u64(&mut b, 0x38, self.aisb);
        be::put_u64(&mut b, 0x40, self.fmb_addr);
        be::put_u32(&mut b, 0x4c, self.gd);
        b
    }

    /// The packed interruption word at offset 0x28.
    pub fn data_word(&self) -> u32 {
        (u32::from(self.isc & 7) << 28)
            | (u32::from(self.noi & 0xfff) << 16)
            | (u32::from(self.aibvo & 0x3f) << 8)
            | (u32::from(self.sum) << 7)
            | u32::from(self.aisbo & 0x3f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let f = Fib {
            fmt: 0,
            fc: fc::ENABLED | fc::DMAAS_REGISTERED,
            pba: 0x1_0000_0000,
            pal: 0x1_0fff_ffff,
            iota: 0x12_4000 | 0x804,
            isc: 3,
            noi: 0x20,
            aibvo: 5,
            sum: true,
            aisbo: 9,
            aibv: 0x5000,
            aisb: 0x6000,
            fmb_addr: 0x7000,
            gd: 0xabcd,
        };
        let b = f.to_bytes();
        assert_eq!(Fib::from_bytes(&b), f);
        assert_eq!(&b[0x10..0x18], &0x1_0000_0000u64.to_be_bytes());
        assert_eq!(b[8], 0x90);
        assert_eq!(be::u32_at(&b, 0x28), 0x3020_0589);
    }
}
