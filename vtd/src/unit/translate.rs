//! Emulated-device DMA: lookup, second-stage walk, fault reporting.

use super::{UNTRANSLATED_TAG, Unit};
use crate::fault::{Fault, FaultReason, RecordOutcome};
use crate::shadow::INTERRUPT_RANGE;
use crate::space::Space;
use crate::tables::{LookupFault, RootMode};
use viommu_shared::dma::{DmaFault, DmaFaultKind, DmaRequest, DmaTranslation};
use viommu_shared::irq::interrupt::is_msi_address;
use viommu_shared::pt::{WalkFault, Walker};
use viommu_shared::regs::RegisterFile;
use viommu_shared::{AddrRange, Perm};

impl Unit {
    // ---- Emulated-device DMA --------------------------------------------------------

    /// Records `fault` unless FPD suppresses it.
    pub(crate) fn report(&mut self, regs: &mut RegisterFile, fault: Fault, fpd: bool) {
        self.last_fault = Some(fault);
        if fpd && fault.reason.is_qualified() {
            self.stats.faults_suppressed += 1;
            return;
        }
        match self.faults.record(regs, &*self.msi, &fault) {
            RecordOutcome::Recorded(_) => self.stats.faults_recorded += 1,
            RecordOutcome::Compressed => self.stats.faults_compressed += 1,
            RecordOutcome::Overflowed | RecordOutcome::DroppedOverflow => {
                self.stats.faults_overflowed += 1
            }
        }
    }

    /// Translates one DMA request (VT-d spec 3.4–3.6), recording the architected fault on
    /// failure.
    pub(crate) fn translate(
        &mut self,
        regs: &mut RegisterFile,
        req: &DmaRequest,
    ) -> Result<DmaTranslation, DmaFault> {
        let Ok(rid) = u16::try_from(req.requester_id) else {
            // Not a PCI requester: nothing the unit could log.
            return Err(DmaFault::new(req.iova, DmaFaultKind::Blocked));
        };
        if req.pasid.is_none() && is_msi_address(req.iova) {
            // Spec 3.14: requests without PASID to 0xFEEx_xxxx are interrupt requests, never
            // DMA-remapped (whatever the tables map there); reads and non-DWORD writes are
            // discarded. A device's MSI goes through `Vtd::deliver_msi` /
            // `RemappingMsiSink`, which remaps it and records interrupt-remapping faults.
            return Err(DmaFault::new(req.iova, DmaFaultKind::Blocked));
        }
        if !self.translating {
            let (iova, size) = identity_page(req.iova, u64::MAX);
            return Ok(DmaTranslation {
                domain: UNTRANSLATED_TAG,
                iova,
                addr: iova,
                size,
                perm: Perm::RW,
            });
        }
        let sid = self.source_id(rid);
        let is_write = req.perm.contains(Perm::WRITE);
        let fault = |reason: FaultReason| Fault {
            source_id: sid,
            address: req.iova,
            reason,
            is_read: !is_write,
            pasid: req.pasid,
        };
        let resolved = match self.tables().resolve(&self.root, sid, req.pasid) {
            Ok(r) => r,
            Err(LookupFault { reason, fpd }) => {
                self.report(regs, fault(reason), fpd);
                return Err(DmaFault::new(req.iova, lookup_kind(reason)));
            }
        };
        let outcome = match resolved.space {
            Space::PassThrough { did, input_bits } => {
                let limit = 1u64.checked_shl(input_bits).unwrap_or(u64::MAX);
                if req.iova >= limit {
                    Err((
                        FaultReason::AddressBeyondAgaw,
                        FaultReason::SmAddressBeyondAgaw,
                        DmaFaultKind::NotPresent,
                        self.root.mode == RootMode::Scalable,
                    ))
                } else {
                    let (iova, size) = identity_page(req.iova, limit);
                    Ok(DmaTranslation {
                        domain: u64::from(did),
                        iova,
                        addr: iova,
                        size,
                        perm: Perm::RW,
                    })
                }
            }
            Space::Translated {
                did,
                root,
                format,
                scalable,
                ..
            } => {
                let walker = Walker::new(&format, &self.mem, root);
                match walker.translate(req.iova, req.perm & Perm::RW) {
                    Ok((_, leaf)) => Ok(clip_leaf(
                        did,
                        req.iova,
                        leaf.iova,
                        leaf.addr,
                        leaf.size,
                        leaf.perm & Perm::RW,
                    )),
                    Err(wf) => {
                        let (legacy, sm) = walk_reasons(&wf, is_write);
                        Err((legacy, sm, DmaFaultKind::from_walk(&wf), scalable))
                    }
                }
            }
            Space::Untranslated | Space::Blocked { .. } => Err((
                FaultReason::ContextInvalid,
                FaultReason::PasidEntryInvalid,
                DmaFaultKind::Blocked,
                self.root.mode == RootMode::Scalable,
            )),
        };
        let t = match outcome {
            Ok(t) => t,
            Err((legacy, sm, kind, scalable)) => {
                let reason = if scalable { sm } else { legacy };
                self.report(regs, fault(reason), resolved.fpd);
                return Err(DmaFault::new(req.iova, kind));
            }
        };
        let out = t.addr.wrapping_add(req.iova - t.iova);
        if INTERRUPT_RANGE.contains(out) {
            // Spec 3.14: DMA may not target the interrupt address range.
            let reason = if self.root.mode == RootMode::Scalable {
                FaultReason::SmInterruptAddress
            } else {
                FaultReason::InterruptAddress
            };
            self.report(regs, fault(reason), resolved.fpd);
            return Err(DmaFault::new(req.iova, DmaFaultKind::Blocked));
        }
        Ok(t)
    }
}

/// The largest naturally aligned page (1 GiB, 2 MiB or 4 KiB) around `iova` that lies below
/// `limit` and does not overlap the interrupt range.
fn identity_page(iova: u64, limit: u64) -> (u64, u64) {
    for size in [1u64 << 30, 1 << 21] {
        let base = iova & !(size - 1);
        let r = AddrRange::from_len(base, size);
        if r.end <= limit && r.end > r.start && !r.overlaps(&INTERRUPT_RANGE) {
            return (base, size);
        }
    }
    (iova & !0xfff, 0x1000)
}

/// The translation for a leaf, shrunk to the 4 KiB page of `iova` when the leaf's output
/// overlaps the interrupt range (so the part inside it is never cached).
fn clip_leaf(
    did: u16,
    iova: u64,
    leaf_iova: u64,
    addr: u64,
    size: u64,
    perm: Perm,
) -> DmaTranslation {
    let out = AddrRange::from_len(addr, size);
    if out.overlaps(&INTERRUPT_RANGE) && size > 0x1000 {
        let page = iova & !0xfff;
        return DmaTranslation {
            domain: u64::from(did),
            iova: page,
            addr: addr.wrapping_add(page - leaf_iova),
            size: 0x1000,
            perm,
        };
    }
    DmaTranslation {
        domain: u64::from(did),
        iova: leaf_iova,
        addr,
        size,
        perm,
    }
}

/// Legacy and scalable-mode reasons for a second-stage walk fault. A not-present entry (R=W=0)
/// is a permission fault of the request's type, as in hardware (there is no separate
/// not-present code for second-stage entries).
fn walk_reasons(fault: &WalkFault, is_write: bool) -> (FaultReason, FaultReason) {
    let perm = if is_write {
        (FaultReason::Write, FaultReason::SmWrite)
    } else {
        (FaultReason::Read, FaultReason::SmRead)
    };
    match *fault {
        WalkFault::IovaTooWide { .. } => (
            FaultReason::AddressBeyondAgaw,
            FaultReason::SmAddressBeyondAgaw,
        ),
        WalkFault::NotPresent { .. } => perm,
        WalkFault::Permission {
            needed, granted, ..
        } => {
            if needed.contains(Perm::WRITE) && !granted.contains(Perm::WRITE) {
                (FaultReason::Write, FaultReason::SmWrite)
            } else {
                (FaultReason::Read, FaultReason::SmRead)
            }
        }
        WalkFault::Reserved { .. } => (
            FaultReason::PagingEntryReserved,
            FaultReason::SmPagingEntryReserved,
        ),
        WalkFault::TableOutsideRam { .. } | WalkFault::WorkLimit { .. } => (
            FaultReason::PagingEntryAccess,
            FaultReason::SmPagingEntryAccess,
        ),
    }
}

/// What a device is told about a lookup fault.
fn lookup_kind(reason: FaultReason) -> DmaFaultKind {
    use FaultReason::*;
    match reason {
        RootNotPresent | ContextNotPresent | SmRootNotPresent | SmContextNotPresent
        | PasidDirNotPresent | PasidEntryNotPresent => DmaFaultKind::NotPresent,
        PasidInLegacyMode | SmPasidDisabled | SmPasidTooLarge => DmaFaultKind::Blocked,
        _ => DmaFaultKind::Malformed,
    }
}
