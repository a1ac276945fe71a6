//! Register descriptions: one [`RegSpec`] per register, collected in a `static` table per model.
//!
//! A register is described by its offset, width, reset value and three masks:
//!
//! | mask   | guest write of 1       | guest write of 0 | guest read        |
//! |--------|------------------------|------------------|-------------------|
//! | `rw`   | sets the bit           | clears the bit   | stored value      |
//! | `w1c`  | clears the bit         | no effect        | stored value      |
//! | `wo`   | stored (for handlers)  | stored           | always 0          |
//! | (none) | read-only: no effect   | no effect        | stored value      |
//!
//! Read-only bits keep their value; the model changes them with
//! [`RegisterFile::set`](super::RegisterFile::set) or
//! [`RegisterFile::update`](super::RegisterFile::update).
//!
//! ```
//! use viommu_shared::regs::RegSpec;
//!
//! static REGS: &[RegSpec] = &[
//!     RegSpec::ro32("VER", 0x00, 0x10),
//!     RegSpec::ro64("CAP", 0x08, 0x00d2_0008_c40e_0462),
//!     RegSpec::wo32("GCMD", 0x18, 0xff80_0000),
//!     RegSpec::ro32("GSTS", 0x1c, 0),
//!     RegSpec::rw64("RTADDR", 0x20, 0, !0xfff),
//!     RegSpec::w1c32("FSTS", 0x34, 0, 0x7f),
//!     // Mixed registers: start from any constructor and add masks.
//!     RegSpec::ro32("FECTL", 0x38, 0x8000_0000).with_rw(0x8000_0000),
//! ];
//! assert!(viommu_shared::regs::validate_specs(REGS).is_ok());
//! ```

use std::fmt;

/// Width of a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    /// 32-bit register, naturally aligned to 4 bytes.
    W32,
    /// 64-bit register, naturally aligned to 8 bytes.
    W64,
}

impl Width {
    /// Size of the register in bytes (4 or 8).
    pub const fn bytes(self) -> u64 {
        match self {
            Width::W32 => 4,
            Width::W64 => 8,
        }
    }

    /// Mask of the bits that exist in a register of this width.
    pub const fn mask(self) -> u64 {
        match self {
            Width::W32 => 0xffff_ffff,
            Width::W64 => u64::MAX,
        }
    }
}

/// How the bytes of a multi-byte value are laid out in the register address space and in
/// MMIO data buffers.
///
/// x86 IOMMUs (VT-d, AMD-Vi) are little-endian: the byte at the register's offset holds bits
/// 0..8. s390 zPCI is big-endian: the byte at the register's offset holds the most significant
/// byte. A [`RegisterFile`](super::RegisterFile) and the
/// [`MmioAdapter`](super::MmioAdapter) in front of it must use the same order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Least significant byte first (x86).
    #[default]
    Little,
    /// Most significant byte first (s390).
    Big,
}

impl ByteOrder {
    /// Decodes a 1, 2, 4 or 8 byte buffer into a value; `None` for any other length.
    pub fn decode(self, data: &[u8]) -> Option<u64> {
        if !is_access_len(data.len()) {
            return None;
        }
        let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
        Some(match self {
            ByteOrder::Little => data.iter().rev().fold(0, fold),
            ByteOrder::Big => data.iter().fold(0, fold),
        })
    }

    /// Encodes the low `data.len()` bytes of `value` into `data`.
    ///
    /// Returns `false` and fills `data` with zeros when its length is not 1, 2, 4 or 8.
    pub fn encode(self, value: u64, data: &mut [u8]) -> bool {
        let len = data.len();
        if !is_access_len(len) {
            data.fill(0);
            return false;
        }
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = (value >> self.byte_shift(i as u64, len as u64)) as u8;
        }
        true
    }

    /// Bit position (0, 8, ..., 56) of byte `index` of a `size`-byte value laid out in this
    /// order. `index` must be below `size` and `size` at most 8.
    pub(crate) const fn byte_shift(self, index: u64, size: u64) -> u64 {
        match self {
            ByteOrder::Little => index * 8,
            ByteOrder::Big => (size - 1 - index) * 8,
        }
    }
}

/// Whether `len` is a valid register access length (1, 2, 4 or 8 bytes).
pub const fn is_access_len(len: usize) -> bool {
    matches!(len, 1 | 2 | 4 | 8)
}

/// Description of one register: where it is, how wide, its reset value, and which bits the
/// guest may write and how.
///
/// Bits in none of `rw`, `w1c` and `wo` are read-only. The three masks must be disjoint and,
/// like `reset`, fit in the register's width (checked by [`validate_specs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegSpec {
    /// Name, for logs and lookups; unique within a table.
    pub name: &'static str,
    /// Byte offset in the register window, naturally aligned to the width.
    pub offset: u64,
    /// Register width.
    pub width: Width,
    /// Value after reset (including read-only bits).
    pub reset: u64,
    /// Bits software can write (read back as written).
    pub rw: u64,
    /// Write-1-to-clear bits.
    pub w1c: u64,
    /// Write-only bits: stored when written (handlers see them), always read as 0.
    pub wo: u64,
}

impl RegSpec {
    /// A register with the given geometry, reset value 0 and all bits read-only.
    pub const fn new(name: &'static str, offset: u64, width: Width) -> RegSpec {
        RegSpec {
            name,
            offset,
            width,
            reset: 0,
            rw: 0,
            w1c: 0,
            wo: 0,
        }
    }

    /// A read-only 32-bit register.
    pub const fn ro32(name: &'static str, offset: u64, reset: u64) -> RegSpec {
        RegSpec::new(name, offset, Width::W32).with_reset(reset)
    }

    /// A read-only 64-bit register.
    pub const fn ro64(name: &'static str, offset: u64, reset: u64) -> RegSpec {
        RegSpec::new(name, offset, Width::W64).with_reset(reset)
    }

    /// A 32-bit register whose `rw` bits are read-write (the others read-only).
    pub const fn rw32(name: &'static str, offset: u64, reset: u64, rw: u64) -> RegSpec {
        RegSpec::ro32(name, offset, reset).with_rw(rw)
    }

    /// A 64-bit register whose `rw` bits are read-write (the others read-only).
    pub const fn rw64(name: &'static str, offset: u64, reset: u64, rw: u64) -> RegSpec {
        RegSpec::ro64(name, offset, reset).with_rw(rw)
    }

    /// A 32-bit register whose `w1c` bits are write-1-to-clear (the others read-only).
    pub const fn w1c32(name: &'static str, offset: u64, reset: u64, w1c: u64) -> RegSpec {
        RegSpec::ro32(name, offset, reset).with_w1c(w1c)
    }

    /// A 64-bit register whose `w1c` bits are write-1-to-clear (the others read-only).
    pub const fn w1c64(name: &'static str, offset: u64, reset: u64, w1c: u64) -> RegSpec {
        RegSpec::ro64(name, offset, reset).with_w1c(w1c)
    }

    /// A 32-bit register whose `wo` bits are write-only (the others read-only), reset to 0.
    pub const fn wo32(name: &'static str, offset: u64, wo: u64) -> RegSpec {
        RegSpec::new(name, offset, Width::W32).with_wo(wo)
    }

    /// A 64-bit register whose `wo` bits are write-only (the others read-only), reset to 0.
    pub const fn wo64(name: &'static str, offset: u64, wo: u64) -> RegSpec {
        RegSpec::new(name, offset, Width::W64).with_wo(wo)
    }

    /// This register with reset value `reset`.
    pub const fn with_reset(mut self, reset: u64) -> RegSpec {
        self.reset = reset;
        self
    }

    /// This register with the `rw` bits added to its read-write mask.
    pub const fn with_rw(mut self, rw: u64) -> RegSpec {
        self.rw |= rw;
        self
    }

    /// This register with the `w1c` bits added to its write-1-to-clear mask.
    pub const fn with_w1c(mut self, w1c: u64) -> RegSpec {
        self.w1c |= w1c;
        self
    }

    /// This register with the `wo` bits added to its write-only mask.
    pub const fn with_wo(mut self, wo: u64) -> RegSpec {
        self.wo |= wo;
        self
    }

    /// Size in bytes (4 or 8).
    pub const fn size(&self) -> u64 {
        self.width.bytes()
    }

    /// Offset of the register's last byte (never overflows for a naturally aligned register).
    pub const fn last_byte(&self) -> u64 {
        self.offset | (self.size() - 1)
    }

    /// Whether byte `offset` of the register window belongs to this register.
    pub const fn contains(&self, offset: u64) -> bool {
        offset >= self.offset && offset - self.offset < self.size()
    }

    /// Bits the guest can write in any way (`rw | w1c | wo`).
    pub const fn writable(&self) -> u64 {
        self.rw | self.w1c | self.wo
    }

    /// Read-only bits: bits of the width in none of the masks.
    pub const fn read_only(&self) -> u64 {
        self.width.mask() & !self.writable()
    }

    /// Bits a guest read returns (everything in the width except `wo`).
    pub const fn readable(&self) -> u64 {
        self.width.mask() & !self.wo
    }

    /// The stored value after a guest write.
    ///
    /// `value` holds the written bits in register position, `covered` the bits of the register
    /// the access covered (whole bytes). Outside `covered` nothing changes; inside it, `rw` and
    /// `wo` bits take the written value, `w1c` bits are cleared where a 1 is written and
    /// read-only bits keep their value.
    pub const fn apply_write(&self, old: u64, value: u64, covered: u64) -> u64 {
        let covered = covered & self.width.mask();
        let take = (self.rw | self.wo) & covered;
        let clear = self.w1c & covered & value;
        ((old & !take) | (value & take)) & !clear
    }
}

/// Why a register table is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpecError {
    /// The offset is not a multiple of the register's width.
    Misaligned {
        /// The register.
        name: &'static str,
        /// Its offset.
        offset: u64,
    },
    /// Two registers share at least one byte.
    Overlap {
        /// The register listed first.
        first: &'static str,
        /// The register listed second.
        second: &'static str,
    },
    /// Two registers have the same name.
    DuplicateName {
        /// The name.
        name: &'static str,
    },
    /// `rw`, `w1c` and `wo` are not disjoint.
    MaskConflict {
        /// The register.
        name: &'static str,
    },
    /// The reset value or a mask has bits beyond the register's width.
    BeyondWidth {
        /// The register.
        name: &'static str,
    },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Misaligned { name, offset } => {
                write!(f, "register {name} at {offset:#x} is not naturally aligned")
            }
            SpecError::Overlap { first, second } => {
                write!(f, "registers {first} and {second} overlap")
            }
            SpecError::DuplicateName { name } => write!(f, "register name {name} is used twice"),
            SpecError::MaskConflict { name } => {
                write!(f, "register {name}: rw, w1c and wo masks overlap")
            }
            SpecError::BeyondWidth { name } => {
                write!(
                    f,
                    "register {name}: reset value or mask wider than the register"
                )
            }
        }
    }
}

impl std::error::Error for SpecError {}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Checks a register table: natural alignment, masks disjoint and within the width, reset
/// value within the width, no two registers overlapping, unique names.
///
/// It is a `const fn`, so a model can check its table at compile time:
///
/// ```
/// use viommu_shared::regs::{validate_specs, RegSpec};
///
/// static REGS: &[RegSpec] = &[RegSpec::rw32("A", 0x0, 0, 0xff), RegSpec::ro32("B", 0x4, 1)];
/// const _: () = assert!(validate_specs(REGS).is_ok());
/// ```
pub const fn validate_specs(specs: &[RegSpec]) -> Result<(), SpecError> {
    let mut i = 0;
    while i < specs.len() {
        let s = &specs[i];
        // Sizes are powers of two.
        if s.offset & (s.size() - 1) != 0 {
            return Err(SpecError::Misaligned {
                name: s.name,
                offset: s.offset,
            });
        }
        let all = s.reset | s.rw | s.w1c | s.wo;
        if all & !s.width.mask() != 0 {
            return Err(SpecError::BeyondWidth { name: s.name });
        }
        if s.rw & s.w1c != 0 || s.rw & s.wo != 0 || s.w1c & s.wo != 0 {
            return Err(SpecError::MaskConflict { name: s.name });
        }
        let mut j = 0;
        while j < i {
            let t = &specs[j];
            if s.offset <= t.last_byte() && t.offset <= s.last_byte() {
                return Err(SpecError::Overlap {
                    first: t.name,
                    second: s.name,
                });
            }
            if str_eq(s.name, t.name) {
                return Err(SpecError::DuplicateName { name: s.name });
            }
            j += 1;
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_masks() {
        let s = RegSpec::ro32("X", 0x10, 0x8000_0001)
            .with_rw(0xff00)
            .with_w1c(0x00f0)
            .with_wo(0x000e);
        assert_eq!(s.reset, 0x8000_0001);
        assert_eq!(s.writable(), 0xfffe);
        assert_eq!(s.read_only(), 0xffff_0001);
        assert_eq!(s.readable(), 0xffff_fff1);
        assert_eq!(s.size(), 4);
        assert_eq!(s.last_byte(), 0x13);
        assert!(s.contains(0x10) && s.contains(0x13));
        assert!(!s.contains(0xf) && !s.contains(0x14));
        assert_eq!(RegSpec::wo64("W", 8, 3).wo, 3);
        assert_eq!(RegSpec::w1c64("C", 8, 1, 3).w1c, 3);
        assert_eq!(RegSpec::rw64("R", 8, 0, 3).rw, 3);
    }

    #[test]
    fn apply_write_masks() {
        let s = RegSpec::ro32("X", 0, 0)
            .with_rw(0x0000_00ff)
            .with_w1c(0x0000_ff00)
            .with_wo(0x00ff_0000);
        let old = 0xaa00_ff55;
        let new = s.apply_write(old, 0x5534_0f0f, 0xffff_ffff);
        // RO byte kept, WO byte stored, W1C low nibble cleared, RW byte replaced.
        assert_eq!(new, 0xaa34_f00f);
        // Nothing outside the covered bytes changes.
        assert_eq!(s.apply_write(old, 0xffff_ffff, 0), old);
        assert_eq!(s.apply_write(old, 0, 0x0000_00ff), 0xaa00_ff00);
    }

    #[test]
    fn validation() {
        assert_eq!(validate_specs(&[]), Ok(()));
        assert_eq!(
            validate_specs(&[RegSpec::ro64("A", 4, 0)]),
            Err(SpecError::Misaligned {
                name: "A",
                offset: 4
            })
        );
        assert_eq!(
            validate_specs(&[RegSpec::ro64("A", 0, 0), RegSpec::ro32("B", 4, 0)]),
            Err(SpecError::Overlap {
                first: "A",
                second: "B"
            })
        );
        assert_eq!(
            validate_specs(&[RegSpec::ro32("B", 4, 0), RegSpec::ro64("A", 0, 0)]),
            Err(SpecError::Overlap {
                first: "B",
                second: "A"
            })
        );
        assert_eq!(
            validate_specs(&[RegSpec::ro32("A", 0, 0), RegSpec::ro32("A", 4, 0)]),
            Err(SpecError::DuplicateName { name: "A" })
        );
        assert_eq!(
            validate_specs(&[RegSpec::rw32("A", 0, 0, 3).with_w1c(2)]),
            Err(SpecError::MaskConflict { name: "A" })
        );
        assert_eq!(
            validate_specs(&[RegSpec::ro32("A", 0, 1 << 32)]),
            Err(SpecError::BeyondWidth { name: "A" })
        );
        assert_eq!(
            validate_specs(&[RegSpec::wo32("A", 0, 1 << 40)]),
            Err(SpecError::BeyondWidth { name: "A" })
        );
        // The highest aligned 64-bit register does not overflow.
        let top = [RegSpec::ro64("T", u64::MAX - 7, 0)];
        assert_eq!(validate_specs(&top), Ok(()));
        assert_eq!(top[0].last_byte(), u64::MAX);
        assert!(
            SpecError::MaskConflict { name: "A" }
                .to_string()
                .contains('A')
        );
    }

    #[test]
    fn byte_order_codec() {
        let mut buf = [0u8; 4];
        assert!(ByteOrder::Little.encode(0x1234_5678, &mut buf));
        assert_eq!(buf, [0x78, 0x56, 0x34, 0x12]);
        assert_eq!(ByteOrder::Little.decode(&buf), Some(0x1234_5678));
        assert!(ByteOrder::Big.encode(0x1234_5678, &mut buf));
        assert_eq!(buf, [0x12, 0x34, 0x56, 0x78]);
        assert_eq!(ByteOrder::Big.decode(&buf), Some(0x1234_5678));
        let mut one = [0u8; 1];
        assert!(ByteOrder::Big.encode(0xabcd, &mut one));
        assert_eq!(one, [0xcd]);
        let mut eight = [0u8; 8];
        assert!(ByteOrder::Big.encode(0x0102_0304_0506_0708, &mut eight));
        assert_eq!(eight, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            ByteOrder::Little.decode(&eight),
            Some(0x0807_0605_0403_0201)
        );
        let mut bad = [0xffu8; 3];
        assert!(!ByteOrder::Little.encode(1, &mut bad));
        assert_eq!(bad, [0; 3]);
        assert_eq!(ByteOrder::Big.decode(&bad), None);
        assert_eq!(ByteOrder::Big.decode(&[]), None);
        assert_eq!(ByteOrder::Big.decode(&[0; 16]), None);
    }
}
