//! Errors the model reports to the VMM.

use crate::handle::Fid;
use std::fmt;
use viommu_shared::host::HostError;
use viommu_shared::snapshot::SnapshotError;

/// Why a VMM-facing operation failed, or what went wrong on the host behind a guest
/// instruction (see [`Completion::host_error`](crate::Completion::host_error)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// No function with this identifier.
    NoSuchFunction(Fid),
    /// A function with this identifier already exists.
    DuplicateFid(Fid),
    /// Every function index (1..=65535) is in use.
    TooManyFunctions,
    /// The function names a function group the configuration does not define.
    UnknownGroup(u8),
    /// The function already has a host backend.
    HostAlreadyAttached(Fid),
    /// The function has no host backend.
    NoHost(Fid),
    /// The host ran out of DMA entries: guest mappings of `bytes` bytes in `runs` runs could
    /// not be mapped (the guest was told so: RPCIT CC 1 status 16, or MPCIFC status 16).
    HostOutOfResources {
        /// Function concerned.
        fid: Fid,
        /// Runs left unmapped.
        runs: usize,
        /// Bytes left unmapped.
        bytes: u64,
    },
    /// The host refused to unmap one of the model's own mappings; it is still mapped. The
    /// function was put into the error state.
    HostUnmap {
        /// Function concerned.
        fid: Fid,
        /// First IOVA of the mapping.
        iova: u64,
        /// Bytes.
        size: u64,
        /// The host's answer.
        error: HostError,
    },
    /// The host refused guest mappings for a reason other than resources (for example a
    /// guest-physical address not backed by RAM), or they lie outside the host's usable IOVA
    /// ranges; they stay unmapped and a passthrough device's DMA there faults on the host.
    HostRefused {
        /// Function concerned.
        fid: Fid,
        /// Runs left unmapped.
        runs: usize,
        /// The first refusal's error, if the host answered one.
        error: Option<HostError>,
    },
    /// A configuration value is invalid.
    InvalidConfig(&'static str),
    /// A snapshot stream or state was refused (corrupt, hostile, another format version, or
    /// not fitting the plugged functions); every function was reset.
    Snapshot(SnapshotError),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::NoSuchFunction(fid) => write!(f, "no zPCI function with {fid}"),
            ModelError::DuplicateFid(fid) => write!(f, "{fid} already exists"),
            ModelError::TooManyFunctions => write!(f, "no free function index"),
            ModelError::UnknownGroup(g) => write!(f, "function group {g:#x} is not configured"),
            ModelError::HostAlreadyAttached(fid) => write!(f, "{fid} already has a host"),
            ModelError::NoHost(fid) => write!(f, "{fid} has no host"),
            ModelError::HostOutOfResources { fid, runs, bytes } => write!(
                f,
                "{fid}: host out of DMA entries, {runs} runs ({bytes:#x} bytes) not mapped"
            ),
            ModelError::HostUnmap {
                fid,
                iova,
                size,
                error,
            } => write!(
                f,
                "{fid}: host refused to unmap [{iova:#x}, +{size:#x}): {error}"
            ),
            ModelError::HostRefused { fid, runs, error } => {
                write!(f, "{fid}: host refused {runs} runs")?;
                if let Some(e) = error {
                    write!(f, ": {e}")?;
                }
                Ok(())
            }
            ModelError::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
            ModelError::Snapshot(e) => write!(f, "snapshot refused: {e}"),
        }
    }
}

impl std::error::Error for ModelError {}
