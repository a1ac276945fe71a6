//! A PCI function made of plain memory: config space and BARs as byte arrays, shared so a
//! test can inspect what the guest stored.

use std::sync::{Arc, Mutex, PoisonError};

use crate::backend::{PciAccessError, PciFunctionBackend, PciSpace};

/// The state behind a [`MemFunction`].
#[derive(Clone, Debug)]
pub struct MemFunctionState {
    /// Configuration space (4 KiB, little-endian registers as on PCI).
    pub config: Vec<u8>,
    /// BAR contents (empty: no BAR).
    pub bars: [Vec<u8>; 6],
    /// Resets performed.
    pub resets: u32,
    /// Block writes received (BAR, offset, length).
    pub blocks: Vec<(u8, u64, usize)>,
}

/// A memory-backed PCI function; clones share the state.
#[derive(Clone, Debug)]
pub struct MemFunction(Arc<Mutex<MemFunctionState>>);

impl MemFunction {
    /// A function with `vendor`/`device` ids and BARs of `bar_sizes` bytes (0: none); the
    /// BAR registers in config space hold `bar_values`.
    pub fn new(vendor: u16, device: u16, bar_sizes: [usize; 6], bar_values: [u32; 6]) -> Self {
        let mut config = vec![0u8; 4096];
        config[0..2].copy_from_slice(&vendor.to_le_bytes());
        config[2..4].copy_from_slice(&device.to_le_bytes());
        for (i, v) in bar_values.iter().enumerate() {
            config[0x10 + 4 * i..0x14 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        MemFunction(Arc::new(Mutex::new(MemFunctionState {
            config,
            bars: bar_sizes.map(|s| vec![0u8; s]),
            resets: 0,
            blocks: Vec::new(),
        })))
    }

    /// Runs `f` on the state.
    pub fn with<R>(&self, f: impl FnOnce(&mut MemFunctionState) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }

    fn area(s: &mut MemFunctionState, space: PciSpace) -> Option<&mut Vec<u8>> {
        match space {
            PciSpace::Config => Some(&mut s.config),
            PciSpace::Bar(b) => s.bars.get_mut(usize::from(b)).filter(|v| !v.is_empty()),
        }
    }
}

fn slice_range(len: usize, offset: u64, n: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(n)?;
    (end <= len).then_some(start..end)
}

impl PciFunctionBackend for MemFunction {
    fn read(
        &mut self,
        space: PciSpace,
        offset: u64,
        data: &mut [u8],
    ) -> Result<(), PciAccessError> {
        self.with(|s| {
            let a = Self::area(s, space).ok_or(PciAccessError)?;
            let r = slice_range(a.len(), offset, data.len()).ok_or(PciAccessError)?;
            data.copy_from_slice(&a[r]);
            Ok(())
        })
    }

    fn write(&mut self, space: PciSpace, offset: u64, data: &[u8]) -> Result<(), PciAccessError> {
        self.with(|s| {
            let a = Self::area(s, space).ok_or(PciAccessError)?;
            let r = slice_range(a.len(), offset, data.len()).ok_or(PciAccessError)?;
            a[r].copy_from_slice(data);
            Ok(())
        })
    }

    fn write_block(&mut self, bar: u8, offset: u64, data: &[u8]) -> Result<(), PciAccessError> {
        self.write(PciSpace::Bar(bar), offset, data)?;
        self.with(|s| s.blocks.push((bar, offset, data.len())));
        Ok(())
    }

    fn reset(&mut self) {
        self.with(|s| s.resets += 1);
    }
}
