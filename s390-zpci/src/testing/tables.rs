//! A guest-driver-like builder of s390 DMA tables, the way Linux builds them: new tables
//! are filled with invalid entries (never zeros), unmapping sets a page-table entry invalid,
//! intermediate entries are never removed.

use std::sync::atomic::Ordering;

use viommu_shared::Perm;
use viommu_shared::pt::{EncodeFormat, PageTableFormat};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::format::{
    Designation, DmaTableFormat, PTE_FRAME_MASK, PTE_INVALID, REGION_ORIGIN_MASK,
    SEGMENT_ORIGIN_MASK, TABLE_INVALID, invalid_entry, level,
};
use crate::iota::Iota;

/// Why the builder could not do something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The table area is exhausted.
    NoSpace,
    /// Guest memory could not be accessed.
    Memory,
    /// The address is beyond what the tables translate, or not page-aligned.
    BadAddress,
    /// A 1 MiB segment frame is in the way.
    FrameInTheWay,
}

/// DMA tables in guest memory, with a bump allocator for table pages.
pub struct ZpciTables {
    mem: GuestMemoryMmap,
    format: DmaTableFormat,
    root: u64,
    next: u64,
    end: u64,
}

impl ZpciTables {
    /// Tables of `designation` allocated from `[area_start, area_end)`; the root (filled
    /// with invalid entries) is allocated at once.
    pub fn new(
        mem: &GuestMemoryMmap,
        designation: Designation,
        area_start: u64,
        area_end: u64,
    ) -> Result<Self, TableError> {
        let mut t = ZpciTables {
            mem: mem.clone(),
            format: DmaTableFormat::new(designation, false),
            root: 0,
            next: area_start,
            end: area_end,
        };
        t.root = t.alloc(designation.top_level())?;
        Ok(t)
    }

    /// The format.
    pub fn format(&self) -> &DmaTableFormat {
        &self.format
    }

    /// Origin of the root table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The anchor designating these tables (translation on), as Linux registers it.
    pub fn iota(&self) -> Iota {
        Iota::tables(self.format.designation(), self.root)
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    fn alloc(&mut self, lvl: u8) -> Result<u64, TableError> {
        let entries = 1u64 << self.format.index_bits(lvl);
        let bytes = entries * 8;
        let start = viommu_shared::addr::align_up(self.next, bytes);
        let end = start.checked_add(bytes).ok_or(TableError::NoSpace)?;
        if end > self.end {
            return Err(TableError::NoSpace);
        }
        let fill = invalid_entry(lvl).to_be_bytes();
        let block: Vec<u8> = (0..entries).flat_map(|_| fill).collect();
        self.mem
            .write_slice(&block, GuestAddress(start))
            .map_err(|_| TableError::Memory)?;
        self.next = end;
        Ok(start)
    }

    /// Reads the entry at `addr`.
    pub fn load(&self, addr: u64) -> Result<u64, TableError> {
        let v: u64 = self
            .mem
            .load(GuestAddress(addr), Ordering::Acquire)
            .map_err(|_| TableError::Memory)?;
        Ok(u64::from_be(v))
    }

    /// Writes the raw entry `value` at `addr` (big-endian), as a guest would.
    pub fn store(&self, addr: u64, value: u64) -> Result<(), TableError> {
        self.mem
            .store(value.to_be(), GuestAddress(addr), Ordering::Release)
            .map_err(|_| TableError::Memory)
    }

    fn index_addr(&self, lvl: u8, table: u64, iova: u64) -> u64 {
        let shift = self.format.level_shift(lvl);
        let idx = (iova >> shift) & ((1u64 << self.format.index_bits(lvl)) - 1);
        table + idx * 8
    }

    /// Address of the entry for `iova` at `lvl`, creating the tables above it (an entry cut
    /// off by [`invalidate_table_entry`](Self::invalidate_table_entry) is made valid again).
    pub fn entry_for(&mut self, lvl: u8, iova: u64) -> Result<u64, TableError> {
        if u128::from(iova) >= 1u128 << self.format.iova_bits() {
            return Err(TableError::BadAddress);
        }
        let mut cur = self.format.top_level();
        let mut table = self.root;
        while cur > lvl {
            let ea = self.index_addr(cur, table, iova);
            let raw = self.load(ea)?;
            if raw & TABLE_INVALID != 0 && raw & !(TABLE_INVALID | 0xf) != 0 {
                // Cut off by invalidate_table_entry: valid again, with its old table.
                self.store(ea, raw & !TABLE_INVALID)?;
                table = if cur == level::SEGMENT {
                    raw & SEGMENT_ORIGIN_MASK
                } else {
                    raw & REGION_ORIGIN_MASK
                };
            } else if raw & TABLE_INVALID != 0 {
                let t = self.alloc(cur - 1)?;
                self.store(ea, self.format.encode_table(cur, t, Perm::RW))?;
                table = t;
            } else if cur == level::SEGMENT && raw & crate::format::SEGMENT_FC != 0 {
                return Err(TableError::FrameInTheWay);
            } else if cur == level::SEGMENT {
                table = raw & SEGMENT_ORIGIN_MASK;
            } else {
                table = raw & REGION_ORIGIN_MASK;
            }
            cur -= 1;
        }
        Ok(self.index_addr(lvl, table, iova))
    }

    /// Maps the 4 KiB page at `iova` to `gpa`; read-only unless `perm` has WRITE.
    pub fn map(&mut self, iova: u64, gpa: u64, perm: Perm) -> Result<(), TableError> {
        if iova & 0xfff != 0 || gpa & 0xfff != 0 {
            return Err(TableError::BadAddress);
        }
        let ea = self.entry_for(level::PAGE, iova)?;
        let raw = self
            .format
            .encode_leaf(level::PAGE, gpa, perm)
            .ok_or(TableError::BadAddress)?;
        self.store(ea, raw)
    }

    /// Maps `pages` pages from `iova` to `gpa` contiguously.
    pub fn map_range(
        &mut self,
        iova: u64,
        gpa: u64,
        pages: u64,
        perm: Perm,
    ) -> Result<(), TableError> {
        for p in 0..pages {
            self.map(iova + p * 0x1000, gpa + p * 0x1000, perm)?;
        }
        Ok(())
    }

    /// Maps a 1 MiB frame with a segment entry (format control), at a 1 MiB aligned
    /// `iova` and `gpa`.
    pub fn map_segment_frame(&mut self, iova: u64, gpa: u64, perm: Perm) -> Result<(), TableError> {
        if iova & 0xf_ffff != 0 || gpa & 0xf_ffff != 0 {
            return Err(TableError::BadAddress);
        }
        let ea = self.entry_for(level::SEGMENT, iova)?;
        let raw = self
            .format
            .encode_leaf(level::SEGMENT, gpa, perm)
            .ok_or(TableError::BadAddress)?;
        self.store(ea, raw)
    }

    /// Invalidates the page-table entry of `iova` (Linux's unmap); returns whether it
    /// was valid. Missing tables mean nothing was mapped.
    pub fn unmap(&mut self, iova: u64) -> Result<bool, TableError> {
        let Some(ea) = self.find(level::PAGE, iova)? else {
            return Ok(false);
        };
        let raw = self.load(ea)?;
        self.store(ea, PTE_INVALID | (raw & PTE_FRAME_MASK))?;
        Ok(raw & PTE_INVALID == 0)
    }

    /// Sets the invalid bit of the entry at `lvl` (≥ 1) covering `iova`, cutting off
    /// everything below it (what Linux never does, but the architecture allows).
    pub fn invalidate_table_entry(&mut self, lvl: u8, iova: u64) -> Result<(), TableError> {
        let Some(ea) = self.find(lvl, iova)? else {
            return Ok(());
        };
        let raw = self.load(ea)?;
        self.store(ea, raw | TABLE_INVALID)
    }

    /// Clears the invalid bit set by [`invalidate_table_entry`](Self::invalidate_table_entry).
    pub fn revalidate_table_entry(&mut self, lvl: u8, iova: u64) -> Result<(), TableError> {
        let Some(ea) = self.find(lvl, iova)? else {
            return Ok(());
        };
        let raw = self.load(ea)?;
        self.store(ea, raw & !TABLE_INVALID)
    }

    /// Address of the entry at `lvl` for `iova` if the tables above it exist.
    pub fn find(&self, lvl: u8, iova: u64) -> Result<Option<u64>, TableError> {
        if u128::from(iova) >= 1u128 << self.format.iova_bits() {
            return Err(TableError::BadAddress);
        }
        let mut cur = self.format.top_level();
        let mut table = self.root;
        while cur > lvl {
            let ea = self.index_addr(cur, table, iova);
            let raw = self.load(ea)?;
            if raw & TABLE_INVALID != 0 && raw != 0 {
                // Follow through invalid intermediate entries that still hold an origin
                // (left by invalidate_table_entry); fresh ones hold none.
                if raw & !(TABLE_INVALID | 0xf) == 0 {
                    return Ok(None);
                }
            }
            if cur == level::SEGMENT {
                if raw & crate::format::SEGMENT_FC != 0 {
                    return Ok(None);
                }
                table = raw & SEGMENT_ORIGIN_MASK;
            } else {
                table = raw & REGION_ORIGIN_MASK;
            }
            cur -= 1;
        }
        Ok(Some(self.index_addr(lvl, table, iova)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::pt::Walker;
    use viommu_shared::testing::guest_memory;

    #[test]
    fn build_walk_unmap() {
        let mem = guest_memory(&[(0, 0x100_0000)]);
        let mut t = ZpciTables::new(&mem, Designation::RegionThird, 0x80_0000, 0x100_0000).unwrap();
        t.map(0x1_0000_0000, 0x5000, Perm::RW).unwrap();
        t.map(0x1_0000_1000, 0x7000, Perm::READ).unwrap();
        let fmt = *t.format();
        let w = Walker::new(&fmt, &mem, t.root());
        let l = w.lookup(0x1_0000_0123).unwrap();
        assert_eq!((l.addr, l.perm), (0x5000, Perm::RW));
        assert_eq!(w.lookup(0x1_0000_1000).unwrap().perm, Perm::READ);
        assert!(w.lookup(0x1_0000_2000).is_err());
        assert!(t.unmap(0x1_0000_0000).unwrap());
        assert!(!t.unmap(0x1_0000_0000).unwrap());
        assert!(!t.unmap(0x2_0000_0000).unwrap());
        assert!(w.lookup(0x1_0000_0000).is_err());
        // Whole-aperture enumeration sees no zero entries (Linux-like fill).
        let mut faults = 0;
        let mut leaves = 0;
        w.for_each_leaf(
            viommu_shared::AddrRange::new(0, 1 << 42),
            &mut |_| leaves += 1,
            &mut |_| faults += 1,
        )
        .unwrap();
        assert_eq!((leaves, faults), (1, 0));
        t.invalidate_table_entry(level::SEGMENT, 0x1_0000_1000)
            .unwrap();
        assert!(w.lookup(0x1_0000_1000).is_err());
        t.revalidate_table_entry(level::SEGMENT, 0x1_0000_1000)
            .unwrap();
        assert!(w.lookup(0x1_0000_1000).is_ok());
    }
}
