//! Fault events and invalidation completion events: the IM/IP protocol of FECTL and IECTL
//! (VT-d spec 7.3 and 6.5.2.10; `anchors-x86.md` §1.7, §1.8).
//!
//! An interrupt condition sets IP; if IM is clear the message is sent at once and IP cleared;
//! if IM is set, IP stays set and the message goes out when software clears IM. IP is also
//! cleared when software services every condition (clears the status bits).

use crate::regs::{
    CTL_IM, CTL_IP, FEADDR, FECTL, FEDATA, FEUADDR, FSTS, FSTS_EVENT_BITS, ICS, ICS_IWC, IEADDR,
    IECTL, IEDATA, IEUADDR,
};
use viommu_shared::regs::{Msi, MsiSink, RegWrite, RegisterFile};

/// The message programmed in a data/address/upper-address register triple.
fn message(regs: &RegisterFile, data: u64, addr: u64, upper: u64) -> Msi {
    let lo = regs.get_at(addr).unwrap_or(0);
    let hi = regs.get_at(upper).unwrap_or(0);
    Msi {
        address: (hi << 32) | lo,
        data: regs.get_at(data).unwrap_or(0) as u32,
    }
}

/// Sets IP in `ctl`, then delivers unless masked.
fn signal(regs: &mut RegisterFile, msi: &dyn MsiSink, ctl: u64, msg: Msi) {
    regs.update_at(ctl, CTL_IP, CTL_IP);
    if regs.get_at(ctl).unwrap_or(CTL_IM) & CTL_IM == 0 {
        msi.send(msg);
        regs.update_at(ctl, CTL_IP, 0);
    }
}

/// A fault-event condition was just set in FSTS. `fsts_before` is FSTS before it was set:
/// if any interrupt condition was already pending, no new event is generated (spec 7.3.1).
pub(crate) fn fault_condition(regs: &mut RegisterFile, msi: &dyn MsiSink, fsts_before: u64) {
    if fsts_before & FSTS_EVENT_BITS != 0 {
        return;
    }
    let msg = message(regs, FEDATA, FEADDR, FEUADDR);
    signal(regs, msi, FECTL, msg);
}

/// Software cleared fault status (FSTS W1C or a record's F bit): once nothing is pending, IP
/// is cleared.
pub(crate) fn fault_status_serviced(regs: &mut RegisterFile) {
    if regs.get_at(FSTS).unwrap_or(0) & FSTS_EVENT_BITS == 0 {
        regs.update_at(FECTL, CTL_IP, 0);
    }
}

/// FECTL write: clearing IM while IP is set delivers the pending message.
pub(crate) fn fectl_written(regs: &mut RegisterFile, msi: &dyn MsiSink, w: &RegWrite) {
    unmask(regs, msi, w, FECTL, FEDATA, FEADDR, FEUADDR);
}

/// IECTL write: clearing IM while IP is set delivers the pending message.
pub(crate) fn iectl_written(regs: &mut RegisterFile, msi: &dyn MsiSink, w: &RegWrite) {
    unmask(regs, msi, w, IECTL, IEDATA, IEADDR, IEUADDR);
}

fn unmask(
    regs: &mut RegisterFile,
    msi: &dyn MsiSink,
    w: &RegWrite,
    ctl: u64,
    data: u64,
    addr: u64,
    upper: u64,
) {
    let now = regs.get_at(ctl).unwrap_or(CTL_IM);
    if w.fell() & CTL_IM != 0 && now & CTL_IP != 0 {
        let msg = message(regs, data, addr, upper);
        msi.send(msg);
        regs.update_at(ctl, CTL_IP, 0);
    }
}

/// An invalidation wait descriptor with IF completed: sets ICS.IWC and signals, unless IWC
/// was already set (the previous completion is still unserviced: no new event).
pub(crate) fn completion(regs: &mut RegisterFile, msi: &dyn MsiSink) {
    if regs.get_at(ICS).unwrap_or(0) & ICS_IWC != 0 {
        return;
    }
    regs.update_at(ICS, ICS_IWC, ICS_IWC);
    let msg = message(regs, IEDATA, IEADDR, IEUADDR);
    signal(regs, msi, IECTL, msg);
}

/// ICS write: clearing IWC clears IECTL.IP.
pub(crate) fn ics_written(regs: &mut RegisterFile) {
    if regs.get_at(ICS).unwrap_or(0) & ICS_IWC == 0 {
        regs.update_at(IECTL, CTL_IP, 0);
    }
}
