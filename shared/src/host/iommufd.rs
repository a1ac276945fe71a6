//! iommufd backend: shadowed guest mappings go to an IOAS of a real `/dev/iommu` through
//! `IOMMU_IOAS_MAP` / `IOMMU_IOAS_UNMAP` (reference: `anchors-s390-vfio.md` B.7, B.9).
//!
//! The ioctls come from the `iommufd-ioctls` crate (rust-vmm / Cloud Hypervisor), which wraps
//! IOAS allocation, map, unmap, hardware info and object destruction. It has no wrapper for
//! `IOMMU_IOAS_IOVA_RANGES`, so that one ioctl is issued here (with its `// SAFETY:`).
//!
//! The kernel-facing part is the small [`IoasOps`] trait: [`KernelIoas`] implements it on a
//! real IOAS; tests implement it over [`SimHost`](super::SimHost)'s iommufd flavour, so the
//! request encoding (flags, host virtual addresses, lengths) and the error mapping of
//! [`IommufdBackend`] are checked without a kernel (`shared/tests/iommufd_backend.rs`).
//!
//! iommufd semantics (B.7): no entry limit; a map overlapping an existing area fails
//! `EEXIST`; an unmap must cover whole areas (one that cuts an area, or finds nothing, fails
//! `ENOENT`) and returns the bytes unmapped; `iova = 0, length = u64::MAX` unmaps everything.

use super::vfio::gpa_to_hva;
use super::{HostDma, HostError};
use crate::addr::AddrRange;
use crate::perm::Perm;
use iommufd_bindings::iommufd::{
    IOMMUFD_CMD_IOAS_IOVA_RANGES, IOMMUFD_TYPE, iommu_hw_info_type_IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
    iommu_hw_info_type_IOMMU_HW_INFO_TYPE_INTEL_VTD, iommu_ioas_iova_ranges, iommu_ioas_map,
    iommu_ioas_unmap, iommu_iova_range, iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA,
    iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE,
    iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE,
};
use iommufd_ioctls::{AttachHwpt, IommuFd, IommufdError, IommufdIoas};
use std::fmt;
use std::sync::Arc;
use vm_memory::GuestMemoryBackend;
use vmm_sys_util::ioctl::ioctl_with_mut_ref;

mod nr {
    use super::{IOMMUFD_CMD_IOAS_IOVA_RANGES, IOMMUFD_TYPE};
    vmm_sys_util::ioctl_io_nr!(
        IOMMU_IOAS_IOVA_RANGES,
        IOMMUFD_TYPE as u32,
        IOMMUFD_CMD_IOAS_IOVA_RANGES
    );
}

/// Most usable IOVA ranges accepted from `IOMMU_IOAS_IOVA_RANGES` (a few in practice).
pub const MAX_IOVA_RANGES: u32 = 1024;

/// The usable IOVA ranges of an IOAS and its required IOVA alignment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoasRanges {
    /// Half-open ranges (a range ending at the last 64-bit address ends at `u64::MAX`).
    pub ranges: Vec<AddrRange>,
    /// `out_iova_alignment`: every IOVA, length and host address must be a multiple.
    pub alignment: u64,
}

/// The four IOAS requests an [`IommufdBackend`] makes, as the kernel takes them.
pub trait IoasOps {
    /// The IOAS id the requests carry.
    fn ioas_id(&self) -> u32;
    /// `IOMMU_IOAS_MAP`.
    fn map(&mut self, req: &iommu_ioas_map) -> Result<(), HostError>;
    /// `IOMMU_IOAS_UNMAP`; the kernel writes the bytes unmapped back into `req.length`.
    fn unmap(&mut self, req: &mut iommu_ioas_unmap) -> Result<(), HostError>;
    /// `IOMMU_IOAS_IOVA_RANGES`.
    fn iova_ranges(&self) -> Result<IoasRanges, HostError>;
}

/// The errno behind an `iommufd-ioctls` error (errors that carry none, such as an unsupported
/// vIOMMU type, become `EINVAL`).
pub fn host_error(e: &IommufdError) -> HostError {
    use IommufdError::*;
    let errno = match e {
        OpenIommufd(io) | AttachHwpt(io) => io.raw_os_error().unwrap_or(libc::EIO),
        IommuDestroy(s)
        | IommuIoasAlloc(s)
        | IommuIoasMap(s)
        | IommuIoasMapFile(s)
        | IommuIoasUnmap(s)
        | IommuHwptAlloc(s)
        | IommuViommuAlloc(s)
        | IommuVdeviceAlloc(s)
        | IommuGetHwInfo(s)
        | IommuHwptInvalidate(s)
        | IommuVeventqAlloc(s)
        | VeventqNonBlocking(s)
        | IommuHwQueueAlloc(s) => s.errno(),
        _ => libc::EINVAL,
    };
    HostError::from_errno(errno)
}

/// `IOMMU_IOAS_MAP` request for `[iova, iova + size)` → host virtual `hva`, fixed IOVA, with
/// exactly the READ/WRITE of `perm`.
///
/// # Errors
/// [`HostError::Invalid`] when `perm` has neither READ nor WRITE.
pub fn map_request(
    ioas_id: u32,
    iova: u64,
    hva: u64,
    size: u64,
    perm: Perm,
) -> Result<iommu_ioas_map, HostError> {
    let mut flags = iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA;
    if perm.contains(Perm::READ) {
        flags |= iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE;
    }
    if perm.contains(Perm::WRITE) {
        flags |= iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE;
    }
    if !perm.intersects(Perm::RW) {
        return Err(HostError::Invalid);
    }
    Ok(iommu_ioas_map {
        size: std::mem::size_of::<iommu_ioas_map>() as u32,
        flags,
        ioas_id,
        __reserved: 0,
        user_va: hva,
        length: size,
        iova,
    })
}

/// `IOMMU_IOAS_UNMAP` request for `[iova, iova + size)`.
pub fn unmap_request(ioas_id: u32, iova: u64, size: u64) -> iommu_ioas_unmap {
    iommu_ioas_unmap {
        size: std::mem::size_of::<iommu_ioas_unmap>() as u32,
        ioas_id,
        iova,
        length: size,
    }
}

/// Inclusive kernel ranges as half-open ranges (`last = u64::MAX` ends at `u64::MAX`).
pub fn half_open(ranges: &[iommu_iova_range]) -> Vec<AddrRange> {
    ranges
        .iter()
        .filter(|r| r.start <= r.last)
        .map(|r| AddrRange::new(r.start, r.last.saturating_add(1)))
        .collect()
}

/// Whether the host IOMMU enforces cache coherency (snoops even no-snoop requests), from the
/// `IOMMU_GET_HW_INFO` answer of type `data_type` with driver data `data`:
/// - Intel VT-d (`iommu_hw_info_vtd`): ECAP.SC, bit 7 of `ecap_reg` (offset 16) — the
///   capability Linux's `intel_iommu_enforce_cache_coherency` needs (VT-d spec 11.4.3).
/// - ARM SMMUv3 (`iommu_hw_info_arm_smmuv3`): IDR0.COHACC, bit 4 of `idr[0]` (offset 8).
/// - Anything else (including AMD, whose hardware info carries no coherency bit): `false`,
///   the conservative answer.
pub fn coherency_from_hw_info(data_type: u32, data: &[u8]) -> bool {
    let word = |off: usize, len: usize| -> Option<u64> {
        let b = data.get(off..off + len)?;
        let mut v = [0u8; 8];
        v[..len].copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    };
    match data_type {
        t if t == iommu_hw_info_type_IOMMU_HW_INFO_TYPE_INTEL_VTD => {
            word(16, 8).is_some_and(|ecap| ecap & (1 << 7) != 0)
        }
        t if t == iommu_hw_info_type_IOMMU_HW_INFO_TYPE_ARM_SMMUV3 => {
            word(8, 4).is_some_and(|idr0| idr0 & (1 << 4) != 0)
        }
        _ => false,
    }
}

/// A real IOAS on `/dev/iommu`, destroyed when dropped.
pub struct KernelIoas {
    iommufd: Arc<IommuFd>,
    ioas: IommufdIoas,
}

impl fmt::Debug for KernelIoas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelIoas")
            .field("ioas_id", &self.ioas.id())
            .finish_non_exhaustive()
    }
}

impl KernelIoas {
    /// Allocates a new IOAS on `iommufd`.
    ///
    /// # Errors
    /// The kernel's answer to `IOMMU_IOAS_ALLOC`.
    pub fn new(iommufd: Arc<IommuFd>) -> Result<Self, HostError> {
        let ioas = IommufdIoas::new(iommufd.clone()).map_err(|e| host_error(&e))?;
        Ok(KernelIoas { iommufd, ioas })
    }

    /// The iommufd the IOAS belongs to.
    pub fn iommufd(&self) -> &Arc<IommuFd> {
        &self.iommufd
    }

    fn ranges_ioctl(&self, req: &mut iommu_ioas_iova_ranges) -> Result<(), HostError> {
        // SAFETY: `req` is a complete `iommu_ioas_iova_ranges` whose `size` is its own size.
        // `allowed_iovas` is either 0 with `num_iovas` 0, or points at a live, exclusively
        // borrowed buffer of `num_iovas` `iommu_iova_range` (see `iova_ranges`); the kernel
        // writes at most `num_iovas` entries there and the header fields, only during the
        // call. The fd is the IOAS's own iommufd.
        let ret = unsafe { ioctl_with_mut_ref(&*self.iommufd, nr::IOMMU_IOAS_IOVA_RANGES(), req) };
        if ret < 0 {
            Err(HostError::from_errno(
                vmm_sys_util::errno::Error::last().errno(),
            ))
        } else {
            Ok(())
        }
    }
}

impl IoasOps for KernelIoas {
    fn ioas_id(&self) -> u32 {
        self.ioas.id()
    }

    fn map(&mut self, req: &iommu_ioas_map) -> Result<(), HostError> {
        self.iommufd.map_iommu_ioas(req).map_err(|e| host_error(&e))
    }

    fn unmap(&mut self, req: &mut iommu_ioas_unmap) -> Result<(), HostError> {
        self.iommufd
            .unmap_iommu_ioas(req)
            .map_err(|e| host_error(&e))
    }

    /// Asks for the count first (`EMSGSIZE` with `num_iovas` set), then for the ranges; the
    /// list can grow between the calls when a device is attached, so this retries a few
    /// times.
    fn iova_ranges(&self) -> Result<IoasRanges, HostError> {
        let mut want = 0u32;
        for _ in 0..4 {
            let mut buf = vec![iommu_iova_range::default(); want as usize];
            let mut req = iommu_ioas_iova_ranges {
                size: std::mem::size_of::<iommu_ioas_iova_ranges>() as u32,
                ioas_id: self.ioas_id(),
                num_iovas: want,
                __reserved: 0,
                allowed_iovas: if want == 0 {
                    0
                } else {
                    buf.as_mut_ptr() as u64
                },
                out_iova_alignment: 0,
            };
            match self.ranges_ioctl(&mut req) {
                Ok(()) => {
                    buf.truncate(req.num_iovas.min(want) as usize);
                    return Ok(IoasRanges {
                        ranges: half_open(&buf),
                        alignment: req.out_iova_alignment,
                    });
                }
                Err(HostError::Errno(libc::EMSGSIZE)) if req.num_iovas <= MAX_IOVA_RANGES => {
                    want = req.num_iovas;
                }
                Err(e) => return Err(e),
            }
        }
        Err(HostError::Errno(libc::EMSGSIZE))
    }
}

/// Why [`IommufdBackend::open`] failed.
#[derive(Debug)]
pub enum IommufdOpenError {
    /// `/dev/iommu` does not exist (kernel without iommufd).
    NotPresent,
    /// Opening it or allocating the IOAS failed otherwise.
    Host(HostError),
}

impl fmt::Display for IommufdOpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IommufdOpenError::NotPresent => write!(f, "/dev/iommu does not exist"),
            IommufdOpenError::Host(e) => write!(f, "cannot open an iommufd IOAS: {e}"),
        }
    }
}

impl std::error::Error for IommufdOpenError {}

/// A host DMA backend on an iommufd IOAS.
///
/// Guest-physical addresses are translated to host virtual addresses through the guest
/// memory `M` (one map never spans two regions: [`HostError::BadAddress`], as with
/// [`VfioContainerBackend`](super::VfioContainerBackend)). Devices are attached to the IOAS
/// by the VMM ([`attach`](Self::attach) for a VFIO cdev device); dropping the backend
/// destroys the IOAS (with [`KernelIoas`]), which removes its mappings.
pub struct IommufdBackend<M: GuestMemoryBackend, K: IoasOps = KernelIoas> {
    ops: K,
    mem: Arc<M>,
    coherent: bool,
}

impl<M: GuestMemoryBackend, K: IoasOps> fmt::Debug for IommufdBackend<M, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IommufdBackend")
            .field("ioas_id", &self.ops.ioas_id())
            .field("coherent", &self.coherent)
            .finish_non_exhaustive()
    }
}

impl<M: GuestMemoryBackend> IommufdBackend<M, KernelIoas> {
    /// Opens `/dev/iommu` and allocates a new IOAS over guest memory `mem`.
    ///
    /// # Errors
    /// [`IommufdOpenError::NotPresent`] without `/dev/iommu`, else the kernel's answer.
    pub fn open(mem: Arc<M>) -> Result<Self, IommufdOpenError> {
        let fd = match IommuFd::new() {
            Ok(fd) => fd,
            Err(IommufdError::OpenIommufd(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IommufdOpenError::NotPresent);
            }
            Err(e) => return Err(IommufdOpenError::Host(host_error(&e))),
        };
        let ioas = KernelIoas::new(Arc::new(fd)).map_err(IommufdOpenError::Host)?;
        Ok(Self::new(ioas, mem))
    }

    /// Asks the IOMMU behind device `dev_id` (bound to this iommufd) for its hardware info
    /// and records whether it enforces cache coherency ([`coherency_from_hw_info`]), which
    /// [`HostDma::enforces_coherency`] then answers. Returns that answer.
    ///
    /// # Errors
    /// The kernel's answer to `IOMMU_GET_HW_INFO`; the recorded answer is then `false`.
    pub fn query_coherency(&mut self, dev_id: u32) -> Result<bool, HostError> {
        let mut data = [0u64; 16];
        let mut info = iommufd_bindings::iommufd::iommu_hw_info {
            size: std::mem::size_of::<iommufd_bindings::iommufd::iommu_hw_info>() as u32,
            dev_id,
            data_len: std::mem::size_of_val(&data) as u32,
            data_uptr: data.as_mut_ptr() as u64,
            ..Default::default()
        };
        self.coherent = false;
        self.ops
            .iommufd
            .get_hw_info(&mut info)
            .map_err(|e| host_error(&e))?;
        let bytes: Vec<u8> = data.iter().flat_map(|w| w.to_le_bytes()).collect();
        let len = (info.data_len as usize).min(bytes.len());
        // SAFETY: both members of the union are `u32` at the same offset (`in_data_type` on
        // input, `out_data_type` on output), it was initialized (zero) before the call, and
        // the kernel wrote `out_data_type`: reading it reads an initialized `u32`.
        let data_type = unsafe { info.__bindgen_anon_1.out_data_type };
        self.coherent = coherency_from_hw_info(data_type, &bytes[..len]);
        Ok(self.coherent)
    }

    /// Attaches a VFIO cdev device (bound to this iommufd) to the IOAS.
    ///
    /// # Errors
    /// The kernel's answer to `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    pub fn attach(&self, device: &dyn AttachHwpt) -> Result<(), HostError> {
        device
            .attach_hwpt(self.ops.ioas_id())
            .map_err(|e| HostError::from_errno(e.raw_os_error().unwrap_or(libc::EIO)))
    }
}

impl<M: GuestMemoryBackend, K: IoasOps> IommufdBackend<M, K> {
    /// A backend issuing its requests through `ops`, translating through `mem`; not
    /// coherent until told otherwise.
    pub fn new(ops: K, mem: Arc<M>) -> Self {
        IommufdBackend {
            ops,
            mem,
            coherent: false,
        }
    }

    /// This backend, answering `coherent` to [`HostDma::enforces_coherency`] (for a VMM
    /// that learned it some other way).
    pub fn with_coherency(mut self, coherent: bool) -> Self {
        self.coherent = coherent;
        self
    }

    /// The IOAS id (what devices are attached to).
    pub fn ioas_id(&self) -> u32 {
        self.ops.ioas_id()
    }

    /// The request layer.
    pub fn ops(&self) -> &K {
        &self.ops
    }
}

impl<M: GuestMemoryBackend, K: IoasOps> HostDma for IommufdBackend<M, K> {
    /// `IOMMU_IOAS_MAP` with `IOMMU_IOAS_MAP_FIXED_IOVA` and exactly the READ/WRITE of
    /// `perm`. Fails without calling the kernel: [`HostError::Invalid`] without READ or WRITE
    /// or for size 0; [`HostError::BadAddress`] when the guest-physical range is not inside
    /// one guest memory region.
    fn map(&mut self, iova: u64, gpa: u64, size: u64, perm: Perm) -> Result<(), HostError> {
        if !perm.intersects(Perm::RW) {
            return Err(HostError::Invalid);
        }
        let hva = gpa_to_hva(&*self.mem, gpa, size)?;
        let req = map_request(self.ops.ioas_id(), iova, hva, size, perm)?;
        self.ops.map(&req)
    }

    /// `IOMMU_IOAS_UNMAP`; returns the bytes the kernel unmapped.
    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64, HostError> {
        let mut req = unmap_request(self.ops.ioas_id(), iova, size);
        self.ops.unmap(&mut req)?;
        Ok(req.length)
    }

    /// `IOMMU_IOAS_UNMAP` of `iova = 0, length = u64::MAX`, which unmaps every area; an
    /// empty IOAS unmaps 0 bytes (the kernel's `iopt_unmap_all` turns `ENOENT` into success).
    fn unmap_all(&mut self) -> Result<u64, HostError> {
        match self.unmap(0, u64::MAX) {
            Err(HostError::NotFound) => Ok(0),
            r => r,
        }
    }

    /// iommufd has no entry limit.
    fn remaining_entries(&self) -> Option<u32> {
        None
    }

    /// `IOMMU_IOAS_IOVA_RANGES` (allowed ranges minus reserved ones, e.g. the MSI window);
    /// empty when the query fails (nothing known to be valid).
    fn iova_ranges(&self) -> Vec<AddrRange> {
        self.ops.iova_ranges().map(|r| r.ranges).unwrap_or_default()
    }

    /// Every power of two at least the IOAS's `out_iova_alignment` (4 KiB when unknown).
    fn page_sizes(&self) -> u64 {
        let align = self
            .ops
            .iova_ranges()
            .map(|r| r.alignment)
            .ok()
            .filter(|a| a.is_power_of_two())
            .unwrap_or(4096);
        !(align - 1)
    }

    fn enforces_coherency(&self) -> bool {
        self.coherent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::errno::Error as SysError;

    #[test]
    fn map_request_encodes_fixed_iova_and_exact_permissions() {
        let r = map_request(7, 0x1000, 0x7f00_0000_2000, 0x3000, Perm::READ).unwrap();
        assert_eq!(r.size as usize, std::mem::size_of::<iommu_ioas_map>());
        assert_eq!(
            (r.ioas_id, r.iova, r.user_va, r.length),
            (7, 0x1000, 0x7f00_0000_2000, 0x3000)
        );
        assert_eq!(r.flags, 1 | 4);
        let rw = map_request(7, 0, 0, 0x1000, Perm::RW | Perm::EXEC).unwrap();
        assert_eq!(rw.flags, 1 | 2 | 4);
        let w = map_request(7, 0, 0, 0x1000, Perm::WRITE).unwrap();
        assert_eq!(w.flags, 1 | 2);
        assert_eq!(
            map_request(7, 0, 0, 0x1000, Perm::EXEC),
            Err(HostError::Invalid)
        );
        let u = unmap_request(3, 0x5000, 0x2000);
        assert_eq!(
            (u.size, u.ioas_id, u.iova, u.length),
            (24, 3, 0x5000, 0x2000)
        );
    }

    #[test]
    fn errors_keep_the_kernel_errno() {
        let e = IommufdError::IommuIoasUnmap(SysError::new(libc::ENOENT));
        assert_eq!(host_error(&e), HostError::NotFound);
        let e = IommufdError::IommuIoasMap(SysError::new(libc::EEXIST));
        assert_eq!(host_error(&e), HostError::Overlap);
        let e = IommufdError::IommuIoasMap(SysError::new(libc::EFAULT));
        assert_eq!(host_error(&e), HostError::BadAddress);
        let e = IommufdError::IommuIoasMap(SysError::new(libc::ENOMEM));
        assert_eq!(host_error(&e), HostError::OutOfResources);
        let e = IommufdError::OpenIommufd(std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(host_error(&e), HostError::Errno(libc::EACCES));
        assert_eq!(
            host_error(&IommufdError::HwQueueUnsupported),
            HostError::Invalid
        );
    }

    #[test]
    fn inclusive_ranges_become_half_open() {
        let r = [
            iommu_iova_range {
                start: 0,
                last: 0xfedf_ffff,
            },
            iommu_iova_range {
                start: 0xfef0_0000,
                last: u64::MAX,
            },
            iommu_iova_range { start: 5, last: 4 },
        ];
        assert_eq!(
            half_open(&r),
            vec![
                AddrRange::new(0, 0xfee0_0000),
                AddrRange::new(0xfef0_0000, u64::MAX)
            ]
        );
    }

    #[test]
    fn coherency_is_decoded_per_iommu_and_conservative_otherwise() {
        let mut vtd = [0u8; 24];
        assert!(!coherency_from_hw_info(1, &vtd));
        vtd[16] = 0x80; // ECAP.SC
        assert!(coherency_from_hw_info(1, &vtd));
        assert!(!coherency_from_hw_info(1, &vtd[..20]), "truncated data");
        let mut smmu = [0u8; 40];
        assert!(!coherency_from_hw_info(2, &smmu));
        smmu[8] = 0x10; // IDR0.COHACC
        assert!(coherency_from_hw_info(2, &smmu));
        assert!(
            !coherency_from_hw_info(4, &[0xff; 64]),
            "AMD: no bit, not coherent"
        );
        assert!(!coherency_from_hw_info(0, &[]));
    }

    #[test]
    fn open_without_dev_iommu_is_not_present() {
        if std::path::Path::new("/dev/iommu").exists() {
            return;
        }
        let mem = Arc::new(crate::testing::guest_memory(&[(0, 0x10000)]));
        assert!(matches!(
            IommufdBackend::open(mem),
            Err(IommufdOpenError::NotPresent)
        ));
    }
}
