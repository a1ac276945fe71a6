//! Interrupt remapping formats: the IRTA register, remappable-format interrupt requests and
//! 128-bit interrupt remapping table entries (VT-d spec 5.1.2, 9.9, 9.10, 11.4.8.3).
//!
//! Pure decoders, so every reserved-bit rule and every source-validation form can be tested
//! without a unit; [`crate::Vtd`]'s remapping (`unit/remap.rs`) strings them together and
//! turns their errors into fault reasons 0x20–0x26.

use viommu_shared::irq::{DeliveryMode, DestinationMode, Interrupt, TriggerMode};
use viommu_shared::regs::Msi;

/// IRTA.EIME: x2APIC (extended interrupt) mode.
pub const IRTA_EIME: u64 = 1 << 11;
/// IRTA.S: table size field (bits 3:0), 2^(S+1) entries.
pub const IRTA_S_MASK: u64 = 0xf;
/// Bytes per IRTE.
pub const IRTE_SIZE: u64 = 16;

/// The interrupt remapping table as latched by SIRTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IrTable {
    /// Guest-physical base (4 KiB aligned).
    pub base: u64,
    /// Number of entries, 2^(S + 1) (2 ..= 65536).
    pub entries: u32,
    /// EIME: 32-bit x2APIC destinations (else 8-bit xAPIC ones).
    pub x2apic: bool,
}

impl IrTable {
    /// Decodes an IRTA value (EIME as latched; the register already reads EIME as 0 on a
    /// unit without ECAP.EIM).
    pub fn from_irta(irta: u64) -> IrTable {
        IrTable {
            base: irta & !0xfff,
            entries: 2u32 << (irta & IRTA_S_MASK),
            x2apic: irta & IRTA_EIME != 0,
        }
    }

    /// Guest-physical address of entry `index`, if it lies in the table.
    pub fn entry_addr(&self, index: u32) -> Option<u64> {
        if index >= self.entries {
            return None;
        }
        self.base.checked_add(u64::from(index) * IRTE_SIZE)
    }
}

/// An interrupt request as the remapping hardware classifies it (spec 5.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestFormat {
    /// Address bit 4 clear: the legacy format, which carries the interrupt's attributes.
    Compatibility,
    /// Address bit 4 set: the format that names an IRTE.
    Remappable {
        /// interrupt_index = handle (+ subhandle when SHV is set).
        index: u32,
    },
}

/// Why an interrupt request cannot be decoded (fault reason 0x20).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestReserved;

/// Classifies a DWORD write to the interrupt address range (spec 5.1.2.2, figure
/// "Remappable interrupt request format"): address 31:20 = 0xFEE, 19:5 handle[14:0], 4 format,
/// 3 SHV, 2 handle[15], 1:0 ignored; data 15:0 subhandle, 31:16 reserved. Address bits 63:32
/// must be zero (the request is a write below 4 GiB); like QEMU, a request outside the window
/// or with reserved bits set is reason 0x20.
pub fn classify(msi: Msi) -> Result<RequestFormat, RequestReserved> {
    if msi.address >> 32 != 0 || msi.address & 0xfff0_0000 != 0xfee0_0000 {
        return Err(RequestReserved);
    }
    if msi.address & (1 << 4) == 0 {
        return Ok(RequestFormat::Compatibility);
    }
    if msi.data & 0xffff_0000 != 0 {
        return Err(RequestReserved);
    }
    let handle = ((msi.address >> 5) & 0x7fff) as u32 | (((msi.address >> 2) & 1) as u32) << 15;
    let index = if msi.address & (1 << 3) != 0 {
        // SHV: the subhandle is added (spec 5.1.2.2); the sum may pass 16 bits and is then
        // beyond every table (reason 0x21).
        handle + (msi.data & 0xffff)
    } else {
        handle
    };
    Ok(RequestFormat::Remappable { index })
}

/// Source validation of an IRTE (SVT, SQ, SID; spec 9.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceValidation {
    /// SVT = 00b: no validation.
    None,
    /// SVT = 01b: the requester id must equal SID in the bits SQ does not mask.
    Requester {
        /// SID.
        sid: u16,
        /// SQ (0..=3): 0 compares all 16 bits, 1 ignores bit 2, 2 bits 2:1, 3 bits 2:0.
        sq: u8,
    },
    /// SVT = 10b: the requester's bus must lie in `start ..= end` (SID 15:8 and 7:0).
    BusRange {
        /// First bus.
        start: u8,
        /// Last bus.
        end: u8,
    },
}

impl SourceValidation {
    /// The requester-id bits SQ compares (`0xffff`, `0xfffb`, `0xfff9`, `0xfff8`).
    pub fn sq_mask(sq: u8) -> u16 {
        [0xffff, 0xfffb, 0xfff9, 0xfff8][usize::from(sq & 3)]
    }

    /// Whether requests from `source` may use the entry.
    pub fn allows(&self, source: u16) -> bool {
        match *self {
            SourceValidation::None => true,
            SourceValidation::Requester { sid, sq } => (source ^ sid) & Self::sq_mask(sq) == 0,
            SourceValidation::BusRange { start, end } => {
                (start..=end).contains(&((source >> 8) as u8))
            }
        }
    }
}

/// A present interrupt remapping table entry in remapped format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Irte {
    /// FPD: qualified faults (0x22 does not reach here; 0x26) are not recorded.
    pub fpd: bool,
    /// The interrupt the entry delivers.
    pub interrupt: Interrupt,
    /// Source validation.
    pub validation: SourceValidation,
}

/// Why a 128-bit IRTE is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrteError {
    /// P = 0 (reason 0x22); carries the entry's FPD, which still applies.
    NotPresent {
        /// FPD of the not-present entry.
        fpd: bool,
    },
    /// A reserved or conditionally reserved field is set, or a field has a reserved
    /// encoding (reason 0x24).
    Reserved,
}

/// Always-reserved bits of the low quadword: 14:12 and 31:24. Bit 15 (IM, posted format) is
/// reserved too because posted interrupts are not supported (CAP.PI = 0).
const LO_RESERVED: u64 = 0xff00_f000;
/// Destination bits reserved in xAPIC mode (EIME = 0): 39:32 and 63:48 (spec 9.10: the
/// 8-bit APIC ID is in bits 47:40).
const LO_XAPIC_DEST_RESERVED: u64 = 0xffff_00ff_0000_0000;
/// Reserved bits of the high quadword: 127:84 (SID 79:64, SQ 81:80, SVT 83:82 are defined).
const HI_RESERVED: u64 = !0xf_ffff;

/// Decodes a 128-bit IRTE (`lo`, `hi` as stored, little-endian already applied) for a table
/// in x2APIC mode (`x2apic`, IRTA.EIME) or xAPIC mode.
pub fn decode(lo: u64, hi: u64, x2apic: bool) -> Result<Irte, IrteError> {
    let fpd = lo & 2 != 0;
    if lo & 1 == 0 {
        return Err(IrteError::NotPresent { fpd });
    }
    let dest_reserved = if x2apic { 0 } else { LO_XAPIC_DEST_RESERVED };
    if lo & (LO_RESERVED | (1 << 15) | dest_reserved) != 0 || hi & HI_RESERVED != 0 {
        return Err(IrteError::Reserved);
    }
    let delivery = DeliveryMode::from_bits(((lo >> 5) & 7) as u8).ok_or(IrteError::Reserved)?;
    let dest_field = (lo >> 32) as u32;
    let destination = if x2apic {
        dest_field
    } else {
        (dest_field >> 8) & 0xff
    };
    let sid = hi as u16;
    let sq = ((hi >> 16) & 3) as u8;
    let validation = match (hi >> 18) & 3 {
        0 => SourceValidation::None,
        1 => SourceValidation::Requester { sid, sq },
        2 => SourceValidation::BusRange {
            start: (sid >> 8) as u8,
            end: sid as u8,
        },
        _ => return Err(IrteError::Reserved),
    };
    Ok(Irte {
        fpd,
        interrupt: Interrupt {
            destination,
            vector: (lo >> 16) as u8,
            delivery,
            destination_mode: if lo & 4 != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            trigger: if lo & 16 != 0 {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
            redirection_hint: lo & 8 != 0,
        },
        validation,
    })
}

/// Encodes a present remapped-format IRTE (the inverse of [`decode`] for valid entries): what
/// `testing` and the fuzz target write into guest tables.
pub fn encode(irte: &Irte, x2apic: bool) -> [u64; 2] {
    let i = &irte.interrupt;
    let dest = if x2apic {
        u64::from(i.destination)
    } else {
        u64::from(i.destination & 0xff) << 8
    };
    let mut lo = 1
        | (u64::from(irte.fpd) << 1)
        | (u64::from(i.destination_mode == DestinationMode::Logical) << 2)
        | (u64::from(i.redirection_hint) << 3)
        | (u64::from(i.trigger == TriggerMode::Level) << 4)
        | (u64::from(i.delivery.bits()) << 5)
        | (u64::from(i.vector) << 16);
    lo |= dest << 32;
    let hi = match irte.validation {
        SourceValidation::None => 0,
        SourceValidation::Requester { sid, sq } => {
            u64::from(sid) | (u64::from(sq & 3) << 16) | (1 << 18)
        }
        SourceValidation::BusRange { start, end } => {
            (u64::from(start) << 8) | u64::from(end) | (2 << 18)
        }
    };
    [lo, hi]
}

/// The remappable-format MSI a guest driver programs for entry `index` (Linux's
/// `fill_msi_msg`: SHV set, subhandle 0 in the data).
pub fn remappable_msi(index: u16) -> Msi {
    let index = u64::from(index);
    Msi {
        address: 0xfee0_0000 | ((index & 0x7fff) << 5) | (1 << 4) | (1 << 3) | ((index >> 15) << 2),
        data: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_subhandle_and_high_handle_bit() {
        let m = remappable_msi(0x8005);
        assert_eq!(classify(m), Ok(RequestFormat::Remappable { index: 0x8005 }));
        let shv = Msi {
            address: 0xfee0_0000 | (3 << 5) | (1 << 4) | (1 << 3),
            data: 4,
        };
        assert_eq!(classify(shv), Ok(RequestFormat::Remappable { index: 7 }));
        // Without SHV the data is ignored.
        let no_shv = Msi {
            address: shv.address & !(1 << 3),
            ..shv
        };
        assert_eq!(classify(no_shv), Ok(RequestFormat::Remappable { index: 3 }));
        let over = Msi {
            address: 0xfee0_0000 | (0x7fff << 5) | (1 << 4) | (1 << 3) | (1 << 2),
            data: 0xffff,
        };
        assert_eq!(
            classify(over),
            Ok(RequestFormat::Remappable {
                index: 0xffff + 0xffff
            })
        );
        assert_eq!(
            classify(Msi {
                address: 0xfee0_1000,
                data: 0x30
            }),
            Ok(RequestFormat::Compatibility)
        );
        for bad in [
            Msi {
                address: 0x1_fee0_0010,
                data: 0,
            },
            Msi {
                address: 0xfed0_0010,
                data: 0,
            },
            Msi {
                address: 0xfee0_0010,
                data: 0x1_0000,
            },
        ] {
            assert_eq!(classify(bad), Err(RequestReserved), "{bad:x?}");
        }
    }
}
