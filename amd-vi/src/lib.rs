//! An emulated AMD-Vi IOMMU (AMD I/O Virtualization Technology, spec 48882) for Rust VMMs.
//!
//! What it models:
//!
//! - the 16 KiB MMIO register file ([`regs`]) with RW / RW1C / read-only masks, and the PCI
//!   capability block and IVRS values a VMM publishes ([`platform`]);
//! - device table entries ([`dte`]): V, TV, Mode 0–6, IR/IW, DomainID, SA, reserved bits;
//! - v1 host page tables ([`pagetable`]) on the shared walker: 1–6 levels, level skipping,
//!   default-size leaves at every level, NextLevel-7 pages of any power-of-two size,
//!   permissions ANDed across the DTE and every level;
//! - the command buffer ([`command`]), processed synchronously on the register write;
//! - the event log ([`event`]) with overflow and interrupts;
//! - emulated-device DMA through [`AmdVi::device_iommu`] (`vm_memory::iommu`), faults logged
//!   as IO_PAGE_FAULT and friends;
//! - passthrough devices via [`AmdVi::attach_host`]: each device's address space is shadowed
//!   into a host DMA backend with the shared shadow engine, following the guest's
//!   invalidations (the capability header advertises NpCache so the guest invalidates on
//!   map as well as unmap);
//! - IVRS requester-id aliases ([`AmdVi::set_alias`]);
//! - memory events from the VMM (balloon, virtio-mem, confidential-VM conversions) through
//!   [`MemoryEvents`](viommu_shared::memory::MemoryEvents): host mappings into discarded or
//!   private memory are removed and come back on populate / convert-to-shared, and
//!   `dma_mappings` tells a balloon which pages are DMA-mapped (see [`viommu_shared::memory`]);
//! - migration: [`AmdVi::save`] / [`AmdVi::restore`] (or the versioned stream,
//!   [`AmdVi::save_bytes`] / [`AmdVi::restore_bytes`]; see [`snapshot`]);
//! - interrupt remapping (module `irq_remap`, spec §2.2.5): DTE IV, IntTabLen (enforced),
//!   IG, IntCtl, the INIT/ExtINT/NMI pass bits; 32-bit IRTEs and 128-bit ones with
//!   Control.GAEn ([`irte`]); 32-bit x2APIC destinations with XTEn and the IOMMU's own
//!   interrupts through IntCapXT; guest-mode (posted) entries rejected with IO_PAGE_FAULT;
//!   events for interrupt requests (I = 1) and INVALID_DEVICE_REQUEST; the VMM-facing
//!   [`InterruptRemapper`](viommu_shared::irq::InterruptRemapper) with invalidation
//!   notifications (INVALIDATE_INTERRUPT_TABLE and INVALIDATE_DEVTAB_ENTRY per requester,
//!   everything on INVALIDATE_IOMMU_ALL and relevant Control changes), and
//!   [`AmdVi::deliver_msi`] for emulated devices' MSIs; IOAPIC/HPET requester ids from
//!   [`Config::special_devices`] (IVRS special device entries);
//! - [`fuzz_support`]: bodies and oracles of the `amd_vi` and `walker_amd` fuzz targets (also
//!   replayed by `cargo test`).
//!
//! Cache coherency: AMD-Vi has no snoop-control capability for the guest to trust (nothing
//! like VT-d's ECAP.SC); a page table entry's FC (force coherent, bit 60) asks the IOMMU to
//! make a no-snoop request coherent, and the model accepts it without effect on emulated DMA
//! (emulated DMA is coherent). For passthrough devices the question is whether the host
//! enforces coherency ([`HostDma::enforces_coherency`](viommu_shared::host::HostDma::enforces_coherency)):
//! Linux's AMD IOMMU driver sets FC in every host page table entry it writes, so a type1
//! container on AMD answers `VFIO_DMA_CC_IOMMU`; a VMM that finds a non-coherent host should
//! keep the guest from relying on no-snoop DMA (e.g. by not assigning such a device).
//!
//! Not modelled: guest virtual APIC (GAMSup = 0: no posted interrupts, no GA log), guest (v2)
//! page tables and PASIDs, PPR log entries, ATS, the exclusion range (its registers are
//! stored; a VMM that never describes one in the IVRS never sees a guest program it),
//! performance counters, dirty tracking.
//!
//! # Where this model follows the specification rather than QEMU
//!
//! (QEMU behaviour from `shared/reference/anchors-x86.md` §2 and §5.)
//!
//! - Default-size large leaves (NextLevel 0 above level 0) are 2 MiB / 1 GiB / ... pages
//!   translated with their offset; QEMU sizes them one level too small and drops the offset.
//! - Permissions are the AND of the DTE's and every level's IR/IW; QEMU returns the leaf's.
//! - Level skipping (NextLevel below current − 1) is followed, with the skipped IOVA bits
//!   required to be zero; QEMU treats every pointer as current − 1.
//! - A Mode 0 entry without IR/IW blocks DMA for passthrough devices too (Linux's detached
//!   device); QEMU identity-maps it. Mode 7 is an illegal entry on every path; QEMU can hit
//!   an assertion on its shadow paths.
//! - Illegal commands (unknown or unsupported opcode, reserved bits) stop processing with
//!   CmdBufRun cleared and the head on the command; QEMU logs some and executes them.
//! - IO_PAGE_FAULT carries the full DeviceID, the DomainID and the spec's PR/RW/PE/RZ flags;
//!   QEMU reports the devfn only and the access kind in the wrong bits.
//! - COMPLETION_WAIT's interrupt honours ComWaitIntEn; QEMU ignores it.
//! - INVALIDATE_IOMMU_PAGES ranges follow the spec's size encoding exactly (QEMU widens
//!   anything above bit 51 to everything).
//! - Host out-of-resources during shadowing is reclaimed, retried, counted and returned as a
//!   typed error; QEMU logs it and drops the mapping.
//! - 64-bit base registers take effect when used, so two 32-bit halves in either order (or
//!   single bytes) work; QEMU latches on particular writes.
//! - Interrupt remapping enforces IntTabLen, the IRTE's reserved bits and the DTE's reserved
//!   interrupt bits, logs IO_PAGE_FAULT / ILLEGAL_DEV_TABLE_ENTRY / INVALID_DEVICE_REQUEST
//!   for failed interrupt requests (never for route resolutions), and honours IG and
//!   SupIOPF; QEMU checks none of these and logs nothing (anchors-x86 §2.7).
//!   INVALIDATE_INTERRUPT_TABLE invalidates one requester's routes, QEMU everything.
//! - DMA to the interrupt range 0xFEE0_0000–0xFEEF_FFFF is never translated (a read is an
//!   INVALID_DEVICE_REQUEST), and no translated page handed to a device cache covers it.
//!
//! # Example: a guest enabling the IOMMU and waiting for a command
//!
//! ```
//! use std::sync::Arc;
//! use viommu_amd_vi::{AmdVi, Command, Config, regs::{control, offset, LEN_SHIFT}};
//! use viommu_shared::regs::RecordingMsiSink;
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//!
//! let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
//! let iommu = AmdVi::new(Config::default(), mem.clone(), Arc::new(RecordingMsiSink::new()));
//!
//! // Device table (all 64 Ki entries zero: DMA passes untranslated), a 512-entry command
//! // buffer, then enable.
//! iommu.mmio_write(offset::DEV_TAB_BASE, 8, 0x10_0000 | 0x1ff).unwrap();
//! iommu.mmio_write(offset::CMD_BUF_BASE, 8, 0x20_0000 | (9 << LEN_SHIFT)).unwrap();
//! iommu.mmio_write(offset::CONTROL, 8, control::CMD_BUF_EN | control::IOMMU_EN).unwrap();
//!
//! // COMPLETION_WAIT storing 0x42 at 0x30_0000.
//! let cmd = Command::CompletionWait {
//!     store: true, interrupt: false, fence: false, address: 0x30_0000, data: 0x42,
//! };
//! let [lo, hi] = cmd.encode();
//! mem.write_obj(lo, GuestAddress(0x20_0000)).unwrap();
//! mem.write_obj(hi, GuestAddress(0x20_0008)).unwrap();
//! iommu.mmio_write(offset::CMD_TAIL, 4, 0x10).unwrap();
//!
//! // Done when the tail write returns.
//! assert_eq!(mem.read_obj::<u64>(GuestAddress(0x30_0000)).unwrap(), 0x42);
//! assert_eq!(iommu.mmio_read(offset::CMD_HEAD, 4), 0x10);
//! ```

//!
//! # Example: a VMM's interrupt routes behind the IOMMU
//!
//! ```
//! use std::sync::Arc;
//! use viommu_amd_vi::{AmdVi, Command, Config, Dte, DteIrq, Irte, regs::{control, offset, LEN_SHIFT}};
//! use viommu_shared::irq::{InterruptRemapper, RemapMode, RouteTable};
//! use viommu_shared::regs::{Msi, RecordingMsiSink};
//! use viommu_shared::Perm;
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//!
//! let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
//! let sink = Arc::new(RecordingMsiSink::new());
//! let iommu = AmdVi::new(Config::default(), mem.clone(), sink.clone());
//! // The guest gives device 00:03.0 a 256-entry table whose entry 0 sends vector 0x41 to
//! // APIC 2, and enables the IOMMU.
//! let dte = Dte::untranslated(1, Perm::RW).with_irq(DteIrq::remapped(0x50_0000, 8));
//! dte.write(&mem, 0x10_0000 + 0x18 * 32).unwrap();
//! let irte = Irte::remapped(0x41, 2, false, 0).encode_legacy();
//! mem.write_obj(irte, GuestAddress(0x50_0000)).unwrap();
//! iommu.mmio_write(offset::DEV_TAB_BASE, 8, 0x10_0000 | 0x1ff).unwrap();
//! iommu.mmio_write(offset::CMD_BUF_BASE, 8, 0x20_0000 | (8 << LEN_SHIFT)).unwrap();
//! iommu.mmio_write(offset::CONTROL, 8, control::IOMMU_EN | control::CMD_BUF_EN).unwrap();
//!
//! // The VMM resolves the device's MSI for a KVM route (nothing is recorded) ...
//! let routes = RouteTable::new(Arc::new(iommu.clone()), None);
//! let msi = Msi { address: 0xfee0_0000, data: 0 };
//! assert_eq!(routes.set(7, 0x18, msi).unwrap().interrupt.vector, 0x41);
//! // ... or delivers an emulated device's MSI through the model, into the sink.
//! iommu.deliver_msi(0x18, msi).unwrap();
//! assert_eq!(sink.take(), [Msi { address: 0xfee0_2000, data: 0x41 }]);
//!
//! // The guest retargets the entry and invalidates the table: route 7 is re-resolved.
//! let irte = Irte::remapped(0x42, 3, false, 0).encode_legacy();
//! mem.write_obj(irte, GuestAddress(0x50_0000)).unwrap();
//! let [lo, hi] = Command::InvalidateInterruptTable { device_id: 0x18 }.encode();
//! mem.write_obj(lo, GuestAddress(0x20_0000)).unwrap();
//! mem.write_obj(hi, GuestAddress(0x20_0008)).unwrap();
//! iommu.mmio_write(offset::CMD_TAIL, 4, 0x10).unwrap();
//! let updates = routes.take_updates();
//! assert_eq!(updates.len(), 1);
//! assert_eq!(updates[0].result.unwrap().interrupt.destination, 3);
//! assert!(iommu.remap(0x18, msi, RemapMode::Route).is_ok());
//! ```

#![deny(missing_docs)]

pub mod command;
mod command_processing;
pub mod config;
mod dma;
pub mod dte;
mod error;
pub mod event;
mod event_log;
pub mod fuzz_support;
mod irq_remap;
pub mod irte;
mod model;
pub mod pagetable;
pub mod platform;
mod register_bank;
pub mod regs;
mod shadow;
mod shared_state;
pub mod snapshot;
mod stats;
mod view;

pub use command::{Command, IllegalCommand, invalidation_range};
pub use config::{Config, DEFAULT_MMIO_BASE, MMIO_SIZE};
pub use dma::PASSTHROUGH_TAG;
pub use dte::{DeviceMode, Dte, DteIrq, IntCtl};
pub use error::AmdViError;
pub use event::{Event, EventCode, EventFlags, EventOutcome, EventRecord, InvalidRequest};
pub use irte::Irte;
pub use model::AmdVi;
pub use pagetable::AmdV1Format;
pub use platform::{IvrsInfo, PciCapability, SpecialDevice, SpecialKind};
pub use snapshot::{AMD_VI_SNAPSHOT_VERSION, AmdViSnapshot};
pub use stats::Stats;

/// The model type under the name every viommu model exports.
pub type Model = AmdVi;
/// The error type under the name every viommu model exports.
pub type ModelError = AmdViError;
