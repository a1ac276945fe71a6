//! Queued invalidation state (VT-d spec 6.5.2; `anchors-x86.md` §1.7): latched on QIE
//! enable from IQA (base, size 2^QS pages, descriptor width).

/// The invalidation queue as latched when QIE was set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Queue {
    /// GSTS.QIES.
    pub(crate) enabled: bool,
    /// Guest-physical base.
    pub(crate) base: u64,
    /// Number of descriptors.
    pub(crate) entries: u32,
    /// 256-bit descriptors (IQA.DW, scalable mode only).
    pub(crate) wide: bool,
    /// Index of the next descriptor to fetch (IQH).
    pub(crate) head: u32,
}

impl Queue {
    /// log2 of the descriptor size: IQH/IQT hold index << shift.
    pub(crate) fn shift(&self) -> u32 {
        if self.wide { 5 } else { 4 }
    }

    /// The queue described by an IQA value.
    pub(crate) fn from_iqa(iqa: u64, wide: bool, haw: u32) -> Queue {
        let qs = (iqa & crate::regs::IQA_QS_MASK) as u32;
        let bytes = 4096u32 << qs;
        Queue {
            enabled: true,
            base: iqa & crate::regs::IQA_ADDR_MASK & ((1u64 << haw) - 1),
            entries: bytes >> if wide { 5 } else { 4 },
            wide,
            head: 0,
        }
    }

    /// Guest-physical address of descriptor `index`.
    pub(crate) fn slot(&self, index: u32) -> u64 {
        self.base.wrapping_add(u64::from(index) << self.shift())
    }
}
