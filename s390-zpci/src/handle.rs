//! Function handles and function identifiers (A.3.1).

use std::fmt;

/// A function identifier: the stable name of a zPCI function, chosen by the VMM (LIST PCI
/// reports it). Every VMM-facing call is keyed by it, because the handle changes when the
/// guest enables or disables the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fid(pub u32);

impl fmt::Display for Fid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fid {:#x}", self.0)
    }
}

/// A 32-bit function handle as the guest uses it in instructions (A.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fh(pub u32);

impl Fh {
    /// Enable bit: set while the function is enabled.
    pub const ENABLE: u32 = 0x8000_0000;
    /// Instance field.
    pub const INSTANCE_MASK: u32 = 0x7f00_0000;
    /// Implementation-defined field (QEMU uses it for "emulated" and "vfio").
    pub const SHM_MASK: u32 = 0x00ff_0000;
    /// Index field: the model's slot number for the function.
    pub const INDEX_MASK: u32 = 0x0000_ffff;

    /// The disabled handle of the function in slot `index`.
    pub fn disabled(index: u16) -> Fh {
        Fh(u32::from(index))
    }

    /// True when the enable bit is set.
    pub fn is_enabled(self) -> bool {
        self.0 & Self::ENABLE != 0
    }

    /// The index field.
    pub fn index(self) -> u16 {
        (self.0 & Self::INDEX_MASK) as u16
    }

    /// This handle with the enable bit set or cleared.
    pub fn with_enable(self, on: bool) -> Fh {
        if on {
            Fh(self.0 | Self::ENABLE)
        } else {
            Fh(self.0 & !Self::ENABLE)
        }
    }
}

impl fmt::Display for Fh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fh {:#010x}", self.0)
    }
}

/// Architected function state (A.3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FunctionState {
    /// Not configured to the guest (listed by LIST PCI with config state 0); every
    /// instruction answers CC 3.
    Standby,
    /// Configured, not enabled: only CLP works.
    Disabled,
    /// Enabled: loads, stores, DMA and RPCIT work.
    Enabled,
    /// Error: DMA blocked, loads and stores blocked (status 12). Entered on a translation or
    /// DMA error; left with MPCIFC reset-error (to enabled) or reset-blocked (to blocked).
    Error,
    /// Error with loads and stores unblocked (after MPCIFC reset-blocked): DMA still
    /// blocked, so the driver can inspect the device during recovery.
    Blocked,
    /// Permanent error: only deconfiguring leaves it.
    PermanentError,
}

impl FunctionState {
    /// True when the function's DMA is allowed (only in the enabled state).
    pub fn dma_allowed(self) -> bool {
        self == FunctionState::Enabled
    }

    /// True in the states reachable only after enabling (enabled, error, blocked).
    pub fn is_enabled_family(self) -> bool {
        matches!(
            self,
            FunctionState::Enabled | FunctionState::Error | FunctionState::Blocked
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_fields() {
        let fh = Fh::disabled(7);
        assert!(!fh.is_enabled());
        let e = fh.with_enable(true);
        assert_eq!(e.0, 0x8000_0007);
        assert!(e.is_enabled());
        assert_eq!(e.index(), 7);
        assert_eq!(e.with_enable(false), fh);
        assert!(FunctionState::Enabled.dma_allowed());
        assert!(!FunctionState::Blocked.dma_allowed());
        assert!(FunctionState::Blocked.is_enabled_family());
        assert!(!FunctionState::Disabled.is_enabled_family());
    }
}
