//! Typed host errors that keep the kernel's errno meaning.

use std::fmt;

/// Why the host refused a map or unmap. Each variant is one errno of the VFIO/iommufd uAPI
/// (reference: `anchors-s390-vfio.md` Part B).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostError {
    /// `ENOSPC`: the container's DMA entry limit is reached (type1 `dma_entry_limit`), or
    /// `ENOMEM` from the pin limit — in both cases "out of resources", which models surface
    /// the way their architecture can.
    OutOfResources,
    /// `EEXIST`: the range overlaps an existing mapping.
    Overlap,
    /// `EINVAL`: misaligned, empty, wrapping, reserved (MSI window), beyond the address
    /// width, or an unmap that cuts a mapping on type1 v2.
    Invalid,
    /// `ENOENT`: iommufd — nothing mapped there, or an unmap that cuts a mapping.
    NotFound,
    /// `EFAULT`: the guest-physical address is not backed by host memory.
    BadAddress,
    /// `EOVERFLOW`: iommufd arithmetic overflow.
    Overflow,
    /// Any other errno.
    Errno(i32),
}

impl HostError {
    /// The errno value this error stands for.
    pub fn errno(&self) -> i32 {
        match self {
            HostError::OutOfResources => libc::ENOSPC,
            HostError::Overlap => libc::EEXIST,
            HostError::Invalid => libc::EINVAL,
            HostError::NotFound => libc::ENOENT,
            HostError::BadAddress => libc::EFAULT,
            HostError::Overflow => libc::EOVERFLOW,
            HostError::Errno(e) => *e,
        }
    }

    /// The error for a raw errno value.
    pub fn from_errno(errno: i32) -> HostError {
        match errno {
            libc::ENOSPC | libc::ENOMEM => HostError::OutOfResources,
            libc::EEXIST => HostError::Overlap,
            libc::EINVAL => HostError::Invalid,
            libc::ENOENT => HostError::NotFound,
            libc::EFAULT => HostError::BadAddress,
            libc::EOVERFLOW => HostError::Overflow,
            e => HostError::Errno(e),
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::OutOfResources => write!(f, "host out of DMA resources (ENOSPC)"),
            HostError::Overlap => write!(f, "overlaps an existing host mapping (EEXIST)"),
            HostError::Invalid => write!(f, "invalid host DMA request (EINVAL)"),
            HostError::NotFound => write!(f, "no such host mapping (ENOENT)"),
            HostError::BadAddress => write!(f, "address not backed by host memory (EFAULT)"),
            HostError::Overflow => write!(f, "address arithmetic overflow (EOVERFLOW)"),
            HostError::Errno(e) => write!(f, "host DMA error errno {e}"),
        }
    }
}

impl std::error::Error for HostError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_round_trip() {
        for e in [
            HostError::OutOfResources,
            HostError::Overlap,
            HostError::Invalid,
            HostError::NotFound,
            HostError::BadAddress,
            HostError::Overflow,
            HostError::Errno(libc::EBUSY),
        ] {
            assert_eq!(HostError::from_errno(e.errno()), e);
        }
        assert_eq!(
            HostError::from_errno(libc::ENOMEM),
            HostError::OutOfResources
        );
    }
}
