//! Device lookup: root table → context entry (legacy mode), or root → scalable-mode context →
//! PASID directory → PASID entry (scalable mode), with every present/reserved/programming
//! check and its fault reason (VT-d spec 3.4, 9.1–9.6; `anchors-x86.md` §1.5).

use crate::config::Config;
use crate::fault::FaultReason;
use crate::format::SecondStage;
use crate::space::Space;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Translation table mode latched from RTADDR.TTM by SRTP.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum RootMode {
    /// TTM = 00b: legacy root and context entries.
    #[default]
    Legacy,
    /// TTM = 01b: scalable-mode root and context entries with PASID tables.
    Scalable,
    /// TTM = 10b/11b: reserved (abort-DMA mode is not supported); every request faults.
    Reserved,
}

/// The root table pointer as latched by the last SRTP.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct RootPointer {
    /// Guest-physical address of the root table (bits above HAW dropped).
    pub addr: u64,
    /// Translation table mode.
    pub mode: RootMode,
}

/// A successful lookup: the space and whether fault processing is disabled for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The space (never `Untranslated` or `Blocked`).
    pub(crate) space: Space,
    /// FPD was set in the context, PASID directory or PASID entry.
    pub(crate) fpd: bool,
}

/// A failed lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LookupFault {
    /// The architected reason.
    pub(crate) reason: FaultReason,
    /// FPD was set in an entry read before the fault (it only suppresses qualified faults).
    pub(crate) fpd: bool,
}

impl LookupFault {
    fn new(reason: FaultReason) -> Self {
        LookupFault { reason, fpd: false }
    }

    fn with_fpd(reason: FaultReason, fpd: bool) -> Self {
        LookupFault { reason, fpd }
    }
}

const P: u64 = 1;
const FPD: u64 = 1 << 1;
const PAGE_MASK: u64 = !0xfff;

/// Reads `N` little-endian quadwords at `addr`.
fn read_qwords<const N: usize>(mem: &GuestMemoryMmap, addr: u64) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    for (i, q) in out.iter_mut().enumerate() {
        let a = addr.checked_add(8 * i as u64)?;
        let v: u64 = mem.read_obj(GuestAddress(a)).ok()?;
        *q = u64::from_le(v);
    }
    Some(out)
}

/// The device-lookup rules of one unit.
pub(crate) struct Tables<'a> {
    pub(crate) config: &'a Config,
    pub(crate) mem: &'a GuestMemoryMmap,
}

impl Tables<'_> {
    /// Bits of a table pointer above the host address width (up to bit 63).
    fn above_haw(&self) -> u64 {
        !((1u64 << self.config.host_address_width()) - 1)
    }

    fn format(&self, aw: u64, snp_allowed: bool) -> SecondStage {
        let lp = self.config.large_pages;
        SecondStage::new(
            SecondStage::levels_for_aw(aw),
            self.config.host_address_width(),
            snp_allowed,
            lp.two_mib,
            lp.one_gib,
        )
    }

    /// Looks up requester `sid` (after aliasing) for a request with `pasid`.
    pub(crate) fn resolve(
        &self,
        root: &RootPointer,
        sid: u16,
        pasid: Option<u32>,
    ) -> Result<Resolved, LookupFault> {
        match root.mode {
            RootMode::Legacy => {
                if pasid.is_some() {
                    return Err(LookupFault::new(FaultReason::PasidInLegacyMode));
                }
                self.legacy(root.addr, sid)
            }
            RootMode::Scalable => self.scalable(root.addr, sid, pasid),
            RootMode::Reserved => Err(LookupFault::new(FaultReason::SmInvalidRootTableAddress)),
        }
    }

    /// Legacy root entry (128 bits: lo P 0, CTP 63:12; hi reserved) and context entry
    /// (lo: P 0, FPD 1, TT 3:2, SLPTPTR 63:12; hi: AW 2:0, DID 23:8).
    fn legacy(&self, root: u64, sid: u16) -> Result<Resolved, LookupFault> {
        let bus = u64::from(sid >> 8);
        let devfn = u64::from(sid & 0xff);
        let [rlo, rhi] = read_qwords::<2>(self.mem, root.wrapping_add(bus * 16))
            .ok_or(LookupFault::new(FaultReason::RootTableAccess))?;
        if rlo & P == 0 {
            return Err(LookupFault::new(FaultReason::RootNotPresent));
        }
        if rlo & (0xffe | self.above_haw()) != 0 || rhi != 0 {
            return Err(LookupFault::new(FaultReason::RootReserved));
        }
        let [lo, hi] = read_qwords::<2>(self.mem, (rlo & PAGE_MASK) + devfn * 16)
            .ok_or(LookupFault::new(FaultReason::ContextTableAccess))?;
        // FPD is evaluated whatever the present bit (spec 9.3).
        let fpd = lo & FPD != 0;
        if lo & P == 0 {
            return Err(LookupFault::with_fpd(FaultReason::ContextNotPresent, fpd));
        }
        let tt = (lo >> 2) & 3;
        // SLPTPTR is ignored for pass-through, so its bits above HAW only matter otherwise.
        let ptr_rsvd = if tt == 2 { 0 } else { self.above_haw() };
        if lo & (0xff0 | ptr_rsvd) != 0 || hi & 0xffff_ffff_ff00_0080 != 0 {
            return Err(LookupFault::with_fpd(FaultReason::ContextReserved, fpd));
        }
        let aw = hi & 7;
        let did = ((hi >> 8) & 0xffff) as u16;
        let invalid = Err(LookupFault::with_fpd(FaultReason::ContextInvalid, fpd));
        if !self.config.address_width.supports_aw(aw) {
            return invalid;
        }
        let format = self.format(aw, self.config.snoop_control);
        let space = match tt {
            0 => Space::Translated {
                did,
                pasid: None,
                root: lo & PAGE_MASK,
                format,
                scalable: false,
            },
            1 if self.config.device_tlb => Space::Translated {
                did,
                pasid: None,
                root: lo & PAGE_MASK,
                format,
                scalable: false,
            },
            // AW still bounds the input addresses of a pass-through context (spec 9.3).
            2 if self.config.pass_through => Space::PassThrough {
                did,
                input_bits: format.input_bits(),
            },
            _ => return invalid,
        };
        Ok(Resolved { space, fpd })
    }

    /// Scalable-mode root entry (lo: LP 0, LCTP 63:12 for devfn 0..127; hi: UP, UCTP for
    /// 128..255), context entry (256 bits: P 0, FPD 1, DTE 2, PASIDE 3, PRE 4, PDTS 11:9,
    /// PASIDDIRPTR 63:12; RID_PASID 19:0 of the second quadword), PASID directory entry
    /// (P 0, FPD 1, table 63:12) and PASID entry (512 bits: P 0, FPD 1, AW 4:2, PGTT 8:6,
    /// SSPTPTR 63:12; DID 15:0 of the second quadword).
    fn scalable(&self, root: u64, sid: u16, pasid: Option<u32>) -> Result<Resolved, LookupFault> {
        let bus = u64::from(sid >> 8);
        let devfn = u64::from(sid & 0xff);
        let [rlo, rhi] = read_qwords::<2>(self.mem, root.wrapping_add(bus * 16))
            .ok_or(LookupFault::new(FaultReason::SmRootAccess))?;
        let half = if devfn < 0x80 { rlo } else { rhi };
        if half & P == 0 {
            return Err(LookupFault::new(FaultReason::SmRootNotPresent));
        }
        if half & (0xffe | self.above_haw()) != 0 {
            return Err(LookupFault::new(FaultReason::SmRootReserved));
        }
        let ctx_addr = (half & PAGE_MASK) + (devfn & 0x7f) * 32;
        let [c0, c1, c2, c3] = read_qwords::<4>(self.mem, ctx_addr)
            .ok_or(LookupFault::new(FaultReason::SmContextAccess))?;
        let mut fpd = c0 & FPD != 0;
        if c0 & P == 0 {
            return Err(LookupFault::with_fpd(FaultReason::SmContextNotPresent, fpd));
        }
        if c0 & (0x1e0 | self.above_haw()) != 0
            || c1 & 0xffff_ffff_ffe0_0000 != 0
            || c2 != 0
            || c3 != 0
        {
            return Err(LookupFault::with_fpd(FaultReason::SmContextReserved, fpd));
        }
        let pasid = match pasid {
            Some(p) => {
                if c0 & (1 << 3) == 0 {
                    return Err(LookupFault::with_fpd(FaultReason::SmPasidDisabled, fpd));
                }
                p
            }
            None => (c1 & 0xf_ffff) as u32,
        };
        let pdts = (c0 >> 9) & 7;
        let dir_index = u64::from(pasid >> 6);
        if dir_index >= 1 << (pdts + 7) {
            return Err(LookupFault::with_fpd(FaultReason::SmPasidTooLarge, fpd));
        }
        let [de] = read_qwords::<1>(self.mem, (c0 & PAGE_MASK) + dir_index * 8)
            .ok_or(LookupFault::with_fpd(FaultReason::PasidDirAccess, fpd))?;
        fpd |= de & FPD != 0;
        if de & P == 0 {
            return Err(LookupFault::with_fpd(FaultReason::PasidDirNotPresent, fpd));
        }
        if de & (0xffc | self.above_haw()) != 0 {
            return Err(LookupFault::with_fpd(FaultReason::PasidDirReserved, fpd));
        }
        let pe_addr = (de & PAGE_MASK) + u64::from(pasid & 0x3f) * 64;
        let [p0, p1, ..] = read_qwords::<8>(self.mem, pe_addr)
            .ok_or(LookupFault::with_fpd(FaultReason::PasidEntryAccess, fpd))?;
        fpd |= p0 & FPD != 0;
        if p0 & P == 0 {
            return Err(LookupFault::with_fpd(
                FaultReason::PasidEntryNotPresent,
                fpd,
            ));
        }
        if p0 & 0xc00 != 0 {
            return Err(LookupFault::with_fpd(FaultReason::PasidEntryReserved, fpd));
        }
        let did = (p1 & 0xffff) as u16;
        let pgtt = (p0 >> 6) & 7;
        let aw = (p0 >> 2) & 7;
        let invalid = Err(LookupFault::with_fpd(FaultReason::PasidEntryInvalid, fpd));
        let space = match pgtt {
            // Second-stage only.
            0b010 => {
                if !self.config.address_width.supports_aw(aw) {
                    return invalid;
                }
                if p0 & self.above_haw() != 0 {
                    return Err(LookupFault::with_fpd(
                        FaultReason::SmInvalidTablePointer,
                        fpd,
                    ));
                }
                // In scalable mode SNP of second-stage leaves is not reserved (snoop
                // behaviour comes from the PASID entry; QEMU accepts it too).
                Space::Translated {
                    did,
                    pasid: Some(pasid),
                    root: p0 & PAGE_MASK,
                    format: self.format(aw, true),
                    scalable: true,
                }
            }
            0b100 if self.config.pass_through => Space::PassThrough {
                did,
                input_bits: self.config.address_width.bits(),
            },
            // First-stage (001b) and nested (011b) are not advertised; the rest reserved.
            _ => return invalid,
        };
        Ok(Resolved { space, fpd })
    }
}
