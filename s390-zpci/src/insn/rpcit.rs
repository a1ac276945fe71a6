//! RPCIT — refresh PCI translations (A.7).

use crate::handle::Fh;
use crate::insn::{complete, invalid_handle};
use crate::model::Zpci;
use crate::regs::{GeneralRegs, InsnResult, get, pair};

impl Zpci {
    /// RPCIT (B9D3, RRE): the guest changed its DMA tables over a range.
    ///
    /// Operands: R1 bits 32..63 = function handle; R2 (even) = start address, R2+1 = length
    /// in bytes. Status goes to R1.
    ///
    /// Results (A.7.2, with the deviations documented on the crate):
    ///
    /// | condition | CC | status |
    /// |---|---|---|
    /// | no function with this exact handle, or not enabled | 3 | — |
    /// | function in the error state | 1 | 40 |
    /// | no address space registered | 1 | 8, error state, PEC 0x1 |
    /// | range does not reach into `[pba, pal]` | 1 | 8, error state, PEC 0x2 |
    /// | zero / unreadable entry, bad TL or offset, bad TT in the range | 1 | 8, error state, PEC 0x7 / 0x8 / 0x9 |
    /// | a host mapping the guest view requires could not be made (host out of entries) | 1 | 16 |
    /// | otherwise | 0 | — |
    ///
    /// The emulated-DMA cache is flushed for the range before the shadow is updated, and
    /// the host is brought to the guest view: every stale host mapping in the range is
    /// unmapped before any map is attempted. A range covering the whole registered DMA
    /// range (Linux's global flush) re-syncs everything: afterwards the host holds exactly
    /// what the tables map, so a retry succeeds whenever the guest's live mappings fit.
    /// Counts in the measurement block unless an error was found.
    pub fn rpcit(&self, r1: u8, r2: u8, regs: &GeneralRegs) -> InsnResult {
        let (start, len) = pair(regs, r2)?;
        let r1v = get(regs, r1);
        let fh = Fh((r1v >> 32) as u32);
        let ctx = self.core.ctx();
        match self.core.with_fh(fh, |f| f.rpcit(&ctx, start, len)) {
            None => Ok(invalid_handle()),
            Some(answer) => Ok(complete(answer, r1 & 0xf, r1v)),
        }
    }
}
