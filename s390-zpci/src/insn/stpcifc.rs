//! STPCIFC — store PCI function controls (A.9).

use crate::codes::{Cc, ProgramCheck, status};
use crate::fib::{Fib, fc};
use crate::function::Answer;
use crate::handle::{Fh, FunctionState};
use crate::insn::{complete, invalid_handle};
use crate::model::Zpci;
use crate::operand::OperandMemory;
use crate::regs::{Completion, GeneralRegs, InsnResult, get};

impl Zpci {
    /// STPCIFC (E3D4, RXY): stores the function's controls as a FIB at `fib_addr` (the
    /// second-operand effective address, written through `mem`).
    ///
    /// Operand R1 = `fh << 32 | dmaas << 16`; status goes to R1 (A.9): DMA address space
    /// ≠ 0 → CC 1 status 28; FIB address not 8-aligned → specification exception; the
    /// function is found by the handle's index; standby → CC 3; disabled → CC 3 if the
    /// handle has the enable bit, else a zeroed FIB; permanent error → CC 1 status 8.
    /// Otherwise the FIB carries: enabled (0x80), address space registered (0x10), error
    /// (0x40) in the error and blocked states, loads/stores blocked (0x20) in the error
    /// state, the DMA range, anchor, interruption registration and measurement address.
    /// When the handle lacks the enable bit of an enabled function, the enable bit of R1's
    /// handle (bit 63) is set in the returned R1.
    pub fn stpcifc(
        &self,
        mem: &dyn OperandMemory,
        r1: u8,
        fib_addr: u64,
        regs: &GeneralRegs,
    ) -> InsnResult {
        let r1v = get(regs, r1);
        let r1 = r1 & 0xf;
        let fh = Fh((r1v >> 32) as u32);
        let dmaas = ((r1v >> 16) & 0xff) as u8;
        if dmaas != 0 {
            return Ok(Completion::status(r1, r1v, status::DMAAS_INVALID));
        }
        if !fib_addr.is_multiple_of(8) {
            return Err(ProgramCheck::Specification);
        }
        let found = self.core.with_index(fh, |f| {
            let mut fib = Fib::default();
            let mut new_r1 = r1v;
            match f.state {
                FunctionState::Standby => return Err(Answer::cc(Cc::InvalidHandle)),
                FunctionState::Disabled => {
                    if fh.is_enabled() {
                        return Err(Answer::cc(Cc::InvalidHandle));
                    }
                    return Ok((fib, new_r1));
                }
                FunctionState::PermanentError => {
                    return Err(Answer::status(status::FUNC_IN_ERROR));
                }
                FunctionState::Error => fib.fc |= fc::LS_BLOCKED | fc::ERROR,
                FunctionState::Blocked => fib.fc |= fc::ERROR,
                FunctionState::Enabled => {}
            }
            fib.fc |= fc::ENABLED;
            if let Some(ioat) = &f.ioat {
                fib.fc |= fc::DMAAS_REGISTERED;
                fib.pba = ioat.pba;
                fib.pal = ioat.pal;
                fib.iota = ioat.iota.0;
            }
            if let Some(irq) = &f.irq {
                fib.isc = irq.isc;
                fib.noi = irq.noi;
                fib.aibv = irq.aibv;
                fib.aibvo = irq.aibvo;
                fib.aisb = irq.aisb;
                fib.aisbo = irq.aisbo;
                fib.sum = irq.sum;
            }
            fib.fmb_addr = f.fmb.addr().unwrap_or(0);
            if !fh.is_enabled() {
                new_r1 |= u64::from(Fh::ENABLE) << 32;
            }
            Ok((fib, new_r1))
        });
        match found {
            None => Ok(invalid_handle()),
            Some(Err(answer)) => Ok(complete(answer, r1, r1v)),
            Some(Ok((fib, new_r1))) => {
                mem.write_operand(fib_addr, &fib.to_bytes())?;
                let c = Completion::ok();
                Ok(if new_r1 != r1v {
                    c.write(r1, new_r1)
                } else {
                    c
                })
            }
        }
    }
}
