//! Emulated s390 zPCI for VMMs: the intercepted zPCI instructions, the function table and
//! state machine, DMA translation through the guest's I/O translation tables, and shadowing
//! of those tables into a host DMA backend (VFIO/iommufd) for passthrough functions.
//!
//! Reference: `shared/reference/anchors-s390-vfio.md` Part A (cited as A.x) and its errata.
//!
//! # Using it
//!
//! - Build a [`Zpci`] with [`Zpci::new`]`(config, guest_memory, msi)` and plug functions
//!   with [`Zpci::add_function`] (a [`FunctionConfig`] and a [`PciFunctionBackend`] giving
//!   config-space and BAR access). Every VMM-facing call is keyed by the stable [`Fid`].
//! - The VMM's intercept handler decodes CLP, PCILG, PCISTG, PCISTB, RPCIT, MPCIFC and
//!   STPCIFC and calls [`Zpci::clp`], [`Zpci::pcilg`], [`Zpci::pcistg`], [`Zpci::pcistb`],
//!   [`Zpci::rpcit`], [`Zpci::mpcifc`], [`Zpci::stpcifc`] with the general registers; it
//!   applies the returned [`Completion`] (condition code, register writes) or presents the
//!   returned [`ProgramCheck`]. Storage operands go through an [`OperandMemory`] (the VMM's
//!   logical-address access; `GuestMemoryMmap` for absolute addresses).
//! - Passthrough: [`Zpci::attach_host`] gives a function a
//!   [`HostDma`](viommu_shared::host::HostDma) backend; the guest's I/O address space is
//!   then shadowed into it with the shared [`ShadowEngine`](viommu_shared::shadow::ShadowEngine)
//!   (coalesced host mappings). [`Zpci::detach_host`] removes every host mapping.
//! - Memory events from the VMM (balloon, virtio-mem, conversions) go through
//!   [`MemoryEvents`](viommu_shared::memory::MemoryEvents): each function's host shadow drops
//!   the mappings into discarded or private memory (relaxed translation maps all RAM, so this
//!   is where it matters most) and restores them on populate / convert-to-shared; see
//!   [`viommu_shared::memory`] for the recommended balloon integration. Cache coherency is not
//!   a zPCI question: s390 PCI DMA is always coherent with the CPUs' caches (the architecture
//!   has no no-snoop attribute and no snoop-control capability to advertise), so nothing is
//!   asked of the host here.
//! - Emulated devices DMA through [`Zpci::device_iommu`] (`vm_memory::iommu::Iommu`); the
//!   model implements [`DmaTranslate`](viommu_shared::dma::DmaTranslate).
//! - [`fuzz_support`]: bodies and oracles of the `zpci` and `walker_s390` fuzz targets (also
//!   replayed by `cargo test`).
//! - Migration: [`Zpci::save`] / [`Zpci::restore`] (or the versioned stream,
//!   [`Zpci::save_bytes`] / [`Zpci::restore_bytes`]; see [`snapshot`]).
//! - Error events ([`ErrorEvent`]) are queued for the VMM ([`Zpci::take_events`]) with a
//!   doorbell MSI each; the measurement timer calls [`Zpci::update_measurements`].
//!
//! # Where the model differs from QEMU, and why
//!
//! - **Host budget.** The host's own answer decides: CC 1 status 16 only when a host map
//!   the guest view requires failed for lack of entries; the budget shown to the VMM is
//!   read from the backend ([`FunctionInfo::host_remaining`]), never a local counter
//!   (A.7.3: QEMU signals exhaustion one entry early, drifts on remaps, and leaks on
//!   teardown — errata 1, 2).
//! - **Unmaps first.** Within one RPCIT every stale host mapping in the range is unmapped
//!   before any map is tried (A.7.4, A.17 item 5); remaps and read-write → read-only
//!   changes are applied even at zero budget (errata 2).
//! - **Everything leaving the guest view leaves the host**: invalid page, segment and
//!   region entries, deregistration, disable, reset, deconfigure and the error state (A.7.3
//!   observation 3, errata 1 and 8). DMA is blocked in the error and blocked states
//!   (A.3.5), so the host shadow is emptied there and rebuilt from the tables on reset.
//! - **Global RPCIT is a reclaim**: afterwards the host holds exactly what the tables map.
//! - **Registration maps what the tables already map**, so a domain re-attached with live
//!   mappings works without an RPCIT (QEMU starts from an empty cache).
//! - **RPCIT range** (errata 3): the range must reach into `[pba, pal]`; the part outside
//!   is ignored rather than shadowed, and ranges are processed on whole entries (A.7.3
//!   observation 4).
//! - **Table walk** (errata 4, 5): the anchor's non-origin bits are all masked; a valid entry
//!   with frame 0 is valid.
//! - **DMA faults**: a DMA through an invalid entry raises PEC 0x7 (QEMU: 0x4).
//! - **CLP**: enabling a standby function is refused (errata 8); QUERY PCI FUNCTION stores
//!   BARs as Linux reads them (little-endian, A.4.4); the DTSM byte makes Linux pick only
//!   table types the group offers (errata 7).
//! - **Refresh bit**: advertised for groups with a shadowed function (A.17 item 2), not for
//!   purely emulated ones, which save one RPCIT per map.
//! - **Aperture**: shrunk to the host budget when relaxed translation is not offered
//!   ([`AperturePolicy::ShrinkToHostBudget`], A.13), or left whole
//!   ([`AperturePolicy::Full`]) with exhaustion signalled by RPCIT.

#![deny(missing_docs)]

pub mod backend;
pub mod codes;
pub mod config;
pub mod error;
pub mod events;
pub mod fib;
pub mod format;
pub mod function;
pub mod fuzz_support;
pub mod handle;
mod host;
pub mod insn;
pub mod iota;
pub mod measure;
pub mod model;
pub mod operand;
pub mod regs;
pub mod snapshot;
pub mod testing;
pub mod view;

pub use backend::{NoDevice, PciAccessError, PciFunctionBackend, PciSpace};
pub use codes::{Cc, Pec, ProgramCheck, status};
pub use config::{
    AperturePolicy, Config, ExhaustionPolicy, FunctionConfig, GroupConfig, RefreshPolicy,
};
pub use error::ModelError;
pub use events::{EVENT_DOORBELL_ADDRESS, ErrorEvent};
pub use fib::Fib;
pub use format::{Designation, DmaTableFormat, TableError};
pub use function::{FunctionInfo, FunctionStats, InterruptRegistration, IoatInfo};
pub use handle::{Fh, Fid, FunctionState};
pub use iota::Iota;
pub use measure::FmbCounters;
pub use model::{ModelStats, Zpci};
pub use operand::OperandMemory;
pub use regs::{Completion, GeneralRegs, InsnResult, RegWrite};
pub use snapshot::{ZPCI_SNAPSHOT_VERSION, ZpciSnapshot};
