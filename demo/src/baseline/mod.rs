//! QEMU's shadowing strategies, as the baseline viommu is measured against.
//!
//! - [`PerLeafShadow`]: VT-d and AMD-Vi (`anchors-x86.md` §1.10, §2.8). Each invalidation
//!   walks the invalidated range; every guest leaf becomes one host map call, every leaf that
//!   disappeared one host unmap, kept in an `iova_tree`-like record. A refused map is only
//!   logged (`error_report`): the mapping is lost, the guest is not told.
//! - [`QemuRpcit`]: s390 zPCI (`anchors-s390-vfio.md` A.7.3, A.7.4, A.15). RPCIT walks its
//!   range entry by entry and updates a cache of 4 KiB pages, one host map per page; unmaps
//!   of invalid page-table entries are coalesced into power-of-two host unmaps; a local
//!   DMA-available counter answers CC 1 status 16 when it reaches zero; a global RPCIT looks up
//!   every 4 KiB page of the aperture.

mod per_leaf;
mod s390;

pub use per_leaf::{PerLeafShadow, PerLeafStats};
pub use s390::{QemuRpcit, RpcitAnswer, RpcitStats, dma_aligned_pow2_mask};
