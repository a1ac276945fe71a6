//! Register files as data, MSI sinks, and the `vm-device` MMIO adapter.
//!
//! A model describes its registers as one `static` table of [`RegSpec`]s (offset, width,
//! reset value, RW / W1C / WO masks; everything else read-only) and its side effects as one
//! table of `(offset, handler)` pairs; there is no match on raw offsets.
//!
//! - [`spec`]: [`RegSpec`], [`Width`], [`ByteOrder`], [`validate_specs`].
//! - [`file`](mod@file): [`RegisterFile`], the current values with guest read/write semantics;
//!   [`WriteOutcome`] / [`RegWrite`] report what a write changed.
//! - [`dispatch`]: [`RegisterBank`], a register file plus a [`WriteHandler`] per
//!   side-effecting register.
//! - [`msi`]: [`MsiSink`] and its [`NullMsiSink`] / [`RecordingMsiSink`] implementations.
//! - [`mmio`]: [`MmioHandler`] and the [`MmioAdapter`] / [`MutMmioAdapter`] for `vm-device`.
//!
//! Guests are hostile: every guest-reachable path (bad lengths, misaligned or unmapped
//! offsets, any value) is handled without panicking.
//!
//! # Example: a toy fault-reporting unit behind `vm-device`
//!
//! ```
//! use std::sync::Arc;
//! use viommu_shared::regs::*;
//! use vm_device::DeviceMmio;
//! use vm_device::bus::MmioAddress;
//!
//! const FSTS: u64 = 0x34; // fault status: bit 1 = pending fault (W1C)
//! const FECTL: u64 = 0x38; // fault event control: bit 31 = interrupt mask
//! const FEDATA: u64 = 0x3c;
//! const FEADDR: u64 = 0x40;
//! const PPF: u64 = 1 << 1;
//! const IM: u64 = 1 << 31;
//!
//! static REGS: &[RegSpec] = &[
//!     RegSpec::w1c32("FSTS", FSTS, 0, PPF),
//!     RegSpec::rw32("FECTL", FECTL, IM, IM),
//!     RegSpec::rw32("FEDATA", FEDATA, 0, 0xffff),
//!     RegSpec::rw64("FEADDR", FEADDR, 0, !0x3),
//! ];
//!
//! struct State {
//!     msi: Arc<dyn MsiSink>,
//! }
//!
//! fn send_if_pending(state: &mut State, regs: &RegisterFile) {
//!     let pending = regs.get_at(FSTS).unwrap_or(0) & PPF != 0;
//!     let masked = regs.get_at(FECTL).unwrap_or(0) & IM != 0;
//!     if pending && !masked {
//!         let address = regs.get_at(FEADDR).unwrap_or(0);
//!         let data = regs.get_at(FEDATA).unwrap_or(0) as u32;
//!         state.msi.send(Msi { address, data });
//!     }
//! }
//!
//! fn fectl(state: &mut State, regs: &mut RegisterFile, w: RegWrite) {
//!     if w.fell() & IM != 0 {
//!         send_if_pending(state, regs); // unmasking delivers a pending event
//!     }
//! }
//!
//! static HANDLERS: &[(u64, WriteHandler<State>)] = &[(FECTL, fectl)];
//!
//! struct Unit {
//!     bank: RegisterBank<State>,
//!     state: State,
//! }
//!
//! impl Unit {
//!     fn fault(&mut self) {
//!         self.bank.regs_mut().update_at(FSTS, PPF, PPF);
//!         send_if_pending(&mut self.state, self.bank.regs());
//!     }
//! }
//!
//! impl MmioHandler for Unit {
//!     fn mmio_read(&mut self, offset: u64, len: usize) -> u64 {
//!         self.bank.read(offset, len)
//!     }
//!     fn mmio_write(&mut self, offset: u64, len: usize, value: u64) {
//!         self.bank.write(&mut self.state, offset, len, value);
//!     }
//! }
//!
//! let sink = Arc::new(RecordingMsiSink::new());
//! let bank = RegisterBank::new(RegisterFile::new(REGS).unwrap(), HANDLERS).unwrap();
//! let unit = Unit { bank, state: State { msi: sink.clone() } };
//! let dev = Arc::new(MmioAdapter::new(unit, ByteOrder::Little));
//! let base = MmioAddress(0xfed9_0000);
//!
//! dev.mmio_write(base, FEADDR, &0xfee0_0000u64.to_le_bytes());
//! dev.mmio_write(base, FEDATA, &0x45u32.to_le_bytes());
//! dev.lock().fault(); // masked: nothing sent yet
//! assert!(sink.is_empty());
//! dev.mmio_write(base, FECTL, &0u32.to_le_bytes()); // unmask
//! assert_eq!(sink.take(), vec![Msi { address: 0xfee0_0000, data: 0x45 }]);
//! dev.mmio_write(base, FSTS, &[PPF as u8]); // W1C, 1-byte write
//! let mut sts = [0u8; 4];
//! dev.mmio_read(base, FSTS, &mut sts);
//! assert_eq!(sts, [0; 4]);
//! ```

pub mod dispatch;
pub mod file;
pub mod mmio;
pub mod msi;
pub mod spec;

pub use dispatch::{BankError, RegisterBank, WriteHandler};
pub use file::{AccessError, RegWrite, RegisterFile, WriteOutcome, check_access};
pub use mmio::{MmioAdapter, MmioHandler, MutMmioAdapter};
pub use msi::{Msi, MsiSink, NullMsiSink, RecordingMsiSink};
pub use spec::{ByteOrder, RegSpec, SpecError, Width, is_access_len, validate_specs};
