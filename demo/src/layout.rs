//! The guest-physical memory layout every run uses.
//!
//! ```text
//! 0x0000_0000 ..  1 MiB   (unused)
//!   1 MiB  ..  16 MiB     driver structures (VT-d root/context tables and queue; AMD-Vi
//!                         device table, command buffer, event log; zPCI CLP scratch)
//!  16 MiB  ..  64 MiB     I/O page tables
//!  64 MiB  .. 256 MiB     data buffers handed to the device
//! ```

use viommu_shared::AddrRange;
use viommu_shared::testing::guest_memory;
use vm_memory::GuestMemoryMmap;

/// Guest RAM size (also the s390 guest's DMA aperture: Linux sizes it to its memory).
pub const RAM: u64 = 256 << 20;
/// Driver structures.
pub const STRUCTS: AddrRange = AddrRange::new(0x10_0000, 0x100_0000);
/// I/O page tables.
pub const TABLES: AddrRange = AddrRange::new(0x100_0000, 0x400_0000);
/// Where data buffers come from.
pub const DATA: AddrRange = AddrRange::new(0x400_0000, RAM);

/// Fresh guest RAM (anonymous memory; only the pages the guest touches are allocated).
pub fn new_guest_memory() -> GuestMemoryMmap {
    guest_memory(&[(0, RAM as usize)])
}
