//! The register bank with its write side effects, and the IOMMU's interrupt.
//!
//! Handlers only update status bits and note what the model must do after the register lock
//! is dropped ([`Pending`]): run the command buffer, re-resolve devices after IommuEn changed.
//!
//! Run bits (spec §3.4.11): CmdBufRun = IommuEn ∧ CmdBufEn, cleared when command processing
//! stops on an error until CmdBufEn (or IommuEn) is set again; EventLogRun = IommuEn ∧
//! EventLogEn, cleared by an overflow until EventLogEn (or IommuEn) is set again.

use crate::event::{Event, EventOutcome, EventRecord};
use crate::event_log;
use crate::regs::{REGISTERS, control, efr, offset, status};
use std::collections::VecDeque;
use viommu_shared::irq::{DeliveryMode, DestinationMode, Interrupt, TriggerMode};
use viommu_shared::regs::{Msi, RegWrite, RegisterBank, RegisterFile, WriteHandler};
use viommu_shared::snapshot::{SavedRegister, SnapshotError, restore_registers, save_registers};
use vm_memory::GuestMemoryMmap;

/// Work a register write leaves for the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// Process the command buffer (head, tail or control written).
    pub run_commands: bool,
    /// IommuEn changed: every device's DMA mode may have changed.
    pub iommu_toggled: bool,
    /// A Control bit that governs interrupt remapping (IommuEn, GAEn, XTEn) or the device
    /// table base changed: every resolved interrupt route may be stale.
    pub irq_changed: bool,
}

/// State the handlers update besides the register file.
#[derive(Debug, Default)]
pub struct Latch {
    /// Command processing stopped on an error (illegal command, hardware error).
    pub cmd_halted: bool,
    /// PPR is advertised (drives PprLogRun).
    pub ppr: bool,
    /// The advertised EFR (Control bits of features it lacks are not writable).
    pub efr: u64,
    /// Work for the model.
    pub pending: Pending,
}

/// Control bits the advertised `efr` does not let software set.
fn unsupported_control(efr: u64) -> u64 {
    let mut bits = 0;
    if efr & efr::GA_SUP == 0 {
        bits |= control::GA_EN;
    }
    if efr & efr::XT_SUP == 0 {
        bits |= control::XT_EN | control::INT_CAP_XT_EN;
    }
    bits
}

fn control_written(latch: &mut Latch, regs: &mut RegisterFile, w: RegWrite) {
    let off = unsupported_control(latch.efr);
    let new = w.new & !off;
    if new != w.new {
        regs.update_at(offset::CONTROL, off, 0);
    }
    if (new ^ w.old) & control::IR_BITS != 0 {
        latch.pending.irq_changed = true;
    }
    let rose = w.rose();
    let en = new & control::IOMMU_EN != 0;
    let cmd_on = en && new & control::CMD_BUF_EN != 0;
    if !cmd_on || rose & (control::IOMMU_EN | control::CMD_BUF_EN) != 0 {
        latch.cmd_halted = false;
    }
    let evt_on = en && new & control::EVENT_LOG_EN != 0;
    let evt_was = regs.get_at(offset::STATUS).unwrap_or(0) & status::EVENT_LOG_RUN != 0;
    let evt_run = evt_on && (evt_was || rose & (control::IOMMU_EN | control::EVENT_LOG_EN) != 0);
    let ppr_run = latch.ppr && en && new & control::PPR_LOG_EN != 0;
    let mut bits = 0;
    if cmd_on && !latch.cmd_halted {
        bits |= status::CMD_BUF_RUN;
    }
    if evt_run {
        bits |= status::EVENT_LOG_RUN;
    }
    if ppr_run {
        bits |= status::PPR_LOG_RUN;
    }
    regs.update_at(
        offset::STATUS,
        status::CMD_BUF_RUN | status::EVENT_LOG_RUN | status::PPR_LOG_RUN,
        bits,
    );
    if w.changed() & control::IOMMU_EN != 0 {
        latch.pending.iommu_toggled = true;
    }
    latch.pending.run_commands = true;
}

fn pointer_written(latch: &mut Latch, _regs: &mut RegisterFile, _w: RegWrite) {
    latch.pending.run_commands = true;
}

fn dev_tab_written(latch: &mut Latch, _regs: &mut RegisterFile, w: RegWrite) {
    if w.changed() != 0 {
        latch.pending.irq_changed = true;
    }
}

/// The XT interrupt control registers exist only with EFR.XTSup.
fn xt_written(latch: &mut Latch, regs: &mut RegisterFile, w: RegWrite) {
    if latch.efr & efr::XT_SUP == 0 {
        regs.set_at(w.offset(), 0);
    }
}

static HANDLERS: &[(u64, WriteHandler<Latch>)] = &[
    (offset::DEV_TAB_BASE, dev_tab_written),
    (offset::CONTROL, control_written),
    (offset::XT_GEN_INTR, xt_written),
    (offset::XT_PPR_INTR, xt_written),
    (offset::XT_GALOG_INTR, xt_written),
    (offset::CMD_HEAD, pointer_written),
    (offset::CMD_TAIL, pointer_written),
];

/// The IOMMU's own interrupt in x2APIC format from an XT interrupt control register
/// (Linux `union intcapxt`): DestMode (2), Destination 23:0 (31:8), Vector (39:32),
/// Destination 31:24 (63:56); fixed, edge-triggered.
pub fn intcapxt_msi(reg: u64) -> Msi {
    Interrupt {
        destination: ((reg >> 8) & 0xff_ffff) as u32 | (((reg >> 56) as u32) << 24),
        vector: (reg >> 32) as u8,
        delivery: DeliveryMode::Fixed,
        destination_mode: if reg & (1 << 2) != 0 {
            DestinationMode::Logical
        } else {
            DestinationMode::Physical
        },
        trigger: TriggerMode::Edge,
        redirection_hint: false,
    }
    .to_msi()
}

/// Everything behind the register lock.
pub struct Registers {
    bank: RegisterBank<Latch>,
    latch: Latch,
    efr: u64,
    msi: Option<Msi>,
    history: VecDeque<EventRecord>,
    history_len: usize,
}

impl Registers {
    /// Registers at reset, advertising `efr`.
    pub fn new(efr: u64, ppr: bool, history_len: usize) -> Registers {
        // The static tables are validated by unit tests; a failure here is a programming
        // error in this crate, not guest-reachable.
        let file = RegisterFile::new(REGISTERS).expect("AMD-Vi register table is valid");
        let bank = RegisterBank::new(file, HANDLERS).expect("AMD-Vi handler table is valid");
        let mut r = Registers {
            bank,
            latch: Latch {
                ppr,
                efr,
                ..Latch::default()
            },
            efr,
            msi: None,
            history: VecDeque::new(),
            history_len,
        };
        r.reset();
        r
    }

    /// Back to reset values (the MSI message is kept: it belongs to PCI config space).
    pub fn reset(&mut self) {
        self.bank.reset();
        self.bank.regs_mut().set_at(offset::EXT_FEATURES, self.efr);
        self.latch = Latch {
            ppr: self.latch.ppr,
            efr: self.efr,
            ..Latch::default()
        };
    }

    /// Every register and the halt latch, for a snapshot.
    pub fn save(&self) -> (Vec<SavedRegister>, bool) {
        (save_registers(self.bank.regs()), self.latch.cmd_halted)
    }

    /// Loads saved registers and the halt latch; unchanged on error.
    pub fn load(&mut self, saved: &[SavedRegister], halted: bool) -> Result<(), SnapshotError> {
        restore_registers(self.bank.regs_mut(), saved, crate::snapshot::MODEL_BITS)?;
        self.latch.cmd_halted = halted;
        self.latch.pending = Pending::default();
        Ok(())
    }

    /// Guest read.
    pub fn read(&self, offset: u64, len: usize) -> u64 {
        self.bank.read(offset, len)
    }

    /// Guest write; returns the work it leaves.
    pub fn write(&mut self, offset: u64, len: usize, value: u64) -> Pending {
        self.bank.write(&mut self.latch, offset, len, value);
        std::mem::take(&mut self.latch.pending)
    }

    /// Current value of the register at `offset` (0 if none).
    pub fn get(&self, offset: u64) -> u64 {
        self.bank.regs().get_at(offset).unwrap_or(0)
    }

    /// Sets the register at `offset` (model side, no masks).
    pub fn set(&mut self, offset: u64, value: u64) {
        self.bank.regs_mut().set_at(offset, value);
    }

    /// Stops command processing after an error: CmdBufRun cleared until CmdBufEn is set
    /// again.
    pub fn halt_commands(&mut self) {
        self.latch.cmd_halted = true;
        self.bank
            .regs_mut()
            .update_at(offset::STATUS, status::CMD_BUF_RUN, 0);
    }

    /// Sets Status bits.
    pub fn set_status(&mut self, bits: u64) {
        self.bank.regs_mut().update_at(offset::STATUS, bits, bits);
    }

    /// The IOMMU's MSI message (from its PCI MSI capability), if enabled.
    pub fn msi(&self) -> Option<Msi> {
        self.msi
    }

    /// Replaces the MSI message.
    pub fn set_msi(&mut self, msi: Option<Msi>) {
        self.msi = msi;
    }

    /// The MSI to send for an interrupt condition: the XT general interrupt message while
    /// Control.IntCapXTEn is set (spec §3.4.13), else the PCI MSI capability's message if
    /// MSI is enabled there.
    pub fn interrupt(&self, wanted: bool) -> Option<Msi> {
        if !wanted {
            return None;
        }
        if self.get(offset::CONTROL) & control::INT_CAP_XT_EN != 0 {
            return Some(intcapxt_msi(self.get(offset::XT_GEN_INTR)));
        }
        self.msi
    }

    /// Appends an event to the guest's log; returns its fate and the MSI to send.
    pub fn log_event(
        &mut self,
        mem: &GuestMemoryMmap,
        event: &Event,
    ) -> (EventOutcome, Option<Msi>) {
        let a = event_log::append(self.bank.regs_mut(), mem, event);
        self.remember(EventRecord {
            event: *event,
            outcome: a.outcome,
        });
        (a.outcome, self.interrupt(a.interrupt))
    }

    /// Keeps `record` in the bounded history.
    pub fn remember(&mut self, record: EventRecord) {
        if self.history_len == 0 {
            return;
        }
        if self.history.len() == self.history_len {
            self.history.pop_front();
        }
        self.history.push_back(record);
    }

    /// Recent events, oldest first.
    pub fn history(&self) -> Vec<EventRecord> {
        self.history.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(r: &Registers) -> u64 {
        r.get(offset::STATUS)
    }

    #[test]
    fn run_bits_follow_enables() {
        let mut r = Registers::new(0x41, false, 4);
        assert_eq!(r.read(offset::EXT_FEATURES, 8), 0x41);
        let p = r.write(
            offset::CONTROL,
            8,
            control::CMD_BUF_EN | control::EVENT_LOG_EN,
        );
        assert_eq!(
            p,
            Pending {
                run_commands: true,
                iommu_toggled: false,
                irq_changed: false,
            }
        );
        assert_eq!(st(&r) & (status::CMD_BUF_RUN | status::EVENT_LOG_RUN), 0);
        let p = r.write(
            offset::CONTROL,
            4,
            control::CMD_BUF_EN | control::EVENT_LOG_EN | control::IOMMU_EN,
        );
        assert!(p.iommu_toggled);
        assert_eq!(st(&r) & 0x18, status::CMD_BUF_RUN | status::EVENT_LOG_RUN);
        // Halted command processing resumes only when CmdBufEn is set again.
        r.halt_commands();
        assert_eq!(st(&r) & status::CMD_BUF_RUN, 0);
        r.write(
            offset::CONTROL,
            8,
            control::CMD_BUF_EN | control::EVENT_LOG_EN | control::IOMMU_EN,
        );
        assert_eq!(st(&r) & status::CMD_BUF_RUN, 0);
        r.write(
            offset::CONTROL,
            8,
            control::EVENT_LOG_EN | control::IOMMU_EN,
        );
        r.write(
            offset::CONTROL,
            8,
            control::CMD_BUF_EN | control::EVENT_LOG_EN | control::IOMMU_EN,
        );
        assert_eq!(st(&r) & status::CMD_BUF_RUN, status::CMD_BUF_RUN);
        // W1C status bits; read-only run bits survive a write of ones.
        r.set_status(status::COM_WAIT_INT | status::EVENT_OVERFLOW);
        r.write(offset::STATUS, 4, 0xffff_ffff);
        assert_eq!(st(&r), status::CMD_BUF_RUN | status::EVENT_LOG_RUN);
        // EFR is read-only; pointers keep bits 18:4 only.
        r.write(offset::EXT_FEATURES, 8, u64::MAX);
        assert_eq!(r.read(offset::EXT_FEATURES, 8), 0x41);
        r.write(offset::CMD_TAIL, 4, 0xffff_ffff);
        assert_eq!(r.read(offset::CMD_TAIL, 8), 0x7_fff0);
        r.reset();
        assert_eq!(st(&r), 0);
        assert_eq!(r.read(offset::EXT_FEATURES, 8), 0x41);
    }

    #[test]
    fn feature_bits_and_xt_interrupt() {
        // Without GASup/XTSup, GAEn, XTEn, IntCapXTEn and the XT registers read 0.
        let mut r = Registers::new(0, false, 0);
        let all = control::IOMMU_EN | control::GA_EN | control::XT_EN | control::INT_CAP_XT_EN;
        let p = r.write(offset::CONTROL, 8, all);
        assert_eq!(r.get(offset::CONTROL), control::IOMMU_EN);
        assert!(p.irq_changed && p.iommu_toggled);
        r.write(offset::XT_GEN_INTR, 8, u64::MAX);
        assert_eq!(r.get(offset::XT_GEN_INTR), 0);
        // With them, the bits stick and the IOMMU's interrupt takes the XT message.
        let mut r = Registers::new(efr::GA_SUP | efr::XT_SUP, false, 0);
        r.set_msi(Some(Msi {
            address: 0xfee0_0000,
            data: 0x41,
        }));
        assert_eq!(r.interrupt(true).map(|m| m.data), Some(0x41));
        let p = r.write(offset::CONTROL, 8, all);
        assert_eq!(r.get(offset::CONTROL), all);
        assert!(p.irq_changed);
        // Destination 0x1234_5678 logical, vector 0x52; reserved bits are dropped.
        r.write(offset::XT_GEN_INTR, 8, 0x1200_0052_3456_7807);
        assert_eq!(r.get(offset::XT_GEN_INTR), 0x1200_0052_3456_7804);
        let m = r.interrupt(true).unwrap();
        let irq = Interrupt::from_compat_msi(m).unwrap();
        assert_eq!((irq.destination, irq.vector), (0x1234_5678, 0x52));
        assert_eq!(irq.destination_mode, DestinationMode::Logical);
        assert_eq!(r.interrupt(false), None);
        // Only interrupt-relevant Control bits mark routes stale.
        assert!(
            !r.write(offset::CONTROL, 8, all | control::EVENT_LOG_EN)
                .irq_changed
        );
        assert!(r.write(offset::DEV_TAB_BASE, 8, 0x1000).irq_changed);
        assert!(!r.write(offset::DEV_TAB_BASE, 8, 0x1000).irq_changed);
    }

    #[test]
    fn history_is_bounded() {
        let mut r = Registers::new(0, false, 2);
        let e = Event {
            code: crate::event::EventCode::IllegalCommand,
            device_id: 0,
            domain_id: 0,
            flags: Default::default(),
            address: 0,
        };
        for i in 0..3 {
            r.remember(EventRecord {
                event: Event { address: i, ..e },
                outcome: EventOutcome::NotRunning,
            });
        }
        let h = r.history();
        assert_eq!(
            h.iter().map(|x| x.event.address).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }
}
