//! [`VtdSnapshot`]: the architectural state of a unit, for migration (scenario VTD-37).
//!
//! Only what the guest programmed or can observe is saved: every register (generically, via
//! `viommu_shared::snapshot`), the fault recording registers and the hardware's next-record
//! index, the root pointer and queue geometry latched by SRTP / QIE, translation enable and
//! the interrupt-remapping table address latched by SIRTP. Queued descriptors not yet
//! processed (after an invalidation queue error) stay in guest memory between IQH and IQT and
//! run when the guest clears FSTS.IQE on the destination.
//!
//! Caches and shadows are not part of it: after [`Vtd::restore`](crate::Vtd::restore) the
//! emulated-device IOTLB is empty and every passthrough device is re-resolved from the
//! guest's tables and re-synced into its (new) host, as after a global invalidation. Aliases
//! and attached hosts belong to the VMM's topology and are not included.
//!
//! A stream is validated like guest input ([`VtdSnapshot::validate`]): every value must be
//! one a unit with the destination's configuration could hold.

use crate::config::Config;
use crate::queue::Queue;
use crate::regs::{
    CAP, CCMD, CCMD_CAIG_MASK, CTL_IP, ECAP, FECTL, FSTS, FSTS_FRI_MASK, FSTS_PPF, GCMD_QIE,
    GCMD_TE, GSTS, IECTL, IOTLB, IOTLB_IAIG_MASK, IQA, IQA_DW, IQH, IRTA, RTADDR, RTADDR_TTM_MASK,
};
use crate::tables::{RootMode, RootPointer};
use serde::{Deserialize, Serialize};
use viommu_shared::snapshot::{self, SavedRegister, SnapshotError, Versioned};

/// The snapshot format version this build writes and restores.
pub const VTD_SNAPSHOT_VERSION: u32 = 1;

/// The invalidation queue as latched by QIE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSnapshot {
    /// GSTS.QIES.
    pub enabled: bool,
    /// Guest-physical base.
    pub base: u64,
    /// Number of descriptors (a power of two, 128..=32768).
    pub entries: u32,
    /// 256-bit descriptors.
    pub wide: bool,
    /// Next descriptor index.
    pub head: u32,
}

/// Everything a guest can observe or has programmed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VtdSnapshot {
    /// Format version ([`VTD_SNAPSHOT_VERSION`]).
    pub version: u32,
    /// Stored value of every register, by offset (write-only registers included).
    pub registers: Vec<SavedRegister>,
    /// Fault recording registers (low, high quadwords), in index order.
    pub fault_records: Vec<(u64, u64)>,
    /// Hardware's next fault record index.
    pub next_fault_record: usize,
    /// Root table pointer latched by SRTP.
    pub root: RootPointer,
    /// Translation enabled.
    pub translating: bool,
    /// The invalidation queue.
    pub queue: QueueSnapshot,
    /// Interrupt remapping table address latched by SIRTP.
    pub irta: Option<u64>,
}

impl Versioned for VtdSnapshot {
    const VERSION: u32 = VTD_SNAPSHOT_VERSION;
}

/// Read-only register bits the unit itself sets (the rest of a saved register value must be
/// bits the guest can write): GSTS status bits, FSTS.PPF/FRI, the hardware-advanced IQH,
/// the actual granularities CAIG/IAIG, FECTL.IP/IECTL.IP, and CAP/ECAP (compared with the
/// destination's in [`VtdSnapshot::validate`]).
pub(crate) const MODEL_BITS: &[(u64, u64)] = &[
    (GSTS, 0xff80_0000),
    (FSTS, FSTS_PPF | FSTS_FRI_MASK),
    (IQH, 0x7_fff0),
    (CCMD, CCMD_CAIG_MASK),
    (IOTLB, IOTLB_IAIG_MASK),
    (FECTL, CTL_IP),
    (IECTL, CTL_IP),
    (CAP, u64::MAX),
    (ECAP, u64::MAX),
];

/// Bits of IRTA that exist (address 63:12, EIME 11, S 3:0).
const IRTA_BITS: u64 = 0xffff_ffff_ffff_f80f;

impl VtdSnapshot {
    /// The stream encoding (JSON, see `viommu_shared::snapshot::stream`).
    pub fn to_bytes(&self) -> Vec<u8> {
        snapshot::encode(self)
    }

    /// Decodes a stream: bounded, version checked first. Semantic checks are made by
    /// [`validate`](Self::validate) when restoring.
    pub fn from_bytes(bytes: &[u8]) -> Result<VtdSnapshot, SnapshotError> {
        snapshot::decode(bytes)
    }

    fn reg(&self, offset: u64) -> u64 {
        self.registers
            .iter()
            .find(|r| r.offset == offset)
            .map_or(0, |r| r.value)
    }

    /// Checks that a unit with `config` (whose CAP and ECAP are `cap`, `ecap`) could hold
    /// this state: same fault record count and capabilities, a queue geometry QIE could
    /// latch, a root pointer SRTP could latch, and registers consistent with the latched
    /// state (GSTS.TES / QIES, IQH, FSTS.PPF). The register set itself is checked when it
    /// is loaded (`viommu_shared::snapshot::restore_registers`).
    pub fn validate(&self, config: &Config, cap: u64, ecap: u64) -> Result<(), SnapshotError> {
        if self.version != VTD_SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: u64::from(self.version),
                supported: VTD_SNAPSHOT_VERSION,
            });
        }
        if self.fault_records.len() != config.fault_record_count() {
            return Err(SnapshotError::mismatch("fault_records"));
        }
        if self.next_fault_record >= self.fault_records.len() {
            return Err(SnapshotError::invalid("next_fault_record"));
        }
        if self.reg(CAP) != cap {
            return Err(SnapshotError::mismatch("CAP"));
        }
        if self.reg(ECAP) != ecap {
            return Err(SnapshotError::mismatch("ECAP"));
        }
        let above_haw = !((1u64 << config.host_address_width()) - 1);
        match self.root.mode {
            RootMode::Scalable if !config.scalable_mode => {
                return Err(SnapshotError::mismatch("root"));
            }
            _ if self.root.addr & (above_haw | 0xfff) != 0 => {
                return Err(SnapshotError::invalid("root"));
            }
            _ => {}
        }
        let q = self.queue;
        if q.enabled {
            let geometry = q.entries.is_power_of_two()
                && (128..=32768).contains(&q.entries)
                && q.head < q.entries
                && q.base & (above_haw | 0xfff) == 0;
            if !geometry {
                return Err(SnapshotError::invalid("queue"));
            }
            if q.wide && !config.scalable_mode {
                return Err(SnapshotError::mismatch("queue"));
            }
        } else if q != QueueSnapshot::default() {
            return Err(SnapshotError::invalid("queue"));
        }
        // Without scalable-mode support RTADDR.TTM and IQA.DW are reserved: the register
        // handlers keep them 0.
        if !config.scalable_mode
            && (self.reg(RTADDR) & RTADDR_TTM_MASK != 0 || self.reg(IQA) & IQA_DW != 0)
        {
            return Err(SnapshotError::mismatch("RTADDR/IQA"));
        }
        let gsts = self.reg(GSTS);
        if (gsts & GCMD_TE != 0) != self.translating || (gsts & GCMD_QIE != 0) != q.enabled {
            return Err(SnapshotError::invalid("GSTS"));
        }
        let shift = if q.wide { 5 } else { 4 };
        if self.reg(IQH) != u64::from(q.head) << shift {
            return Err(SnapshotError::invalid("IQH"));
        }
        let pending = self.fault_records.iter().any(|&(_, hi)| hi >> 63 != 0);
        if (self.reg(FSTS) & FSTS_PPF != 0) != pending {
            return Err(SnapshotError::invalid("FSTS"));
        }
        match self.irta {
            Some(_) if !config.interrupt_remapping => Err(SnapshotError::mismatch("irta")),
            Some(v) if v & !IRTA_BITS != 0 || self.reg(IRTA) & !IRTA_BITS != 0 => {
                Err(SnapshotError::invalid("irta"))
            }
            _ => Ok(()),
        }
    }

    /// The queue this state latches.
    pub(crate) fn latched_queue(&self) -> Queue {
        let q = self.queue;
        if q.enabled {
            Queue {
                enabled: true,
                base: q.base,
                entries: q.entries,
                wide: q.wide,
                head: q.head,
            }
        } else {
            Queue::default()
        }
    }
}
