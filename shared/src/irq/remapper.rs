//! [`InterruptRemapper`]: the seam between a model that remaps interrupts and the VMM.

use super::interrupt::Interrupt;
use crate::regs::Msi;
use std::sync::Arc;

/// Who is asking: an actual interrupt request, or the VMM resolving a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemapMode {
    /// An interrupt request arriving at the IOMMU (a device's MSI write, an IOAPIC
    /// message): faults are recorded in the architected fault registers / event log.
    Request,
    /// The VMM resolving an MSI for its route table (e.g. KVM irqfd routing) ahead of any
    /// interrupt: nothing is recorded, as real hardware only faults on an actual request.
    Route,
}

/// Why an interrupt request was not delivered, in terms common to every model; the
/// architected code (VT-d fault reason, AMD-Vi event type) is in [`IrFault::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrFaultKind {
    /// The MSI address or data is malformed for remapping (outside the window, reserved
    /// bits, bad format).
    Malformed,
    /// The entry index is beyond the table (VT-d IRTA.S, AMD-Vi DTE.IntTabLen).
    IndexOutOfRange,
    /// The remapping entry is not present (VT-d P=0, AMD-Vi RemapEn/Valid=0).
    NotPresent,
    /// The entry or a structure on the way has reserved bits set or an unsupported encoding.
    Reserved,
    /// The entry's source validation (VT-d SVT/SQ/SID) rejects the requester.
    SourceMismatch,
    /// Reading the table (or the device table) from guest memory failed.
    TableReadError,
    /// The interrupt is blocked by configuration: compatibility format while VT-d
    /// GSTS.CFIS is clear, AMD-Vi IntCtl = abort, a delivery mode the DTE does not pass.
    Blocked,
    /// A feature the model does not implement was requested (e.g. posted interrupts
    /// rejected with the architected error).
    Unsupported,
}

/// A typed interrupt-remapping fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrFault {
    /// What went wrong.
    pub kind: IrFaultKind,
    /// The architected code: VT-d fault reason (0x20–0x27), AMD-Vi event code.
    pub code: u16,
    /// The remapping-table index involved, when there is one.
    pub index: Option<u32>,
    /// Whether the fault was recorded guest-visibly (fault record / event log); false for
    /// [`RemapMode::Route`], for faults the entry asks to suppress (VT-d FPD) and for
    /// faults the architecture does not log.
    pub recorded: bool,
}

/// A successful remapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Resolution {
    /// The interrupt to deliver.
    pub interrupt: Interrupt,
    /// The remapping-table entry used, `None` when the MSI passed through unremapped
    /// (remapping off, compatibility format allowed, AMD-Vi IntCtl = pass-through).
    pub index: Option<u32>,
}

/// Which cached remapping results a guest invalidation made stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrInvalidation {
    /// Everything (global interrupt-entry-cache invalidation, table pointer change,
    /// remapping enabled or disabled).
    All,
    /// Entries `first .. first + count` of the one global table (VT-d index-selective IEC).
    Indices {
        /// First index.
        first: u32,
        /// Number of entries (2^IM for VT-d).
        count: u32,
    },
    /// Everything resolved for one requester (AMD-Vi INVALIDATE_INTERRUPT_TABLE and
    /// device-table-entry invalidations).
    Source(u16),
}

impl IrInvalidation {
    /// Whether a resolution for `source` that used `index` (or passed through unremapped
    /// when `None`) may be stale after this invalidation.
    pub fn affects(&self, source: u16, index: Option<u32>) -> bool {
        match *self {
            IrInvalidation::All => true,
            IrInvalidation::Source(s) => s == source,
            // A pass-through result depends on the global state only, which an indexed
            // invalidation does not change.
            IrInvalidation::Indices { first, count } => index
                .is_some_and(|i| i >= first && u64::from(i) < u64::from(first) + u64::from(count)),
        }
    }
}

/// Receives the model's invalidation notifications. Called with the model's locks
/// released; must not block for long.
pub trait IrListener: Send + Sync {
    /// The guest invalidated cached remapping state.
    fn invalidated(&self, what: IrInvalidation);
}

/// A model that remaps interrupts. Both x86 models implement it, so a VMM handles VT-d
/// and AMD-Vi the same way.
pub trait InterruptRemapper: Send + Sync {
    /// Remaps `msi` from requester `source` (PCI requester ID, or the IOAPIC/HPET source
    /// ID from the VMM's platform description). With remapping disabled the MSI is decoded
    /// as a compatibility-format interrupt. In [`RemapMode::Request`] faults are recorded
    /// as the architecture says; in [`RemapMode::Route`] never.
    fn remap(&self, source: u16, msi: Msi, mode: RemapMode) -> Result<Resolution, IrFault>;

    /// Registers `listener` for invalidation notifications.
    fn add_listener(&self, listener: Arc<dyn IrListener>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_scopes() {
        let idx = IrInvalidation::Indices { first: 8, count: 4 };
        assert!(idx.affects(1, Some(8)) && idx.affects(1, Some(11)));
        assert!(!idx.affects(1, Some(12)) && !idx.affects(1, Some(7)));
        assert!(!idx.affects(1, None));
        let edge = IrInvalidation::Indices {
            first: u32::MAX,
            count: 2,
        };
        assert!(edge.affects(0, Some(u32::MAX)));
        assert!(IrInvalidation::Source(3).affects(3, None));
        assert!(!IrInvalidation::Source(3).affects(4, Some(1)));
        assert!(IrInvalidation::All.affects(9, None));
    }
}
