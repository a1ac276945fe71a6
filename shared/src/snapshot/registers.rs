//! Register files in snapshots: every register by offset, restored with validation.
//!
//! Registers are saved generically, so registers a model adds later (for example interrupt
//! remapping state) are saved without model code; a stream naming a register the model does
//! not have, naming one twice, leaving one out, or holding a value wider than the register is
//! refused.

use super::error::SnapshotError;
use crate::regs::RegisterFile;
use serde::{Deserialize, Serialize};

/// One register's stored value (write-only bits included: handlers may have seen them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedRegister {
    /// Offset in the register window.
    pub offset: u64,
    /// Value.
    pub value: u64,
}

/// Every register of `regs`, in table order.
pub fn save_registers(regs: &RegisterFile) -> Vec<SavedRegister> {
    regs.specs()
        .iter()
        .enumerate()
        .map(|(i, spec)| SavedRegister {
            offset: spec.offset,
            value: regs.get(i).unwrap_or(0),
        })
        .collect()
}

/// Loads `saved` into `regs` (raw values, no write semantics). `regs` is unchanged unless
/// every register in `saved` belongs to its table, appears at most once and holds a value
/// the register can hold; a register of the table absent from `saved` — one added to the
/// model after the version that saved the stream — takes its reset value, the state a unit
/// that never had it is in. A value the register can hold has
/// only bits software can write (RW, W1C, write-only), bits of its reset value, and the
/// read-only bits the model itself maintains, `model_bits` (offset, bits) — status bits,
/// hardware-advanced pointers, capability values. A guest can never make any other bit
/// read back as one, so a stream holding one is corrupt or hostile.
pub fn restore_registers(
    regs: &mut RegisterFile,
    saved: &[SavedRegister],
    model_bits: &[(u64, u64)],
) -> Result<(), SnapshotError> {
    const FIELD: &str = "registers";
    if saved.len() > regs.len() {
        return Err(SnapshotError::mismatch(FIELD));
    }
    let mut next = regs.clone();
    let mut seen = vec![false; regs.len()];
    for r in saved {
        let index = regs
            .index_at(r.offset)
            .ok_or(SnapshotError::mismatch(FIELD))?;
        let spec = regs.spec(index).ok_or(SnapshotError::mismatch(FIELD))?;
        if seen[index] {
            return Err(SnapshotError::invalid(FIELD));
        }
        let model = model_bits
            .iter()
            .filter(|&&(off, _)| off == r.offset)
            .fold(0, |acc, &(_, bits)| acc | bits);
        let holdable = (spec.rw | spec.w1c | spec.wo | spec.reset | model) & spec.width.mask();
        if r.value & !holdable != 0 {
            return Err(SnapshotError::invalid(spec.name));
        }
        seen[index] = true;
        next.set(index, r.value);
    }
    for (index, _) in seen.iter().enumerate().filter(|(_, s)| !**s) {
        let reset = regs.spec(index).map_or(0, |spec| spec.reset);
        next.set(index, reset);
    }
    *regs = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::RegSpec;

    static REGS: &[RegSpec] = &[
        RegSpec::rw32("A", 0x0, 0, 0xff),
        RegSpec::rw64("B", 0x8, 0, u64::MAX),
        RegSpec::ro32("S", 0x10, 0),
    ];
    /// The model sets bit 0 of S.
    const MODEL: &[(u64, u64)] = &[(0x10, 1)];

    #[test]
    fn round_trip_and_rejections() {
        let mut a = RegisterFile::new(REGS).unwrap();
        a.set_at(0x0, 0x12);
        a.set_at(0x8, u64::MAX);
        a.set_at(0x10, 1);
        let saved = save_registers(&a);
        let mut b = RegisterFile::new(REGS).unwrap();
        restore_registers(&mut b, &saved, MODEL).unwrap();
        assert_eq!(
            (b.get_at(0), b.get_at(8), b.get_at(0x10)),
            (Some(0x12), Some(u64::MAX), Some(1))
        );

        let fresh = RegisterFile::new(REGS).unwrap();
        let reg = |offset, value| SavedRegister { offset, value };
        // A register the saving version did not have takes its reset value.
        let mut older = RegisterFile::new(REGS).unwrap();
        older.set_at(0x8, 7);
        restore_registers(&mut older, &[reg(0, 3), reg(0x10, 1)], MODEL).unwrap();
        assert_eq!(
            (older.get_at(0), older.get_at(8), older.get_at(0x10)),
            (Some(3), Some(0), Some(1))
        );
        for (bad, want) in [
            (
                vec![reg(0, 1), reg(8, 2), reg(0x10, 0), reg(0x18, 0)],
                SnapshotError::mismatch("registers"),
            ),
            (
                vec![reg(0, 1), reg(0, 2), reg(0x10, 0)],
                SnapshotError::invalid("registers"),
            ),
            (
                vec![reg(0, 1), reg(0xc, 2), reg(0x10, 0)],
                SnapshotError::mismatch("registers"),
            ),
            // Wider than the register, or a bit the guest cannot write and the model never
            // sets.
            (
                vec![reg(0, 1 << 32), reg(8, 2), reg(0x10, 0)],
                SnapshotError::invalid("A"),
            ),
            (
                vec![reg(0, 0x100), reg(8, 2), reg(0x10, 0)],
                SnapshotError::invalid("A"),
            ),
            (
                vec![reg(0, 1), reg(8, 2), reg(0x10, 2)],
                SnapshotError::invalid("S"),
            ),
            (
                vec![reg(0, 1), reg(0x100, 2), reg(0x10, 0)],
                SnapshotError::mismatch("registers"),
            ),
        ] {
            let mut c = RegisterFile::new(REGS).unwrap();
            assert_eq!(restore_registers(&mut c, &bad, MODEL), Err(want));
            assert_eq!(c.get_at(0), fresh.get_at(0));
        }
    }
}
