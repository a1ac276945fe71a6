//! A guest CPU issuing zPCI instructions the way Linux's `arch/s390/pci` wrappers do:
//! registers are loaded, the handler runs, register writes are applied.

use vm_memory::GuestMemoryMmap;

use crate::codes::{Cc, ProgramCheck};
use crate::fib::Fib;
use crate::handle::Fh;
use crate::insn::clp::{self, cmd, rc, set_oc};
use crate::model::Zpci;
use crate::operand::{OperandMemory, be};
use crate::regs::{Completion, GeneralRegs, InsnResult, status_of};

/// Bytes of guest memory a [`GuestCpu`] needs at its scratch address.
pub const SCRATCH_LEN: u64 = 0x4000;

/// Why a CLP helper failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClpError {
    /// The instruction raised a program interruption.
    Program(ProgramCheck),
    /// The command completed with this response code (not OK).
    Response(u16),
}

/// One LIST PCI entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// Device id.
    pub device_id: u16,
    /// Vendor id.
    pub vendor_id: u16,
    /// Configured (not standby).
    pub configured: bool,
    /// Function id.
    pub fid: u32,
    /// Function handle.
    pub fh: Fh,
}

/// The fields of a QUERY PCI FUNCTION response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryFunction {
    /// Virtual function number.
    pub vfn: u16,
    /// Flags byte.
    pub flags: u8,
    /// Function group.
    pub pfgid: u8,
    /// Function id.
    pub fid: u32,
    /// log2 BAR sizes.
    pub bar_size: [u8; 6],
    /// Physical channel id.
    pub pchid: u16,
    /// BAR registers as stored (little-endian config-space bytes).
    pub bar: [[u8; 4]; 6],
    /// Measurement block length in 4-byte words.
    pub fmb_len: u8,
    /// PCI function type.
    pub pft: u8,
    /// Start of the DMA range.
    pub sdma: u64,
    /// End of the DMA range (inclusive).
    pub edma: u64,
    /// User-defined id.
    pub uid: u32,
    /// Utility string.
    pub util_str: Vec<u8>,
}

impl QueryFunction {
    /// Parses a response block.
    pub fn parse(b: &[u8]) -> QueryFunction {
        let mut bar_size = [0u8; 6];
        let mut bar = [[0u8; 4]; 6];
        for i in 0..6 {
            bar_size[i] = b.get(0x18 + i).copied().unwrap_or(0);
            if let Some(s) = b.get(0x20 + 4 * i..0x24 + 4 * i) {
                bar[i].copy_from_slice(s);
            }
        }
        QueryFunction {
            vfn: be::u16_at(b, 0x10),
            flags: b.get(0x12).copied().unwrap_or(0),
            pfgid: b.get(0x13).copied().unwrap_or(0),
            fid: be::u32_at(b, 0x14),
            bar_size,
            pchid: be::u16_at(b, 0x1e),
            bar,
            fmb_len: b.get(0x3e).copied().unwrap_or(0),
            pft: b.get(0x3f).copied().unwrap_or(0),
            sdma: be::u64_at(b, 0x40),
            edma: be::u64_at(b, 0x48),
            uid: be::u32_at(b, 0x7c),
            util_str: b.get(0x80..0xc0).map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }
}

/// The fields of a QUERY PCI FUNCTION GROUP response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryGroup {
    /// Number of interrupts.
    pub noi: u16,
    /// Version.
    pub version: u8,
    /// Flags (0x20 RTR, 0x02 frame, 0x01 refresh).
    pub flags: u8,
    /// Maximum store-block length.
    pub maxstbl: u16,
    /// Measurement update interval.
    pub mui: u16,
    /// Supported designation types.
    pub dtsm: u8,
    /// DMA address space mask.
    pub dasm: u64,
    /// MSI address.
    pub msia: u64,
}

impl QueryGroup {
    /// Parses a response block.
    pub fn parse(b: &[u8]) -> QueryGroup {
        QueryGroup {
            noi: be::u16_at(b, 0x10) & 0xfff,
            version: b.get(0x12).copied().unwrap_or(0),
            flags: b.get(0x13).copied().unwrap_or(0),
            maxstbl: be::u16_at(b, 0x14) & 0x1fff,
            mui: be::u16_at(b, 0x16),
            dtsm: b.get(0x18).copied().unwrap_or(0),
            dasm: be::u64_at(b, 0x20),
            msia: be::u64_at(b, 0x28),
        }
    }
}

/// A guest CPU with its registers and a scratch area for CLP blocks, FIBs and PCISTB data.
pub struct GuestCpu<'a> {
    /// The model.
    pub zpci: &'a Zpci,
    /// Guest memory (operands are absolute addresses in it).
    pub mem: GuestMemoryMmap,
    /// Start of the scratch area ([`SCRATCH_LEN`] bytes).
    pub scratch: u64,
    /// General registers.
    pub regs: GeneralRegs,
}

impl<'a> GuestCpu<'a> {
    /// A CPU using `[scratch, scratch + SCRATCH_LEN)` of `mem` for operands.
    pub fn new(zpci: &'a Zpci, mem: &GuestMemoryMmap, scratch: u64) -> Self {
        GuestCpu {
            zpci,
            mem: mem.clone(),
            scratch,
            regs: [0; 16],
        }
    }

    fn finish(&mut self, r: InsnResult) -> InsnResult {
        if let Ok(c) = &r {
            c.apply(&mut self.regs);
        }
        r
    }

    /// RPCIT over `[start, start + len)` (R1 = 1, R2 = 2/3).
    pub fn rpcit(&mut self, fh: Fh, start: u64, len: u64) -> InsnResult {
        self.regs[1] = u64::from(fh.0) << 32;
        self.regs[2] = start;
        self.regs[3] = len;
        let r = self.zpci.rpcit(1, 2, &self.regs);
        self.finish(r)
    }

    /// PCILG of `len` bytes; the loaded value is in `regs[1]` on CC 0.
    pub fn pcilg(&mut self, fh: Fh, pcias: u8, offset: u64, len: u8) -> InsnResult {
        self.regs[2] = (u64::from(fh.0) << 32) | (u64::from(pcias) << 16) | u64::from(len);
        self.regs[3] = offset;
        let r = self.zpci.pcilg(1, 2, &self.regs);
        self.finish(r)
    }

    /// PCISTG of the low `len` bytes of `value`.
    pub fn pcistg(&mut self, fh: Fh, pcias: u8, offset: u64, len: u8, value: u64) -> InsnResult {
        self.regs[1] = value;
        self.regs[2] = (u64::from(fh.0) << 32) | (u64::from(pcias) << 16) | u64::from(len);
        self.regs[3] = offset;
        let r = self.zpci.pcistg(1, 2, &self.regs);
        self.finish(r)
    }

    /// PCISTB of `data` (staged in the scratch area).
    pub fn pcistb(&mut self, fh: Fh, pcias: u8, offset: u64, data: &[u8]) -> InsnResult {
        let src = self.scratch + 0x2100;
        let n = data.len().min(0x1f00);
        self.mem
            .write_operand(src, &data[..n])
            .map_err(|_| ProgramCheck::Addressing)?;
        self.regs[1] = (u64::from(fh.0) << 32) | (u64::from(pcias) << 16) | data.len() as u64;
        self.regs[3] = offset;
        let r = self.zpci.pcistb(&self.mem, 1, 3, src, &self.regs);
        self.finish(r)
    }

    /// MPCIFC with operation control `oc` and `fib` (staged in the scratch area).
    pub fn mpcifc(&mut self, fh: Fh, oc: u8, dmaas: u8, fib: &Fib) -> InsnResult {
        let addr = self.scratch + 0x2000;
        self.mem
            .write_operand(addr, &fib.to_bytes())
            .map_err(|_| ProgramCheck::Addressing)?;
        self.regs[1] = (u64::from(fh.0) << 32) | (u64::from(dmaas) << 16) | u64::from(oc);
        let r = self.zpci.mpcifc(&self.mem, 1, addr, &self.regs);
        self.finish(r)
    }

    /// MPCIFC register IOAT with `[pba, pal]` and `iota`.
    pub fn register_ioat(&mut self, fh: Fh, pba: u64, pal: u64, iota: u64) -> InsnResult {
        let fib = Fib {
            pba,
            pal,
            iota,
            ..Fib::default()
        };
        self.mpcifc(fh, crate::insn::mpcifc::oc::REG_IOAT, 0, &fib)
    }

    /// MPCIFC deregister IOAT.
    pub fn deregister_ioat(&mut self, fh: Fh) -> InsnResult {
        self.mpcifc(fh, crate::insn::mpcifc::oc::DEREG_IOAT, 0, &Fib::default())
    }

    /// STPCIFC; the stored FIB is returned on CC 0.
    pub fn stpcifc(
        &mut self,
        fh: Fh,
        dmaas: u8,
    ) -> Result<(Completion, Option<Fib>), ProgramCheck> {
        let addr = self.scratch + 0x2000;
        self.mem
            .write_operand(addr, &[0xaa; Fib::SIZE])
            .map_err(|_| ProgramCheck::Addressing)?;
        self.regs[1] = (u64::from(fh.0) << 32) | (u64::from(dmaas) << 16);
        let r = self.zpci.stpcifc(&self.mem, 1, addr, &self.regs);
        let c = self.finish(r)?;
        let fib = (c.cc == Cc::Ok).then(|| {
            let mut b = [0u8; Fib::SIZE];
            let _ = self.mem.read_operand(addr, &mut b);
            Fib::from_bytes(&b)
        });
        Ok((c, fib))
    }

    /// CLP with a 32-byte request for `command` carrying `body`, and a response area of
    /// `rsp_len` bytes; returns the completion and the response block.
    pub fn clp(
        &mut self,
        command: u16,
        body: [u8; 16],
        rsp_len: u16,
    ) -> Result<(Completion, Vec<u8>), ProgramCheck> {
        let block = clp::request(command, body, rsp_len);
        self.mem
            .write_operand(self.scratch, &block)
            .map_err(|_| ProgramCheck::Addressing)?;
        self.regs[2] = self.scratch;
        let r = self.zpci.clp(&self.mem, 2, clp::LPS_PCI, &self.regs);
        let c = self.finish(r)?;
        let mut rsp = vec![0u8; usize::from(rsp_len)];
        self.mem
            .read_operand(self.scratch + u64::from(clp::REQ_LEN), &mut rsp)
            .map_err(|_| ProgramCheck::Addressing)?;
        Ok((c, rsp))
    }

    /// LIST PCI until the resume token is 0 (Linux's loop), with 4 KiB blocks.
    pub fn list_pci(&mut self) -> Result<Vec<ListEntry>, ClpError> {
        let mut out = Vec::new();
        let mut token = 0u64;
        for _ in 0..0x10000 {
            let mut body = [0u8; 16];
            body[..8].copy_from_slice(&token.to_be_bytes());
            let (_, rsp) = self
                .clp(cmd::LIST_PCI, body, 4096 - clp::REQ_LEN)
                .map_err(ClpError::Program)?;
            if clp::response_code(&rsp) != rc::OK {
                return Err(ClpError::Response(clp::response_code(&rsp)));
            }
            let len = usize::from(be::u16_at(&rsp, 0));
            let mut e = clp::LIST_HDR_LEN;
            while e + clp::LIST_ENTRY_LEN <= len {
                out.push(ListEntry {
                    device_id: be::u16_at(&rsp, e),
                    vendor_id: be::u16_at(&rsp, e + 2),
                    configured: be::u32_at(&rsp, e + 4) & clp::LIST_CONFIGURED != 0,
                    fid: be::u32_at(&rsp, e + 8),
                    fh: Fh(be::u32_at(&rsp, e + 12)),
                });
                e += clp::LIST_ENTRY_LEN;
            }
            token = be::u64_at(&rsp, 16);
            if token == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// SET PCI FUNCTION `oc` with `ndas`; the new handle or the response code.
    pub fn set_pci_fn(&mut self, fh: Fh, oc: u8, ndas: u8) -> Result<Fh, ClpError> {
        let mut body = [0u8; 16];
        body[..4].copy_from_slice(&fh.0.to_be_bytes());
        body[6] = oc;
        body[7] = ndas;
        let (_, rsp) = self
            .clp(cmd::SET_PCI_FN, body, 64)
            .map_err(ClpError::Program)?;
        match clp::response_code(&rsp) {
            rc::OK => Ok(Fh(be::u32_at(&rsp, 0x10))),
            code => Err(ClpError::Response(code)),
        }
    }

    /// Enables the function (one DMA address space).
    pub fn enable(&mut self, fh: Fh) -> Result<Fh, ClpError> {
        self.set_pci_fn(fh, set_oc::ENABLE, 1)
    }

    /// Disables the function.
    pub fn disable(&mut self, fh: Fh) -> Result<Fh, ClpError> {
        self.set_pci_fn(fh, set_oc::DISABLE, 0)
    }

    /// QUERY PCI FUNCTION.
    pub fn query_function(&mut self, fh: Fh) -> Result<QueryFunction, ClpError> {
        let mut body = [0u8; 16];
        body[..4].copy_from_slice(&fh.0.to_be_bytes());
        let (_, rsp) = self
            .clp(cmd::QUERY_PCI_FN, body, 0x100)
            .map_err(ClpError::Program)?;
        match clp::response_code(&rsp) {
            rc::OK => Ok(QueryFunction::parse(&rsp)),
            code => Err(ClpError::Response(code)),
        }
    }

    /// QUERY PCI FUNCTION GROUP.
    pub fn query_group(&mut self, pfgid: u8) -> Result<QueryGroup, ClpError> {
        let mut body = [0u8; 16];
        body[3] = pfgid;
        let (_, rsp) = self
            .clp(cmd::QUERY_PCI_FNGRP, body, 0x40)
            .map_err(ClpError::Program)?;
        match clp::response_code(&rsp) {
            rc::OK => Ok(QueryGroup::parse(&rsp)),
            code => Err(ClpError::Response(code)),
        }
    }

    /// The status field of `regs[r]`.
    pub fn status(&self, r: usize) -> u8 {
        status_of(self.regs[r & 0xf])
    }
}
