//! Emulated-device DMA: translating one request and raising its architected event.
//!
//! The entry is read from guest memory on every IOTLB miss (a DTE cache that is always
//! fresh is a valid implementation of the spec's "software must invalidate" rule); the
//! [`IotlbRegistry`](viommu_shared::iotlb::IotlbRegistry) caches the answers and the command
//! processor flushes it on invalidations.

use crate::dte::DeviceMode;
use crate::event::{Event, EventCode, EventFlags, InvalidRequest};
use crate::pagetable::AmdV1Format;
use crate::regs::control;
use crate::shared_state::Inner;
use crate::stats;
use viommu_shared::dma::{DmaFault, DmaFaultKind, DmaRequest, DmaTranslate, DmaTranslation};
use viommu_shared::irq::interrupt::MSI_WINDOW;
use viommu_shared::pt::{WalkFault, Walker};
use viommu_shared::{AddrRange, Perm};

/// IOTLB tag of untranslated (IOMMU disabled / V = 0) answers: outside the 16-bit DomainID
/// space, so no INVALIDATE_IOMMU_PAGES matches it; device and global invalidations do.
pub const PASSTHROUGH_TAG: u64 = 1 << 16;

/// The translated entry a walk starts from.
struct Table {
    domain_id: u16,
    root: u64,
    levels: u8,
    perm: Perm,
    suppressed: bool,
}

impl Inner {
    fn identity(&self, iova: u64, domain: u64, perm: Perm) -> DmaTranslation {
        let (base, size) = self.identity_page(iova);
        DmaTranslation {
            domain,
            iova: base,
            addr: base,
            size,
            perm,
        }
    }

    /// Raises an event for a failed request and returns the device's fault.
    fn fail(&self, event: Event, suppressed: bool, fault: DmaFault) -> DmaFault {
        stats::add(&self.stats.dma_faults, 1);
        self.raise(event, suppressed);
        fault
    }

    fn walk(&self, device_id: u16, req: &DmaRequest, t: Table) -> Result<DmaTranslation, DmaFault> {
        let Table {
            domain_id,
            root,
            levels,
            perm: dte_perm,
            suppressed,
        } = t;
        let rw = rw_flag(req.perm);
        let page_fault = |flags: EventFlags| Event {
            code: EventCode::IoPageFault,
            device_id,
            domain_id,
            flags: flags | rw,
            address: req.iova,
        };
        let Some(fmt) = AmdV1Format::new(levels) else {
            // Modes are validated when the entry is decoded.
            return Err(DmaFault::new(req.iova, DmaFaultKind::Malformed));
        };
        let walker = Walker::new(&fmt, &self.mem, root);
        match walker.lookup(req.iova) {
            Ok(leaf) => {
                let perm = leaf.perm & dte_perm & Perm::RW;
                if perm.allows(req.perm & Perm::RW) {
                    return Ok(DmaTranslation {
                        domain: u64::from(domain_id),
                        iova: leaf.iova,
                        addr: leaf.addr,
                        size: leaf.size,
                        perm,
                    });
                }
                Err(self.fail(
                    page_fault(EventFlags::PR | EventFlags::PE),
                    suppressed,
                    DmaFault::new(req.iova, DmaFaultKind::Permission),
                ))
            }
            Err(WalkFault::NotPresent { .. } | WalkFault::IovaTooWide { .. }) => Err(self.fail(
                page_fault(EventFlags::empty()),
                suppressed,
                DmaFault::new(req.iova, DmaFaultKind::NotPresent),
            )),
            Err(WalkFault::Reserved { .. }) => Err(self.fail(
                page_fault(EventFlags::PR | EventFlags::RZ),
                suppressed,
                DmaFault::new(req.iova, DmaFaultKind::Malformed),
            )),
            Err(WalkFault::TableOutsideRam { addr, .. }) => Err(self.fail(
                Event {
                    code: EventCode::PageTabHardwareError,
                    device_id,
                    domain_id,
                    flags: rw | EventFlags::MASTER_ABORT,
                    address: addr,
                },
                false,
                DmaFault::new(req.iova, DmaFaultKind::Malformed),
            )),
            // Not produced by a lookup.
            Err(WalkFault::Permission { .. } | WalkFault::WorkLimit { .. }) => {
                Err(DmaFault::new(req.iova, DmaFaultKind::Malformed))
            }
        }
    }
}

/// The RW event flag for an access needing `perm`.
fn rw_flag(perm: Perm) -> EventFlags {
    if perm.contains(Perm::WRITE) {
        EventFlags::RW
    } else {
        EventFlags::empty()
    }
}

/// The interrupt address range `0xFEE0_0000..0xFEF0_0000`: requests there are interrupts,
/// handled by interrupt remapping and never translated (spec §2.2.5).
pub const INTERRUPT_RANGE: AddrRange = AddrRange::new(MSI_WINDOW, MSI_WINDOW + 0x10_0000);

impl DmaTranslate for Inner {
    /// Translates one page; the interrupt range is excluded: an access there fails (a read
    /// with INVALID_DEVICE_REQUEST type 000b while the IOMMU is on; a write is an interrupt
    /// the VMM routes to [`AmdVi::deliver_msi`](crate::AmdVi::deliver_msi), since the
    /// translation path never sees the data), and no returned page overlaps it, so a cached
    /// large page cannot reach it either.
    fn translate(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault> {
        if INTERRUPT_RANGE.contains(req.iova) {
            return Err(self.interrupt_range_access(req));
        }
        let t = self.translate_page(req)?;
        t.avoiding(INTERRUPT_RANGE, req.iova)
            .ok_or(DmaFault::new(req.iova, DmaFaultKind::Malformed))
    }
}

impl Inner {
    fn interrupt_range_access(&self, req: &DmaRequest) -> DmaFault {
        let fault = DmaFault::new(req.iova, DmaFaultKind::Blocked);
        let on = self.snapshot().control & control::IOMMU_EN != 0;
        let Ok(requester) = u16::try_from(req.requester_id) else {
            return fault;
        };
        if on && req.perm.contains(Perm::READ) {
            let event = Event {
                code: EventCode::InvalidDeviceRequest,
                device_id: self.alias_of(requester),
                domain_id: 0,
                flags: EventFlags::request_type(InvalidRequest::InterruptRangeRead),
                address: req.iova,
            };
            return self.fail(event, false, fault);
        }
        stats::add(&self.stats.dma_faults, 1);
        fault
    }

    fn translate_page(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault> {
        let Ok(requester) = u16::try_from(req.requester_id) else {
            // Not on this IOMMU's segment: nothing can be logged for it.
            return Err(DmaFault::new(req.iova, DmaFaultKind::Blocked));
        };
        let device_id = self.alias_of(requester);
        let snap = self.snapshot();
        let rw = rw_flag(req.perm);
        let need = req.perm & Perm::RW;
        let illegal = |flags: EventFlags| Event {
            code: EventCode::IllegalDevTableEntry,
            device_id,
            domain_id: 0,
            flags: flags | rw,
            address: req.iova,
        };
        match self.resolve(device_id, &snap) {
            DeviceMode::IommuDisabled | DeviceMode::PassThrough => {
                Ok(self.identity(req.iova, PASSTHROUGH_TAG, Perm::RW))
            }
            DeviceMode::NoTranslation {
                domain_id,
                suppress_faults,
            } => Err(self.fail(
                Event {
                    code: EventCode::IoPageFault,
                    device_id,
                    domain_id,
                    flags: rw,
                    address: req.iova,
                },
                suppress_faults,
                DmaFault::new(req.iova, DmaFaultKind::Blocked),
            )),
            DeviceMode::Untranslated {
                domain_id,
                perm,
                suppress_faults,
            } => {
                let perm = perm & Perm::RW;
                if perm.allows(need) && !perm.is_empty() {
                    return Ok(self.identity(req.iova, u64::from(domain_id), perm));
                }
                // Partly allowed: a permission fault. Nothing allowed: the device is blocked,
                // reported like a missing translation (PR = 0).
                let (flags, kind) = if perm.is_empty() {
                    (EventFlags::empty(), DmaFaultKind::Blocked)
                } else {
                    (EventFlags::PR | EventFlags::PE, DmaFaultKind::Permission)
                };
                Err(self.fail(
                    Event {
                        code: EventCode::IoPageFault,
                        device_id,
                        domain_id,
                        flags: flags | rw,
                        address: req.iova,
                    },
                    suppress_faults,
                    DmaFault::new(req.iova, kind),
                ))
            }
            DeviceMode::Translated {
                domain_id,
                root,
                levels,
                perm,
                suppress_faults,
            } => self.walk(
                device_id,
                req,
                Table {
                    domain_id,
                    root,
                    levels,
                    perm,
                    suppressed: suppress_faults,
                },
            ),
            DeviceMode::Illegal { reserved } => Err(self.fail(
                illegal(if reserved {
                    EventFlags::RZ
                } else {
                    EventFlags::empty()
                }),
                false,
                DmaFault::new(req.iova, DmaFaultKind::Malformed),
            )),
            DeviceMode::BeyondTable => Err(self.fail(
                illegal(EventFlags::empty()),
                false,
                DmaFault::new(req.iova, DmaFaultKind::Malformed),
            )),
            DeviceMode::Unreadable { address } => Err(self.fail(
                Event {
                    code: EventCode::DevTabHardwareError,
                    device_id,
                    domain_id: 0,
                    flags: rw | EventFlags::MASTER_ABORT,
                    address,
                },
                false,
                DmaFault::new(req.iova, DmaFaultKind::Malformed),
            )),
        }
    }
}
