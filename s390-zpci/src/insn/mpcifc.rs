//! MPCIFC — modify PCI function controls (A.8).

use crate::codes::{Cc, Pec, ProgramCheck, status};
use crate::fib::Fib;
use crate::function::{Answer, InterruptRegistration, build_ioat};
use crate::handle::{Fh, FunctionState};
use crate::insn::{complete, invalid_handle};
use crate::iota::Iota;
use crate::model::Zpci;
use crate::operand::OperandMemory;
use crate::regs::{GeneralRegs, InsnResult, get};

/// MPCIFC operation controls (A.8.2).
pub mod oc {
    /// Register adapter interruptions.
    pub const REG_INT: u8 = 2;
    /// Deregister adapter interruptions.
    pub const DEREG_INT: u8 = 3;
    /// Register an I/O address translation.
    pub const REG_IOAT: u8 = 4;
    /// Deregister the I/O address translation.
    pub const DEREG_IOAT: u8 = 5;
    /// Re-register the I/O address translation.
    pub const REREG_IOAT: u8 = 6;
    /// Reset the error state.
    pub const RESET_ERROR: u8 = 7;
    /// Reset the load/store-blocked state.
    pub const RESET_BLOCK: u8 = 9;
    /// Set (start or stop) measurement.
    pub const SET_MEASURE: u8 = 10;
}

impl Zpci {
    /// MPCIFC (E3D0, RXY): modifies the controls of a function with the FIB at `fib_addr`
    /// (the second-operand effective address, read through `mem`).
    ///
    /// Operand R1 = `fh << 32 | dmaas << 16 | oc`; status goes to R1. A FIB address that is
    /// not 8-aligned is a specification exception, a FIB format other than 0 or an unknown
    /// operation control an operand exception, an absent or unusable function CC 3
    /// (A.8). Per operation control:
    ///
    /// - register interruptions: CC 1 status 24 if already registered; recorded for the VMM;
    /// - deregister interruptions: CC 1 status 24 if none;
    /// - register IOAT: DMA address space ≠ 0 → CC 1 status 28; already registered → CC 1
    ///   status 24; a range outside the advertised one, `pba > pal`, or an anchor whose table
    ///   type (or relaxed translation) the group does not offer → operand exception; then
    ///   everything the tables already map is mapped on the host; if the host cannot hold
    ///   it, CC 1 status 16 and nothing stays registered;
    /// - deregister IOAT: status 28 / 24 as above; every host mapping is removed;
    /// - re-register IOAT: as deregister + register, but the new anchor is validated first
    ///   (an operand exception leaves the old registration in place) and the host moves to
    ///   the new view with the fewest changes;
    /// - reset error: error or blocked → enabled (host rebuilt from the tables), else
    ///   status 24;
    /// - reset blocked: error → blocked, else status 24;
    /// - set measurement: FMB address 0 stops; non-zero key bits (low 4 bits) raise PEC
    ///   0x2c and answer CC 1 without status; otherwise measurement starts (a block that
    ///   cannot be written raises PEC 0x2a).
    pub fn mpcifc(
        &self,
        mem: &dyn OperandMemory,
        r1: u8,
        fib_addr: u64,
        regs: &GeneralRegs,
    ) -> InsnResult {
        let r1v = get(regs, r1);
        let r1 = r1 & 0xf;
        let op = (r1v & 0xff) as u8;
        let dmaas = ((r1v >> 16) & 0xff) as u8;
        let fh = Fh((r1v >> 32) as u32);
        if !fib_addr.is_multiple_of(8) {
            return Err(ProgramCheck::Specification);
        }
        let ctx = self.core.ctx();
        let core = &self.core;
        let result = core.with_fh(fh, |f| -> Result<Answer, ProgramCheck> {
            if matches!(
                f.state,
                FunctionState::Standby | FunctionState::Disabled | FunctionState::PermanentError
            ) {
                return Ok(Answer::cc(Cc::InvalidHandle));
            }
            let mut raw = [0u8; Fib::SIZE];
            mem.read_operand(fib_addr, &mut raw)?;
            let fib = Fib::from_bytes(&raw);
            if fib.fmt != 0 {
                return Err(ProgramCheck::Operand);
            }
            let group = core.group(f.cfg.pfgid);
            let seq = || Ok(Answer::status(status::SEQUENCE));
            let dmaas_invalid = || Ok(Answer::status(status::DMAAS_INVALID));
            match op {
                oc::REG_INT => {
                    if f.irq.is_some() {
                        return seq();
                    }
                    f.irq = Some(InterruptRegistration {
                        isc: fib.isc,
                        noi: fib.noi,
                        aibv: fib.aibv,
                        aibvo: fib.aibvo,
                        aisb: fib.aisb,
                        aisbo: fib.aisbo,
                        sum: fib.sum,
                    });
                    Ok(Answer::ok())
                }
                oc::DEREG_INT => {
                    if f.irq.take().is_none() {
                        return seq();
                    }
                    Ok(Answer::ok())
                }
                oc::REG_IOAT | oc::REREG_IOAT => {
                    if dmaas != 0 {
                        return dmaas_invalid();
                    }
                    let rereg = op == oc::REREG_IOAT;
                    if f.ioat.is_some() != rereg {
                        return seq();
                    }
                    let range = f.dma_range(&core.config, &group);
                    let Some(ioat) =
                        build_ioat(fib.pba, fib.pal, Iota(fib.iota), &group, range, &core.ram)
                    else {
                        return Err(ProgramCheck::Operand);
                    };
                    match f.register_ioat(&ctx, ioat) {
                        Ok(host_error) => {
                            let mut a = Answer::ok();
                            a.host_error = host_error;
                            Ok(a)
                        }
                        Err(e) => {
                            let mut a = Answer::status(status::INSUFFICIENT_RESOURCES);
                            a.host_error = Some(e);
                            Ok(a)
                        }
                    }
                }
                oc::DEREG_IOAT => {
                    if dmaas != 0 {
                        return dmaas_invalid();
                    }
                    if f.ioat.is_none() {
                        return seq();
                    }
                    let mut a = Answer::ok();
                    a.host_error = f.deregister_ioat(&ctx);
                    Ok(a)
                }
                oc::RESET_ERROR => {
                    if !matches!(f.state, FunctionState::Error | FunctionState::Blocked) {
                        return seq();
                    }
                    let mut a = Answer::ok();
                    a.host_error = f.set_state(&ctx, FunctionState::Enabled);
                    Ok(a)
                }
                oc::RESET_BLOCK => {
                    if f.state != FunctionState::Error {
                        return seq();
                    }
                    let mut a = Answer::ok();
                    a.host_error = f.set_state(&ctx, FunctionState::Blocked);
                    Ok(a)
                }
                oc::SET_MEASURE => {
                    let addr = fib.fmb_addr;
                    if addr & 0xf != 0 {
                        f.fmb.stop();
                        f.raise_only(&ctx, Pec::FMB_PROTECTION, addr);
                        return Ok(Answer::cc(Cc::Error));
                    }
                    if addr == 0 {
                        f.fmb.stop();
                    } else if let Err(e) = f.fmb.start(ctx.mem, addr) {
                        f.raise_only(&ctx, Pec::FMB_ADDRESS, e.addr);
                    }
                    Ok(Answer::ok())
                }
                _ => Err(ProgramCheck::Operand),
            }
        });
        match result {
            None => Ok(invalid_handle()),
            Some(Err(pc)) => Err(pc),
            Some(Ok(answer)) => Ok(complete(answer, r1, r1v)),
        }
    }
}
