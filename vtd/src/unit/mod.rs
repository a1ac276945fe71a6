//! The state behind the registers and what every register write, invalidation and DMA
//! request does to it.

mod commands;
mod execute;
mod queued;
mod remap;
mod translate;

pub(crate) use commands::HANDLERS;

use crate::config::Config;
use crate::error::VtdError;
use crate::fault::{Fault, FaultUnit};
use crate::queue::Queue;
use crate::shadow::Shadows;
use crate::space::Space;
use crate::stats::VtdStats;
use crate::tables::{RootPointer, Tables};
use std::collections::BTreeMap;
use std::sync::Arc;
use viommu_shared::iotlb::IotlbRegistry;
use viommu_shared::irq::IrInvalidation;
use viommu_shared::regs::MsiSink;
use vm_memory::GuestMemoryMmap;

/// Domain tag of untranslated DMA (translation disabled) in the emulated-device IOTLB: not a
/// valid 16-bit domain id, so no domain invalidation ever matches it.
pub(crate) const UNTRANSLATED_TAG: u64 = 1 << 32;

/// Everything of a unit except its register file.
pub(crate) struct Unit {
    pub(crate) config: Config,
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) msi: Arc<dyn MsiSink>,
    pub(crate) iotlb: Arc<IotlbRegistry>,
    pub(crate) faults: FaultUnit,
    pub(crate) queue: Queue,
    pub(crate) root: RootPointer,
    pub(crate) translating: bool,
    pub(crate) irta: Option<u64>,
    pub(crate) aliases: BTreeMap<u16, u16>,
    pub(crate) shadows: Shadows,
    pub(crate) stats: VtdStats,
    /// The most recent fault detected on a DMA request (recorded or not).
    pub(crate) last_fault: Option<Fault>,
    /// First error of the current call, returned by it.
    pub(crate) error: Option<VtdError>,
    /// Interrupt-remapping invalidations of the current call, for the VMM's listeners.
    pub(crate) ir_pending: Vec<IrInvalidation>,
}

/// Function-mask bits ignored when matching source ids (FM 0..3).
fn fm_mask(fm: u8) -> u16 {
    [0, 0b100, 0b110, 0b111][usize::from(fm & 3)]
}

fn sid_matches(a: u16, b: u16, fm: u8) -> bool {
    (a ^ b) & !fm_mask(fm) == 0
}

impl Unit {
    pub(crate) fn new(
        config: Config,
        mem: GuestMemoryMmap,
        msi: Arc<dyn MsiSink>,
        iotlb: Arc<IotlbRegistry>,
    ) -> Unit {
        Unit {
            faults: FaultUnit::new(config.fault_record_count()),
            config,
            mem,
            msi,
            iotlb,
            queue: Queue::default(),
            root: RootPointer::default(),
            translating: false,
            irta: None,
            aliases: BTreeMap::new(),
            shadows: Shadows::default(),
            stats: VtdStats::default(),
            last_fault: None,
            error: None,
            ir_pending: Vec::new(),
        }
    }

    fn haw_mask(&self) -> u64 {
        (1u64 << self.config.host_address_width()) - 1
    }

    /// Keeps the first error of a call; counts the others.
    pub(crate) fn note(&mut self, result: Result<(), VtdError>) {
        if let Err(e) = result {
            if self.error.is_none() {
                self.error = Some(e);
            } else {
                self.stats.errors_not_returned += 1;
            }
        }
    }

    /// The source id the unit sees for requester `rid` (its alias, if any).
    pub(crate) fn source_id(&self, rid: u16) -> u16 {
        self.aliases.get(&rid).copied().unwrap_or(rid)
    }

    fn tables(&self) -> Tables<'_> {
        Tables {
            config: &self.config,
            mem: &self.mem,
        }
    }

    /// The space DMA without PASID from requester `rid` currently goes through.
    pub(crate) fn space_of(&self, rid: u16) -> Space {
        if !self.translating {
            return Space::Untranslated;
        }
        match self.tables().resolve(&self.root, self.source_id(rid), None) {
            Ok(r) => r.space,
            Err(f) => Space::Blocked { reason: f.reason },
        }
    }
}
