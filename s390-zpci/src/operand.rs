//! Access to instruction operands in guest storage (CLP blocks, FIBs, PCISTB sources).
//!
//! The operand addresses of CLP, MPCIFC, STPCIFC and PCISTB are logical addresses: the CPU
//! translates them with its current DAT setup, prefixing and address-space controls. Only the
//! VMM knows those, so the handlers read and write operands through an [`OperandMemory`] the
//! VMM passes in. A VMM whose intercept path has already translated the address (or a test)
//! uses guest absolute addresses; `GuestMemoryMmap` implements the trait for that case.

use crate::codes::ProgramCheck;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Operand storage as the instruction sees it.
pub trait OperandMemory {
    /// Reads `buf.len()` bytes at logical address `addr`; on failure, the access exception to
    /// present (the instruction is then suppressed).
    fn read_operand(&self, addr: u64, buf: &mut [u8]) -> Result<(), ProgramCheck>;

    /// Writes `data` at logical address `addr`; on failure, the access exception to present.
    fn write_operand(&self, addr: u64, data: &[u8]) -> Result<(), ProgramCheck>;
}

/// Absolute addressing: addresses are guest absolute addresses; anything outside guest RAM
/// is an addressing exception.
impl OperandMemory for GuestMemoryMmap {
    fn read_operand(&self, addr: u64, buf: &mut [u8]) -> Result<(), ProgramCheck> {
        addr.checked_add(buf.len() as u64)
            .ok_or(ProgramCheck::Addressing)?;
        self.read_slice(buf, GuestAddress(addr))
            .map_err(|_| ProgramCheck::Addressing)
    }

    fn write_operand(&self, addr: u64, data: &[u8]) -> Result<(), ProgramCheck> {
        addr.checked_add(data.len() as u64)
            .ok_or(ProgramCheck::Addressing)?;
        self.write_slice(data, GuestAddress(addr))
            .map_err(|_| ProgramCheck::Addressing)
    }
}

impl<T: OperandMemory + ?Sized> OperandMemory for &T {
    fn read_operand(&self, addr: u64, buf: &mut [u8]) -> Result<(), ProgramCheck> {
        (**self).read_operand(addr, buf)
    }

    fn write_operand(&self, addr: u64, data: &[u8]) -> Result<(), ProgramCheck> {
        (**self).write_operand(addr, data)
    }
}

/// Big-endian field helpers over a byte block (CLP blocks, FIB, FMB).
pub(crate) mod be {
    /// The big-endian u16 at `off` (0 when out of bounds).
    pub fn u16_at(b: &[u8], off: usize) -> u16 {
        b.get(off..off + 2)
            .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
    }

    /// The big-endian u32 at `off` (0 when out of bounds).
    pub fn u32_at(b: &[u8], off: usize) -> u32 {
        b.get(off..off + 4)
            .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// The big-endian u64 at `off` (0 when out of bounds).
    pub fn u64_at(b: &[u8], off: usize) -> u64 {
        b.get(off..off + 8).map_or(0, |s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_be_bytes(a)
        })
    }

    /// Stores `v` big-endian at `off` (ignored when out of bounds).
    pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
        if let Some(s) = b.get_mut(off..off + 2) {
            s.copy_from_slice(&v.to_be_bytes());
        }
    }

    /// Stores `v` big-endian at `off` (ignored when out of bounds).
    pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
        if let Some(s) = b.get_mut(off..off + 4) {
            s.copy_from_slice(&v.to_be_bytes());
        }
    }

    /// Stores `v` big-endian at `off` (ignored when out of bounds).
    pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
        if let Some(s) = b.get_mut(off..off + 8) {
            s.copy_from_slice(&v.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::testing::guest_memory;

    #[test]
    fn absolute_access() {
        let mem = guest_memory(&[(0, 0x2000)]);
        mem.write_operand(0x1ff8, &[1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap();
        let mut b = [0u8; 8];
        mem.read_operand(0x1ff8, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            mem.read_operand(0x1ffc, &mut b),
            Err(ProgramCheck::Addressing)
        );
        assert_eq!(
            mem.read_operand(u64::MAX - 2, &mut b),
            Err(ProgramCheck::Addressing)
        );
        let mut blk = [0u8; 8];
        be::put_u32(&mut blk, 4, 0x1122_3344);
        assert_eq!(be::u32_at(&blk, 4), 0x1122_3344);
        assert_eq!(blk[4], 0x11);
        assert_eq!(be::u64_at(&blk, 4), 0);
    }
}
