//! [`VtdSnapshot`]: the guest-visible state of a unit, for migration (scenario VTD-37).
//!
//! Caches and shadows are not part of it: after [`Vtd::restore`](crate::Vtd::restore) the
//! emulated-device IOTLB is empty and every passthrough device is re-synced from the guest's
//! tables, as after a global invalidation. Aliases and attached hosts belong to the VMM's
//! topology and are not included.

use crate::tables::RootPointer;

/// The invalidation queue as latched by QIE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QueueSnapshot {
    /// GSTS.QIES.
    pub enabled: bool,
    /// Guest-physical base.
    pub base: u64,
    /// Number of descriptors (a power of two, 128..=32768).
    pub entries: u32,
    /// 256-bit descriptors.
    pub wide: bool,
    /// Next descriptor index.
    pub head: u32,
}

/// Everything a guest can observe or has programmed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VtdSnapshot {
    /// Stored value of every register, by offset (write-only registers included).
    pub registers: Vec<(u64, u64)>,
    /// Fault recording registers (low, high quadwords), in index order.
    pub fault_records: Vec<(u64, u64)>,
    /// Hardware's next fault record index.
    pub next_fault_record: usize,
    /// Root table pointer latched by SRTP.
    pub root: RootPointer,
    /// Translation enabled.
    pub translating: bool,
    /// The invalidation queue.
    pub queue: QueueSnapshot,
    /// Interrupt remapping table address latched by SIRTP.
    pub irta: Option<u64>,
}
