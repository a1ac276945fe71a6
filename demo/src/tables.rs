//! Guest I/O page tables written the way the Linux drivers write them, owning their guest
//! memory handle (so a driver struct can hold them): [`X86Tables`] for any
//! [`EncodeFormat`] (VT-d second-stage: 4 KiB pages and 2 MiB/1 GiB superpages) and
//! [`AmdTables`] for AMD-Vi v1 tables with pages of every power-of-two size
//! (`iommu_v1_map_pages`: NextLevel-7 entries replicated across the slots they cover).
//! s390 tables come from the model crate's own `ZpciTables`.

use std::sync::atomic::Ordering;
use viommu_amd_vi::AmdV1Format;
use viommu_amd_vi::pagetable::{PTE_ADDR_MASK, PTE_PR};
use viommu_shared::pt::{ByteOrder, Decoded, EncodeFormat, PageTableFormat, Walker};
use viommu_shared::{AddrRange, Perm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Why a table could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The table area is exhausted.
    NoSpace,
    /// Guest memory could not be accessed.
    Memory,
    /// The format cannot map that page (size, alignment or level).
    Unsupported,
    /// A leaf sits where a table is needed.
    LeafInTheWay,
}

/// Table pages from a bump area of guest memory, and entry loads/stores.
#[derive(Clone, Debug)]
struct Area {
    mem: GuestMemoryMmap,
    order: ByteOrder,
    next: u64,
    end: u64,
}

impl Area {
    fn alloc(&mut self, bytes: u64) -> Result<u64, TableError> {
        let start = self.next.div_ceil(bytes.max(8)) * bytes.max(8);
        let end = start.checked_add(bytes).ok_or(TableError::NoSpace)?;
        if end > self.end {
            return Err(TableError::NoSpace);
        }
        self.mem
            .write_slice(&vec![0u8; bytes as usize], GuestAddress(start))
            .map_err(|_| TableError::Memory)?;
        self.next = end;
        Ok(start)
    }

    fn load(&self, addr: u64) -> Result<u64, TableError> {
        let v: u64 = self
            .mem
            .load(GuestAddress(addr), Ordering::Acquire)
            .map_err(|_| TableError::Memory)?;
        Ok(self.order.decode(v))
    }

    fn store(&self, addr: u64, value: u64) -> Result<(), TableError> {
        self.mem
            .store(
                self.order.encode(value),
                GuestAddress(addr),
                Ordering::Release,
            )
            .map_err(|_| TableError::Memory)
    }
}

fn entry_addr<F: PageTableFormat + ?Sized>(format: &F, level: u8, table: u64, iova: u64) -> u64 {
    let idx = (iova >> format.level_shift(level)) & ((1u64 << format.index_bits(level)) - 1);
    table + idx * 8
}

/// Tables of an x86-style format (every level one below the next).
#[derive(Clone, Debug)]
pub struct X86Tables<F> {
    format: F,
    area: Area,
    root: u64,
}

impl<F: EncodeFormat> X86Tables<F> {
    /// Tables of `format` allocated from `area` of `mem`; the root is allocated at once.
    pub fn new(format: F, mem: &GuestMemoryMmap, area: AddrRange) -> Result<Self, TableError> {
        let mut a = Area {
            mem: mem.clone(),
            order: format.byte_order(),
            next: area.start,
            end: area.end,
        };
        let root = a.alloc(8 << format.index_bits(format.top_level()))?;
        Ok(X86Tables {
            format,
            area: a,
            root,
        })
    }

    /// The root table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The format.
    pub fn format(&self) -> &F {
        &self.format
    }

    /// The tables as the shared walker reads them.
    pub fn view(&self) -> Walker<'_, F, GuestMemoryMmap> {
        Walker::new(&self.format, &self.area.mem, self.root)
    }

    fn table_for(&mut self, level: u8, iova: u64) -> Result<u64, TableError> {
        let mut cur = self.format.top_level();
        let mut table = self.root;
        while cur > level {
            let ea = entry_addr(&self.format, cur, table, iova);
            table = match self.format.decode(cur, self.area.load(ea)?) {
                Decoded::Table { addr, .. } => addr,
                Decoded::Empty => {
                    let t = self.area.alloc(8 << self.format.index_bits(cur - 1))?;
                    self.area
                        .store(ea, self.format.encode_table(cur, t, Perm::RW))?;
                    t
                }
                _ => return Err(TableError::LeafInTheWay),
            };
            cur -= 1;
        }
        Ok(table)
    }

    /// Maps the page of `level`'s slot size at `iova` to `addr`.
    pub fn map_page(
        &mut self,
        level: u8,
        iova: u64,
        addr: u64,
        perm: Perm,
    ) -> Result<(), TableError> {
        let raw = self
            .format
            .encode_leaf(level, addr, perm)
            .ok_or(TableError::Unsupported)?;
        let table = self.table_for(level, iova)?;
        self.area
            .store(entry_addr(&self.format, level, table, iova), raw)
    }

    /// Clears the leaf mapping `iova` (page tables are kept, as Linux keeps them while the
    /// domain lives); returns its size, or `None` if nothing maps `iova`.
    pub fn unmap_leaf(&mut self, iova: u64) -> Result<Option<u64>, TableError> {
        let mut level = self.format.top_level();
        let mut table = self.root;
        loop {
            let ea = entry_addr(&self.format, level, table, iova);
            match self.format.decode(level, self.area.load(ea)?) {
                Decoded::Table {
                    addr, level: next, ..
                } if next < level => {
                    table = addr;
                    level = next;
                }
                Decoded::Leaf { size_log2, .. } => {
                    self.area.store(ea, 0)?;
                    return Ok(Some(1 << size_log2));
                }
                _ => return Ok(None),
            }
        }
    }
}

/// AMD-Vi v1 tables of a fixed depth, built like Linux's `iommu_v1_map_pages`.
#[derive(Clone, Debug)]
pub struct AmdTables {
    format: AmdV1Format,
    area: Area,
    root: u64,
}

impl AmdTables {
    /// `levels`-level tables (the DTE Mode) from `area` of `mem`.
    pub fn new(levels: u8, mem: &GuestMemoryMmap, area: AddrRange) -> Result<Self, TableError> {
        let format = AmdV1Format::new(levels).ok_or(TableError::Unsupported)?;
        let mut a = Area {
            mem: mem.clone(),
            order: ByteOrder::Little,
            next: area.start,
            end: area.end,
        };
        let root = a.alloc(4096)?;
        Ok(AmdTables {
            format,
            area: a,
            root,
        })
    }

    /// The root table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Levels (the DTE Mode).
    pub fn levels(&self) -> u8 {
        self.format.levels()
    }

    /// The tables as the shared walker reads them.
    pub fn view(&self) -> Walker<'_, AmdV1Format, GuestMemoryMmap> {
        Walker::new(&self.format, &self.area.mem, self.root)
    }

    fn table_for(&mut self, level: u8, iova: u64) -> Result<u64, TableError> {
        let mut table = self.root;
        let mut l = self.format.top_level();
        while l > level {
            let ea = entry_addr(&self.format, l, table, iova);
            let e = self.area.load(ea)?;
            table = if e & PTE_PR == 0 {
                let t = self.area.alloc(4096)?;
                let raw = self
                    .format
                    .encode_table_to(l, t, l - 1, Perm::RW)
                    .ok_or(TableError::Unsupported)?;
                self.area.store(ea, raw)?;
                t
            } else if matches!(self.format.decode(l, e), Decoded::Table { .. }) {
                e & PTE_ADDR_MASK
            } else {
                return Err(TableError::LeafInTheWay);
            };
            l -= 1;
        }
        Ok(table)
    }

    /// Level and slot count of a page of `size` bytes (a power of two ≥ 4 KiB).
    fn placement(size: u64) -> (u8, u64, u32) {
        let log2 = size.trailing_zeros();
        let level = ((log2 - 12) / 9) as u8;
        (level, 1u64 << ((log2 - 12) % 9), log2)
    }

    /// Maps one page of `size` bytes at `iova` to `gpa`: one entry per slot it covers.
    pub fn map(&mut self, iova: u64, gpa: u64, size: u64, perm: Perm) -> Result<(), TableError> {
        if !size.is_power_of_two() || size < 4096 {
            return Err(TableError::Unsupported);
        }
        let (level, count, log2) = Self::placement(size);
        let pte = self
            .format
            .encode_sized_leaf(level, gpa, log2, perm)
            .ok_or(TableError::Unsupported)?;
        let table = self.table_for(level, iova)?;
        let first = entry_addr(&self.format, level, table, iova);
        for i in 0..count {
            self.area.store(first + 8 * i, pte)?;
        }
        Ok(())
    }

    /// Clears the page mapping `iova` (every slot it covers); returns its size, or `None`.
    pub fn unmap_page(&mut self, iova: u64) -> Result<Option<u64>, TableError> {
        let Ok(leaf) = self.view().lookup(iova) else {
            return Ok(None);
        };
        let (level, count, _) = Self::placement(leaf.size);
        let table = self.table_for(level, leaf.iova)?;
        let first = entry_addr(&self.format, level, table, leaf.iova);
        for i in 0..count {
            self.area.store(first + 8 * i, 0)?;
        }
        Ok(Some(leaf.size))
    }
}

/// Splits `[iova, iova + len)` → `gpa` into the largest pages in `sizes` (a bitmap of
/// power-of-two page sizes) that alignment allows, as `iommu_pgsize` does.
pub fn split_pages(iova: u64, gpa: u64, len: u64, sizes: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < len {
        let (i, g, left) = (iova + off, gpa + off, len - off);
        let align = (i | g).trailing_zeros().min(63);
        let fit = 63 - left.leading_zeros();
        let m = align.min(fit);
        let allowed = sizes & if m >= 63 { u64::MAX } else { (2u64 << m) - 1 };
        let size = if allowed == 0 {
            4096
        } else {
            1u64 << (63 - allowed.leading_zeros())
        };
        out.push((i, g, size));
        off += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::testing::guest_memory;
    use viommu_vtd::SecondStage;

    #[test]
    fn page_splitting_follows_alignment() {
        let all = !0xfffu64;
        assert_eq!(
            split_pages(0x10000, 0x30000, 0x14000, all),
            vec![(0x10000, 0x30000, 0x10000), (0x20000, 0x40000, 0x4000)]
        );
        let vtd = (1 << 12) | (1 << 21) | (1 << 30);
        assert_eq!(split_pages(0x20_0000, 0x40_0000, 0x20_0000, vtd).len(), 1);
        assert_eq!(split_pages(0x20_0000, 0x41_0000, 0x20_0000, vtd).len(), 512);
    }

    #[test]
    fn tables_round_trip_through_the_walker() {
        let mem = guest_memory(&[(0, 16 << 20)]);
        let mut t = X86Tables::new(
            SecondStage::new(4, 48, false, true, true),
            &mem,
            AddrRange::new(0x10_0000, 0x80_0000),
        )
        .unwrap();
        t.map_page(1, 0x4000_0000, 0x20_0000, Perm::WRITE).unwrap();
        t.map_page(0, 0x1000, 0x5000, Perm::READ).unwrap();
        let l = t.view().lookup(0x4000_1234).unwrap();
        assert_eq!((l.addr, l.size, l.perm), (0x20_0000, 2 << 20, Perm::WRITE));
        assert_eq!(t.unmap_leaf(0x4000_1000), Ok(Some(2 << 20)));
        assert_eq!(t.unmap_leaf(0x4000_1000), Ok(None));
        assert!(t.view().lookup(0x1000).is_ok());

        let mut a = AmdTables::new(3, &mem, AddrRange::new(0x80_0000, 0x100_0000)).unwrap();
        a.map(0x10_0000, 0x40_0000, 0x10000, Perm::RW).unwrap();
        let l = a.view().lookup(0x10_f000).unwrap();
        assert_eq!((l.iova, l.addr, l.size), (0x10_0000, 0x40_0000, 0x10000));
        assert_eq!(a.unmap_page(0x10_8000), Ok(Some(0x10000)));
        assert!(a.view().lookup(0x10_0000).is_err());
        assert!(a.view().lookup(0x10_f000).is_err());
    }
}
