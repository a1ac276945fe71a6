//! Interrupt remapping seen from the VMM: one API for every model that remaps interrupts
//! (VT-d IRTEs, AMD-Vi legacy and GA IRTEs).
//!
//! - [`interrupt`]: the decoded interrupt a remapped (or compatibility-format) MSI delivers,
//!   and its re-encoding as a compatibility MSI for the VMM's interrupt controller.
//! - [`remapper`]: the [`InterruptRemapper`] trait each model implements, its typed
//!   [`IrFault`], and the [`IrInvalidation`] notifications a guest's interrupt-cache
//!   invalidations produce.
//! - [`routes`]: [`RouteTable`], the VMM-side cache of resolved MSI routes (for KVM irqfd
//!   routing) that re-resolves exactly the routes an invalidation affects.
//! - [`sink`]: [`RemappingMsiSink`], an emulated device's interrupt output that sends every
//!   MSI through the remapper as an interrupt request.

pub mod interrupt;
pub mod remapper;
pub mod routes;
pub mod sink;

pub use interrupt::{DeliveryMode, DestinationMode, Interrupt, TriggerMode};
pub use remapper::{
    InterruptRemapper, IrFault, IrFaultKind, IrInvalidation, IrListener, RemapMode, Resolution,
};
pub use routes::{RouteId, RouteTable, RouteUpdate};
pub use sink::RemappingMsiSink;
