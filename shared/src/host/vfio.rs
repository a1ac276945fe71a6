//! VFIO type1 container backend (filled by its owner).

/// A real `/dev/vfio/vfio` container (placeholder until implemented).
pub struct VfioContainerBackend;
