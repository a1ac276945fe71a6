//! [`VtdError`]: what a model operation reports to the VMM.

use std::fmt;
use viommu_shared::host::HostError;
use viommu_shared::pt::Run;
use viommu_shared::snapshot::SnapshotError;

/// Errors reported to the VMM (never to the guest: the guest sees only what the architecture
/// defines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VtdError {
    /// The host backend of a passthrough device ran out of DMA entries while processing an
    /// invalidation (or attach), even after every shadowed space was reclaimed and the sync
    /// retried. The listed guest runs stay unmapped on the host (the device will fault on the
    /// host if it uses them); the guest's invalidation completed normally.
    HostOutOfResources {
        /// The passthrough device.
        device_id: u32,
        /// IOVA → guest-physical runs the guest maps but the host does not.
        not_mapped: Vec<Run>,
    },
    /// The host refused to remove one of the shadow's own mappings; it stays mapped.
    HostUnmap {
        /// The passthrough device.
        device_id: u32,
        /// The mapping.
        run: Run,
        /// The host's answer.
        error: HostError,
    },
    /// The device id is not a 16-bit PCI requester id.
    InvalidDeviceId {
        /// The id given.
        device_id: u32,
    },
    /// A host backend is already attached for this device.
    AlreadyAttached {
        /// The device.
        device_id: u32,
    },
    /// No host backend is attached for this device.
    NotAttached {
        /// The device.
        device_id: u32,
    },
    /// Passthrough devices need caching mode (CAP.CM): without it the guest does not
    /// invalidate after mapping, so the host could not follow (QEMU refuses the same way).
    CachingModeOff,
    /// A snapshot stream or state was refused (corrupt, hostile, another format version, or
    /// not fitting this unit's configuration); the unit was reset.
    Snapshot(SnapshotError),
    /// The unit advertises snoop control (ECAP.SC, [`Config::snoop_control`](crate::Config))
    /// but the host backend does not enforce cache coherency
    /// ([`HostDma::enforces_coherency`](viommu_shared::host::HostDma::enforces_coherency)):
    /// the guest would believe non-snooped DMA of this device is coherent when it is not, so
    /// the device is not attached.
    HostNotCoherent {
        /// The device.
        device_id: u32,
    },
}

impl fmt::Display for VtdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VtdError::HostOutOfResources {
                device_id,
                not_mapped,
            } => write!(
                f,
                "device {device_id:#06x}: host out of DMA entries, {} runs ({} bytes) left unmapped",
                not_mapped.len(),
                not_mapped.iter().map(|r| r.size).sum::<u64>()
            ),
            VtdError::HostUnmap {
                device_id,
                run,
                error,
            } => write!(
                f,
                "device {device_id:#06x}: host refused to unmap [{:#x}, +{:#x}): {error}",
                run.iova, run.size
            ),
            VtdError::InvalidDeviceId { device_id } => {
                write!(f, "{device_id:#x} is not a PCI requester id")
            }
            VtdError::AlreadyAttached { device_id } => {
                write!(f, "device {device_id:#06x} already has a host backend")
            }
            VtdError::NotAttached { device_id } => {
                write!(f, "device {device_id:#06x} has no host backend")
            }
            VtdError::CachingModeOff => {
                write!(f, "shadowing a passthrough device needs caching mode")
            }
            VtdError::Snapshot(e) => write!(f, "snapshot refused: {e}"),
            VtdError::HostNotCoherent { device_id } => write!(
                f,
                "device {device_id:#06x}: ECAP.SC is advertised but the host does not enforce cache coherency"
            ),
        }
    }
}

impl std::error::Error for VtdError {}
