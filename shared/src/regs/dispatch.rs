//! [`RegisterBank`]: a [`RegisterFile`] plus one handler per side-effecting register.
//!
//! A model lists its handlers in a table of `(offset, handler)` pairs next to its register
//! table; a guest write first updates the register file (masks applied) and then calls the
//! handler of each register it reached, in offset order, with a [`RegWrite`] carrying the old
//! and new values. Registers without a handler are plain storage.
//!
//! The bank owns the register file but not the rest of the model's state: handlers receive
//! that state as `&mut T`, so a model typically keeps `bank` and `state` as two fields and
//! calls `self.bank.write(&mut self.state, ...)`.
//!
//! ```
//! use viommu_shared::regs::{RegSpec, RegWrite, RegisterBank, RegisterFile, WriteHandler};
//!
//! const GCMD: u64 = 0x18;
//! const GSTS: u64 = 0x1c;
//! const TE: u64 = 1 << 31;
//!
//! static REGS: &[RegSpec] = &[
//!     RegSpec::wo32("GCMD", GCMD, 0xff80_0000),
//!     RegSpec::ro32("GSTS", GSTS, 0),
//!     RegSpec::rw64("RTADDR", 0x20, 0, !0xfff),
//! ];
//!
//! #[derive(Default)]
//! struct State {
//!     translating: bool,
//! }
//!
//! fn gcmd(state: &mut State, regs: &mut RegisterFile, w: RegWrite) {
//!     // Command bits: act on the new value; report in the read-only status register.
//!     state.translating = w.new & TE != 0;
//!     regs.update_at(GSTS, TE, w.new & TE);
//! }
//!
//! static HANDLERS: &[(u64, WriteHandler<State>)] = &[(GCMD, gcmd)];
//!
//! let mut bank = RegisterBank::new(RegisterFile::new(REGS).unwrap(), HANDLERS).unwrap();
//! let mut state = State::default();
//!
//! bank.write(&mut state, GCMD, 4, TE);
//! assert!(state.translating);
//! assert_eq!(bank.read(GSTS, 4), TE);
//! assert_eq!(bank.read(GCMD, 4), 0); // write-only
//!
//! bank.write(&mut state, 0x20, 8, 0x1234_5000); // no handler: plain storage
//! assert_eq!(bank.read(0x20, 8), 0x1234_5000);
//! ```

use std::fmt;

use super::file::{RegWrite, RegisterFile, WriteOutcome};

/// Side effect of a guest write to one register: gets the model state, the register file
/// (already updated by the write, e.g. to set status bits) and the write.
pub type WriteHandler<T> = fn(&mut T, &mut RegisterFile, RegWrite);

/// Why a handler table is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BankError {
    /// No register starts at this offset.
    NoRegister {
        /// The offset in the handler table.
        offset: u64,
    },
    /// Two handlers for the same register.
    DuplicateHandler {
        /// The register's offset.
        offset: u64,
    },
}

impl fmt::Display for BankError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BankError::NoRegister { offset } => {
                write!(f, "handler for {offset:#x}, where no register starts")
            }
            BankError::DuplicateHandler { offset } => {
                write!(f, "two handlers for the register at {offset:#x}")
            }
        }
    }
}

impl std::error::Error for BankError {}

/// A [`RegisterFile`] with a write handler per side-effecting register (see the
/// [module documentation](self) for an example).
pub struct RegisterBank<T> {
    regs: RegisterFile,
    /// Indexed like the register table.
    handlers: Vec<Option<WriteHandler<T>>>,
}

impl<T> RegisterBank<T> {
    /// A bank over `regs` with `handlers`, a table of (register offset, handler).
    ///
    /// Every offset must be the start of a register, and appear once.
    pub fn new(
        regs: RegisterFile,
        handlers: &[(u64, WriteHandler<T>)],
    ) -> Result<RegisterBank<T>, BankError> {
        let mut table = vec![None; regs.len()];
        for &(offset, handler) in handlers {
            let slot = regs
                .index_at(offset)
                .and_then(|i| table.get_mut(i))
                .ok_or(BankError::NoRegister { offset })?;
            if slot.is_some() {
                return Err(BankError::DuplicateHandler { offset });
            }
            *slot = Some(handler);
        }
        Ok(RegisterBank {
            regs,
            handlers: table,
        })
    }

    /// The register file.
    pub fn regs(&self) -> &RegisterFile {
        &self.regs
    }

    /// The register file, for the model to update status bits.
    pub fn regs_mut(&mut self) -> &mut RegisterFile {
        &mut self.regs
    }

    /// Whether register `index` has a handler.
    pub fn has_handler(&self, index: usize) -> bool {
        matches!(self.handlers.get(index), Some(Some(_)))
    }

    /// Guest read (see [`RegisterFile::read`]); reads have no side effects.
    pub fn read(&self, offset: u64, len: usize) -> u64 {
        self.regs.read(offset, len)
    }

    /// Guest write: updates the register file (see [`RegisterFile::write`]), then calls the
    /// handler of every register reached, in offset order, after all of them are updated.
    ///
    /// Handlers run on every write that reaches their register, even if no bit changed (a
    /// command may be issued twice). Returns the outcome of the write.
    pub fn write(&mut self, state: &mut T, offset: u64, len: usize, value: u64) -> WriteOutcome {
        let outcome = self.regs.write(offset, len, value);
        self.dispatch(state, &outcome);
        outcome
    }

    /// Calls the handlers for the registers of `outcome` (as [`write`](Self::write) does), for
    /// a model that applies writes to [`regs_mut`](Self::regs_mut) itself.
    pub fn dispatch(&mut self, state: &mut T, outcome: &WriteOutcome) {
        for w in outcome.writes() {
            if let Some(Some(handler)) = self.handlers.get(w.index) {
                handler(state, &mut self.regs, *w);
            }
        }
    }

    /// Resets the register file (handlers are not called).
    pub fn reset(&mut self) {
        self.regs.reset();
    }
}

impl<T> Clone for RegisterBank<T> {
    fn clone(&self) -> Self {
        RegisterBank {
            regs: self.regs.clone(),
            handlers: self.handlers.clone(),
        }
    }
}

impl<T> fmt::Debug for RegisterBank<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_handlers: Vec<&str> = self
            .regs
            .specs()
            .iter()
            .zip(&self.handlers)
            .filter(|(_, h)| h.is_some())
            .map(|(s, _)| s.name)
            .collect();
        f.debug_struct("RegisterBank")
            .field("regs", &self.regs)
            .field("handlers", &with_handlers)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::file::AccessError;
    use crate::regs::spec::RegSpec;

    static REGS: &[RegSpec] = &[
        RegSpec::rw32("A", 0x0, 0x10, 0xff),
        RegSpec::w1c32("B", 0x4, 0xf, 0xf),
        RegSpec::ro32("STATUS", 0x8, 0),
        RegSpec::rw64("Q", 0x10, 0, u64::MAX),
    ];

    #[derive(Default)]
    struct Log {
        calls: Vec<(&'static str, u64, u64, u64)>,
    }

    fn log(state: &mut Log, _regs: &mut RegisterFile, w: RegWrite) {
        state.calls.push((w.name(), w.old, w.new, w.covered));
    }

    fn b_handler(state: &mut Log, regs: &mut RegisterFile, w: RegWrite) {
        log(state, regs, w);
        // Status mirrors which bits were cleared, and sees A already updated.
        let a = regs.get_at(0x0).unwrap_or(0);
        regs.set_at(0x8, (w.cleared_w1c() << 8) | a);
    }

    static HANDLERS: &[(u64, WriteHandler<Log>)] = &[(0x0, log), (0x4, b_handler), (0x10, log)];

    fn bank() -> RegisterBank<Log> {
        RegisterBank::new(RegisterFile::new(REGS).unwrap(), HANDLERS).unwrap()
    }

    #[test]
    fn handlers_get_old_and_new() {
        let mut bank = bank();
        let mut state = Log::default();
        assert!(bank.has_handler(0) && bank.has_handler(1) && !bank.has_handler(2));
        assert!(!bank.has_handler(99));

        bank.write(&mut state, 0x0, 1, 0x2a);
        assert_eq!(state.calls, vec![("A", 0x10, 0x2a, 0xff)]);
        state.calls.clear();

        // 8-byte write over A and B: both updated first, then handlers in offset order.
        let out = bank.write(&mut state, 0x0, 8, 0x0000_0005_0000_0077);
        assert_eq!(out.writes().count(), 2);
        assert_eq!(
            state.calls,
            vec![("A", 0x2a, 0x77, 0xffff_ffff), ("B", 0xf, 0xa, 0xffff_ffff)]
        );
        assert_eq!(bank.read(0x8, 4), 0x577);
        state.calls.clear();

        // Upper half of a 64-bit register.
        bank.write(&mut state, 0x14, 4, 0xabcd);
        assert_eq!(
            state.calls,
            vec![("Q", 0, 0xabcd_0000_0000, 0xffff_ffff_0000_0000)]
        );
        state.calls.clear();

        // Handlers run even when nothing changes; none for registers without one.
        bank.write(&mut state, 0x4, 4, 0);
        assert_eq!(state.calls, vec![("B", 0xa, 0xa, 0xffff_ffff)]);
        state.calls.clear();
        bank.write(&mut state, 0x8, 4, u64::MAX);
        assert!(state.calls.is_empty());

        // Rejected and unmapped writes call nothing.
        let out = bank.write(&mut state, 0x1, 4, 1);
        assert_eq!(
            out.error(),
            Some(AccessError::Misaligned { offset: 1, len: 4 })
        );
        assert_eq!(bank.write(&mut state, 0x20, 4, 1), WriteOutcome::Unmapped);
        assert_eq!(bank.write(&mut state, 0x0, 3, 1).writes().count(), 0);
        assert!(state.calls.is_empty());
    }

    #[test]
    fn manual_dispatch_reset_and_accessors() {
        let mut bank = bank();
        let mut state = Log::default();
        let out = bank.regs_mut().write(0x0, 4, 0x1);
        assert!(state.calls.is_empty());
        bank.dispatch(&mut state, &out);
        assert_eq!(state.calls, vec![("A", 0x10, 0x1, 0xffff_ffff)]);
        let copy = bank.clone();
        bank.reset();
        assert_eq!(bank.regs().get_at(0x0), Some(0x10));
        assert_eq!(copy.regs().get_at(0x0), Some(0x1));
        let dbg = format!("{bank:?}");
        assert!(dbg.contains(r#"handlers: ["A", "B", "Q"]"#), "{dbg}");
    }

    #[test]
    fn bad_handler_tables_rejected() {
        let regs = || RegisterFile::new(REGS).unwrap();
        assert_eq!(
            RegisterBank::<Log>::new(regs(), &[(0x2, log)]).unwrap_err(),
            BankError::NoRegister { offset: 0x2 }
        );
        assert_eq!(
            RegisterBank::<Log>::new(regs(), &[(0x14, log)]).unwrap_err(),
            BankError::NoRegister { offset: 0x14 }
        );
        assert_eq!(
            RegisterBank::<Log>::new(regs(), &[(0x4, log), (0x0, log), (0x4, b_handler)])
                .unwrap_err(),
            BankError::DuplicateHandler { offset: 0x4 }
        );
        assert!(
            BankError::NoRegister { offset: 2 }
                .to_string()
                .contains("0x2")
        );
    }
}
