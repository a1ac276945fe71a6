//! The few VFIO group/container ioctls vfio-ioctls 0.10 does not expose: its `VfioContainer`
//! attaches groups only through `VfioDevice::new` and then always sets `VFIO_TYPE1v2_IOMMU`,
//! so a type1 **v1** container is built here by hand (reference: include/uapi/linux/vfio.h).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use vfio_bindings::bindings::vfio::{
    VFIO_BASE, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_DMA_UNMAP_FLAG_ALL,
    VFIO_GROUP_FLAGS_VIABLE, VFIO_TYPE, vfio_group_status, vfio_iommu_type1_dma_map,
    vfio_iommu_type1_dma_unmap,
};
use vfio_ioctls::VfioContainer;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

vmm_sys_util::ioctl_io_nr!(VFIO_SET_IOMMU, VFIO_TYPE as u32, VFIO_BASE + 2);
vmm_sys_util::ioctl_io_nr!(VFIO_GROUP_GET_STATUS, VFIO_TYPE as u32, VFIO_BASE + 3);
vmm_sys_util::ioctl_io_nr!(VFIO_GROUP_SET_CONTAINER, VFIO_TYPE as u32, VFIO_BASE + 4);
vmm_sys_util::ioctl_io_nr!(VFIO_IOMMU_MAP_DMA, VFIO_TYPE as u32, VFIO_BASE + 13);
vmm_sys_util::ioctl_io_nr!(VFIO_IOMMU_UNMAP_DMA, VFIO_TYPE as u32, VFIO_BASE + 14);

/// Raw `VFIO_IOMMU_MAP_DMA` (READ|WRITE) of host memory `[hva, hva + size)` at `iova`, for
/// probing kernel behaviour the backend deliberately never asks for. Returns the errno.
///
/// # Safety
/// `[hva, hva + size)` must be memory of this process that stays mapped while the container
/// lives and is accessed only through volatile/atomic accessors (device DMA may write it).
pub unsafe fn raw_map(
    container: &VfioContainer,
    hva: u64,
    iova: u64,
    size: u64,
) -> Result<(), i32> {
    let req = vfio_iommu_type1_dma_map {
        argsz: size_of::<vfio_iommu_type1_dma_map>() as u32,
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: hva,
        iova,
        size,
    };
    // SAFETY: `req` is a complete `vfio_iommu_type1_dma_map` read by the kernel during the
    // call only; the memory it names meets the caller's guarantee above.
    let ret = unsafe { ioctl_with_ref(container, VFIO_IOMMU_MAP_DMA(), &req) };
    if ret < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

/// Raw `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)`; returns the size the kernel wrote
/// back, or the errno.
pub fn raw_unmap(container: &VfioContainer, iova: u64, size: u64) -> Result<u64, i32> {
    unmap_ioctl(container, iova, size, 0)
}

/// Raw `VFIO_IOMMU_UNMAP_DMA` with `VFIO_DMA_UNMAP_FLAG_ALL`.
pub fn raw_unmap_all(container: &VfioContainer) -> Result<u64, i32> {
    unmap_ioctl(container, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL)
}

fn unmap_ioctl(container: &VfioContainer, iova: u64, size: u64, flags: u32) -> Result<u64, i32> {
    let mut req = vfio_iommu_type1_dma_unmap {
        argsz: size_of::<vfio_iommu_type1_dma_unmap>() as u32,
        flags,
        iova,
        size,
        ..Default::default()
    };
    // SAFETY: `req` is a complete `vfio_iommu_type1_dma_unmap` without a dirty bitmap, so the
    // kernel reads and writes only its fixed fields during the call; unmapping cannot affect
    // this process's memory.
    let ret = unsafe { ioctl_with_mut_ref(container, VFIO_IOMMU_UNMAP_DMA(), &mut req) };
    if ret < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(req.size)
    }
}

/// An open `/dev/vfio/<group>` attached to a container (closing it detaches the group).
pub struct Group {
    file: File,
}

impl Group {
    /// Opens group `id` and checks that it is viable.
    pub fn open(id: u32) -> Result<Group, String> {
        let path = format!("/dev/vfio/{id}");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("open {path}: {e}"))?;
        let mut status = vfio_group_status {
            argsz: size_of::<vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: `file` is a VFIO group fd; `status` is a complete `vfio_group_status` with
        // its `argsz`, which the kernel fills during the call only.
        let ret = unsafe { ioctl_with_mut_ref(&file, VFIO_GROUP_GET_STATUS(), &mut status) };
        if ret < 0 {
            return Err(format!(
                "VFIO_GROUP_GET_STATUS: {}",
                io::Error::last_os_error()
            ));
        }
        if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(format!(
                "group {id} is not viable (flags {:#x})",
                status.flags
            ));
        }
        Ok(Group { file })
    }

    /// `VFIO_GROUP_SET_CONTAINER` then `VFIO_SET_IOMMU(iommu_type)` on `container`.
    pub fn attach(&self, container: &VfioContainer, iommu_type: u32) -> Result<(), String> {
        let fd = container.as_raw_fd();
        // SAFETY: `self.file` is a VFIO group fd and the argument is a pointer to an int
        // holding the container fd, which the kernel reads during the call only; the
        // container outlives the call.
        let ret = unsafe { ioctl_with_ref(&self.file, VFIO_GROUP_SET_CONTAINER(), &fd) };
        if ret < 0 {
            return Err(format!(
                "VFIO_GROUP_SET_CONTAINER: {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: `container` is a VFIO container fd; VFIO_SET_IOMMU takes the IOMMU type by
        // value and touches no memory of this process.
        let ret = unsafe { ioctl_with_val(container, VFIO_SET_IOMMU(), iommu_type.into()) };
        if ret < 0 {
            return Err(format!(
                "VFIO_SET_IOMMU({iommu_type}): {}",
                io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

/// The IOMMU group number of PCI device `bdf`.
pub fn group_of(bdf: &str) -> Result<u32, String> {
    let link = Path::new("/sys/bus/pci/devices")
        .join(bdf)
        .join("iommu_group");
    let target = std::fs::read_link(&link).map_err(|e| format!("{}: {e}", link.display()))?;
    target
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{} -> {} is not a group", link.display(), target.display()))
}

/// `vfio_iommu_type1`'s `dma_entry_limit` module parameter as the loaded module has it.
pub fn dma_entry_limit() -> Result<u32, String> {
    let p = "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit";
    let s = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
    s.trim().parse().map_err(|e| format!("{p}: {s:?}: {e}"))
}

/// The value of `key=` on the kernel command line.
pub fn cmdline_param(key: &str) -> Option<String> {
    let line = std::fs::read_to_string("/proc/cmdline").ok()?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}
