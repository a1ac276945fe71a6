//! The MMIO register file as data: offsets, bit fields and the register table.
//!
//! Layout and semantics follow the AMD IOMMU specification (48882) §3.4; the offsets are the
//! ones Linux uses (`amd_iommu_types.h`, anchors-x86 §2.2). Unlike QEMU, which leaves every
//! register but two fully writable, each register here has explicit RW / RW1C / read-only
//! masks, and 64-bit base registers need no "latch": the model reads them when it uses them,
//! so two 32-bit halves written in either order take effect together.

use viommu_shared::regs::RegSpec;

/// Register offsets in the MMIO window.
pub mod offset {
    /// Device Table Base Address (base 51:12, Size 8:0).
    pub const DEV_TAB_BASE: u64 = 0x0000;
    /// Command Buffer Base Address (base 51:12, ComLen 59:56).
    pub const CMD_BUF_BASE: u64 = 0x0008;
    /// Event Log Base Address (base 51:12, EventLen 59:56).
    pub const EVT_LOG_BASE: u64 = 0x0010;
    /// IOMMU Control.
    pub const CONTROL: u64 = 0x0018;
    /// Exclusion Base (ExEn 0, Allow 1, base 51:12).
    pub const EXCL_BASE: u64 = 0x0020;
    /// Exclusion Range Limit (limit 51:12).
    pub const EXCL_LIMIT: u64 = 0x0028;
    /// Extended Feature Register (read-only).
    pub const EXT_FEATURES: u64 = 0x0030;
    /// PPR Log Base Address (base 51:12, PPRLen 59:56).
    pub const PPR_LOG_BASE: u64 = 0x0038;
    /// Command Buffer Head Pointer (18:4).
    pub const CMD_HEAD: u64 = 0x2000;
    /// Command Buffer Tail Pointer (18:4).
    pub const CMD_TAIL: u64 = 0x2008;
    /// Event Log Head Pointer (18:4).
    pub const EVT_HEAD: u64 = 0x2010;
    /// Event Log Tail Pointer (18:4).
    pub const EVT_TAIL: u64 = 0x2018;
    /// IOMMU Status.
    pub const STATUS: u64 = 0x2020;
    /// PPR Log Head Pointer (18:4).
    pub const PPR_HEAD: u64 = 0x2030;
    /// PPR Log Tail Pointer (18:4).
    pub const PPR_TAIL: u64 = 0x2038;
    /// XT IOMMU General Interrupt Control (IntCapXT, spec §3.4.13): the x2APIC-format message
    /// of the IOMMU's own interrupts (event log, completion wait) while Control.IntCapXTEn.
    pub const XT_GEN_INTR: u64 = 0x0170;
    /// XT IOMMU PPR Interrupt Control (stored).
    pub const XT_PPR_INTR: u64 = 0x0178;
    /// XT IOMMU GA Log Interrupt Control (stored).
    pub const XT_GALOG_INTR: u64 = 0x0180;
}

/// IOMMU Control register bits (spec §3.4.3).
pub mod control {
    /// IommuEn: translation and command/event processing enabled.
    pub const IOMMU_EN: u64 = 1 << 0;
    /// HtTunEn (stored only).
    pub const HT_TUN_EN: u64 = 1 << 1;
    /// EventLogEn.
    pub const EVENT_LOG_EN: u64 = 1 << 2;
    /// EventIntEn: interrupt on event log writes and overflow.
    pub const EVENT_INT_EN: u64 = 1 << 3;
    /// ComWaitIntEn: interrupt when a COMPLETION_WAIT with I=1 completes.
    pub const COM_WAIT_INT_EN: u64 = 1 << 4;
    /// CmdBufEn.
    pub const CMD_BUF_EN: u64 = 1 << 12;
    /// PPRLogEn (stored; drives PprLogRun when PPR is advertised).
    pub const PPR_LOG_EN: u64 = 1 << 13;
    /// PprIntEn (stored).
    pub const PPR_INT_EN: u64 = 1 << 14;
    /// PPREn (stored).
    pub const PPR_EN: u64 = 1 << 15;
    /// GAEn: 128-bit (guest virtual APIC format) interrupt remapping table entries; only with
    /// EFR.GASup.
    pub const GA_EN: u64 = 1 << 17;
    /// XTEn: 32-bit x2APIC destinations in interrupt remapping; only with EFR.XTSup.
    pub const XT_EN: u64 = 1 << 50;
    /// IntCapXTEn: the IOMMU's own interrupts use the XT interrupt control registers (0x170)
    /// instead of the PCI MSI capability; only with EFR.XTSup.
    pub const INT_CAP_XT_EN: u64 = 1 << 51;
    /// Bits software may write when every feature is advertised: IommuEn through PPREn
    /// (InvTimeOut, PassPW, ResPassPW, Coherent and Isoc are stored), GAEn, XTEn and
    /// IntCapXTEn. The bits of features the configuration does not advertise are cleared by
    /// the Control write handler, so they read as zero. Other bits (GTEn, GAMEn, GALogEn,
    /// ...) always read as zero.
    pub const WRITABLE: u64 = 0xffff | GA_EN | XT_EN | INT_CAP_XT_EN;
    /// Control bits whose change alters how interrupts are remapped (a VMM's resolved routes
    /// must be re-resolved).
    pub const IR_BITS: u64 = IOMMU_EN | GA_EN | XT_EN;
}

/// IOMMU Status register bits (spec §3.4.11).
pub mod status {
    /// EventOverflow (RW1C).
    pub const EVENT_OVERFLOW: u64 = 1 << 0;
    /// EventLogInt (RW1C).
    pub const EVENT_LOG_INT: u64 = 1 << 1;
    /// ComWaitInt (RW1C).
    pub const COM_WAIT_INT: u64 = 1 << 2;
    /// EventLogRun (read-only).
    pub const EVENT_LOG_RUN: u64 = 1 << 3;
    /// CmdBufRun (read-only).
    pub const CMD_BUF_RUN: u64 = 1 << 4;
    /// PprOverflow (RW1C).
    pub const PPR_OVERFLOW: u64 = 1 << 5;
    /// PprInt (RW1C).
    pub const PPR_INT: u64 = 1 << 6;
    /// PprLogRun (read-only).
    pub const PPR_LOG_RUN: u64 = 1 << 7;
    /// All write-1-to-clear bits.
    pub const W1C: u64 = EVENT_OVERFLOW | EVENT_LOG_INT | COM_WAIT_INT | PPR_OVERFLOW | PPR_INT;
}

/// Extended Feature Register bits (spec §3.4.5; names as in Linux `amd_iommu_types.h`).
pub mod efr {
    /// PreFSup: PREFETCH_IOMMU_PAGES supported.
    pub const PREF_SUP: u64 = 1 << 0;
    /// PPRSup: peripheral page requests supported.
    pub const PPR_SUP: u64 = 1 << 1;
    /// XTSup: x2APIC interrupt remapping (Control.XTEn, IntCapXTEn) supported.
    pub const XT_SUP: u64 = 1 << 2;
    /// IASup: INVALIDATE_IOMMU_ALL supported.
    pub const IA_SUP: u64 = 1 << 6;
    /// GASup: 128-bit interrupt remapping table entries (Control.GAEn) supported. With
    /// GAMSup (bits 23:21) zero, guest virtual APIC (posted) mode is not: Linux then uses the
    /// 128-bit entries in remapped mode only (`AMD_IOMMU_GUEST_IR_LEGACY_GA`).
    pub const GA_SUP: u64 = 1 << 7;
    /// HATS field position (host address translation size: 0 = 4 levels, 1 = 5, 2 = 6).
    pub const HATS_SHIFT: u32 = 10;
}

/// Base-address bits 51:12 of the base registers.
pub const BASE_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Length field (59:56) of the command buffer, event log and PPR log base registers.
pub const LEN_SHIFT: u32 = 56;
/// Head/tail pointer bits 18:4 (entries are 16 bytes; at most 32 Ki entries).
pub const PTR_MASK: u64 = 0x7_fff0;
/// Device table Size field (8:0): (Size + 1) × 4 KiB.
pub const DEV_TAB_SIZE_MASK: u64 = 0x1ff;

const LEN_MASK: u64 = 0xf << LEN_SHIFT;

/// Writable bits of the XT interrupt control registers: DestMode (2), Destination 23:0
/// (31:8), Vector (39:32), Destination 31:24 (63:56).
pub const XT_INTR_MASK: u64 = 0xff00_00ff_ffff_ff04;

/// The register table. EFR's reset value is configuration-dependent and set by the model
/// after creating the file.
pub static REGISTERS: &[RegSpec] = &[
    RegSpec::rw64(
        "DEV_TAB_BASE",
        offset::DEV_TAB_BASE,
        0,
        BASE_MASK | DEV_TAB_SIZE_MASK,
    ),
    RegSpec::rw64(
        "CMD_BUF_BASE",
        offset::CMD_BUF_BASE,
        0,
        BASE_MASK | LEN_MASK,
    ),
    RegSpec::rw64(
        "EVT_LOG_BASE",
        offset::EVT_LOG_BASE,
        0,
        BASE_MASK | LEN_MASK,
    ),
    RegSpec::rw64("CONTROL", offset::CONTROL, 0, control::WRITABLE),
    RegSpec::rw64("EXCL_BASE", offset::EXCL_BASE, 0, BASE_MASK | 0x3),
    RegSpec::rw64("EXCL_LIMIT", offset::EXCL_LIMIT, 0, BASE_MASK),
    RegSpec::ro64("EXT_FEATURES", offset::EXT_FEATURES, 0),
    RegSpec::rw64(
        "PPR_LOG_BASE",
        offset::PPR_LOG_BASE,
        0,
        BASE_MASK | LEN_MASK,
    ),
    RegSpec::rw64("XT_GEN_INTR", offset::XT_GEN_INTR, 0, XT_INTR_MASK),
    RegSpec::rw64("XT_PPR_INTR", offset::XT_PPR_INTR, 0, XT_INTR_MASK),
    RegSpec::rw64("XT_GALOG_INTR", offset::XT_GALOG_INTR, 0, XT_INTR_MASK),
    RegSpec::rw64("CMD_HEAD", offset::CMD_HEAD, 0, PTR_MASK),
    RegSpec::rw64("CMD_TAIL", offset::CMD_TAIL, 0, PTR_MASK),
    RegSpec::rw64("EVT_HEAD", offset::EVT_HEAD, 0, PTR_MASK),
    RegSpec::rw64("EVT_TAIL", offset::EVT_TAIL, 0, PTR_MASK),
    RegSpec::w1c64("STATUS", offset::STATUS, 0, status::W1C),
    RegSpec::rw64("PPR_HEAD", offset::PPR_HEAD, 0, PTR_MASK),
    RegSpec::rw64("PPR_TAIL", offset::PPR_TAIL, 0, PTR_MASK),
];

/// A ring (command buffer or event log) as its base register describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Guest-physical base.
    pub base: u64,
    /// Size in bytes (16 × 2^len).
    pub bytes: u64,
}

impl Ring {
    /// Decodes a base register. Lengths 0–7 are reserved (the minimum is 256 entries); they
    /// are treated as 256 entries rather than disabling the ring.
    pub fn from_base_register(value: u64) -> Ring {
        let len = ((value >> LEN_SHIFT) & 0xf).max(8);
        Ring {
            base: value & BASE_MASK,
            bytes: 16 << len,
        }
    }

    /// Byte offset inside the ring of a head/tail register value (wrapped to the ring size,
    /// so a pointer written beyond the end cannot reach outside the ring).
    pub fn offset(&self, pointer: u64) -> u64 {
        (pointer & PTR_MASK) % self.bytes
    }

    /// The offset after the entry at `offset`.
    pub fn next(&self, offset: u64) -> u64 {
        (offset + 16) % self.bytes
    }

    /// Number of 16-byte entries.
    pub fn entries(&self) -> u64 {
        self.bytes / 16
    }
}

/// Device table geometry from its base register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceTable {
    /// Guest-physical base.
    pub base: u64,
    /// Number of 32-byte entries: (Size + 1) × 4 KiB / 32.
    pub entries: u32,
}

impl DeviceTable {
    /// Decodes the Device Table Base Address register.
    pub fn from_register(value: u64) -> DeviceTable {
        DeviceTable {
            base: value & BASE_MASK,
            entries: (((value & DEV_TAB_SIZE_MASK) + 1) * 4096 / 32) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::regs::validate_specs;

    #[test]
    fn table_is_valid() {
        assert!(validate_specs(REGISTERS).is_ok());
    }

    #[test]
    fn rings_and_tables_decode() {
        let r = Ring::from_base_register(0x1234_5000 | (9 << LEN_SHIFT));
        assert_eq!(
            r,
            Ring {
                base: 0x1234_5000,
                bytes: 8192
            }
        );
        assert_eq!(r.entries(), 512);
        assert_eq!(r.offset(0x1ff0), 0x1ff0);
        assert_eq!(r.offset(0x2000), 0);
        assert_eq!(r.next(0x1ff0), 0);
        // Reserved lengths are raised to the minimum.
        assert_eq!(Ring::from_base_register(0x1000).bytes, 4096);
        let r = Ring::from_base_register(0xf << LEN_SHIFT);
        assert_eq!(r.entries(), 32768);
        assert_eq!(r.offset(PTR_MASK), PTR_MASK);
        let t = DeviceTable::from_register(0xabc_d000 | 0x1ff);
        assert_eq!(t.base, 0xabc_d000);
        assert_eq!(t.entries, 65536);
        assert_eq!(DeviceTable::from_register(0).entries, 128);
    }
}
