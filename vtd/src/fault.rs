//! Fault reasons and primary fault recording (VT-d spec 7.1–7.3; `anchors-x86.md` §1.8).
//!
//! Records are kept in the fault recording registers (N of them, at CAP.FRO × 16): each is
//! 128 bits — lo: fault page address 63:12; hi: SID 15:0, PP 31, FR 39:32, PV 59:40, T 62
//! (1 = read), F 63 (RW1C). Hardware keeps an internal index of the next register to use;
//! FSTS.PPF is derived from the F bits, FSTS.PFO is set when the next register is still
//! full, and a fault whose SID already has a pending record is collapsed into it.

use crate::events;
use crate::regs::{FRCD_BASE, FSTS, FSTS_FRI_MASK, FSTS_FRI_SHIFT, FSTS_PFO, FSTS_PPF};
use viommu_shared::regs::{MsiSink, RegisterFile};

/// A non-recoverable fault reason code (FR field). Legacy-mode codes come from VT-d spec
/// table "Legacy Mode Fault Conditions"; scalable-mode codes from the scalable-mode table
/// (their names as Linux's `dma_remap_sm_fault_reasons` prints them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum FaultReason {
    /// 0x1: root entry not present (legacy).
    RootNotPresent = 0x1,
    /// 0x2: context entry not present.
    ContextNotPresent = 0x2,
    /// 0x3: invalid programming of a context entry (AW not in SAGAW, TT reserved or not
    /// supported).
    ContextInvalid = 0x3,
    /// 0x4: input address above 2^AGAW − 1.
    AddressBeyondAgaw = 0x4,
    /// 0x5: write through an entry without W (or not present).
    Write = 0x5,
    /// 0x6: read through an entry without R (or not present).
    Read = 0x6,
    /// 0x7: a second-stage table could not be read.
    PagingEntryAccess = 0x7,
    /// 0x8: the root table could not be read.
    RootTableAccess = 0x8,
    /// 0x9: a context table could not be read.
    ContextTableAccess = 0x9,
    /// 0xA: reserved bits set in a present root entry.
    RootReserved = 0xa,
    /// 0xB: reserved bits set in a present context entry.
    ContextReserved = 0xb,
    /// 0xC: reserved bits set in a present second-stage entry (including an unsupported or
    /// misaligned large page, PS at the PML4/PML5 level).
    PagingEntryReserved = 0xc,
    /// 0xE: the output address is in the interrupt range 0xFEEx_xxxx.
    InterruptAddress = 0xe,
    /// 0x20: an interrupt request in remappable format has reserved fields set (or its
    /// address is not a DWORD below 4 GiB in 0xFEEx_xxxx).
    IrRequestReserved = 0x20,
    /// 0x21: the interrupt_index is beyond the table size (IRTA.S).
    IrIndexOutOfRange = 0x21,
    /// 0x22: the IRTE is not present (qualified: suppressed by the entry's FPD).
    IrEntryNotPresent = 0x22,
    /// 0x23: the interrupt remapping table could not be read.
    IrTableAccess = 0x23,
    /// 0x24: reserved (or conditionally reserved) fields set in a present IRTE.
    IrEntryReserved = 0x24,
    /// 0x25: a compatibility-format interrupt was blocked (IRTA.EIME set or GSTS.CFIS clear).
    IrCompatibilityBlocked = 0x25,
    /// 0x26: the IRTE's source validation (SVT/SQ/SID) rejected the requester (qualified).
    IrSourceMismatch = 0x26,
    /// 0x27: a posted-interrupt descriptor could not be accessed. Cannot occur: posted
    /// interrupts are not supported (IRTE.IM is reserved, reason 0x24).
    IrPostedDescriptorAccess = 0x27,
    /// 0x30: RTADDR.TTM programmed to a reserved value.
    SmInvalidRootTableAddress = 0x30,
    /// 0x31: request with PASID while the root table is in legacy mode (TTM 00b).
    PasidInLegacyMode = 0x31,
    /// 0x38: a scalable-mode root entry could not be read.
    SmRootAccess = 0x38,
    /// 0x39: scalable-mode root entry (lower or upper half) not present.
    SmRootNotPresent = 0x39,
    /// 0x3A: reserved bits set in a scalable-mode root entry.
    SmRootReserved = 0x3a,
    /// 0x40: a scalable-mode context entry could not be read.
    SmContextAccess = 0x40,
    /// 0x41: scalable-mode context entry not present.
    SmContextNotPresent = 0x41,
    /// 0x42: reserved bits set in a scalable-mode context entry.
    SmContextReserved = 0x42,
    /// 0x45: request with PASID but PASIDE clear in the context entry.
    SmPasidDisabled = 0x45,
    /// 0x46: the PASID is beyond the PASID directory size (PDTS).
    SmPasidTooLarge = 0x46,
    /// 0x50: a PASID directory entry could not be read.
    PasidDirAccess = 0x50,
    /// 0x51: PASID directory entry not present.
    PasidDirNotPresent = 0x51,
    /// 0x52: reserved bits set in a PASID directory entry.
    PasidDirReserved = 0x52,
    /// 0x58: a PASID table entry could not be read.
    PasidEntryAccess = 0x58,
    /// 0x59: PASID table entry not present.
    PasidEntryNotPresent = 0x59,
    /// 0x5A: reserved bits set in a PASID table entry.
    PasidEntryReserved = 0x5a,
    /// 0x5B: invalid PASID entry programming (PGTT not supported, AW not in SAGAW).
    PasidEntryInvalid = 0x5b,
    /// 0x78: a second-stage table could not be read (scalable mode).
    SmPagingEntryAccess = 0x78,
    /// 0x7A: reserved bits set in a second-stage entry (scalable mode).
    SmPagingEntryReserved = 0x7a,
    /// 0x7B: the PASID entry's second-stage table pointer is beyond the host address width.
    SmInvalidTablePointer = 0x7b,
    /// 0x83: input address beyond the PASID entry's address width (scalable mode).
    SmAddressBeyondAgaw = 0x83,
    /// 0x85: write without write permission (scalable mode).
    SmWrite = 0x85,
    /// 0x86: read without read permission (scalable mode).
    SmRead = 0x86,
    /// 0x87: output address in the interrupt range (scalable mode).
    SmInterruptAddress = 0x87,
}

impl FaultReason {
    /// The FR code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Whether the fault is "qualified": suppressed when FPD is set in the context entry (or
    /// the PASID directory/table entry; for interrupt-remapping faults, the IRTE: only 0x22
    /// and 0x26 are qualified, spec 7.1.2). Faults met before a trustworthy entry was read —
    /// root problems, unreadable or malformed entries — are always reported (VT-d spec 7.1.2;
    /// the same split as QEMU's `vtd_is_qualified_fault`).
    pub const fn is_qualified(self) -> bool {
        !matches!(
            self,
            FaultReason::RootNotPresent
                | FaultReason::IrRequestReserved
                | FaultReason::IrIndexOutOfRange
                | FaultReason::IrTableAccess
                | FaultReason::IrEntryReserved
                | FaultReason::IrCompatibilityBlocked
                | FaultReason::IrPostedDescriptorAccess
                | FaultReason::RootTableAccess
                | FaultReason::ContextTableAccess
                | FaultReason::RootReserved
                | FaultReason::ContextReserved
                | FaultReason::SmInvalidRootTableAddress
                | FaultReason::PasidInLegacyMode
                | FaultReason::SmRootAccess
                | FaultReason::SmRootNotPresent
                | FaultReason::SmRootReserved
                | FaultReason::SmContextAccess
                | FaultReason::SmContextReserved
                | FaultReason::PasidDirAccess
                | FaultReason::PasidDirReserved
                | FaultReason::PasidEntryAccess
                | FaultReason::PasidEntryReserved
        )
    }
}

/// One non-recoverable fault as the remapping hardware reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fault {
    /// Source id (requester id as seen by the unit, after aliasing).
    pub source_id: u16,
    /// Faulting address (the record keeps its 4 KiB page).
    pub address: u64,
    /// Reason.
    pub reason: FaultReason,
    /// True for a read request (T = 1), false for a write.
    pub is_read: bool,
    /// PASID of the request, if it carried one.
    pub pasid: Option<u32>,
}

/// A fault recording register with F set, as the guest would read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultRecord {
    /// Index of the fault recording register.
    pub index: usize,
    /// Source id.
    pub source_id: u16,
    /// Page address of the faulting request.
    pub address: u64,
    /// FR code.
    pub reason: u8,
    /// T: true for a read.
    pub is_read: bool,
    /// PASID (PP set) or none.
    pub pasid: Option<u32>,
}

const F: u64 = 1 << 63;
const T: u64 = 1 << 62;
const PP: u64 = 1 << 31;

/// The 128-bit register contents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Raw {
    lo: u64,
    hi: u64,
}

impl Raw {
    fn encode(f: &Fault) -> Raw {
        let mut hi = u64::from(f.source_id) | (u64::from(f.reason.code()) << 32) | F;
        if f.is_read {
            hi |= T;
        }
        if let Some(pasid) = f.pasid {
            hi |= PP | (u64::from(pasid & 0xf_ffff) << 40);
        }
        Raw {
            lo: f.address & !0xfff,
            hi,
        }
    }

    fn pending(&self) -> bool {
        self.hi & F != 0
    }

    fn source_id(&self) -> u16 {
        self.hi as u16
    }

    fn decode(&self, index: usize) -> FaultRecord {
        FaultRecord {
            index,
            source_id: self.source_id(),
            address: self.lo,
            reason: (self.hi >> 32) as u8,
            is_read: self.hi & T != 0,
            pasid: (self.hi & PP != 0).then_some(((self.hi >> 40) & 0xf_ffff) as u32),
        }
    }
}

/// What happened to a fault handed to [`FaultUnit::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordOutcome {
    /// Written to this fault recording register.
    Recorded(usize),
    /// Collapsed into a pending record of the same source id.
    Compressed,
    /// The next register was still full: FSTS.PFO set, fault dropped.
    Overflowed,
    /// FSTS.PFO was already set: fault dropped.
    DroppedOverflow,
}

/// The fault recording registers and the internal next-record index.
#[derive(Clone, Debug)]
pub(crate) struct FaultUnit {
    records: Vec<Raw>,
    next: usize,
}

impl FaultUnit {
    /// `count` (≥ 1) empty registers.
    pub(crate) fn new(count: usize) -> Self {
        FaultUnit {
            records: vec![Raw::default(); count.max(1)],
            next: 0,
        }
    }

    /// Size of the register block in bytes.
    pub(crate) fn window_len(&self) -> u64 {
        self.records.len() as u64 * 16
    }

    /// Clears every register and the index (system reset).
    pub(crate) fn reset(&mut self) {
        self.records.fill(Raw::default());
        self.next = 0;
    }

    /// Resets the internal index (translation and interrupt remapping both disabled).
    pub(crate) fn reset_index(&mut self) {
        self.next = 0;
    }

    /// The records whose F bit is set, by index.
    pub(crate) fn pending(&self) -> Vec<FaultRecord> {
        self.records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.pending())
            .map(|(i, r)| r.decode(i))
            .collect()
    }

    /// Logs a fault (spec 7.2.1) and raises the fault event if it is a new condition.
    pub(crate) fn record(
        &mut self,
        regs: &mut RegisterFile,
        msi: &dyn MsiSink,
        fault: &Fault,
    ) -> RecordOutcome {
        let fsts = regs.get_at(FSTS).unwrap_or(0);
        if fsts & FSTS_PFO != 0 {
            return RecordOutcome::DroppedOverflow;
        }
        if self
            .records
            .iter()
            .any(|r| r.pending() && r.source_id() == fault.source_id)
        {
            return RecordOutcome::Compressed;
        }
        let index = self.next;
        let Some(slot) = self.records.get_mut(index) else {
            self.next = 0;
            return RecordOutcome::DroppedOverflow;
        };
        if slot.pending() {
            regs.update_at(FSTS, FSTS_PFO, FSTS_PFO);
            events::fault_condition(regs, msi, fsts);
            return RecordOutcome::Overflowed;
        }
        *slot = Raw::encode(fault);
        self.next = (index + 1) % self.records.len();
        if fsts & FSTS_PPF == 0 {
            regs.update_at(
                FSTS,
                FSTS_PPF | FSTS_FRI_MASK,
                FSTS_PPF | ((index as u64) << FSTS_FRI_SHIFT),
            );
            events::fault_condition(regs, msi, fsts);
        }
        RecordOutcome::Recorded(index)
    }

    /// The raw registers and the next index, for a snapshot.
    pub(crate) fn save(&self) -> (Vec<(u64, u64)>, usize) {
        (
            self.records.iter().map(|r| (r.lo, r.hi)).collect(),
            self.next,
        )
    }

    /// Restores a snapshot; `false` (and no change) if its size differs or the index is out of
    /// range.
    pub(crate) fn restore(&mut self, records: &[(u64, u64)], next: usize) -> bool {
        if records.len() != self.records.len() || next >= records.len() {
            return false;
        }
        for (r, &(lo, hi)) in self.records.iter_mut().zip(records) {
            *r = Raw { lo, hi };
        }
        self.next = next;
        true
    }

    /// Whether `offset` (from the start of the register window) is in the block.
    pub(crate) fn contains(&self, offset: u64) -> bool {
        offset >= FRCD_BASE && offset - FRCD_BASE < self.window_len()
    }

    /// Guest read of `len` (4 or 8) bytes at window `offset` inside the block.
    pub(crate) fn read(&self, offset: u64, len: usize) -> u64 {
        let rel = offset.wrapping_sub(FRCD_BASE);
        let Some(rec) = self.records.get((rel / 16) as usize) else {
            return 0;
        };
        let word = if rel % 16 < 8 { rec.lo } else { rec.hi };
        match (len, rel % 8) {
            (8, 0) => word,
            (4, 0) => word & 0xffff_ffff,
            (4, 4) => word >> 32,
            _ => 0,
        }
    }

    /// Guest write inside the block: only F (bit 127) is writable, write-1-to-clear. Clearing
    /// it recomputes FSTS.PPF (and FRI, pointing at the oldest record still pending) and
    /// clears FECTL.IP once nothing is pending.
    pub(crate) fn write(&mut self, regs: &mut RegisterFile, offset: u64, len: usize, value: u64) {
        let rel = offset.wrapping_sub(FRCD_BASE);
        let index = (rel / 16) as usize;
        let f_written = match (len, rel % 16) {
            (8, 8) => value & F != 0,
            (4, 12) => value & (1 << 31) != 0,
            _ => false,
        };
        let Some(rec) = self.records.get_mut(index) else {
            return;
        };
        if !f_written || !rec.pending() {
            return;
        }
        rec.hi &= !F;
        self.update_ppf(regs);
        events::fault_status_serviced(regs);
    }

    /// Recomputes FSTS.PPF and FRI from the F bits.
    fn update_ppf(&self, regs: &mut RegisterFile) {
        let n = self.records.len();
        // Records are written in index order from `next`, so the oldest pending one is the
        // first pending at or after it.
        let oldest = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&i| self.records[i].pending());
        match oldest {
            Some(i) => regs.update_at(
                FSTS,
                FSTS_PPF | FSTS_FRI_MASK,
                FSTS_PPF | ((i as u64) << FSTS_FRI_SHIFT),
            ),
            None => regs.update_at(FSTS, FSTS_PPF, 0),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::{CTL_IM, CTL_IP, FECTL, REGS};
    use viommu_shared::regs::RecordingMsiSink;

    fn fault(sid: u16, reason: FaultReason) -> Fault {
        Fault {
            source_id: sid,
            address: 0x1234_5678,
            reason,
            is_read: true,
            pasid: None,
        }
    }

    #[test]
    fn record_compress_overflow_and_ack() {
        let mut regs = RegisterFile::new(REGS).unwrap();
        regs.set_at(FECTL, 0); // unmasked
        let msi = RecordingMsiSink::new();
        let mut unit = FaultUnit::new(2);
        assert_eq!(
            unit.record(&mut regs, &msi, &fault(0x10, FaultReason::Read)),
            RecordOutcome::Recorded(0)
        );
        assert_eq!(msi.take().len(), 1);
        let fsts = regs.get_at(FSTS).unwrap();
        assert_eq!(fsts & (FSTS_PPF | FSTS_FRI_MASK), FSTS_PPF);
        // Same SID: collapsed.
        assert_eq!(
            unit.record(&mut regs, &msi, &fault(0x10, FaultReason::Write)),
            RecordOutcome::Compressed
        );
        // Other SID: second register, no new event (PPF already set).
        assert_eq!(
            unit.record(&mut regs, &msi, &fault(0x11, FaultReason::Read)),
            RecordOutcome::Recorded(1)
        );
        assert!(msi.is_empty());
        // Both full: overflow.
        assert_eq!(
            unit.record(&mut regs, &msi, &fault(0x12, FaultReason::Read)),
            RecordOutcome::Overflowed
        );
        assert_ne!(regs.get_at(FSTS).unwrap() & FSTS_PFO, 0);
        // Record 0 read back as Linux does: dword 3 then 2 then qword 0.
        assert_eq!(
            unit.read(FRCD_BASE + 12, 4),
            0x8000_0000 | 0x4000_0000 | 0x6
        );
        assert_eq!(unit.read(FRCD_BASE + 8, 4), 0x10);
        assert_eq!(unit.read(FRCD_BASE, 8), 0x1234_5000);
        // Ack record 0: PPF stays (record 1), FRI moves to 1.
        unit.write(&mut regs, FRCD_BASE + 12, 4, 0x8000_0000);
        let fsts = regs.get_at(FSTS).unwrap();
        assert_eq!(fsts & (FSTS_PPF | FSTS_FRI_MASK), FSTS_PPF | (1 << 8));
        unit.write(&mut regs, FRCD_BASE + 16 + 8, 8, 1 << 63);
        assert_eq!(regs.get_at(FSTS).unwrap() & FSTS_PPF, 0);
        assert_eq!(unit.pending(), vec![]);
    }

    #[test]
    fn masked_event_stays_pending() {
        let mut regs = RegisterFile::new(REGS).unwrap();
        let msi = RecordingMsiSink::new();
        let mut unit = FaultUnit::new(1);
        unit.record(&mut regs, &msi, &fault(1, FaultReason::Read));
        assert!(msi.is_empty());
        assert_eq!(regs.get_at(FECTL).unwrap(), CTL_IM | CTL_IP);
    }

    #[test]
    fn qualified_split() {
        assert!(FaultReason::ContextNotPresent.is_qualified());
        assert!(FaultReason::Write.is_qualified());
        assert!(!FaultReason::RootNotPresent.is_qualified());
        assert!(!FaultReason::ContextReserved.is_qualified());
        assert!(FaultReason::PasidEntryNotPresent.is_qualified());
        assert!(!FaultReason::PasidEntryAccess.is_qualified());
    }
}
