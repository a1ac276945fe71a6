//! The VT-d register file as data: offsets, field bits, and the one static table of
//! [`RegSpec`]s (VT-d spec chapter 11; `anchors-x86.md` §1.2).
//!
//! Fault recording registers are not in the table: their number is configurable, so
//! [`crate::fault`] serves them itself.

use viommu_shared::regs::RegSpec;

/// Version register (32-bit, RO).
pub const VER: u64 = 0x00;
/// Capability register (64-bit, RO).
pub const CAP: u64 = 0x08;
/// Extended capability register (64-bit, RO).
pub const ECAP: u64 = 0x10;
/// Global command register (32-bit, write-only).
pub const GCMD: u64 = 0x18;
/// Global status register (32-bit, RO).
pub const GSTS: u64 = 0x1c;
/// Root table address register (64-bit).
pub const RTADDR: u64 = 0x20;
/// Context command register (64-bit).
pub const CCMD: u64 = 0x28;
/// Fault status register (32-bit).
pub const FSTS: u64 = 0x34;
/// Fault event control register (32-bit).
pub const FECTL: u64 = 0x38;
/// Fault event data register (32-bit).
pub const FEDATA: u64 = 0x3c;
/// Fault event address register (32-bit).
pub const FEADDR: u64 = 0x40;
/// Fault event upper address register (32-bit).
pub const FEUADDR: u64 = 0x44;
/// Invalidation queue head register (64-bit, RO).
pub const IQH: u64 = 0x80;
/// Invalidation queue tail register (64-bit).
pub const IQT: u64 = 0x88;
/// Invalidation queue address register (64-bit).
pub const IQA: u64 = 0x90;
/// Invalidation completion status register (32-bit).
pub const ICS: u64 = 0x9c;
/// Invalidation event control register (32-bit).
pub const IECTL: u64 = 0xa0;
/// Invalidation event data register (32-bit).
pub const IEDATA: u64 = 0xa4;
/// Invalidation event address register (32-bit).
pub const IEADDR: u64 = 0xa8;
/// Invalidation event upper address register (32-bit).
pub const IEUADDR: u64 = 0xac;
/// Interrupt remapping table address register (64-bit).
pub const IRTA: u64 = 0xb8;
/// Invalidate address register (64-bit, write-only), at ECAP.IRO × 16.
pub const IVA: u64 = 0xf0;
/// IOTLB invalidate register (64-bit), at ECAP.IRO × 16 + 8.
pub const IOTLB: u64 = 0xf8;
/// First fault recording register (CAP.FRO × 16).
pub const FRCD_BASE: u64 = 0x220;

/// GCMD/GSTS: translation enable / status.
pub const GCMD_TE: u64 = 1 << 31;
/// GCMD/GSTS: set root table pointer / status.
pub const GCMD_SRTP: u64 = 1 << 30;
/// GCMD/GSTS: set fault log / status (advanced fault logging, not supported).
pub const GCMD_SFL: u64 = 1 << 29;
/// GCMD/GSTS: enable advanced fault logging (not supported).
pub const GCMD_EAFL: u64 = 1 << 28;
/// GCMD/GSTS: write buffer flush.
pub const GCMD_WBF: u64 = 1 << 27;
/// GCMD/GSTS: queued invalidation enable / status.
pub const GCMD_QIE: u64 = 1 << 26;
/// GCMD/GSTS: interrupt remapping enable / status.
pub const GCMD_IRE: u64 = 1 << 25;
/// GCMD/GSTS: set interrupt remapping table pointer / status.
pub const GCMD_SIRTP: u64 = 1 << 24;
/// GCMD/GSTS: compatibility format interrupt / status.
pub const GCMD_CFI: u64 = 1 << 23;

/// RTADDR: translation table mode (00 legacy, 01 scalable, 10/11 reserved here).
pub const RTADDR_TTM_MASK: u64 = 0b11 << 10;
/// RTADDR: TTM value of scalable mode.
pub const RTADDR_TTM_SCALABLE: u64 = 0b01 << 10;

/// CCMD: invalidate context-cache (set by software, cleared by hardware on completion).
pub const CCMD_ICC: u64 = 1 << 63;
/// CCMD: requested granularity shift (bits 62:61).
pub const CCMD_CIRG_SHIFT: u32 = 61;
/// CCMD: actual granularity shift (bits 60:59).
pub const CCMD_CAIG_SHIFT: u32 = 59;
/// CCMD: actual granularity mask.
pub const CCMD_CAIG_MASK: u64 = 0b11 << CCMD_CAIG_SHIFT;

/// IOTLB: invalidate IOTLB (set by software, cleared by hardware on completion).
pub const IOTLB_IVT: u64 = 1 << 63;
/// IOTLB: requested granularity shift (bits 61:60).
pub const IOTLB_IIRG_SHIFT: u32 = 60;
/// IOTLB: actual granularity shift (bits 58:57).
pub const IOTLB_IAIG_SHIFT: u32 = 57;
/// IOTLB: actual granularity mask.
pub const IOTLB_IAIG_MASK: u64 = 0b11 << IOTLB_IAIG_SHIFT;

/// FSTS: primary fault overflow (RW1C).
pub const FSTS_PFO: u64 = 1 << 0;
/// FSTS: primary pending fault (RO, derived from the F bits of the fault records).
pub const FSTS_PPF: u64 = 1 << 1;
/// FSTS: advanced fault overflow (never set).
pub const FSTS_AFO: u64 = 1 << 2;
/// FSTS: advanced pending fault (never set).
pub const FSTS_APF: u64 = 1 << 3;
/// FSTS: invalidation queue error (RW1C).
pub const FSTS_IQE: u64 = 1 << 4;
/// FSTS: invalidation completion error (never set: no ATS).
pub const FSTS_ICE: u64 = 1 << 5;
/// FSTS: invalidation time-out error (never set: no ATS).
pub const FSTS_ITE: u64 = 1 << 6;
/// FSTS: fault record index shift (bits 15:8).
pub const FSTS_FRI_SHIFT: u32 = 8;
/// FSTS: fault record index mask.
pub const FSTS_FRI_MASK: u64 = 0xff << FSTS_FRI_SHIFT;
/// FSTS: every status bit that is an interrupt condition of the fault event.
pub const FSTS_EVENT_BITS: u64 =
    FSTS_PFO | FSTS_PPF | FSTS_AFO | FSTS_APF | FSTS_IQE | FSTS_ICE | FSTS_ITE;

/// FECTL/IECTL: interrupt mask.
pub const CTL_IM: u64 = 1 << 31;
/// FECTL/IECTL: interrupt pending.
pub const CTL_IP: u64 = 1 << 30;

/// ICS: invalidation wait descriptor complete (RW1C).
pub const ICS_IWC: u64 = 1;

/// IQA: 256-bit descriptor width (only with scalable-mode support).
pub const IQA_DW: u64 = 1 << 11;
/// IQA: queue size field (2^QS 4 KiB pages).
pub const IQA_QS_MASK: u64 = 0b111;
/// IQA: base address bits.
pub const IQA_ADDR_MASK: u64 = !0xfff;

/// The register table. CAP and ECAP reset to 0 here; the model writes the values computed
/// from its [`Config`](crate::Config) after every reset.
pub static REGS: &[RegSpec] = &[
    // VT-d 1.0 register layout; every later revision keeps it compatible (QEMU reports the
    // same).
    RegSpec::ro32("VER", VER, 0x10),
    RegSpec::ro64("CAP", CAP, 0),
    RegSpec::ro64("ECAP", ECAP, 0),
    RegSpec::wo32("GCMD", GCMD, 0xff80_0000),
    RegSpec::ro32("GSTS", GSTS, 0),
    // Address 63:12 and TTM 11:10; the handler clears TTM when scalable mode is not
    // supported (RsvdZ then).
    RegSpec::rw64("RTADDR", RTADDR, 0, 0xffff_ffff_ffff_fc00),
    // ICC, CIRG and DID read back; SID and FM are write-only; CAIG is set by the model.
    RegSpec::rw64("CCMD", CCMD, 0, 0xe000_0000_0000_ffff).with_wo(0x0000_0003_ffff_0000),
    // PFO, AFO, APF, IQE, ICE, ITE are RW1C; PPF and FRI are read-only (model-maintained).
    RegSpec::w1c32("FSTS", FSTS, 0, 0x7d),
    RegSpec::rw32("FECTL", FECTL, CTL_IM, CTL_IM),
    RegSpec::rw32("FEDATA", FEDATA, 0, 0xffff_ffff),
    RegSpec::rw32("FEADDR", FEADDR, 0, 0xffff_fffc),
    // Writable regardless of EIM (QEMU keeps it read-only 0, anchors §5 item 9): the upper
    // address only matters to x2APIC destinations and storing it is harmless.
    RegSpec::rw32("FEUADDR", FEUADDR, 0, 0xffff_ffff),
    RegSpec::ro64("IQH", IQH, 0),
    RegSpec::rw64("IQT", IQT, 0, 0x7fff0),
    // Address 63:12, DW 11, QS 2:0; the handler clears DW without scalable-mode support.
    RegSpec::rw64("IQA", IQA, 0, 0xffff_ffff_ffff_f807),
    RegSpec::w1c32("ICS", ICS, 0, ICS_IWC),
    RegSpec::rw32("IECTL", IECTL, CTL_IM, CTL_IM),
    RegSpec::rw32("IEDATA", IEDATA, 0, 0xffff_ffff),
    RegSpec::rw32("IEADDR", IEADDR, 0, 0xffff_fffc),
    RegSpec::rw32("IEUADDR", IEUADDR, 0, 0xffff_ffff),
    // Address 63:12, EIME 11, S 3:0; latched on SIRTP.
    RegSpec::rw64("IRTA", IRTA, 0, 0xffff_ffff_ffff_f80f),
    // ADDR 63:12, IH 6, AM 5:0; write-only (VT-d spec 11.4.8.2).
    RegSpec::wo64("IVA", IVA, 0xffff_ffff_ffff_f07f),
    // IVT 63, IIRG 61:60, DR 49, DW 48, DID 47:32; IAIG 58:57 is set by the model.
    RegSpec::rw64("IOTLB", IOTLB, 0, 0xb003_ffff_0000_0000),
];

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::regs::validate_specs;

    #[test]
    fn table_is_valid_and_below_fault_records() {
        assert!(validate_specs(REGS).is_ok());
        assert!(REGS.iter().all(|r| r.last_byte() < FRCD_BASE));
    }
}
