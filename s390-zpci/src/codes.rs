//! Architected codes: condition codes, status codes, program-interruption codes and PCI event
//! codes (PECs).
//!
//! Reference: `anchors-s390-vfio.md` A.3.3 (condition codes), A.3.4 (status codes), A.11
//! (event codes).

use std::fmt;

/// Condition code an instruction sets in the PSW (A.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cc {
    /// 0: success.
    Ok = 0,
    /// 1: error; a status code is in the status register (for CLP: unused).
    Error = 1,
    /// 2: busy; the guest retries. The model never answers busy.
    Busy = 2,
    /// 3: invalid function handle, or the function is not enabled / not available.
    InvalidHandle = 3,
}

impl Cc {
    /// The numeric condition code (0..=3).
    pub fn value(self) -> u8 {
        self as u8
    }
}

/// Status codes of the PCI load/store family, RPCIT, MPCIFC and STPCIFC (A.3.4), written into
/// bits 24..31 of the status register when the condition code is 1.
pub mod status {
    /// Load/store: the function is not enabled.
    pub const FUNC_NOT_ENABLED: u8 = 4;
    /// STPCIFC: the function is in the permanent-error state; RPCIT: no address space
    /// registered or an error was detected (the function is now in the error state).
    pub const FUNC_IN_ERROR: u8 = 8;
    /// Load/store: the function is in the error state; loads and stores are blocked.
    pub const BLOCKED: u8 = 12;
    /// RPCIT and MPCIFC: insufficient resources (the host could not make a mapping).
    pub const INSUFFICIENT_RESOURCES: u8 = 16;
    /// Load/store: invalid PCI address space.
    pub const INVALID_ADDRESS_SPACE: u8 = 20;
    /// MPCIFC: sequence error (operation not valid in the current state).
    pub const SEQUENCE: u8 = 24;
    /// MPCIFC/STPCIFC: invalid DMA address space.
    pub const DMAAS_INVALID: u8 = 28;
    /// RPCIT/MPCIFC/STPCIFC: the function is in error recovery (state error).
    pub const ERROR_RECOVERY: u8 = 40;
    /// MPCIFC register interruptions: resource not available.
    pub const RESOURCE_NOT_AVAILABLE: u8 = 4;
}

/// A program interruption the VMM must present instead of completing the instruction.
///
/// The instruction is suppressed: the model changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgramCheck {
    /// Code 0x0001: operation exception (instruction not offered).
    Operation,
    /// Code 0x0002: privileged-operation exception. The model does not see the PSW; the VMM
    /// checks the problem-state bit before calling a handler.
    Privileged,
    /// Code 0x0004: protection exception (from the VMM's operand access).
    Protection,
    /// Code 0x0005: addressing exception (operand outside guest memory).
    Addressing,
    /// Code 0x0006: specification exception (odd register pair, misaligned operand, ...).
    Specification,
    /// Code 0x0015: operand exception (invalid field in an operand).
    Operand,
    /// Any other interruption code, as reported by the VMM's operand access (page-translation
    /// exception, segment-translation exception, ...).
    Other(u16),
}

impl ProgramCheck {
    /// The program-interruption code to present.
    pub fn code(self) -> u16 {
        match self {
            ProgramCheck::Operation => 0x0001,
            ProgramCheck::Privileged => 0x0002,
            ProgramCheck::Protection => 0x0004,
            ProgramCheck::Addressing => 0x0005,
            ProgramCheck::Specification => 0x0006,
            ProgramCheck::Operand => 0x0015,
            ProgramCheck::Other(code) => code,
        }
    }
}

impl fmt::Display for ProgramCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "program interruption code {:#06x}", self.code())
    }
}

impl std::error::Error for ProgramCheck {}

/// A PCI event code (A.11): why an error or availability event was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pec(pub u16);

impl Pec {
    /// 0x1: DMA or RPCIT without a registered I/O address space.
    pub const INVALID_ADDRESS_SPACE: Pec = Pec(0x1);
    /// 0x2: address outside the registered DMA range `[pba, pal]`.
    pub const OUT_OF_RANGE: Pec = Pec(0x2);
    /// 0x3: invalid translation format (I/O translation anchor designation).
    pub const INVALID_TRANSLATION_FORMAT: Pec = Pec(0x3);
    /// 0x4: translation protection (write through a read-only translation).
    pub const TRANSLATION_PROTECTION: Pec = Pec(0x4);
    /// 0x7: invalid translation-table entry (zero, unreadable, or invalid on a DMA).
    pub const INVALID_TABLE_ENTRY: Pec = Pec(0x7);
    /// 0x8: invalid table length or table offset in a region entry.
    pub const INVALID_TABLE_LENGTH: Pec = Pec(0x8);
    /// 0x9: table-type mismatch.
    pub const TABLE_TYPE: Pec = Pec(0x9);
    /// 0xb: system error (the host could not carry out what the guest asked).
    pub const SYSTEM_ERROR: Pec = Pec(0xb);
    /// 0x2a: the function measurement block could not be written.
    pub const FMB_ADDRESS: Pec = Pec(0x2a);
    /// 0x2c: function measurement block protection (non-zero key bits).
    pub const FMB_PROTECTION: Pec = Pec(0x2c);
}

impl fmt::Display for Pec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PEC {:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_check_codes() {
        assert_eq!(ProgramCheck::Operand.code(), 0x15);
        assert_eq!(ProgramCheck::Specification.code(), 6);
        assert_eq!(ProgramCheck::Other(0x11).code(), 0x11);
        assert_eq!(Cc::InvalidHandle.value(), 3);
        assert!(ProgramCheck::Operand.to_string().contains("0x0015"));
    }
}
