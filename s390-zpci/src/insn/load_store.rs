//! PCILG, PCISTG (A.5) and PCISTB (A.6).

use crate::backend::PciSpace;
use crate::codes::{Cc, ProgramCheck, status};
use crate::function::{Answer, Function};
use crate::handle::{Fh, FunctionState};
use crate::insn::{complete, invalid_handle};
use crate::measure::Counter;
use crate::model::{Core, Zpci};
use crate::operand::OperandMemory;
use crate::regs::{Completion, GeneralRegs, InsnResult, get, pair};

/// Size of PCI configuration space.
const CONFIG_SPACE: u64 = 4096;

/// The request word of the load/store family: `fh << 32 | pcias << 16 | len`.
struct Request {
    fh: Fh,
    pcias: u8,
}

impl Request {
    fn decode(word: u64) -> Request {
        Request {
            fh: Fh((word >> 32) as u32),
            pcias: ((word >> 16) & 0xf) as u8,
        }
    }
}

/// What the state allows a load or store to do (A.5): CC 3 for a disabled or absent
/// function, CC 1 status 12 while loads and stores are blocked.
fn ls_state(f: &Function) -> Result<(), Answer> {
    match f.state {
        FunctionState::Enabled | FunctionState::Blocked => Ok(()),
        FunctionState::Error | FunctionState::PermanentError => {
            Err(Answer::status(status::BLOCKED))
        }
        FunctionState::Standby | FunctionState::Disabled => Err(Answer::cc(Cc::InvalidHandle)),
    }
}

/// Checks the length and offset of a single load/store: BAR accesses are 1, 2, 4 or 8 bytes
/// within one doubleword; config accesses are 1, 2 or 4 bytes within one word of config
/// space (A.5). QEMU also accepts 3-, 5-, 6- and 7-byte BAR accesses; the backend contract
/// (and every guest) uses powers of two.
fn check_len(space: PciSpace, offset: u64, len: usize) -> Result<(), ProgramCheck> {
    let ok = match space {
        PciSpace::Bar(_) => matches!(len, 1 | 2 | 4 | 8) && len as u64 <= 8 - (offset & 7),
        PciSpace::Config => {
            matches!(len, 1 | 2 | 4) && len as u64 <= 4 - (offset & 3) && offset < CONFIG_SPACE
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ProgramCheck::Operand)
    }
}

/// Runs `op` on the function `fh` names after the handle and state checks; the answer of a
/// failed check or of `op` is completed with the status in register `status_reg`.
fn with_ls_function(
    core: &Core,
    fh: Fh,
    status_reg: u8,
    regs: &GeneralRegs,
    op: impl FnOnce(&mut Function) -> Result<Completion, Answer>,
) -> InsnResult {
    if !fh.is_enabled() {
        return Ok(invalid_handle());
    }
    let r = core.with_fh(fh, |f| {
        ls_state(f)?;
        op(f)
    });
    match r {
        None => Ok(invalid_handle()),
        Some(Ok(c)) => Ok(c),
        Some(Err(a)) => Ok(complete(a, status_reg, get(regs, status_reg))),
    }
}

impl Zpci {
    /// PCILG (B9D2, RRE): loads `len` bytes from config space or a BAR into R1.
    ///
    /// Operands: R2 (even) = `fh << 32 | pcias << 16 | len`, R2+1 = offset. The value is
    /// the accessed bytes in storage order, right-aligned (config space is little-endian,
    /// so a 4-byte config load returns the byte-swapped PCI value, A.5). Status goes to R2.
    pub fn pcilg(&self, r1: u8, r2: u8, regs: &GeneralRegs) -> InsnResult {
        let (word, offset) = pair(regs, r2)?;
        let req = Request::decode(word);
        let len = (word & 0xf) as usize;
        let ctx = self.core.ctx();
        let mut check = Ok(());
        let c = with_ls_function(&self.core, req.fh, r2, regs, |f| {
            let Some(space) = PciSpace::from_pcias(req.pcias) else {
                return Err(Answer::status(status::INVALID_ADDRESS_SPACE));
            };
            if let Err(e) = check_len(space, offset, len) {
                check = Err(e);
                return Ok(Completion::ok());
            }
            let mut buf = [0u8; 8];
            if f.backend.read(space, offset, &mut buf[..len]).is_err() {
                check = Err(ProgramCheck::Operand);
                return Ok(Completion::ok());
            }
            let value = buf[..len]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            f.count(&ctx, Counter::Load);
            Ok(Completion::ok().write(r1 & 0xf, value))
        })?;
        check.map(|()| c)
    }

    /// PCISTG (B9D0, RRE): stores the rightmost `len` bytes of R1 to config space or a BAR.
    ///
    /// Operands as [`pcilg`](Self::pcilg); the bytes are stored in storage order (the
    /// inverse of PCILG). Status goes to R2.
    pub fn pcistg(&self, r1: u8, r2: u8, regs: &GeneralRegs) -> InsnResult {
        let (word, offset) = pair(regs, r2)?;
        let req = Request::decode(word);
        let len = (word & 0xf) as usize;
        let data = get(regs, r1);
        let ctx = self.core.ctx();
        let mut check = Ok(());
        let c = with_ls_function(&self.core, req.fh, r2, regs, |f| {
            let Some(space) = PciSpace::from_pcias(req.pcias) else {
                return Err(Answer::status(status::INVALID_ADDRESS_SPACE));
            };
            if let Err(e) = check_len(space, offset, len) {
                check = Err(e);
                return Ok(Completion::ok());
            }
            let bytes = data.to_be_bytes();
            if f.backend.write(space, offset, &bytes[8 - len..]).is_err() {
                check = Err(ProgramCheck::Operand);
                return Ok(Completion::ok());
            }
            f.count(&ctx, Counter::Store);
            Ok(Completion::ok())
        })?;
        check.map(|()| c)
    }

    /// PCISTB (EBD0, RSY): stores a block from guest storage at `addr` (the second-operand
    /// effective address D2(B2)) to a BAR.
    ///
    /// Operands: R1 = `fh << 32 | pcias << 16 | len` (13-bit length), R3 = BAR offset.
    /// The offset must be 8-aligned, the length a multiple of 8 greater than 8, at most the
    /// group's `maxstbl`, within one 4 KiB page of the BAR, and `addr` 8-aligned, else a
    /// specification exception (A.6). Status goes to R1.
    pub fn pcistb(
        &self,
        mem: &dyn OperandMemory,
        r1: u8,
        r3: u8,
        addr: u64,
        regs: &GeneralRegs,
    ) -> InsnResult {
        let word = get(regs, r1);
        let req = Request::decode(word);
        let len = (word & 0x1fff) as usize;
        let offset = get(regs, r3);
        let ctx = self.core.ctx();
        let mut check = Ok(());
        let c = with_ls_function(&self.core, req.fh, r1, regs, |f| {
            let bar = match PciSpace::from_pcias(req.pcias) {
                Some(PciSpace::Bar(b)) => b,
                _ => return Err(Answer::status(status::INVALID_ADDRESS_SPACE)),
            };
            let maxstbl = usize::from(self.core.group(f.cfg.pfgid).maxstbl);
            if !offset.is_multiple_of(8)
                || len <= 8
                || !len.is_multiple_of(8)
                || len > maxstbl
                || (offset & 0xfff) + len as u64 > 0x1000
                || !addr.is_multiple_of(8)
            {
                check = Err(ProgramCheck::Specification);
                return Ok(Completion::ok());
            }
            let mut buf = vec![0u8; len];
            if let Err(e) = mem.read_operand(addr, &mut buf) {
                check = Err(e);
                return Ok(Completion::ok());
            }
            if f.backend.write_block(bar, offset, &buf).is_err() {
                check = Err(ProgramCheck::Operand);
                return Ok(Completion::ok());
            }
            f.count(&ctx, Counter::StoreBlock);
            Ok(Completion::ok())
        })?;
        check.map(|()| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_rules() {
        assert!(check_len(PciSpace::Bar(0), 0, 8).is_ok());
        assert!(check_len(PciSpace::Bar(0), 4, 4).is_ok());
        assert!(check_len(PciSpace::Bar(0), 6, 4).is_err());
        assert!(check_len(PciSpace::Bar(0), 0, 3).is_err());
        assert!(check_len(PciSpace::Bar(0), 0, 0).is_err());
        assert!(check_len(PciSpace::Config, 2, 2).is_ok());
        assert!(check_len(PciSpace::Config, 3, 2).is_err());
        assert!(check_len(PciSpace::Config, 0, 8).is_err());
        assert!(check_len(PciSpace::Config, 4096, 1).is_err());
    }
}
