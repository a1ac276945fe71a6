//! Interrupt remapping (spec §2.2.5): what the IOMMU does with an interrupt request, and the
//! VMM-facing [`InterruptRemapper`] implementation.
//!
//! An interrupt request is a posted write of `data` to `0xFEEx_xxxx` by requester `source`
//! (a PCI function, or an IOAPIC/HPET with the DeviceID the IVRS gives it,
//! [`Config::special_devices`](crate::Config::special_devices)). Decided in this order
//! (the DTE is read fresh on every request, so every invalidation is trivially a barrier):
//!
//! 1. IommuEn = 0 (or [`Config::interrupt_remapping`](crate::Config::interrupt_remapping)
//!    off): forwarded unremapped.
//! 2. The DTE of `source` (after IVRS aliasing): beyond the table → ILLEGAL_DEV_TABLE_ENTRY,
//!    unreadable → DEV_TAB_HARDWARE_ERROR; IV = 0 → forwarded unremapped (V does not govern
//!    interrupts); reserved bits in quadword 2 → ILLEGAL_DEV_TABLE_ENTRY with RZ.
//! 3. By MSI delivery mode (data 10:8): fixed and arbitrated follow IntCtl (00b: aborted with
//!    INVALID_DEVICE_REQUEST type 101b, as real hardware logs it; 01b forwarded; 10b
//!    remapped; 11b ILLEGAL_DEV_TABLE_ENTRY); SMI is forwarded; NMI, INIT and ExtINT are
//!    forwarded if NMIPass / INITPass / EIntPass, else target-aborted (no event is defined
//!    for that); the reserved modes 011b and 110b are aborted. Lint0Pass / Lint1Pass govern
//!    the legacy LINT0/LINT1 messages of a HyperTransport southbridge, which no PCI MSI can
//!    express: they are decoded ([`DteIrq`](crate::dte::DteIrq)) but no request reaches them.
//! 4. Remapping: IntTabLen above 1011b → ILLEGAL_DEV_TABLE_ENTRY; the index (data 10:0) at or
//!    beyond 2^IntTabLen → IO_PAGE_FAULT (I = 1, PR = 0). QEMU does not check IntTabLen
//!    (anchors-x86 §2.7); the spec bounds the table, so a guest cannot make the IOMMU read
//!    past what it allocated. The entry (4 bytes, or 16 with Control.GAEn) is read from
//!    IntTableRootPtr; outside RAM → PAGE_TAB_HARDWARE_ERROR (I = 1) with its address.
//! 5. The entry: RemapEn = 0 → IO_PAGE_FAULT (I, PR = 0); reserved bits, GuestMode = 1
//!    (posted interrupts: GAMSup is 0, so guest mode is not supported and the entry is
//!    malformed) or IntType other than fixed/arbitrated → IO_PAGE_FAULT (I, PR, RZ). QEMU
//!    rejects these without logging anything.
//!
//! IO_PAGE_FAULT events for interrupts are suppressed by the DTE's IG bit and by the entry's
//! SupIOPF (the DMA-side SA bit does not apply). Events carry the DeviceID, the DomainID and
//! the MSI address. Nothing is recorded in [`RemapMode::Route`]. [`IrFault::code`] is the
//! event code (0 when the architecture defines no event: target aborts of NMI/INIT/ExtINT
//! without their pass bit, reserved delivery modes, addresses outside the interrupt range);
//! [`IrFault::recorded`] says whether the event became guest-visible (logged, or counted as
//! an overflow), not when suppressed or while the event log is off.

use crate::dte::{Dte, DteError, IntCtl, MAX_INT_TAB_LEN};
use crate::event::{Event, EventCode, EventFlags, EventOutcome, InvalidRequest};
use crate::irte::{GA_SIZE, Irte, LEGACY_SIZE};
use crate::model::AmdVi;
use crate::regs::control;
use crate::shared_state::{Exec, Inner};
use crate::stats;
use std::sync::{Arc, PoisonError};
use viommu_shared::irq::interrupt::is_msi_address;
use viommu_shared::irq::{
    DeliveryMode, DestinationMode, Interrupt, InterruptRemapper, IrFault, IrFaultKind,
    IrInvalidation, IrListener, RemapMode, Resolution, TriggerMode,
};
use viommu_shared::regs::Msi;
use vm_memory::{Bytes, GuestAddress};

/// Index bits of the MSI data (10:0).
pub const INDEX_MASK: u32 = 0x7ff;

/// A fault before the event is raised: the event (if the architecture defines one) and
/// whether the DTE / IRTE suppress it.
struct Failure {
    kind: IrFaultKind,
    index: Option<u32>,
    event: Option<Event>,
    suppressed: bool,
}

impl Failure {
    fn silent(kind: IrFaultKind) -> Failure {
        Failure {
            kind,
            index: None,
            event: None,
            suppressed: false,
        }
    }
}

fn pass(msi: Msi) -> Result<Resolution, Failure> {
    Interrupt::from_compat_msi(msi)
        .map(|interrupt| Resolution {
            interrupt,
            index: None,
        })
        .ok_or_else(|| Failure::silent(IrFaultKind::Malformed))
}

impl Inner {
    /// Remaps one interrupt request; in [`RemapMode::Request`] raises the event of a fault.
    pub fn remap_irq(&self, source: u16, msi: Msi, mode: RemapMode) -> Result<Resolution, IrFault> {
        let result = self.decide(source, msi);
        let request = mode == RemapMode::Request;
        if request {
            let counter = if result.is_ok() {
                &self.stats.interrupts_delivered
            } else {
                &self.stats.interrupt_faults
            };
            stats::add(counter, 1);
        }
        result.map_err(|f| {
            let mut recorded = false;
            if let (true, Some(event)) = (request, f.event) {
                // Guest-visible: in the log, or as EventOverflow when the log is full.
                let outcome = self.raise(event, f.suppressed);
                recorded = matches!(outcome, EventOutcome::Logged | EventOutcome::Overflow);
            }
            IrFault {
                kind: f.kind,
                code: f.event.map_or(0, |e| u16::from(e.code as u8)),
                index: f.index,
                recorded,
            }
        })
    }

    fn decide(&self, source: u16, msi: Msi) -> Result<Resolution, Failure> {
        // Outside the interrupt range a write is DMA, not an interrupt request.
        if !is_msi_address(msi.address) {
            return Err(Failure::silent(IrFaultKind::Malformed));
        }
        let snap = self.snapshot();
        if !self.config.interrupt_remapping || snap.control & control::IOMMU_EN == 0 {
            return pass(msi);
        }
        let device_id = self.alias_of(source);
        // I marks an interrupt request; INVALID_DEVICE_REQUEST has no I bit (its 55:50 are
        // reserved).
        let event = |code, domain_id, flags: EventFlags, address| Event {
            code,
            device_id,
            domain_id,
            flags: if code == EventCode::InvalidDeviceRequest {
                flags
            } else {
                flags | EventFlags::I
            },
            address,
        };
        let fail = |kind, index, event: Event, suppressed| Failure {
            kind,
            index,
            event: Some(event),
            suppressed,
        };
        let dte = match Dte::read(&self.mem, &snap.dev_tab, device_id) {
            Ok(d) => d,
            Err(DteError::BeyondTable) => {
                let e = event(
                    EventCode::IllegalDevTableEntry,
                    0,
                    EventFlags::empty(),
                    msi.address,
                );
                return Err(fail(IrFaultKind::Reserved, None, e, false));
            }
            Err(DteError::Unreadable { address }) => {
                let e = event(
                    EventCode::DevTabHardwareError,
                    0,
                    EventFlags::MASTER_ABORT,
                    address,
                );
                return Err(fail(IrFaultKind::TableReadError, None, e, false));
            }
        };
        let irq = dte.irq();
        if !irq.valid() {
            return pass(msi);
        }
        let illegal = |rz: bool| {
            let flags = if rz {
                EventFlags::RZ
            } else {
                EventFlags::empty()
            };
            let e = event(EventCode::IllegalDevTableEntry, 0, flags, msi.address);
            fail(IrFaultKind::Reserved, None, e, false)
        };
        if irq.reserved_bits() != 0 {
            return Err(illegal(true));
        }
        let allowed = |on: bool| {
            if on {
                pass(msi)
            } else {
                Err(Failure::silent(IrFaultKind::Blocked))
            }
        };
        let domain_id = dte.domain_id();
        match DeliveryMode::from_bits(((msi.data >> 8) & 7) as u8) {
            Some(DeliveryMode::Fixed | DeliveryMode::LowestPriority) => {}
            Some(DeliveryMode::Smi) => return pass(msi),
            Some(DeliveryMode::Nmi) => return allowed(irq.nmi_pass()),
            Some(DeliveryMode::Init) => return allowed(irq.init_pass()),
            Some(DeliveryMode::ExtInt) => return allowed(irq.extint_pass()),
            None => return Err(Failure::silent(IrFaultKind::Malformed)),
        }
        match irq.int_ctl() {
            IntCtl::Pass => return pass(msi),
            IntCtl::Reserved => return Err(illegal(true)),
            IntCtl::Abort => {
                let e = event(
                    EventCode::InvalidDeviceRequest,
                    0,
                    EventFlags::request_type(InvalidRequest::InterruptAborted),
                    msi.address,
                );
                return Err(fail(IrFaultKind::Blocked, None, e, false));
            }
            IntCtl::Remap => {}
        }
        if irq.table_len() > MAX_INT_TAB_LEN {
            return Err(illegal(false));
        }
        let index = msi.data & INDEX_MASK;
        let ig = irq.ignore_unmapped();
        let page_fault =
            |flags: EventFlags| event(EventCode::IoPageFault, domain_id, flags, msi.address);
        if index >> irq.table_len() != 0 {
            let e = page_fault(EventFlags::empty());
            return Err(fail(IrFaultKind::IndexOutOfRange, Some(index), e, ig));
        }
        let ga = snap.control & control::GA_EN != 0;
        let size = if ga { GA_SIZE } else { LEGACY_SIZE };
        let at = irq.table_root() + u64::from(index) * size;
        let read = |addr: u64| -> Option<u64> {
            self.mem
                .read_obj::<u64>(GuestAddress(addr))
                .ok()
                .map(u64::from_le)
        };
        let entry = if ga {
            read(at)
                .zip(read(at + 8))
                .map(|(lo, hi)| Irte::from_ga(lo, hi, snap.control & control::XT_EN != 0))
        } else {
            self.mem
                .read_obj::<u32>(GuestAddress(at))
                .ok()
                .map(|v| Irte::from_legacy(u32::from_le(v)))
        };
        let Some(irte) = entry else {
            let e = event(
                EventCode::PageTabHardwareError,
                domain_id,
                EventFlags::MASTER_ABORT,
                at,
            );
            return Err(fail(IrFaultKind::TableReadError, Some(index), e, false));
        };
        let suppressed = ig || irte.suppress_faults;
        if !irte.remap_en {
            let e = page_fault(EventFlags::empty());
            return Err(fail(IrFaultKind::NotPresent, Some(index), e, suppressed));
        }
        let malformed = EventFlags::PR | EventFlags::RZ;
        if irte.guest_mode {
            let e = page_fault(malformed);
            return Err(fail(IrFaultKind::Unsupported, Some(index), e, suppressed));
        }
        let delivery = match irte.int_type {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            _ => {
                let e = page_fault(malformed);
                return Err(fail(IrFaultKind::Reserved, Some(index), e, suppressed));
            }
        };
        if irte.reserved {
            let e = page_fault(malformed);
            return Err(fail(IrFaultKind::Reserved, Some(index), e, suppressed));
        }
        Ok(Resolution {
            interrupt: Interrupt {
                destination: irte.destination,
                vector: irte.vector,
                delivery,
                destination_mode: if irte.dest_logical {
                    DestinationMode::Logical
                } else {
                    DestinationMode::Physical
                },
                // The entry has no trigger mode or redirection hint: the request's stay
                // (an IOAPIC's level-triggered message keeps data bit 15).
                trigger: if msi.data & (1 << 15) != 0 {
                    TriggerMode::Level
                } else {
                    TriggerMode::Edge
                },
                redirection_hint: msi.address & (1 << 3) != 0,
            },
            index: Some(index),
        })
    }

    /// Queues a notification for interrupt-route listeners; sent by
    /// [`flush_irq_notifications`](Self::flush_irq_notifications).
    pub fn queue_irq_invalidation(&self, exec: &mut Exec, what: IrInvalidation) {
        if self.config.interrupt_remapping && !exec.irq_pending.contains(&what) {
            exec.irq_pending.push(what);
        }
    }

    /// Sends the queued notifications. Called before a COMPLETION_WAIT completes and when
    /// command processing ends, so a guest that saw its completion wait knows the VMM was
    /// told. Listeners run with the command-processing lock held but not the register lock,
    /// so they may call [`InterruptRemapper::remap`] (which takes only the latter).
    pub fn flush_irq_notifications(&self, exec: &mut Exec) {
        for what in std::mem::take(&mut exec.irq_pending) {
            self.notify_irq(what);
        }
    }

    /// Tells every listener about `what` now.
    pub fn notify_irq(&self, what: IrInvalidation) {
        let listeners: Vec<Arc<dyn IrListener>> = self
            .irq_listeners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !listeners.is_empty() {
            stats::add(&self.stats.irq_invalidations, 1);
        }
        for l in listeners {
            l.invalidated(what);
        }
    }
}

/// The VMM's view of interrupt remapping.
///
/// `remap` reads the DTE and the IRTE from guest memory on every call (no cache), takes only
/// the register lock briefly, and may run on any thread. Listeners are told, per requester
/// whose entry the command names (the DeviceID and its IVRS aliases): `Source` for
/// INVALIDATE_INTERRUPT_TABLE and INVALIDATE_DEVTAB_ENTRY (IV, IntCtl and the table pointer
/// live in the DTE) and for [`AmdVi::set_alias`]; `All` for INVALIDATE_IOMMU_ALL, writes of
/// IommuEn / GAEn / XTEn or the device table base, and reset. They are called during command
/// processing before the next COMPLETION_WAIT stores or interrupts (so a guest that saw its
/// completion knows the VMM was told), with the command-processing lock held but not the
/// register lock: a listener may call `remap`, but not `mmio_write`, `reset` or `set_alias`.
impl InterruptRemapper for AmdVi {
    fn remap(&self, source: u16, msi: Msi, mode: RemapMode) -> Result<Resolution, IrFault> {
        self.inner().remap_irq(source, msi, mode)
    }

    fn add_listener(&self, listener: Arc<dyn IrListener>) {
        self.inner()
            .irq_listeners
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener);
    }
}
