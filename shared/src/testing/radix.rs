//! A configurable radix-tree format: the shape of x86 second-level tables, any geometry and
//! byte order.
//!
//! Entry layout: bit 0 read, bit 1 write (an entry with neither is empty), bit 7 page-size
//! (a leaf above level 0; allowed at levels 1 and 2), bits 12..52 address, bits 52..63
//! reserved.

use crate::perm::Perm;
use crate::pt::{ByteOrder, Decoded, EncodeFormat, PageTableFormat};

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const RESERVED: u64 = 0x7ff0_0000_0000_0000;
const PS: u64 = 1 << 7;

/// The reference format. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RadixFormat {
    bits: Vec<u32>,
    order: ByteOrder,
    iova_bits: u32,
}

impl RadixFormat {
    /// `levels` levels of 9 index bits over 4 KiB pages (x86 style), in `order`.
    pub fn x86_like(levels: u8, order: ByteOrder) -> Self {
        let levels = levels.clamp(1, 6);
        RadixFormat {
            bits: vec![9; levels as usize],
            order,
            iova_bits: (12 + 9 * u32::from(levels)).min(64),
        }
    }

    /// s390 geometry: 256-entry page tables, 2048-entry segment and region-third tables,
    /// big-endian (the shape only; the real s390 entry bits live in the zPCI crate).
    pub fn s390_like() -> Self {
        RadixFormat {
            bits: vec![8, 11, 11],
            order: ByteOrder::Big,
            iova_bits: 12 + 8 + 11 + 11,
        }
    }

    fn perm(raw: u64) -> Perm {
        let mut p = Perm::empty();
        if raw & 1 != 0 {
            p |= Perm::READ;
        }
        if raw & 2 != 0 {
            p |= Perm::WRITE;
        }
        p
    }

    fn bits_for(perm: Perm) -> u64 {
        u64::from(perm.contains(Perm::READ)) | (u64::from(perm.contains(Perm::WRITE)) << 1)
    }
}

impl PageTableFormat for RadixFormat {
    fn byte_order(&self) -> ByteOrder {
        self.order
    }

    fn top_level(&self) -> u8 {
        (self.bits.len() - 1) as u8
    }

    fn index_bits(&self, level: u8) -> u32 {
        self.bits.get(usize::from(level)).copied().unwrap_or(0)
    }

    fn iova_bits(&self) -> u32 {
        self.iova_bits
    }

    fn decode(&self, level: u8, raw: u64) -> Decoded {
        if raw & 3 == 0 {
            return Decoded::Empty;
        }
        if raw & RESERVED != 0 {
            return Decoded::Reserved;
        }
        let addr = raw & ADDR_MASK;
        let perm = Self::perm(raw);
        if level == 0 || raw & PS != 0 {
            if level > 2 {
                return Decoded::Reserved;
            }
            let size_log2 = self.level_shift(level) as u8;
            if addr & ((1u64 << size_log2) - 1) != 0 {
                return Decoded::Reserved;
            }
            return Decoded::Leaf {
                addr,
                size_log2,
                perm,
            };
        }
        Decoded::Table {
            addr,
            level: level - 1,
            perm,
        }
    }
}

impl EncodeFormat for RadixFormat {
    fn encode_table(&self, _level: u8, table: u64, perm: Perm) -> u64 {
        (table & ADDR_MASK) | Self::bits_for(perm)
    }

    fn encode_leaf(&self, level: u8, addr: u64, perm: Perm) -> Option<u64> {
        if level > 2 || perm.intersection(Perm::RW).is_empty() {
            return None;
        }
        let ps = if level > 0 { PS } else { 0 };
        Some((addr & ADDR_MASK) | Self::bits_for(perm) | ps)
    }
}
