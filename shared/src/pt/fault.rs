//! Typed translation faults from the walker.

use crate::perm::Perm;
use std::fmt;

/// Why a walk did not produce a translation. Models turn each into their architected fault
/// (VT-d fault reason, AMD-Vi event, zPCI status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkFault {
    /// The IOVA is at or beyond the format's input width.
    IovaTooWide {
        /// Faulting IOVA.
        iova: u64,
        /// The format's width in bits.
        bits: u32,
    },
    /// The entry for the IOVA at this level is not present.
    NotPresent {
        /// Level of the table holding the empty entry.
        level: u8,
        /// Faulting IOVA.
        iova: u64,
    },
    /// The entry has reserved bits set or an encoding the format forbids (including a table
    /// pointer that does not go down a level and a page smaller than its slot).
    Reserved {
        /// Level of the table holding the entry.
        level: u8,
        /// The entry's value.
        entry: u64,
        /// Faulting IOVA.
        iova: u64,
    },
    /// A table (or the root) lies outside guest RAM or is misaligned, so the entry could not
    /// be read.
    TableOutsideRam {
        /// Level of the table that could not be read.
        level: u8,
        /// Guest-physical address of the entry that could not be read.
        addr: u64,
    },
    /// The translation exists but does not grant the access.
    Permission {
        /// Faulting IOVA.
        iova: u64,
        /// What the access needed.
        needed: Perm,
        /// What the translation grants.
        granted: Perm,
    },
    /// The walk read more entries than its [`WalkLimits`](super::WalkLimits) allow.
    WorkLimit {
        /// Entries read before stopping.
        entries_read: u64,
    },
}

impl fmt::Display for WalkFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkFault::IovaTooWide { iova, bits } => {
                write!(f, "iova {iova:#x} beyond {bits}-bit input width")
            }
            WalkFault::NotPresent { level, iova } => {
                write!(f, "iova {iova:#x} not present at level {level}")
            }
            WalkFault::Reserved { level, entry, iova } => {
                write!(
                    f,
                    "iova {iova:#x}: reserved entry {entry:#x} at level {level}"
                )
            }
            WalkFault::TableOutsideRam { level, addr } => {
                write!(f, "level {level} entry at {addr:#x} outside guest RAM")
            }
            WalkFault::Permission {
                iova,
                needed,
                granted,
            } => write!(f, "iova {iova:#x}: needs {needed:?}, granted {granted:?}"),
            WalkFault::WorkLimit { entries_read } => {
                write!(f, "walk stopped after {entries_read} entries")
            }
        }
    }
}

impl std::error::Error for WalkFault {}
