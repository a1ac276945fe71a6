//! Guest memory of the test process: the `GuestMemoryMmap` whose host virtual addresses the
//! kernel pins when `VfioContainerBackend` maps guest-physical ranges.

use std::sync::Arc;
use viommu_shared::AddrRange;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Region 0: data pages and (at its end) page tables.
pub const DATA: AddrRange = AddrRange::new(0, 32 << 20);
/// Region 1: two 2 MiB frames for large-page leaves (`Edit::MapBig` uses 1 GiB + n × 2 MiB).
pub const BIG: AddrRange = AddrRange::new(1 << 30, (1 << 30) + (4 << 20));
/// Where guest page tables are built (inside region 0).
pub const TABLES: AddrRange = AddrRange::new(24 << 20, 32 << 20);
/// The guest page the plain sequences map.
pub const GPA_A: u64 = 0x10_0000;
/// A guest-physical address no region backs.
pub const UNBACKED_GPA: u64 = 0x1000_0000;

/// The guest memory (anonymous, private mappings).
///
/// # Errors
/// When the process cannot allocate it.
pub fn memory() -> Result<Arc<GuestMemoryMmap>, String> {
    let regions = [DATA, BIG].map(|r| (GuestAddress(r.start), r.len() as usize));
    GuestMemoryMmap::from_ranges(&regions)
        .map(Arc::new)
        .map_err(|e| format!("cannot allocate guest memory: {e}"))
}

/// The guest-physical ranges that are backed (SimHost's `backed`).
pub fn backed() -> Vec<AddrRange> {
    vec![DATA, BIG]
}
