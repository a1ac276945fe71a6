//! Register write handlers: the global command handshakes (GCMD/GSTS) and the
//! register-based invalidation interface (CCMD, IVA/IOTLB).

use super::Unit;
use crate::caps::MAMV;
use crate::events;
use crate::invalidation::{self, Invalidation};
use crate::irte::IRTA_EIME;
use crate::queue::Queue;
use crate::regs::*;
use crate::tables::{RootMode, RootPointer};
use viommu_shared::irq::IrInvalidation;
use viommu_shared::regs::{RegWrite, RegisterFile, WriteHandler};

/// The register write handlers (one per side-effecting register).
pub(crate) static HANDLERS: &[(u64, WriteHandler<Unit>)] = &[
    (GCMD, on_gcmd),
    (RTADDR, on_rtaddr),
    (CCMD, on_ccmd),
    (FSTS, on_fsts),
    (FECTL, on_fectl),
    (IQT, on_iqt),
    (IQA, on_iqa),
    (ICS, on_ics),
    (IECTL, on_iectl),
    (IRTA, on_irta),
    (IOTLB, on_iotlb),
];

fn on_gcmd(u: &mut Unit, regs: &mut RegisterFile, w: RegWrite) {
    u.global_command(regs, w.new);
}

fn on_rtaddr(u: &mut Unit, regs: &mut RegisterFile, _w: RegWrite) {
    if !u.config.scalable_mode {
        // TTM is reserved (reads 0) without scalable-mode support.
        regs.update_at(RTADDR, RTADDR_TTM_MASK, 0);
    }
}

fn on_ccmd(u: &mut Unit, regs: &mut RegisterFile, w: RegWrite) {
    // Acts on a write that sets ICC (a 64-bit write or one to the upper dword).
    if w.wrote_ones(CCMD_ICC) != 0 {
        u.context_command(regs, w.new);
    }
}

fn on_fsts(u: &mut Unit, regs: &mut RegisterFile, w: RegWrite) {
    events::fault_status_serviced(regs);
    if w.cleared_w1c() & FSTS_IQE != 0 {
        // Spec 6.5.2.10: fetching resumes at IQH once software clears IQE (QEMU waits for
        // the next IQT write instead, anchors §1.7).
        u.process_queue(regs);
    }
}

fn on_fectl(u: &mut Unit, regs: &mut RegisterFile, w: RegWrite) {
    events::fectl_written(regs, &*u.msi, &w);
}

fn on_iqt(u: &mut Unit, regs: &mut RegisterFile, _w: RegWrite) {
    u.process_queue(regs);
}

fn on_iqa(u: &mut Unit, regs: &mut RegisterFile, _w: RegWrite) {
    if !u.config.scalable_mode {
        // DW is reserved without scalable-mode support.
        regs.update_at(IQA, IQA_DW, 0);
    }
}

fn on_ics(_u: &mut Unit, regs: &mut RegisterFile, _w: RegWrite) {
    events::ics_written(regs);
}

fn on_iectl(u: &mut Unit, regs: &mut RegisterFile, w: RegWrite) {
    events::iectl_written(regs, &*u.msi, &w);
}

fn on_irta(u: &mut Unit, regs: &mut RegisterFile, _w: RegWrite) {
    if !u.config.eim() {
        // EIME is reserved (reads 0) without ECAP.EIM.
        regs.update_at(IRTA, IRTA_EIME, 0);
    }
}

fn on_iotlb(u: &mut Unit, regs: &mut RegisterFile, w: RegWrite) {
    if w.wrote_ones(IOTLB_IVT) != 0 {
        u.iotlb_command(regs, w.new);
    }
}

impl Unit {
    // ---- Global command -------------------------------------------------------------

    /// GCMD write (VT-d spec 11.4.4; `anchors-x86.md` §1.4). Every handshake completes
    /// before the write returns, so the guest's GSTS poll succeeds at once.
    fn global_command(&mut self, regs: &mut RegisterFile, cmd: u64) {
        let gsts = regs.get_at(GSTS).unwrap_or(0);
        let changed = |bit: u64| (cmd & bit != 0) != (gsts & bit != 0);
        if cmd & GCMD_SRTP != 0 {
            self.set_root_table(regs);
        }
        if changed(GCMD_QIE) {
            if cmd & GCMD_QIE != 0 {
                self.enable_queue(regs);
            } else {
                self.disable_queue(regs);
            }
        }
        if self.config.interrupt_remapping {
            // Every change of what remapping resolves to notifies the VMM's routes.
            if cmd & GCMD_SIRTP != 0 {
                self.irta = regs.get_at(IRTA);
                regs.update_at(GSTS, GCMD_SIRTP, GCMD_SIRTP);
                // CAP.ESIRTPS: SIRTP also invalidates the interrupt entry cache.
                self.notify_ir(IrInvalidation::All);
            }
            if changed(GCMD_IRE) {
                regs.update_at(GSTS, GCMD_IRE, cmd & GCMD_IRE);
                if cmd & GCMD_IRE == 0 && !self.translating {
                    // The next-record index resets when both remapping functions are off
                    // (7.2.1).
                    self.faults.reset_index();
                }
                self.notify_ir(IrInvalidation::All);
            }
            if changed(GCMD_CFI) {
                regs.update_at(GSTS, GCMD_CFI, cmd & GCMD_CFI);
                self.notify_ir(IrInvalidation::All);
            }
        }
        // WBF: no write buffer (CAP.RWBF = 0); the flush completes at once (WBFS reads 0).
        // SFL/EAFL: advanced fault logging is not supported; ignored.
        if changed(GCMD_TE) {
            self.set_translation(regs, cmd & GCMD_TE != 0);
        }
    }

    fn set_root_table(&mut self, regs: &mut RegisterFile) {
        let rtaddr = regs.get_at(RTADDR).unwrap_or(0);
        let mode = match rtaddr & RTADDR_TTM_MASK {
            0 => RootMode::Legacy,
            RTADDR_TTM_SCALABLE if self.config.scalable_mode => RootMode::Scalable,
            _ => RootMode::Reserved,
        };
        self.root = RootPointer {
            addr: rtaddr & !0xfff & self.haw_mask(),
            mode,
        };
        regs.update_at(GSTS, GCMD_SRTP, GCMD_SRTP);
        // CAP.ESRTPS: SRTP invalidates every cache.
        self.iotlb.invalidate_all();
        self.refresh(|_, _| true);
    }

    fn set_translation(&mut self, regs: &mut RegisterFile, on: bool) {
        self.translating = on;
        regs.update_at(GSTS, GCMD_TE, if on { GCMD_TE } else { 0 });
        if !on && regs.get_at(GSTS).unwrap_or(0) & GCMD_IRE == 0 {
            // The next-record index resets when both remapping functions are off (7.2.1).
            self.faults.reset_index();
        }
        self.iotlb.invalidate_all();
        self.refresh(|_, _| true);
    }

    fn enable_queue(&mut self, regs: &mut RegisterFile) {
        let iqa = regs.get_at(IQA).unwrap_or(0);
        let wide = self.config.scalable_mode && iqa & IQA_DW != 0;
        self.queue = Queue::from_iqa(iqa, wide, self.config.host_address_width());
        regs.set_at(IQH, 0);
        regs.update_at(GSTS, GCMD_QIE, GCMD_QIE);
        // Descriptors queued before enabling are processed now (a Windows pattern).
        self.process_queue(regs);
    }

    /// Disabling always succeeds and resets IQH (spec 11.4.4; QEMU refuses unless the last
    /// descriptor was a wait, which the spec does not require of hardware).
    fn disable_queue(&mut self, regs: &mut RegisterFile) {
        self.queue = Queue::default();
        regs.set_at(IQH, 0);
        regs.update_at(GSTS, GCMD_QIE, 0);
    }

    // ---- Register-based invalidation ------------------------------------------------

    /// CCMD with ICC set: performs the invalidation, clears ICC, reports CAIG.
    fn context_command(&mut self, regs: &mut RegisterFile, value: u64) {
        let did = (value & 0xffff) as u16;
        let request = match (value >> CCMD_CIRG_SHIFT) & 3 {
            1 => Some((Invalidation::ContextGlobal, 1)),
            2 => Some((Invalidation::ContextDomain { did }, 2)),
            3 => Some((
                Invalidation::ContextDevice {
                    did,
                    sid: (value >> 16) as u16,
                    fm: ((value >> 32) & 3) as u8,
                },
                3,
            )),
            _ => None,
        };
        let caig = self.register_invalidation(regs, request);
        regs.update_at(CCMD, CCMD_ICC | CCMD_CAIG_MASK, caig << CCMD_CAIG_SHIFT);
    }

    /// IOTLB with IVT set: performs the invalidation (PSI address/mask from IVA), clears
    /// IVT, reports IAIG (0 for a reserved granularity or AM > MAMV: "incorrect request").
    fn iotlb_command(&mut self, regs: &mut RegisterFile, value: u64) {
        let did = ((value >> 32) & 0xffff) as u16;
        let iva = regs.get_at(IVA).unwrap_or(0);
        let am = (iva & 0x3f) as u32;
        let request = match (value >> IOTLB_IIRG_SHIFT) & 3 {
            1 => Some((Invalidation::IotlbGlobal, 1)),
            2 => Some((Invalidation::IotlbDomain { did }, 2)),
            3 if u64::from(am) <= MAMV => Some((
                Invalidation::IotlbPage {
                    did,
                    range: invalidation::page_range(iva, am),
                    ih: iva & (1 << 6) != 0,
                },
                3,
            )),
            _ => None,
        };
        let iaig = self.register_invalidation(regs, request);
        regs.update_at(IOTLB, IOTLB_IVT | IOTLB_IAIG_MASK, iaig << IOTLB_IAIG_SHIFT);
    }

    /// Runs a register-based request; returns the actual granularity (0 if refused).
    ///
    /// With queued invalidation enabled the register interface must not be used (spec
    /// 6.5.2); the request is refused but still completed (granularity 0), so a guest
    /// polling the busy bit never spins (QEMU leaves it set, anchors §1.2).
    fn register_invalidation(
        &mut self,
        regs: &mut RegisterFile,
        request: Option<(Invalidation, u64)>,
    ) -> u64 {
        match request {
            Some((inv, granularity)) if !self.queue.enabled => {
                self.stats.register_invalidations += 1;
                self.execute(regs, inv);
                granularity
            }
            _ => {
                self.stats.register_invalidations_refused += 1;
                0
            }
        }
    }
}
