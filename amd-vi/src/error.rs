//! Errors the model returns to the VMM.

use std::fmt;
use viommu_shared::host::HostError;
use viommu_shared::pt::Run;
use viommu_shared::snapshot::SnapshotError;

/// Why an operation on the model failed. Guest-visible behaviour is never an error here: the
/// guest sees architected events instead. These are host-side problems the VMM must know
/// about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmdViError {
    /// The host ran out of DMA mappings for a passthrough device even after a full reclaim:
    /// the listed guest runs are not mapped, so the device's DMA to them will fail. The
    /// guest's command completed as the architecture says; AMD-Vi has no event for this.
    HostOutOfResources {
        /// Requester id of the passthrough device.
        device_id: u16,
        /// Guest runs left unmapped, in IOVA order.
        not_mapped: Vec<Run>,
    },
    /// The host refused to remove one of the model's own mappings (it stays mapped).
    HostUnmap {
        /// Requester id of the passthrough device.
        device_id: u16,
        /// The mapping that could not be removed.
        run: Run,
        /// The host's answer.
        error: HostError,
    },
    /// [`attach_host`](crate::AmdVi::attach_host) for a device that already has a host.
    AlreadyAttached {
        /// Requester id.
        device_id: u16,
    },
    /// [`detach_host`](crate::AmdVi::detach_host) for a device without a host.
    NotAttached {
        /// Requester id.
        device_id: u16,
    },
    /// A snapshot stream or state was refused (corrupt, hostile, another format version, or
    /// not fitting this IOMMU's configuration); the IOMMU was reset.
    Snapshot(SnapshotError),
}

impl fmt::Display for AmdViError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmdViError::HostOutOfResources {
                device_id,
                not_mapped,
            } => write!(
                f,
                "device {device_id:#06x}: host out of DMA mappings, {} guest runs not mapped",
                not_mapped.len()
            ),
            AmdViError::HostUnmap {
                device_id,
                run,
                error,
            } => write!(
                f,
                "device {device_id:#06x}: host refused to unmap [{:#x}, +{:#x}): {error}",
                run.iova, run.size
            ),
            AmdViError::AlreadyAttached { device_id } => {
                write!(f, "device {device_id:#06x} already has a host backend")
            }
            AmdViError::NotAttached { device_id } => {
                write!(f, "device {device_id:#06x} has no host backend")
            }
            AmdViError::Snapshot(e) => write!(f, "snapshot refused: {e}"),
        }
    }
}

impl std::error::Error for AmdViError {}
