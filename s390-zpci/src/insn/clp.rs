//! CLP — call logical processor, PCI commands (A.4), and the layout of its blocks.
//!
//! A CLP block is a request (header `u16 len, u16 cmd, u32 fmt, u64 reserved`) followed at
//! `req.len` by the response (header `u16 len, u16 rsp, u32 fmt, u64 reserved`), all
//! big-endian. The handler reads the whole block, fills the response and writes the
//! response part back.

use crate::backend::PciSpace;
use crate::codes::{Cc, ProgramCheck};
use crate::config::{GroupConfig, RefreshPolicy};
use crate::error::ModelError;
use crate::function::Function;
use crate::handle::{Fh, FunctionState};
use crate::measure::FMB_LEN;
use crate::model::{Core, Zpci, lock};
use crate::operand::{OperandMemory, be};
use crate::regs::{Completion, GeneralRegs, InsnResult, get};

/// Logical-processor selector of PCI commands.
pub const LPS_PCI: u8 = 2;

/// Command codes.
pub mod cmd {
    /// LIST PCI.
    pub const LIST_PCI: u16 = 0x0002;
    /// QUERY PCI FUNCTION.
    pub const QUERY_PCI_FN: u16 = 0x0003;
    /// QUERY PCI FUNCTION GROUP.
    pub const QUERY_PCI_FNGRP: u16 = 0x0004;
    /// SET PCI FUNCTION.
    pub const SET_PCI_FN: u16 = 0x0005;
}

/// Response codes (A.4.2).
pub mod rc {
    /// Command completed.
    pub const OK: u16 = 0x0010;
    /// Command not recognized.
    pub const CMD: u16 = 0x0020;
    /// Format not supported.
    pub const FMT: u16 = 0x0040;
    /// Invalid length.
    pub const LEN: u16 = 0x0050;
    /// The response needs an 8 KiB block.
    pub const K8: u16 = 0x0060;
    /// Reserved field not zero.
    pub const RESNOT0: u16 = 0x0070;
    /// SET PCI FN / QUERY PCI FN: invalid function handle.
    pub const SETPCIFN_FH: u16 = 0x0101;
    /// SET PCI FN: handle not valid for this operation.
    pub const SETPCIFN_FHOP: u16 = 0x0102;
    /// SET PCI FN: invalid number of DMA address spaces.
    pub const SETPCIFN_DMAAS: u16 = 0x0103;
    /// SET PCI FN: insufficient resources.
    pub const SETPCIFN_RES: u16 = 0x0104;
    /// SET PCI FN: the function is in the permanent-error state.
    pub const SETPCIFN_ERR: u16 = 0x0106;
    /// LIST PCI: bad resume token.
    pub const LISTPCI_BADRT: u16 = 0x010a;
    /// QUERY PCI FN GROUP: unknown group.
    pub const QUERYPCIFG_PFGID: u16 = 0x010b;
}

/// SET PCI FUNCTION operation codes.
pub mod set_oc {
    /// Enable.
    pub const ENABLE: u8 = 0;
    /// Disable.
    pub const DISABLE: u8 = 1;
}

/// Smallest request length.
const MIN_REQ: usize = 16;
/// Largest request length.
const MAX_REQ: usize = 8184;
/// Smallest response length.
const MIN_RSP: usize = 8;
/// Largest response length.
const MAX_RSP: usize = 8176;
/// Largest block.
const MAX_BLOCK: usize = 8192;
/// Length of every PCI command request.
pub const REQ_LEN: u16 = 32;
/// LIST PCI response header length.
pub const LIST_HDR_LEN: usize = 32;
/// LIST PCI entry length.
pub const LIST_ENTRY_LEN: usize = 16;
/// Smallest QUERY PCI FUNCTION response (through the UID).
pub const QUERY_FN_MIN_RSP: usize = 0x80;
/// QUERY PCI FUNCTION response including the utility string.
pub const QUERY_FN_FULL_RSP: usize = 0xc0;
/// Smallest QUERY PCI FUNCTION GROUP response.
pub const QUERY_GRP_MIN_RSP: usize = 0x30;
/// Smallest SET PCI FUNCTION response.
pub const SET_FN_MIN_RSP: usize = 0x20;
/// LIST PCI's "configured" bit in an entry's config word.
pub const LIST_CONFIGURED: u32 = 1 << 31;

/// Builds a CLP request block of `REQ_LEN` bytes for `cmd` with `body` (bytes 16..32)
/// followed by a response header announcing `rsp_len` bytes (for tests, scenarios and
/// guest-driver-like code).
pub fn request(cmd: u16, body: [u8; 16], rsp_len: u16) -> Vec<u8> {
    let mut b = vec![0u8; usize::from(REQ_LEN) + usize::from(rsp_len)];
    be::put_u16(&mut b, 0, REQ_LEN);
    be::put_u16(&mut b, 2, cmd);
    b[16..32].copy_from_slice(&body);
    be::put_u16(&mut b, usize::from(REQ_LEN), rsp_len);
    b
}

/// The response code of a response block.
pub fn response_code(rsp: &[u8]) -> u16 {
    be::u16_at(rsp, 2)
}

/// The response part of a block.
struct Response<'a> {
    b: &'a mut [u8],
}

impl Response<'_> {
    fn len(&self) -> usize {
        self.b.len()
    }

    fn code(&mut self, rc: u16) {
        be::put_u16(self.b, 2, rc);
    }
}

impl Zpci {
    /// CLP (B9A0, RRF) with `lps` (the instruction's logical-processor selector) and R2
    /// holding the block's address (read and written through `mem`).
    ///
    /// Request length < 16, > 8184 or not a multiple of 8, response length < 8, > 8176 or
    /// not a multiple of 8, or a block longer than 8 KiB are operand exceptions; storage
    /// errors are whatever `mem` reports (A.4.1). A request length other than 32 answers
    /// response code LEN; commands for another LPS, or unknown, answer CMD. CC is 0 except
    /// for a LIST PCI response length that is not a whole number of entries (CC 3).
    pub fn clp(&self, mem: &dyn OperandMemory, r2: u8, lps: u8, regs: &GeneralRegs) -> InsnResult {
        let addr = get(regs, r2);
        let mut hdr = [0u8; 4];
        mem.read_operand(addr, &mut hdr)?;
        let req_len = usize::from(be::u16_at(&hdr, 0));
        if !(MIN_REQ..=MAX_REQ).contains(&req_len) || req_len % 8 != 0 {
            return Err(ProgramCheck::Operand);
        }
        let rsp_addr = addr
            .checked_add(req_len as u64)
            .ok_or(ProgramCheck::Addressing)?;
        let mut rh = [0u8; 2];
        mem.read_operand(rsp_addr, &mut rh)?;
        let rsp_len = usize::from(be::u16_at(&rh, 0));
        if !(MIN_RSP..=MAX_RSP).contains(&rsp_len) || rsp_len % 8 != 0 {
            return Err(ProgramCheck::Operand);
        }
        if req_len + rsp_len > MAX_BLOCK {
            return Err(ProgramCheck::Operand);
        }
        let mut block = vec![0u8; req_len + rsp_len];
        mem.read_operand(addr, &mut block)?;
        let (req, rsp) = block.split_at_mut(req_len);
        // The response is what the model writes: header fields past the length and the
        // whole body start out zero.
        rsp[2..].fill(0);
        let mut rsp = Response { b: rsp };
        let mut host_error = None;
        let cc = if req_len != usize::from(REQ_LEN) {
            rsp.code(rc::LEN);
            Cc::Ok
        } else if lps != LPS_PCI {
            rsp.code(rc::CMD);
            Cc::Ok
        } else {
            let cmd = be::u16_at(req, 2);
            let fmt = be::u32_at(req, 4);
            if fmt & 0xf != 0 {
                rsp.code(rc::FMT);
                Cc::Ok
            } else {
                match cmd {
                    cmd::LIST_PCI => list_pci(&self.core, req, &mut rsp),
                    cmd::QUERY_PCI_FN => {
                        query_pci_fn(&self.core, req, &mut rsp);
                        Cc::Ok
                    }
                    cmd::QUERY_PCI_FNGRP => {
                        query_group(&self.core, req, &mut rsp);
                        Cc::Ok
                    }
                    cmd::SET_PCI_FN => {
                        host_error = set_pci_fn(&self.core, req, &mut rsp);
                        Cc::Ok
                    }
                    _ => {
                        rsp.code(rc::CMD);
                        Cc::Ok
                    }
                }
            }
        };
        mem.write_operand(rsp_addr, &block[req_len..])?;
        Ok(Completion::cc(cc).with_host_error(host_error))
    }
}

/// Reads the 16-bit config register at `off` of the function's config space (PCI order is
/// little-endian); all ones when the backend cannot.
fn config_u16(f: &mut Function, off: u64) -> u16 {
    let mut b = [0xffu8; 2];
    if f.backend.read(PciSpace::Config, off, &mut b).is_err() {
        return 0xffff;
    }
    u16::from_le_bytes(b)
}

/// LIST PCI (A.4.3).
fn list_pci(core: &Core, req: &[u8], rsp: &mut Response<'_>) -> Cc {
    if be::u32_at(req, 4) & !0xf != 0 || be::u64_at(req, 8) != 0 {
        rsp.code(rc::RESNOT0);
        return Cc::Ok;
    }
    let token = be::u64_at(req, 16);
    // Index 0 is never allocated, so 0 means "from the start"; a token that names no slot
    // is rejected before the length checks (errata 8).
    let start = match token {
        0 => 0,
        t => match u16::try_from(t)
            .ok()
            .filter(|i| core.by_index(*i).is_some())
        {
            Some(i) => i,
            None => {
                rsp.code(rc::LISTPCI_BADRT);
                return Cc::Ok;
            }
        },
    };
    let len = rsp.len();
    if len < LIST_HDR_LEN + LIST_ENTRY_LEN {
        rsp.code(rc::K8);
        return Cc::Ok;
    }
    if !(len - LIST_HDR_LEN).is_multiple_of(LIST_ENTRY_LEN) {
        rsp.code(rc::LEN);
        return Cc::InvalidHandle;
    }
    let room = (len - LIST_HDR_LEN) / LIST_ENTRY_LEN;
    let functions = core.functions_from(start);
    let b = &mut *rsp.b;
    be::put_u16(b, 28, 4096);
    b[30] = 1; // UID checking enabled
    b[31] = LIST_ENTRY_LEN as u8;
    let mut n = 0;
    let mut next_token = 0u64;
    for (i, (index, f)) in functions.iter().enumerate() {
        if i == room {
            next_token = u64::from(*index);
            break;
        }
        let mut f = lock(f);
        let e = LIST_HDR_LEN + n * LIST_ENTRY_LEN;
        let device = config_u16(&mut f, 2);
        let vendor = config_u16(&mut f, 0);
        be::put_u16(b, e, device);
        be::put_u16(b, e + 2, vendor);
        let configured = if f.state == FunctionState::Standby {
            0
        } else {
            LIST_CONFIGURED
        };
        be::put_u32(b, e + 4, configured);
        be::put_u32(b, e + 8, f.fid().0);
        be::put_u32(b, e + 12, f.fh.0);
        n += 1;
    }
    be::put_u64(b, 16, next_token);
    be::put_u16(b, 0, (LIST_HDR_LEN + n * LIST_ENTRY_LEN) as u16);
    rsp.code(rc::OK);
    Cc::Ok
}

/// QUERY PCI FUNCTION (A.4.4).
fn query_pci_fn(core: &Core, req: &[u8], rsp: &mut Response<'_>) {
    let fh = Fh(be::u32_at(req, 16));
    if rsp.len() < QUERY_FN_MIN_RSP {
        rsp.code(rc::LEN);
        return;
    }
    let full = rsp.len() >= QUERY_FN_FULL_RSP;
    let b = &mut *rsp.b;
    let found = core.with_fh(fh, |f| {
        let group = core.group(f.cfg.pfgid);
        let (sdma, edma) = f.dma_range(&core.config, &group);
        be::put_u16(b, 0x10, f.cfg.vfn);
        let util = !f.cfg.util_str.is_empty();
        b[0x12] = u8::from(util && full);
        b[0x13] = f.cfg.pfgid;
        be::put_u32(b, 0x14, f.fid().0);
        for i in 0..6 {
            let size = f.cfg.bar_sizes[i];
            b[0x18 + i] = if size == 0 {
                0
            } else {
                size.trailing_zeros() as u8
            };
            // The BAR register as it sits in config space: Linux reads it with
            // le32_to_cpu (A.4.4 open point; QEMU's target-endian store disagrees with
            // every Linux version read).
            let mut bar = [0u8; 4];
            if f.backend
                .read(PciSpace::Config, 0x10 + 4 * i as u64, &mut bar)
                .is_err()
            {
                bar = [0; 4];
            }
            b[0x20 + 4 * i..0x24 + 4 * i].copy_from_slice(&bar);
        }
        be::put_u16(b, 0x1e, f.cfg.pchid);
        b[0x3e] = (FMB_LEN / 4) as u8;
        b[0x3f] = f.cfg.pft;
        be::put_u64(b, 0x40, sdma);
        be::put_u64(b, 0x48, edma);
        be::put_u32(b, 0x7c, f.cfg.uid);
        if util && full {
            let n = f.cfg.util_str.len().min(64);
            b[0x80..0x80 + n].copy_from_slice(&f.cfg.util_str[..n]);
        }
    });
    rsp.code(if found.is_some() {
        rc::OK
    } else {
        rc::SETPCIFN_FH
    });
}

/// The flags byte of a group response.
fn group_flags(core: &Core, g: &GroupConfig) -> u8 {
    let refresh = match g.refresh {
        RefreshPolicy::Always => true,
        RefreshPolicy::Never => false,
        RefreshPolicy::WhenShadowing => core.group_has_host(g.pfgid),
    };
    let mut flags = 0;
    if refresh {
        flags |= GroupConfig::FLAG_REFRESH;
    }
    if g.relaxed_translation {
        flags |= GroupConfig::FLAG_RTR;
    }
    flags
}

/// QUERY PCI FUNCTION GROUP (A.4.5).
fn query_group(core: &Core, req: &[u8], rsp: &mut Response<'_>) {
    let pfgid = (be::u32_at(req, 16) & 0xff) as u8;
    let Some(g) = core.config.group(pfgid) else {
        rsp.code(rc::QUERYPCIFG_PFGID);
        return;
    };
    if rsp.len() < QUERY_GRP_MIN_RSP {
        rsp.code(rc::LEN);
        return;
    }
    let flags = group_flags(core, g);
    let b = &mut *rsp.b;
    be::put_u16(b, 0x10, g.noi & 0xfff);
    b[0x12] = g.version;
    b[0x13] = flags;
    be::put_u16(b, 0x14, g.maxstbl & 0x1fff);
    be::put_u16(b, 0x16, g.mui);
    b[0x18] = g.dtsm();
    be::put_u64(b, 0x20, g.dasm);
    be::put_u64(b, 0x28, g.msia);
    rsp.code(rc::OK);
}

/// SET PCI FUNCTION (A.4.6). Returns host trouble met while disabling.
fn set_pci_fn(core: &Core, req: &[u8], rsp: &mut Response<'_>) -> Option<ModelError> {
    let fh = Fh(be::u32_at(req, 16));
    let oc = req[0x16];
    let ndas = req[0x17];
    if rsp.len() < SET_FN_MIN_RSP {
        rsp.code(rc::LEN);
        return None;
    }
    let ctx = core.ctx();
    let mut host_error = None;
    let r = core.with_fh(fh, |f| -> Result<Fh, u16> {
        match oc {
            set_oc::ENABLE => {
                match ndas {
                    0 => return Err(rc::SETPCIFN_DMAAS),
                    1 => {}
                    _ => return Err(rc::SETPCIFN_RES),
                }
                match f.state {
                    FunctionState::Disabled => {}
                    FunctionState::PermanentError => return Err(rc::SETPCIFN_ERR),
                    // Already enabled, or not configured (QEMU enables a standby function;
                    // the architecture does not allow it, errata 8).
                    _ => return Err(rc::SETPCIFN_FHOP),
                }
                f.fh = f.fh.with_enable(true);
                f.state = FunctionState::Enabled;
                Ok(f.fh)
            }
            set_oc::DISABLE => {
                match f.state {
                    FunctionState::Enabled | FunctionState::Error | FunctionState::Blocked => {}
                    FunctionState::PermanentError => return Err(rc::SETPCIFN_ERR),
                    _ => return Err(rc::SETPCIFN_FHOP),
                }
                // The guest sees the architected disable; host trouble goes to the VMM.
                host_error = f.reset(&ctx, FunctionState::Disabled);
                Ok(f.fh)
            }
            _ => Err(rc::SETPCIFN_FHOP),
        }
    });
    match r {
        None => rsp.code(rc::SETPCIFN_FH),
        Some(Err(code)) => rsp.code(code),
        Some(Ok(fh)) => {
            be::put_u32(rsp.b, 0x10, fh.0);
            rsp.code(rc::OK);
        }
    }
    host_error
}
