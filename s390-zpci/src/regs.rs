//! Register operands in, condition code and register updates out.
//!
//! Every instruction handler takes the register numbers from the instruction text and the 16
//! general registers as the guest left them, and returns a [`Completion`]: the condition
//! code to set, the status code (if any) and the exact register writes the VMM applies, or a
//! [`ProgramCheck`] to present instead.

use crate::codes::{Cc, ProgramCheck};
use crate::error::ModelError;

/// The 16 general registers at the time of the intercept.
pub type GeneralRegs = [u64; 16];

/// The result of a handler: a completion or a program interruption.
pub type InsnResult = Result<Completion, ProgramCheck>;

/// One register the VMM must write back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegWrite {
    /// General register number (0..=15).
    pub reg: u8,
    /// New 64-bit value.
    pub value: u64,
}

/// How an instruction completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Condition code to set in the PSW.
    pub cc: Cc,
    /// The status code written into bits 24..31 of the status register, if one was.
    pub status: Option<u8>,
    /// Registers to write back, in order.
    pub writes: Vec<RegWrite>,
    /// Host trouble behind this instruction (for the VMM's logs and metrics). The guest has
    /// already been given the architected answer in `cc`/`status`.
    pub host_error: Option<ModelError>,
}

impl Completion {
    /// Condition code `cc`, no status, no register writes.
    pub fn cc(cc: Cc) -> Completion {
        Completion {
            cc,
            status: None,
            writes: Vec::new(),
            host_error: None,
        }
    }

    /// Condition code 0.
    pub fn ok() -> Completion {
        Completion::cc(Cc::Ok)
    }

    /// Condition code 1 with `status` stored into register `reg` (whose current value is
    /// `current`).
    pub fn status(reg: u8, current: u64, status: u8) -> Completion {
        Completion {
            cc: Cc::Error,
            status: Some(status),
            writes: vec![RegWrite {
                reg,
                value: with_status(current, status),
            }],
            host_error: None,
        }
    }

    /// Adds a register write.
    pub fn write(mut self, reg: u8, value: u64) -> Completion {
        self.writes.push(RegWrite { reg, value });
        self
    }

    /// Attaches host trouble.
    pub fn with_host_error(mut self, e: Option<ModelError>) -> Completion {
        self.host_error = e;
        self
    }

    /// Applies the register writes to `regs` (what the VMM does before resuming the guest).
    pub fn apply(&self, regs: &mut GeneralRegs) {
        for w in &self.writes {
            regs[usize::from(w.reg & 0xf)] = w.value;
        }
    }
}

/// `reg` with its status field (bits 24..31) replaced by `status` (A.3.2).
pub fn with_status(reg: u64, status: u8) -> u64 {
    (reg & !0xff00_0000) | (u64::from(status) << 24)
}

/// The status field (bits 24..31) of `reg`.
pub fn status_of(reg: u64) -> u8 {
    (reg >> 24) as u8
}

/// The register `r` (masked to 0..=15).
pub(crate) fn get(regs: &GeneralRegs, r: u8) -> u64 {
    regs[usize::from(r & 0xf)]
}

/// The even/odd pair starting at `r`: specification exception when `r` is odd.
pub(crate) fn pair(regs: &GeneralRegs, r: u8) -> Result<(u64, u64), ProgramCheck> {
    let r = r & 0xf;
    if !r.is_multiple_of(2) {
        return Err(ProgramCheck::Specification);
    }
    Ok((get(regs, r), get(regs, r + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_field() {
        let r = 0x8000_0001_dead_beef;
        let s = with_status(r, 16);
        assert_eq!(s, 0x8000_0001_10ad_beef);
        assert_eq!(status_of(s), 16);
        let c = Completion::status(3, r, 8);
        let mut regs = [0u64; 16];
        c.apply(&mut regs);
        assert_eq!(regs[3], 0x8000_0001_08ad_beef);
        assert_eq!(c.cc, Cc::Error);
        let regs = [0u64; 16];
        assert_eq!(pair(&regs, 3), Err(ProgramCheck::Specification));
        assert!(pair(&regs, 14).is_ok());
    }
}
