//! The PCI function behind a zPCI function: what PCILG, PCISTG and PCISTB reach.
//!
//! The VMM implements [`PciFunctionBackend`] for each function: an emulated device's config
//! space and BARs, or a passthrough device's VFIO regions. Data is exchanged as bytes in PCI
//! (bus) order — the byte at `offset` first — so no side has to guess a byte order: the model
//! builds the big-endian register value of PCILG from those bytes and splits PCISTG's
//! register into them, which is what the architecture does (A.5: config space is
//! little-endian, the register holds the bytes in storage order).

use std::fmt;

/// Which PCI address space an access targets (the PCIAS field of the request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PciSpace {
    /// Memory BAR 0..=5.
    Bar(u8),
    /// Configuration space (PCIAS 15).
    Config,
}

impl PciSpace {
    /// PCIAS value of configuration space.
    pub const CONFIG_PCIAS: u8 = 15;

    /// The space a PCIAS field names, if any (0..=5 BARs, 15 config).
    pub fn from_pcias(pcias: u8) -> Option<PciSpace> {
        match pcias {
            0..=5 => Some(PciSpace::Bar(pcias)),
            Self::CONFIG_PCIAS => Some(PciSpace::Config),
            _ => None,
        }
    }
}

/// A PCI access the backend could not carry out (no such BAR, offset beyond it, device
/// gone). The guest sees an operand exception, as on QEMU (A.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PciAccessError;

impl fmt::Display for PciAccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PCI access failed")
    }
}

impl std::error::Error for PciAccessError {}

/// Config-space and BAR access to one PCI function, provided by the VMM.
///
/// Called with the model's per-function lock held: an implementation must not call back
/// into the model.
pub trait PciFunctionBackend: Send {
    /// Reads `data.len()` (1, 2, 4 or 8) bytes at `offset` of `space`.
    fn read(&mut self, space: PciSpace, offset: u64, data: &mut [u8])
    -> Result<(), PciAccessError>;

    /// Writes `data` (1, 2, 4 or 8 bytes) at `offset` of `space`.
    fn write(&mut self, space: PciSpace, offset: u64, data: &[u8]) -> Result<(), PciAccessError>;

    /// Writes a block (PCISTB: 16..=4096 bytes, 8-byte aligned, within one 4 KiB page) at
    /// `offset` of BAR `bar`. The default issues 8-byte writes in order.
    fn write_block(&mut self, bar: u8, offset: u64, data: &[u8]) -> Result<(), PciAccessError> {
        for (i, chunk) in data.chunks(8).enumerate() {
            let at = offset.checked_add(i as u64 * 8).ok_or(PciAccessError)?;
            self.write(PciSpace::Bar(bar), at, chunk)?;
        }
        Ok(())
    }

    /// Function-level reset (CLP disable performs one).
    fn reset(&mut self) {}
}

/// A function with no device behind it: reads return all ones, writes are dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDevice;

impl PciFunctionBackend for NoDevice {
    fn read(
        &mut self,
        _space: PciSpace,
        _offset: u64,
        data: &mut [u8],
    ) -> Result<(), PciAccessError> {
        data.fill(0xff);
        Ok(())
    }

    fn write(
        &mut self,
        _space: PciSpace,
        _offset: u64,
        _data: &[u8],
    ) -> Result<(), PciAccessError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcias_decoding() {
        assert_eq!(PciSpace::from_pcias(0), Some(PciSpace::Bar(0)));
        assert_eq!(PciSpace::from_pcias(5), Some(PciSpace::Bar(5)));
        assert_eq!(PciSpace::from_pcias(6), None);
        assert_eq!(PciSpace::from_pcias(15), Some(PciSpace::Config));
        let mut d = NoDevice;
        let mut b = [0u8; 4];
        d.read(PciSpace::Config, 0, &mut b).unwrap();
        assert_eq!(b, [0xff; 4]);
        d.write_block(0, 0, &[0u8; 16]).unwrap();
    }
}
