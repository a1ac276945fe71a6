//! Interrupt remapping (VT-d spec chapter 5): classifying an interrupt request, reading and
//! checking its IRTE, source validation, and the IR fault reasons 0x20–0x26 recorded through
//! the primary fault recording registers (spec 7.1, 7.2).

use super::Unit;
use crate::fault::{Fault, FaultReason};
use crate::irte::{self, IrTable, IrteError, RequestFormat};
use crate::regs::{GCMD_CFI, GCMD_IRE, GSTS};
use viommu_shared::irq::{Interrupt, IrFault, IrFaultKind, IrInvalidation, RemapMode, Resolution};
use viommu_shared::regs::{Msi, RegisterFile};
use vm_memory::{Bytes, GuestAddress};

/// Most notifications queued inside one call before they collapse into one
/// [`IrInvalidation::All`] (a queue full of index-selective invalidations cannot grow it).
const MAX_PENDING_NOTIFICATIONS: usize = 64;

/// The common kind of a VT-d interrupt-remapping fault reason.
fn kind(reason: FaultReason) -> IrFaultKind {
    match reason {
        FaultReason::IrIndexOutOfRange => IrFaultKind::IndexOutOfRange,
        FaultReason::IrEntryNotPresent => IrFaultKind::NotPresent,
        FaultReason::IrTableAccess | FaultReason::IrPostedDescriptorAccess => {
            IrFaultKind::TableReadError
        }
        FaultReason::IrEntryReserved => IrFaultKind::Reserved,
        FaultReason::IrCompatibilityBlocked => IrFaultKind::Blocked,
        FaultReason::IrSourceMismatch => IrFaultKind::SourceMismatch,
        _ => IrFaultKind::Malformed,
    }
}

/// What the APIC would not accept (a compatibility-format message with a reserved delivery
/// mode): there is no architected remapping fault for it, so it is never recorded (code 0).
fn not_an_interrupt() -> IrFault {
    IrFault {
        kind: IrFaultKind::Malformed,
        code: 0,
        index: None,
        recorded: false,
    }
}

fn pass_through(msi: Msi) -> Result<Resolution, IrFault> {
    Interrupt::from_compat_msi(msi)
        .map(|interrupt| Resolution {
            interrupt,
            index: None,
        })
        .ok_or_else(not_an_interrupt)
}

impl Unit {
    /// Queues a notification for the VMM's listeners (sent once the unit's lock is released).
    pub(crate) fn notify_ir(&mut self, what: IrInvalidation) {
        let pending = &mut self.ir_pending;
        if pending.contains(&what) || pending.contains(&IrInvalidation::All) {
            return;
        }
        if what == IrInvalidation::All || pending.len() >= MAX_PENDING_NOTIFICATIONS {
            pending.clear();
            pending.push(IrInvalidation::All);
        } else {
            pending.push(what);
        }
    }

    /// Remaps one interrupt request from requester `source` (spec 5.1). In
    /// [`RemapMode::Request`] a fault is recorded (unless the IRTE's FPD suppresses it); in
    /// [`RemapMode::Route`] nothing guest-visible happens. One IRTE read at most: nothing is
    /// cached, so every request sees the table as the guest last wrote it.
    pub(crate) fn remap(
        &mut self,
        regs: &mut RegisterFile,
        source: u16,
        msi: Msi,
        mode: RemapMode,
    ) -> Result<Resolution, IrFault> {
        let gsts = regs.get_at(GSTS).unwrap_or(0);
        if gsts & GCMD_IRE == 0 {
            // Remapping off: every request is processed in compatibility format (spec 5.1).
            return pass_through(msi);
        }
        let sid = self.source_id(source);
        let table = IrTable::from_irta(self.irta.unwrap_or(0));
        let index = match irte::classify(msi) {
            Err(irte::RequestReserved) => {
                return Err(self.ir_fault(
                    regs,
                    mode,
                    sid,
                    FaultReason::IrRequestReserved,
                    None,
                    false,
                ));
            }
            Ok(RequestFormat::Compatibility) => {
                // Spec 5.1.2.1: with remapping on, compatibility-format requests are blocked
                // when IRTA.EIME is set or GSTS.CFIS is clear (reason 0x25). QEMU passes them
                // through whenever remapping is on (anchors-x86.md §1.9); we follow the spec:
                // a guest that wants them (xAPIC mode) sets GCMD.CFI.
                if table.x2apic || gsts & GCMD_CFI == 0 {
                    return Err(self.ir_fault(
                        regs,
                        mode,
                        sid,
                        FaultReason::IrCompatibilityBlocked,
                        None,
                        false,
                    ));
                }
                return pass_through(msi);
            }
            Ok(RequestFormat::Remappable { index }) => index,
        };
        let Some(addr) = table.entry_addr(index) else {
            return Err(self.ir_fault(
                regs,
                mode,
                sid,
                FaultReason::IrIndexOutOfRange,
                Some(index),
                false,
            ));
        };
        let Some([lo, hi]) = read_irte(&self.mem, addr) else {
            return Err(self.ir_fault(
                regs,
                mode,
                sid,
                FaultReason::IrTableAccess,
                Some(index),
                false,
            ));
        };
        let entry = match irte::decode(lo, hi, table.x2apic) {
            Ok(e) => e,
            Err(IrteError::NotPresent { fpd }) => {
                return Err(self.ir_fault(
                    regs,
                    mode,
                    sid,
                    FaultReason::IrEntryNotPresent,
                    Some(index),
                    fpd,
                ));
            }
            Err(IrteError::Reserved) => {
                return Err(self.ir_fault(
                    regs,
                    mode,
                    sid,
                    FaultReason::IrEntryReserved,
                    Some(index),
                    false,
                ));
            }
        };
        if !entry.validation.allows(sid) {
            return Err(self.ir_fault(
                regs,
                mode,
                sid,
                FaultReason::IrSourceMismatch,
                Some(index),
                entry.fpd,
            ));
        }
        Ok(Resolution {
            interrupt: entry.interrupt,
            index: Some(index),
        })
    }

    /// Builds the typed fault and, for an actual request, records it: FRCD.lo holds the
    /// interrupt index in bits 63:48 (spec 11.4.14 FI; 0 without an index), T = 0 (an
    /// interrupt request is a write), no PASID.
    fn ir_fault(
        &mut self,
        regs: &mut RegisterFile,
        mode: RemapMode,
        sid: u16,
        reason: FaultReason,
        index: Option<u32>,
        fpd: bool,
    ) -> IrFault {
        let request = mode == RemapMode::Request;
        if request {
            let fault = Fault {
                source_id: sid,
                address: u64::from(index.unwrap_or(0) & 0xffff) << 48,
                reason,
                is_read: false,
                pasid: None,
            };
            self.report(regs, fault, fpd);
        }
        IrFault {
            kind: kind(reason),
            code: u16::from(reason.code()),
            index,
            recorded: request && !(fpd && reason.is_qualified()),
        }
    }
}

/// Reads one 128-bit IRTE; `None` when it is not entirely in guest RAM.
fn read_irte(mem: &vm_memory::GuestMemoryMmap, addr: u64) -> Option<[u64; 2]> {
    let lo: u64 = mem.read_obj(GuestAddress(addr)).ok()?;
    let hi: u64 = mem.read_obj(GuestAddress(addr.checked_add(8)?)).ok()?;
    Some([u64::from_le(lo), u64::from_le(hi)])
}
