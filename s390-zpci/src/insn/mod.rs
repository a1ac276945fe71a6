//! Instruction handlers: what a VMM's intercept path calls after decoding an instruction.
//!
//! Each handler takes the register numbers of the instruction text, the general registers
//! and (for storage operands) the effective operand address and an
//! [`OperandMemory`](crate::OperandMemory); it returns the condition code and the register
//! writes, or the program interruption to present. The VMM checks the problem-state bit
//! (privileged-operation exception) and the zPCI facility before calling.
//!
//! | instruction | opcode | handler |
//! |---|---|---|
//! | CLP | B9A0 | [`Zpci::clp`](crate::Zpci::clp) |
//! | PCILG | B9D2 | [`Zpci::pcilg`](crate::Zpci::pcilg) |
//! | PCISTG | B9D0 | [`Zpci::pcistg`](crate::Zpci::pcistg) |
//! | PCISTB | EBD0 | [`Zpci::pcistb`](crate::Zpci::pcistb) |
//! | RPCIT | B9D3 | [`Zpci::rpcit`](crate::Zpci::rpcit) |
//! | MPCIFC | E3D0 | [`Zpci::mpcifc`](crate::Zpci::mpcifc) |
//! | STPCIFC | E3D4 | [`Zpci::stpcifc`](crate::Zpci::stpcifc) |

pub mod clp;
mod load_store;
pub mod mpcifc;
mod rpcit;
mod stpcifc;

use crate::codes::Cc;
use crate::function::{Answer, Function};
use crate::handle::Fh;
use crate::model::{Core, lock};
use crate::regs::Completion;

impl Core {
    /// Runs `f` on the function whose current handle is exactly `fh` (the index field names
    /// the slot; the whole handle must match, enable bit included); `None` when there is
    /// none.
    pub(crate) fn with_fh<R>(&self, fh: Fh, f: impl FnOnce(&mut Function) -> R) -> Option<R> {
        let slot = self.by_index(fh.index())?;
        let mut g = lock(&slot);
        if g.fh != fh {
            return None;
        }
        Some(f(&mut g))
    }

    /// Runs `f` on the function in the slot `fh` names, whatever the rest of the handle.
    pub(crate) fn with_index<R>(&self, fh: Fh, f: impl FnOnce(&mut Function) -> R) -> Option<R> {
        let slot = self.by_index(fh.index())?;
        let mut g = lock(&slot);
        Some(f(&mut g))
    }
}

/// The completion of `answer`, with the status (if any) stored into register `reg`.
pub(crate) fn complete(answer: Answer, reg: u8, current: u64) -> Completion {
    let mut c = match answer.status {
        Some(st) => Completion::status(reg, current, st),
        None => Completion::cc(answer.cc),
    };
    c.cc = answer.cc;
    c.host_error = answer.host_error;
    c
}

/// CC 3.
pub(crate) fn invalid_handle() -> Completion {
    Completion::cc(Cc::InvalidHandle)
}
