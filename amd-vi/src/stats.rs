//! Counters for introspection and tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the model's counters (see [`AmdVi::stats`](crate::AmdVi::stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// Commands executed.
    pub commands: u64,
    /// Commands rejected as illegal (ILLEGAL_COMMAND_ERROR).
    pub illegal_commands: u64,
    /// Command fetches or completion stores that failed (COMMAND_HARDWARE_ERROR).
    pub command_hardware_errors: u64,
    /// Events written to the guest's log.
    pub events_logged: u64,
    /// Events raised but not written (log full, not running, unwritable, suppressed).
    pub events_dropped: u64,
    /// Emulated DMA requests that faulted.
    pub dma_faults: u64,
    /// Shadow syncs of passthrough devices.
    pub shadow_syncs: u64,
    /// Host map calls made by the shadow engines.
    pub host_maps: u64,
    /// Host unmap calls made by the shadow engines.
    pub host_unmaps: u64,
    /// Full reclaims done because the host ran out of mappings.
    pub host_reclaims: u64,
    /// Syncs that still ran out of host mappings after reclaiming.
    pub host_out_of_resources: u64,
    /// Host unmap refusals.
    pub host_unmap_errors: u64,
    /// Guest runs the host refused for other reasons (e.g. not backed by RAM).
    pub host_refused: u64,
    /// Guest runs in IOVA ranges the host cannot map (MSI window, reserved ranges).
    pub host_unmappable: u64,
    /// Interrupt requests ([`RemapMode::Request`](viommu_shared::irq::RemapMode)) delivered.
    pub interrupts_delivered: u64,
    /// Interrupt requests blocked (aborted, or faulted with or without an event).
    pub interrupt_faults: u64,
    /// Invalidation notifications sent to interrupt-route listeners.
    pub irq_invalidations: u64,
}

macro_rules! counters {
    ($($f:ident),* $(,)?) => {
        /// Live counters behind [`Stats`].
        #[derive(Debug, Default)]
        pub(crate) struct Counters { $(pub $f: AtomicU64,)* }

        impl Counters {
            /// A snapshot.
            pub fn snapshot(&self) -> Stats {
                Stats { $($f: self.$f.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters!(
    commands,
    illegal_commands,
    command_hardware_errors,
    events_logged,
    events_dropped,
    dma_faults,
    shadow_syncs,
    host_maps,
    host_unmaps,
    host_reclaims,
    host_out_of_resources,
    host_unmap_errors,
    host_refused,
    host_unmappable,
    interrupts_delivered,
    interrupt_faults,
    irq_invalidations,
);

/// Adds `n` to a counter.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
