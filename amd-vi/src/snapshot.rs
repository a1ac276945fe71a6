//! [`AmdViSnapshot`]: the architectural state of the IOMMU, for migration.
//!
//! Saved: every MMIO register (generically, via `viommu_shared::snapshot`: device table,
//! command buffer, event log and PPR log bases and head/tail pointers, Control, Status,
//! exclusion range, and whatever registers the model gains later) and the one piece of state
//! behind them, whether command processing was halted by an illegal command (CmdBufRun stays
//! clear until CmdBufEn is set again). Commands queued between head and tail while
//! processing was halted or disabled, and events in the log, are in guest memory and are
//! picked up from the restored pointers.
//!
//! Not saved (rebuilt or not architectural): the emulated-DMA caches (emptied), every
//! passthrough device's mode and host mappings (re-read from the device table and re-synced
//! into the destination's hosts), IVRS aliases and the MSI message (the VMM's topology and
//! PCI config space), the event history and counters (introspection).

use crate::AmdVi;
use crate::error::AmdViError;
use crate::regs::{control, offset, status};
use crate::shared_state::lock;
use serde::{Deserialize, Serialize};
use viommu_shared::irq::IrInvalidation;
use viommu_shared::snapshot::{self, SavedRegister, SnapshotError, Versioned};

/// The snapshot format version this build writes and restores.
pub const AMD_VI_SNAPSHOT_VERSION: u32 = 1;

/// Read-only register bits the IOMMU itself sets (the rest of a saved register value must be
/// bits the guest can write): the Status run bits, and the EFR (compared with the
/// destination's in [`AmdViSnapshot::validate`]).
pub(crate) const MODEL_BITS: &[(u64, u64)] = &[
    (
        offset::STATUS,
        status::EVENT_LOG_RUN | status::CMD_BUF_RUN | status::PPR_LOG_RUN,
    ),
    (offset::EXT_FEATURES, u64::MAX),
];

/// Everything a guest can observe or has programmed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmdViSnapshot {
    /// Format version ([`AMD_VI_SNAPSHOT_VERSION`]).
    pub version: u32,
    /// Every MMIO register, by offset.
    pub registers: Vec<SavedRegister>,
    /// Command processing stopped on an error (illegal command, unreadable command) and
    /// stays stopped until CmdBufEn or IommuEn is set again.
    pub command_halted: bool,
}

impl Versioned for AmdViSnapshot {
    const VERSION: u32 = AMD_VI_SNAPSHOT_VERSION;
}

impl AmdViSnapshot {
    /// The stream encoding (JSON, see `viommu_shared::snapshot::stream`).
    pub fn to_bytes(&self) -> Vec<u8> {
        snapshot::encode(self)
    }

    /// Decodes a stream: bounded, version checked first.
    pub fn from_bytes(bytes: &[u8]) -> Result<AmdViSnapshot, SnapshotError> {
        snapshot::decode(bytes)
    }

    fn reg(&self, off: u64) -> u64 {
        self.registers
            .iter()
            .find(|r| r.offset == off)
            .map_or(0, |r| r.value)
    }

    /// Checks that an IOMMU advertising `efr` (with PPR support `ppr`) could hold this
    /// state: same EFR, and run bits in Status consistent with Control and the halt latch
    /// (spec §3.4.11). The register set is checked when it is loaded.
    pub fn validate(&self, efr: u64, ppr: bool) -> Result<(), SnapshotError> {
        if self.version != AMD_VI_SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: u64::from(self.version),
                supported: AMD_VI_SNAPSHOT_VERSION,
            });
        }
        if self.reg(offset::EXT_FEATURES) != efr {
            return Err(SnapshotError::mismatch("EXT_FEATURES"));
        }
        let ctl = self.reg(offset::CONTROL);
        let st = self.reg(offset::STATUS);
        let en = ctl & control::IOMMU_EN != 0;
        let cmd_on = en && ctl & control::CMD_BUF_EN != 0;
        if self.command_halted && !cmd_on {
            return Err(SnapshotError::invalid("command_halted"));
        }
        let cmd_run = cmd_on && !self.command_halted;
        let evt_allowed = en && ctl & control::EVENT_LOG_EN != 0;
        let ppr_run = ppr && en && ctl & control::PPR_LOG_EN != 0;
        if (st & status::CMD_BUF_RUN != 0) != cmd_run
            || (st & status::EVENT_LOG_RUN != 0 && !evt_allowed)
            || (st & status::PPR_LOG_RUN != 0) != ppr_run
        {
            return Err(SnapshotError::invalid("STATUS"));
        }
        Ok(())
    }
}

impl AmdVi {
    /// The architectural state, for migration (see [`crate::snapshot`]).
    pub fn save(&self) -> AmdViSnapshot {
        let (registers, command_halted) = lock(&self.inner.regs).save();
        AmdViSnapshot {
            version: AMD_VI_SNAPSHOT_VERSION,
            registers,
            command_halted,
        }
    }

    /// [`save`](Self::save) as a stream ([`AmdViSnapshot::to_bytes`]).
    pub fn save_bytes(&self) -> Vec<u8> {
        self.save().to_bytes()
    }

    /// Loads a state produced by [`save`](Self::save) on an IOMMU with the same
    /// configuration, then rebuilds what is derived from guest memory: the emulated-DMA
    /// caches are flushed and every passthrough device's entry is re-read and its host
    /// re-synced in full (reclaim and retry on host out-of-resources, as at runtime; the
    /// first host error is returned after the state is loaded). Commands are not run: the
    /// guest's next head, tail or Control write runs what is queued, as on the source.
    ///
    /// Hosts may be attached before or after: [`attach_host`](Self::attach_host) syncs
    /// from the current state either way, and the result is the same. The VMM should
    /// restore first and attach the destination's hosts after: an IOMMU in its reset state
    /// is disabled, so a host attached before the restore first maps (pins) all of guest RAM
    /// only to have it unmapped again by the restore's re-sync. Each `attach_host` returns
    /// its device's host failure.
    ///
    /// A state no IOMMU with this configuration could hold is refused with
    /// [`AmdViError::Snapshot`] and the IOMMU is reset (as by [`reset`](Self::reset)).
    pub fn restore(&self, snapshot: &AmdViSnapshot) -> Result<(), AmdViError> {
        let mut exec = lock(&self.inner.exec);
        let loaded = snapshot
            .validate(self.inner.efr, self.inner.config.ppr)
            .and_then(|()| {
                lock(&self.inner.regs).load(&snapshot.registers, snapshot.command_halted)
            });
        if let Err(e) = loaded {
            drop(exec);
            self.reset_after_refused_snapshot();
            return Err(AmdViError::Snapshot(e));
        }
        self.inner.iotlb.invalidate_all();
        // Interrupt remapping state came from the stream: every route resolved before is
        // stale.
        self.inner
            .queue_irq_invalidation(&mut exec, IrInvalidation::All);
        // Host errors are also recorded for `take_host_errors` by the sync itself.
        let result = self.inner.reload_entries(&mut exec, None, true);
        self.inner.flush_irq_notifications(&mut exec);
        result
    }

    /// Decodes a stream ([`AmdViSnapshot::from_bytes`]) and [`restore`](Self::restore)s it;
    /// a stream that does not decode also leaves the IOMMU reset.
    pub fn restore_bytes(&self, bytes: &[u8]) -> Result<(), AmdViError> {
        match AmdViSnapshot::from_bytes(bytes) {
            Ok(s) => self.restore(&s),
            Err(e) => {
                self.reset_after_refused_snapshot();
                Err(AmdViError::Snapshot(e))
            }
        }
    }

    /// Resets after a refused snapshot. The caller gets the snapshot error; a host error of
    /// the reset's re-sync is not lost: the sync records it for
    /// [`take_host_errors`](Self::take_host_errors).
    fn reset_after_refused_snapshot(&self) {
        let _ = self.reset();
    }
}
