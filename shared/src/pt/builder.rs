//! Builds page tables of any [`EncodeFormat`] in guest memory, the way a guest driver would.
//!
//! Used by tests, benchmarks, fuzz targets, conformance scenarios and the demonstration; the
//! models' own code never needs it.

use super::format::{Decoded, EncodeFormat};
use crate::perm::Perm;
use std::sync::atomic::Ordering;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Errors while building a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The allocation area for tables is exhausted.
    NoTableSpace,
    /// The format cannot map a page at that level.
    UnsupportedLeaf,
    /// A leaf already covers the slot where a table is needed.
    LeafInTheWay,
    /// Writing guest memory failed.
    Memory,
    /// The IOVA or address is not aligned to the page size.
    Unaligned,
}

/// A guest-driver-like page-table builder with a bump allocator for table pages.
pub struct TableBuilder<'a, F: ?Sized, M: ?Sized> {
    format: &'a F,
    mem: &'a M,
    root: u64,
    next: u64,
    end: u64,
}

impl<'a, F: EncodeFormat + ?Sized, M: GuestMemory + ?Sized> TableBuilder<'a, F, M> {
    /// A builder allocating tables from `[area_start, area_end)` of guest memory; the root is
    /// allocated (zeroed) at once.
    pub fn new(
        format: &'a F,
        mem: &'a M,
        area_start: u64,
        area_end: u64,
    ) -> Result<Self, BuildError> {
        let mut b = TableBuilder {
            format,
            mem,
            root: 0,
            next: area_start,
            end: area_end,
        };
        b.root = b.alloc_table(format.top_level())?;
        Ok(b)
    }

    /// Guest-physical address of the root table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Bytes of table area used so far.
    pub fn next_free(&self) -> u64 {
        self.next
    }

    fn table_bytes(&self, level: u8) -> u64 {
        8u64 << self.format.index_bits(level)
    }

    fn alloc_table(&mut self, level: u8) -> Result<u64, BuildError> {
        let bytes = self.table_bytes(level);
        let start = crate::addr::align_up(self.next, bytes.max(8));
        let end = start.checked_add(bytes).ok_or(BuildError::NoTableSpace)?;
        if end > self.end {
            return Err(BuildError::NoTableSpace);
        }
        let zeros = vec![0u8; bytes as usize];
        self.mem
            .write_slice(&zeros, GuestAddress(start))
            .map_err(|_| BuildError::Memory)?;
        self.next = end;
        Ok(start)
    }

    fn entry_addr(&self, level: u8, table: u64, iova: u64) -> u64 {
        let shift = self.format.level_shift(level);
        let idx = (iova >> shift) & ((1u64 << self.format.index_bits(level)) - 1);
        table + idx * 8
    }

    fn load(&self, addr: u64) -> Result<u64, BuildError> {
        let v: u64 = self
            .mem
            .load(GuestAddress(addr), Ordering::Acquire)
            .map_err(|_| BuildError::Memory)?;
        Ok(self.format.byte_order().decode(v))
    }

    /// Stores a raw entry value at `addr` (in the format's byte order).
    pub fn store(&self, addr: u64, value: u64) -> Result<(), BuildError> {
        self.mem
            .store(
                self.format.byte_order().encode(value),
                GuestAddress(addr),
                Ordering::Release,
            )
            .map_err(|_| BuildError::Memory)
    }

    /// Finds (creating if needed) the table at `level` covering `iova`; returns its address.
    fn table_for(&mut self, level: u8, iova: u64) -> Result<u64, BuildError> {
        let mut cur_level = self.format.top_level();
        let mut table = self.root;
        while cur_level > level {
            let ea = self.entry_addr(cur_level, table, iova);
            let raw = self.load(ea)?;
            match self.format.decode(cur_level, raw) {
                Decoded::Table { addr, .. } => table = addr,
                Decoded::Empty => {
                    let t = self.alloc_table(cur_level - 1)?;
                    self.store(ea, self.format.encode_table(cur_level, t, Perm::RW))?;
                    table = t;
                }
                Decoded::Leaf { .. } | Decoded::Reserved => return Err(BuildError::LeafInTheWay),
            }
            cur_level -= 1;
        }
        Ok(table)
    }

    /// Address of the entry that maps `iova` at `level` (creating tables above it).
    pub fn entry_for(&mut self, level: u8, iova: u64) -> Result<u64, BuildError> {
        let t = self.table_for(level, iova)?;
        Ok(self.entry_addr(level, t, iova))
    }

    /// Maps one page of the slot size of `level` at `iova` to `addr`.
    pub fn map_page(
        &mut self,
        level: u8,
        iova: u64,
        addr: u64,
        perm: Perm,
    ) -> Result<(), BuildError> {
        let size = 1u64 << self.format.level_shift(level);
        if !iova.is_multiple_of(size) || !addr.is_multiple_of(size) {
            return Err(BuildError::Unaligned);
        }
        let raw = self
            .format
            .encode_leaf(level, addr, perm)
            .ok_or(BuildError::UnsupportedLeaf)?;
        let ea = self.entry_for(level, iova)?;
        self.store(ea, raw)
    }

    /// Maps `[iova, iova + len)` to `[addr, addr + len)` with smallest pages.
    pub fn map_range(
        &mut self,
        iova: u64,
        addr: u64,
        len: u64,
        perm: Perm,
    ) -> Result<(), BuildError> {
        let page = 1u64 << self.format.page_shift();
        let mut off = 0;
        while off < len {
            self.map_page(0, iova + off, addr + off, perm)?;
            off += page;
        }
        Ok(())
    }

    /// Clears whatever leaf maps `iova` (at any level); returns whether one was found.
    pub fn unmap_page(&mut self, iova: u64) -> Result<bool, BuildError> {
        let mut level = self.format.top_level();
        let mut table = self.root;
        loop {
            let ea = self.entry_addr(level, table, iova);
            let raw = self.load(ea)?;
            match self.format.decode(level, raw) {
                Decoded::Table {
                    addr, level: next, ..
                } if next < level => {
                    table = addr;
                    level = next;
                }
                Decoded::Leaf { .. } => {
                    self.store(ea, 0)?;
                    return Ok(true);
                }
                _ => return Ok(false),
            }
        }
    }
}
