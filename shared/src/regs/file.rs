//! [`RegisterFile`]: the current values of a register table and the guest access rules.

use std::fmt;

use super::spec::{ByteOrder, RegSpec, SpecError, is_access_len, validate_specs};

/// Why a guest access was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessError {
    /// The length is not 1, 2, 4 or 8 bytes.
    BadLength {
        /// The length of the access.
        len: usize,
    },
    /// The offset is not a multiple of the length.
    Misaligned {
        /// The offset of the access.
        offset: u64,
        /// The length of the access.
        len: usize,
    },
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::BadLength { len } => write!(f, "bad register access length {len}"),
            AccessError::Misaligned { offset, len } => {
                write!(f, "misaligned {len}-byte register access at {offset:#x}")
            }
        }
    }
}

impl std::error::Error for AccessError {}

/// Checks that an access is 1, 2, 4 or 8 bytes long and naturally aligned.
///
/// A valid access never wraps around the end of the address space and touches at most two
/// registers (registers are at least 4 bytes and naturally aligned).
pub fn check_access(offset: u64, len: usize) -> Result<(), AccessError> {
    if !is_access_len(len) {
        return Err(AccessError::BadLength { len });
    }
    // `len` is a power of two.
    if offset & (len as u64 - 1) != 0 {
        return Err(AccessError::Misaligned { offset, len });
    }
    Ok(())
}

/// One register changed by a guest write, for side-effect dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegWrite {
    /// Index of the register in the table.
    pub index: usize,
    /// The register's description.
    pub spec: &'static RegSpec,
    /// Stored value before the write (including write-only bits).
    pub old: u64,
    /// Stored value after the write (including the write-only bits just written).
    pub new: u64,
    /// The bits the guest wrote, in register position; 0 outside `covered`.
    pub written: u64,
    /// The register bits the access covered (whole bytes): all of the width for a full-width
    /// write, less for a sub-register write.
    pub covered: u64,
}

impl RegWrite {
    /// Offset of the register.
    pub fn offset(&self) -> u64 {
        self.spec.offset
    }

    /// Name of the register.
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// Bits whose stored value changed.
    pub fn changed(&self) -> u64 {
        self.old ^ self.new
    }

    /// Bits that went from 0 to 1.
    pub fn rose(&self) -> u64 {
        !self.old & self.new
    }

    /// Bits that went from 1 to 0.
    pub fn fell(&self) -> u64 {
        self.old & !self.new
    }

    /// Bits of `mask` the guest wrote as 1 in this access (whatever their type). Useful for
    /// write-only command bits, which a handler should act on even if already stored as 1.
    pub fn wrote_ones(&self, mask: u64) -> u64 {
        self.written & self.covered & mask
    }

    /// Write-1-to-clear bits this write actually cleared.
    pub fn cleared_w1c(&self) -> u64 {
        self.fell() & self.spec.w1c
    }

    /// Whether the access covered the whole register.
    pub fn is_full_width(&self) -> bool {
        self.covered == self.spec.width.mask()
    }
}

/// What a guest write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write reached one or two registers (two only for an 8-byte write over two
    /// adjacent 32-bit registers), listed in offset order. Bytes of the access that hit no
    /// register were dropped.
    Written {
        /// The register at the lower offset.
        first: RegWrite,
        /// The register at the higher offset, if the access reached two.
        second: Option<RegWrite>,
    },
    /// The access was valid but hit no register; it was dropped.
    Unmapped,
    /// The access was malformed and ignored.
    Rejected(AccessError),
}

impl WriteOutcome {
    /// The registers written, in offset order (empty unless [`WriteOutcome::Written`]).
    pub fn writes(&self) -> impl Iterator<Item = &RegWrite> + '_ {
        let (a, b) = match self {
            WriteOutcome::Written { first, second } => (Some(first), second.as_ref()),
            _ => (None, None),
        };
        a.into_iter().chain(b)
    }

    /// The write to the register at `offset`, if this access reached it.
    pub fn get(&self, offset: u64) -> Option<&RegWrite> {
        self.writes().find(|w| w.offset() == offset)
    }

    /// Why the access was ignored, if it was malformed.
    pub fn error(&self) -> Option<AccessError> {
        match self {
            WriteOutcome::Rejected(e) => Some(*e),
            _ => None,
        }
    }
}

/// Part of an access that falls in one register.
#[derive(Clone, Copy)]
struct Piece {
    index: usize,
    value: u64,
    covered: u64,
}

/// The current values of a table of [`RegSpec`]s, with guest read/write semantics.
///
/// Guest accesses ([`read`](Self::read), [`write`](Self::write)) must be 1, 2, 4 or 8 bytes
/// and naturally aligned; anything else is ignored (reads return 0) and reported. Within a
/// valid access, bytes that belong to no register read as 0 and ignore writes; an access may
/// cover part of a register or two adjacent 32-bit registers. The model side
/// ([`get`](Self::get), [`set`](Self::set), [`update`](Self::update)) bypasses the masks.
///
/// ```
/// use viommu_shared::regs::{RegSpec, RegisterFile};
///
/// static REGS: &[RegSpec] = &[
///     RegSpec::rw32("CTRL", 0x0, 0, 0xff),
///     RegSpec::w1c32("STS", 0x4, 0, 0x3),
/// ];
/// let mut regs = RegisterFile::new(REGS).unwrap();
/// regs.set_at(0x4, 0x3);
/// let out = regs.write(0x0, 8, 0x0000_0001_ffff_ffff); // CTRL and STS at once
/// assert_eq!(out.writes().count(), 2);
/// assert_eq!(regs.read(0x0, 4), 0xff);
/// assert_eq!(regs.read(0x4, 4), 0x2);
/// ```
#[derive(Clone, Debug)]
pub struct RegisterFile {
    specs: &'static [RegSpec],
    values: Vec<u64>,
    /// Spec indices sorted by offset.
    by_offset: Vec<usize>,
    order: ByteOrder,
}

impl RegisterFile {
    /// A little-endian register file (x86) at reset, after validating `specs`.
    pub fn new(specs: &'static [RegSpec]) -> Result<RegisterFile, SpecError> {
        RegisterFile::with_byte_order(specs, ByteOrder::Little)
    }

    /// A register file with the given byte order at reset, after validating `specs`.
    ///
    /// The byte order says which byte of a register lives at its offset and how the bytes of
    /// an access value map to addresses (see [`ByteOrder`]).
    pub fn with_byte_order(
        specs: &'static [RegSpec],
        order: ByteOrder,
    ) -> Result<RegisterFile, SpecError> {
        validate_specs(specs)?;
        let mut by_offset: Vec<usize> = (0..specs.len()).collect();
        by_offset.sort_by_key(|&i| specs[i].offset);
        Ok(RegisterFile {
            specs,
            values: specs.iter().map(|s| s.reset).collect(),
            by_offset,
            order,
        })
    }

    /// The register table.
    pub fn specs(&self) -> &'static [RegSpec] {
        self.specs
    }

    /// The byte order of guest accesses.
    pub fn byte_order(&self) -> ByteOrder {
        self.order
    }

    /// Number of registers.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether the table has no registers.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Puts every register back to its reset value.
    pub fn reset(&mut self) {
        for (value, spec) in self.values.iter_mut().zip(self.specs) {
            *value = spec.reset;
        }
    }

    /// The description of register `index`.
    pub fn spec(&self, index: usize) -> Option<&'static RegSpec> {
        self.specs.get(index)
    }

    /// Index of the register that starts at `offset`.
    pub fn index_at(&self, offset: u64) -> Option<usize> {
        self.find(offset)
            .filter(|&i| self.specs[i].offset == offset)
    }

    /// Index of the register named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// Stored value of register `index`, including read-only and write-only bits.
    pub fn get(&self, index: usize) -> Option<u64> {
        self.values.get(index).copied()
    }

    /// Stored value of the register that starts at `offset`.
    pub fn get_at(&self, offset: u64) -> Option<u64> {
        self.get(self.index_at(offset)?)
    }

    /// Stored value of the register named `name`.
    pub fn get_named(&self, name: &str) -> Option<u64> {
        self.get(self.index_of(name)?)
    }

    /// Sets register `index` to `value` (truncated to its width), whatever its masks say.
    /// Returns the old value, or `None` if there is no such register.
    pub fn set(&mut self, index: usize, value: u64) -> Option<u64> {
        self.update(index, u64::MAX, value)
    }

    /// [`set`](Self::set) for the register that starts at `offset`.
    pub fn set_at(&mut self, offset: u64, value: u64) -> Option<u64> {
        self.set(self.index_at(offset)?, value)
    }

    /// Replaces the bits of register `index` under `mask` with those of `bits`, whatever the
    /// register's masks say. Returns the old value, or `None` if there is no such register.
    pub fn update(&mut self, index: usize, mask: u64, bits: u64) -> Option<u64> {
        let width = self.specs.get(index)?.width.mask();
        let value = self.values.get_mut(index)?;
        let old = *value;
        *value = ((old & !mask) | (bits & mask)) & width;
        Some(old)
    }

    /// [`update`](Self::update) for the register that starts at `offset`.
    pub fn update_at(&mut self, offset: u64, mask: u64, bits: u64) -> Option<u64> {
        self.update(self.index_at(offset)?, mask, bits)
    }

    /// Guest read of `len` bytes at `offset`; 0 for a malformed access (see
    /// [`try_read`](Self::try_read)).
    pub fn read(&self, offset: u64, len: usize) -> u64 {
        self.try_read(offset, len).unwrap_or(0)
    }

    /// Guest read of `len` bytes at `offset`: write-only bits and unmapped bytes read as 0.
    pub fn try_read(&self, offset: u64, len: usize) -> Result<u64, AccessError> {
        check_access(offset, len)?;
        let len = len as u64;
        let mut result = 0;
        let mut cached = None;
        for i in 0..len {
            let addr = offset + i;
            let Some(index) = self.find_cached(addr, &mut cached) else {
                continue;
            };
            let spec = &self.specs[index];
            let visible = self.values[index] & spec.readable();
            let shift = self.order.byte_shift(addr - spec.offset, spec.size());
            let byte = (visible >> shift) & 0xff;
            result |= byte << self.order.byte_shift(i, len);
        }
        Ok(result)
    }

    /// Guest write of the low `len` bytes of `value` at `offset`.
    ///
    /// Each register the access reaches is updated by [`RegSpec::apply_write`] (read-write and
    /// write-only bits take the new value, write-1-to-clear bits are cleared where 1 is
    /// written, read-only bits are kept) and reported in the outcome with its old and new
    /// value. Malformed accesses change nothing and are reported as
    /// [`WriteOutcome::Rejected`].
    pub fn write(&mut self, offset: u64, len: usize, value: u64) -> WriteOutcome {
        if let Err(e) = check_access(offset, len) {
            return WriteOutcome::Rejected(e);
        }
        let mut pieces = self.split(offset, len as u64, value).into_iter().flatten();
        let Some(first) = pieces.next() else {
            return WriteOutcome::Unmapped;
        };
        let first = self.apply(first);
        let second = pieces.next().map(|p| self.apply(p));
        WriteOutcome::Written { first, second }
    }

    fn apply(&mut self, piece: Piece) -> RegWrite {
        let spec = &self.specs[piece.index];
        let old = self.values[piece.index];
        let new = spec.apply_write(old, piece.value, piece.covered);
        self.values[piece.index] = new;
        RegWrite {
            index: piece.index,
            spec,
            old,
            new,
            written: piece.value & piece.covered,
            covered: piece.covered,
        }
    }

    /// Splits a valid access into per-register pieces, in offset order. A valid access
    /// reaches at most two registers; anything beyond (impossible) would be dropped.
    fn split(&self, offset: u64, len: u64, value: u64) -> [Option<Piece>; 2] {
        let mut pieces: [Option<Piece>; 2] = [None, None];
        let mut cached = None;
        for i in 0..len {
            let addr = offset + i;
            let Some(index) = self.find_cached(addr, &mut cached) else {
                continue;
            };
            let spec = &self.specs[index];
            let byte = (value >> self.order.byte_shift(i, len)) & 0xff;
            let shift = self.order.byte_shift(addr - spec.offset, spec.size());
            let slot = pieces
                .iter_mut()
                .find(|p| p.is_none_or(|p| p.index == index));
            if let Some(slot) = slot {
                let piece = slot.get_or_insert(Piece {
                    index,
                    value: 0,
                    covered: 0,
                });
                piece.value |= byte << shift;
                piece.covered |= 0xff << shift;
            }
        }
        pieces
    }

    /// [`find`](Self::find), first trying the register found last time.
    fn find_cached(&self, addr: u64, cached: &mut Option<usize>) -> Option<usize> {
        if let Some(i) = cached.filter(|&i| self.specs[i].contains(addr)) {
            return Some(i);
        }
        let found = self.find(addr);
        if found.is_some() {
            *cached = found;
        }
        found
    }

    /// Index of the register containing byte `addr`.
    fn find(&self, addr: u64) -> Option<usize> {
        let pos = self
            .by_offset
            .partition_point(|&i| self.specs[i].offset <= addr);
        let index = *self.by_offset.get(pos.checked_sub(1)?)?;
        self.specs[index].contains(addr).then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::spec::Width;

    const RW: u64 = 0x0000_00ff;
    const W1C: u64 = 0x0000_ff00;
    const WO: u64 = 0x00ff_0000;
    // The top byte of MIX is read-only.

    static REGS: &[RegSpec] = &[
        // Deliberately out of offset order.
        RegSpec::ro64("CAP", 0x08, 0x1122_3344_5566_7788),
        RegSpec::ro32("MIX", 0x00, 0xa500_0000)
            .with_rw(RW)
            .with_w1c(W1C)
            .with_wo(WO),
        RegSpec::rw32("LO", 0x10, 0, 0xffff_ffff),
        RegSpec::w1c32("HI", 0x14, 0xffff_ffff, 0x0000_ffff),
        RegSpec::rw64("ADDR", 0x20, 0, !0xfff),
        // 0x18..0x20 and 0x28..0x30 are unmapped; 0x30 is a lone 32-bit register.
        RegSpec::wo32("CMD", 0x30, 0xffff_ffff),
    ];

    fn regs() -> RegisterFile {
        RegisterFile::new(REGS).unwrap()
    }

    #[test]
    fn reset_values_and_lookup() {
        let r = regs();
        assert_eq!(r.len(), 6);
        assert!(!r.is_empty());
        assert_eq!(r.byte_order(), ByteOrder::Little);
        assert_eq!(r.specs().len(), 6);
        assert_eq!(r.index_at(0x0), Some(1));
        assert_eq!(r.index_at(0x8), Some(0));
        assert_eq!(r.index_at(0xc), None); // inside CAP, not its start
        assert_eq!(r.index_at(0x18), None);
        assert_eq!(r.index_of("HI"), Some(3));
        assert_eq!(r.index_of("NOPE"), None);
        assert_eq!(r.get(0), Some(0x1122_3344_5566_7788));
        assert_eq!(r.get(99), None);
        assert_eq!(r.get_at(0x0), Some(0xa500_0000));
        assert_eq!(r.get_named("HI"), Some(0xffff_ffff));
        assert_eq!(r.spec(2).map(|s| s.name), Some("LO"));
        assert_eq!(r.spec(6), None);
        assert_eq!(r.read(0x8, 8), 0x1122_3344_5566_7788);
    }

    #[test]
    fn masks_rw_ro_w1c_wo() {
        let mut r = regs();
        r.set_at(0x0, 0xa500_ff00); // all W1C bits set
        let out = r.write(0x0, 4, 0xffff_0f0f);
        let w = out.get(0x0).copied().unwrap();
        assert_eq!(w.name(), "MIX");
        assert_eq!(w.old, 0xa500_ff00);
        // RO top byte kept, WO byte stored, W1C 0x0f00 cleared, RW byte written.
        assert_eq!(w.new, 0xa5ff_f00f);
        assert_eq!(r.get_at(0x0), Some(0xa5ff_f00f));
        // WO bits read back as 0.
        assert_eq!(r.read(0x0, 4), 0xa500_f00f);
        assert_eq!(w.cleared_w1c(), 0x0f00);
        assert_eq!(w.wrote_ones(WO), WO);
        assert_eq!(w.changed(), 0x00ff_0f0f);
        assert_eq!(w.rose(), 0x00ff_000f);
        assert_eq!(w.fell(), 0x0000_0f00);
        assert!(w.is_full_width());
        assert_eq!(w.written, 0xffff_0f0f);
        // Writing 0 to W1C bits does nothing; RW bits follow; WO bits are stored as written.
        r.write(0x0, 4, 0);
        assert_eq!(r.get_at(0x0), Some(0xa500_f000));
        // Read-only register ignores writes entirely.
        let out = r.write(0x8, 8, 0);
        assert_eq!(out.get(0x8).unwrap().new, 0x1122_3344_5566_7788);
        assert_eq!(r.read(0x8, 8), 0x1122_3344_5566_7788);
        // RW mask with read-only low bits.
        r.write(0x20, 8, u64::MAX);
        assert_eq!(r.read(0x20, 8), !0xfff);
        // Write-only register reads as 0 but keeps the last value for the model.
        let out = r.write(0x30, 4, 0x1234_5678);
        assert_eq!(out.get(0x30).unwrap().new, 0x1234_5678);
        assert_eq!(r.read(0x30, 4), 0);
        assert_eq!(r.get_at(0x30), Some(0x1234_5678));
    }

    #[test]
    fn sub_register_writes() {
        let mut r = regs();
        // 1-byte write into the RW byte of MIX.
        let out = r.write(0x0, 1, 0x5a);
        let w = *out.get(0x0).unwrap();
        assert_eq!(w.covered, 0xff);
        assert_eq!(w.written, 0x5a);
        assert!(!w.is_full_width());
        assert_eq!(r.read(0x0, 4), 0xa500_005a);
        // 1-byte write into the RO top byte: no change.
        r.write(0x3, 1, 0x00);
        assert_eq!(r.read(0x3, 1), 0xa5);
        // 2-byte write into the upper half of LO, then the lower half.
        r.write(0x12, 2, 0xbeef);
        r.write(0x10, 2, 0xcafe);
        assert_eq!(r.read(0x10, 4), 0xbeef_cafe);
        assert_eq!(r.read(0x12, 2), 0xbeef);
        assert_eq!(r.read(0x11, 1), 0xca);
        // Value bits beyond the length are ignored.
        r.write(0x10, 1, 0xffff_ff00);
        assert_eq!(r.read(0x10, 4), 0xbeef_ca00);
        // 4-byte write into the upper half of a 64-bit register.
        let out = r.write(0x24, 4, 0xdead_beef);
        let w = *out.get(0x20).unwrap();
        assert_eq!(w.covered, 0xffff_ffff_0000_0000);
        assert_eq!(w.written, 0xdead_beef_0000_0000);
        assert_eq!(r.read(0x20, 8), 0xdead_beef_0000_0000);
        r.write(0x20, 4, 0x1234_5fff);
        assert_eq!(r.read(0x20, 8), 0xdead_beef_1234_5000);
        assert_eq!(r.read(0x24, 4), 0xdead_beef);
        assert_eq!(r.read(0x26, 2), 0xdead);
    }

    #[test]
    fn eight_bytes_over_two_32_bit_registers() {
        let mut r = regs();
        assert_eq!(r.read(0x10, 8), 0xffff_ffff_0000_0000);
        let out = r.write(0x10, 8, 0x0000_00ff_1234_5678);
        let ws: Vec<_> = out.writes().copied().collect();
        assert_eq!(ws.len(), 2);
        assert_eq!((ws[0].name(), ws[0].old, ws[0].new), ("LO", 0, 0x1234_5678));
        assert_eq!(
            (ws[1].name(), ws[1].old, ws[1].new),
            ("HI", 0xffff_ffff, 0xffff_ff00)
        );
        assert_eq!(r.read(0x10, 8), 0xffff_ff00_1234_5678);
        // Half-mapped 8-byte access: 0x30 is CMD (write-only), 0x34 unmapped.
        let out = r.write(0x30, 8, 0xffff_ffff_0000_0001);
        assert_eq!(out.writes().count(), 1);
        assert_eq!(out.get(0x30).unwrap().new, 1);
        assert_eq!(r.read(0x30, 8), 0);
    }

    #[test]
    fn unmapped_and_invalid_accesses() {
        let mut r = regs();
        let before: Vec<_> = (0..r.len()).map(|i| r.get(i)).collect();
        assert_eq!(r.read(0x18, 8), 0);
        assert_eq!(r.read(0x1000, 4), 0);
        assert_eq!(r.write(0x18, 8, u64::MAX), WriteOutcome::Unmapped);
        assert_eq!(r.write(u64::MAX - 7, 8, 1), WriteOutcome::Unmapped);
        assert_eq!(r.write(u64::MAX, 1, 1), WriteOutcome::Unmapped);
        for len in [0, 3, 5, 6, 7, 9, 16, usize::MAX] {
            let out = r.write(0x10, len, u64::MAX);
            assert_eq!(out, WriteOutcome::Rejected(AccessError::BadLength { len }));
            assert_eq!(out.writes().count(), 0);
            assert_eq!(r.try_read(0x10, len), Err(AccessError::BadLength { len }));
            assert_eq!(r.read(0x10, len), 0);
        }
        for (offset, len) in [
            (0x11, 2),
            (0x12, 4),
            (0x14, 8),
            (u64::MAX, 8),
            (u64::MAX, 2),
        ] {
            let e = AccessError::Misaligned { offset, len };
            assert_eq!(r.write(offset, len, u64::MAX).error(), Some(e));
            assert_eq!(r.try_read(offset, len), Err(e));
        }
        assert_eq!(r.write(0x10, 4, 1).error(), None);
        r.set_at(0x10, 0); // undo the valid write above
        let after: Vec<_> = (0..r.len()).map(|i| r.get(i)).collect();
        assert_eq!(before, after);
        assert!(AccessError::BadLength { len: 3 }.to_string().contains('3'));
    }

    #[test]
    fn model_side_set_update_reset() {
        let mut r = regs();
        assert_eq!(r.set_at(0x8, 0xffff), Some(0x1122_3344_5566_7788));
        assert_eq!(r.read(0x8, 8), 0xffff);
        // Truncated to the register width.
        assert_eq!(r.set_at(0x10, u64::MAX), Some(0));
        assert_eq!(r.get_at(0x10), Some(0xffff_ffff));
        assert_eq!(
            r.update_at(0x0, 0xff00_0000, 0x1200_0000),
            Some(0xa500_0000)
        );
        assert_eq!(r.get_at(0x0), Some(0x1200_0000));
        assert_eq!(r.update(1, 0x1, 0x1), Some(0x1200_0000));
        assert_eq!(r.get(1), Some(0x1200_0001));
        assert_eq!(r.set(42, 1), None);
        assert_eq!(r.set_at(0x4, 1), None);
        assert_eq!(r.update_at(0x18, 1, 1), None);
        r.write(0x20, 8, 0x5000);
        r.reset();
        for (i, spec) in REGS.iter().enumerate() {
            assert_eq!(r.get(i), Some(spec.reset), "{}", spec.name);
        }
    }

    #[test]
    fn big_endian_layout() {
        let mut r = RegisterFile::with_byte_order(REGS, ByteOrder::Big).unwrap();
        assert_eq!(r.byte_order(), ByteOrder::Big);
        // The byte at the register's offset is the most significant one.
        assert_eq!(r.read(0x8, 1), 0x11);
        assert_eq!(r.read(0xe, 2), 0x7788);
        assert_eq!(r.read(0x8, 4), 0x1122_3344);
        assert_eq!(r.read(0x8, 8), 0x1122_3344_5566_7788);
        // The register at the lower offset is the more significant half of an 8-byte access.
        let out = r.write(0x10, 8, 0x1234_5678_0000_00ff);
        assert_eq!(out.get(0x10).unwrap().new, 0x1234_5678);
        assert_eq!(out.get(0x14).unwrap().new, 0xffff_ff00);
        assert_eq!(r.read(0x10, 8), 0x1234_5678_ffff_ff00);
        // A 1-byte write at the register's offset hits its top byte.
        r.write(0x10, 1, 0xab);
        assert_eq!(r.get_at(0x10), Some(0xab34_5678));
        r.write(0x24, 4, 0xdead_beef);
        assert_eq!(r.get_at(0x20), Some(0xdead_b000));
    }

    #[test]
    fn overlapping_spec_rejected() {
        static OVERLAP: &[RegSpec] = &[
            RegSpec::ro32("A", 0x0, 0),
            RegSpec::ro64("B", 0x8, 0),
            RegSpec::ro32("C", 0xc, 0),
        ];
        assert_eq!(
            RegisterFile::new(OVERLAP).unwrap_err(),
            SpecError::Overlap {
                first: "B",
                second: "C"
            }
        );
        static MISALIGNED: &[RegSpec] = &[RegSpec::new("M", 0x2, Width::W32)];
        assert!(matches!(
            RegisterFile::new(MISALIGNED),
            Err(SpecError::Misaligned { name: "M", .. })
        ));
        static EMPTY: &[RegSpec] = &[];
        let mut r = RegisterFile::new(EMPTY).unwrap();
        assert!(r.is_empty());
        assert_eq!(r.read(0, 8), 0);
        assert_eq!(r.write(0, 8, 1), WriteOutcome::Unmapped);
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        fn access() -> impl Strategy<Value = (u64, usize, u64)> {
            let offset = prop_oneof![
                4 => 0u64..0x40,
                1 => any::<u64>(),
                1 => (u64::MAX - 16)..=u64::MAX,
            ];
            let len = prop_oneof![
                4 => prop::sample::select(vec![1usize, 2, 4, 8]),
                1 => any::<usize>(),
                1 => 0usize..10,
            ];
            (offset, len, any::<u64>())
        }

        proptest! {
            #[test]
            fn random_writes_never_panic_and_keep_ro_bits(
                big in any::<bool>(),
                ops in prop::collection::vec(access(), 0..64),
            ) {
                let order = if big { ByteOrder::Big } else { ByteOrder::Little };
                let mut r = RegisterFile::with_byte_order(REGS, order).unwrap();
                for (offset, len, value) in ops {
                    let out = r.write(offset, len, value);
                    prop_assert!(out.writes().count() <= 2);
                    for w in out.writes() {
                        prop_assert_eq!(w.old & w.spec.read_only(), w.new & w.spec.read_only());
                        prop_assert_eq!(w.new & !w.spec.width.mask(), 0);
                    }
                    let _ = r.read(offset, len);
                    for (i, spec) in REGS.iter().enumerate() {
                        let v = r.get(i).unwrap();
                        prop_assert_eq!(v & spec.read_only(), spec.reset & spec.read_only());
                        let read = r.read(spec.offset, spec.size() as usize);
                        prop_assert_eq!(read & spec.wo, 0);
                        prop_assert_eq!(read, v & spec.readable());
                    }
                }
            }
        }
    }
}
