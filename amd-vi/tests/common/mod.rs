//! A guest driver for the tests, modelled on Linux's `drivers/iommu/amd` (anchors-x86 §3.2):
//! the same init order and register accesses, command queueing with a completion-wait
//! semaphore, event polling, and `iommu_v1_map_pages`-style page tables.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use viommu_amd_vi::pagetable::{AmdV1Format, PTE_PR};
use viommu_amd_vi::regs::{LEN_SHIFT, control, offset, status};
use viommu_amd_vi::{AmdVi, AmdViError, Command, Config, Dte, Event};
use viommu_shared::dma::{DmaFault, DmaRequest, DmaTranslate, DmaTranslation};
use viommu_shared::pt::PageTableFormat;
use viommu_shared::regs::{Msi, RecordingMsiSink};
use viommu_shared::testing::guest_memory;
use viommu_shared::{AddrRange, Perm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: 64 MiB at 0.
pub const RAM: u64 = 64 << 20;
/// Device table (2 MiB: 64 Ki entries).
pub const DEV_TAB: u64 = 0x20_0000;
/// Command buffer (512 entries).
pub const CMD_BUF: u64 = 0x40_0000;
/// Event log (512 entries).
pub const EVT_LOG: u64 = 0x40_2000;
/// Completion-wait semaphore.
pub const SEM: u64 = 0x40_4000;
/// Page-table pages are allocated from here.
pub const TABLES: (u64, u64) = (0x50_0000, 0x100_0000);
/// The IOMMU's MSI.
pub const MSI: Msi = Msi {
    address: 0xfee0_0000,
    data: 0x4041,
};

pub struct Guest {
    pub mem: GuestMemoryMmap,
    pub iommu: AmdVi,
    pub msi: Arc<RecordingMsiSink>,
    cmd_tail: u64,
    seq: u64,
    next_table: u64,
}

impl Guest {
    pub fn new(config: Config) -> Guest {
        let mem = guest_memory(&[(0, RAM as usize)]);
        let msi = Arc::new(RecordingMsiSink::new());
        let iommu = AmdVi::new(config, mem.clone(), msi.clone());
        iommu.set_msi(Some(MSI));
        Guest {
            mem,
            iommu,
            msi,
            cmd_tail: 0,
            seq: 0,
            next_table: TABLES.0,
        }
    }

    pub fn w32(&self, off: u64, v: u64) -> Result<(), AmdViError> {
        self.iommu.mmio_write(off, 4, v & 0xffff_ffff)
    }

    pub fn w64(&self, off: u64, v: u64) -> Result<(), AmdViError> {
        self.iommu.mmio_write(off, 8, v)
    }

    pub fn r32(&self, off: u64) -> u64 {
        self.iommu.mmio_read(off, 4)
    }

    pub fn r64(&self, off: u64) -> u64 {
        self.iommu.mmio_read(off, 8)
    }

    /// `iommu_feature_enable` / `iommu_feature_disable`: 64-bit read-modify-write.
    pub fn feature(&self, bits: u64, on: bool) -> Result<(), AmdViError> {
        let c = self.r64(offset::CONTROL);
        self.w64(offset::CONTROL, if on { c | bits } else { c & !bits })
    }

    /// `memcpy_toio` of a 64-bit base register, as two 32-bit writes, low half first.
    pub fn base(&self, off: u64, v: u64) -> Result<(), AmdViError> {
        self.w32(off, v)?;
        self.w32(off + 4, v >> 32)
    }

    /// `early_enable_iommu` + `amd_iommu_flush_all_caches` + `init_device_table_dma`.
    pub fn linux_init(&mut self) {
        // iommu_disable: each enable bit cleared by its own read-modify-write.
        for bit in [
            control::CMD_BUF_EN,
            control::EVENT_INT_EN,
            control::EVENT_LOG_EN,
            control::PPR_LOG_EN | control::PPR_INT_EN,
            control::IOMMU_EN,
        ] {
            self.feature(bit, false).unwrap();
        }
        assert_eq!(
            self.r32(offset::STATUS) & (status::CMD_BUF_RUN | status::EVENT_LOG_RUN),
            0
        );
        // init_device_table_dma: every entry valid with translation valid, Mode 0, no
        // IR/IW (DMA blocked until a domain is attached).
        let blocked = Dte::untranslated(0, Perm::empty());
        for devid in 0..0x1_0000u64 {
            blocked.write(&self.mem, DEV_TAB + devid * 32).unwrap();
        }
        // iommu_init_flags: coherent, invalidation timeout 1 s.
        self.feature(1 << 10, true).unwrap();
        let c = self.r64(offset::CONTROL);
        self.w64(offset::CONTROL, (c & !(7 << 5)) | (4 << 5))
            .unwrap();
        // iommu_set_device_table.
        self.base(offset::DEV_TAB_BASE, DEV_TAB | 0x1ff).unwrap();
        // iommu_enable_command_buffer + amd_iommu_reset_cmd_buffer.
        self.base(offset::CMD_BUF_BASE, CMD_BUF | (9 << LEN_SHIFT))
            .unwrap();
        self.feature(control::CMD_BUF_EN, false).unwrap();
        self.w32(offset::CMD_HEAD, 0).unwrap();
        self.w32(offset::CMD_TAIL, 0).unwrap();
        self.cmd_tail = 0;
        self.feature(control::CMD_BUF_EN, true).unwrap();
        // iommu_enable_event_buffer.
        self.base(offset::EVT_LOG_BASE, EVT_LOG | (9 << LEN_SHIFT))
            .unwrap();
        self.w32(offset::EVT_HEAD, 0).unwrap();
        self.w32(offset::EVT_TAIL, 0).unwrap();
        self.feature(control::EVENT_LOG_EN, true).unwrap();
        // iommu_enable + interrupts.
        self.feature(control::IOMMU_EN, true).unwrap();
        self.feature(control::EVENT_INT_EN, true).unwrap();
        let st = self.r32(offset::STATUS);
        assert_eq!(
            st & (status::CMD_BUF_RUN | status::EVENT_LOG_RUN),
            status::CMD_BUF_RUN | status::EVENT_LOG_RUN
        );
        // amd_iommu_flush_all_caches with IASup.
        self.queue(Command::InvalidateIommuAll).unwrap();
        self.completion_wait().unwrap();
    }

    /// Copies a command at the tail and writes TAIL (`__iommu_queue_command_sync`).
    pub fn queue(&mut self, cmd: Command) -> Result<(), AmdViError> {
        self.queue_raw(cmd.encode())
    }

    pub fn queue_raw(&mut self, raw: [u64; 2]) -> Result<(), AmdViError> {
        self.queue_raw_no_tail(raw);
        self.w32(offset::CMD_TAIL, self.cmd_tail)
    }

    /// Copies a command without writing TAIL (batching).
    pub fn queue_raw_no_tail(&mut self, raw: [u64; 2]) {
        let at = CMD_BUF + self.cmd_tail;
        self.mem
            .write_obj(raw[0].to_le(), GuestAddress(at))
            .unwrap();
        self.mem
            .write_obj(raw[1].to_le(), GuestAddress(at + 8))
            .unwrap();
        self.cmd_tail = (self.cmd_tail + 16) % 8192;
    }

    pub fn cmd_tail(&self) -> u64 {
        self.cmd_tail
    }

    /// `iommu_completion_wait`: COMPLETION_WAIT storing the next sequence number; the store
    /// must be visible when the TAIL write returns (Linux polls it with a timeout).
    pub fn completion_wait(&mut self) -> Result<(), AmdViError> {
        self.seq += 1;
        let r = self.queue(Command::CompletionWait {
            store: true,
            interrupt: false,
            fence: false,
            address: SEM,
            data: self.seq,
        });
        assert_eq!(self.sem(), self.seq, "Completion-Wait loop timed out");
        r
    }

    pub fn sem(&self) -> u64 {
        self.mem
            .load::<u64>(GuestAddress(SEM), Ordering::Acquire)
            .unwrap()
    }

    pub fn set_dte(&self, devid: u16, dte: Dte) {
        dte.write(&self.mem, DEV_TAB + u64::from(devid) * 32)
            .unwrap();
    }

    /// `device_flush_dte` + domain flush + completion wait (`do_attach`).
    pub fn attach(&mut self, devid: u16, dte: Dte) -> Result<(), AmdViError> {
        self.set_dte(devid, dte);
        let mut first = self.queue(Command::InvalidateDevtabEntry { device_id: devid });
        let flush = Command::invalidate_pages(dte.domain_id(), AddrRange::new(0, u64::MAX), true);
        first = first.and(self.queue(flush));
        first.and(self.completion_wait())
    }

    /// `amd_iommu_domain_flush_pages` for `range` with NpCache: naturally aligned
    /// power-of-two chunks, one INVALIDATE_IOMMU_PAGES each, then a completion wait.
    pub fn flush_pages(&mut self, domain: u16, range: AddrRange) -> Result<(), AmdViError> {
        let mut errors = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let align = if at == 0 { 63 } else { at.trailing_zeros() };
            let mut size_log2 = align.min(63 - (range.end - at).leading_zeros());
            size_log2 = size_log2.max(12);
            let len = 1u64 << size_log2;
            if let Err(e) = self.queue(Command::invalidate_pages(
                domain,
                AddrRange::from_len(at, len),
                false,
            )) {
                errors.push(e);
            }
            at += len;
        }
        if let Err(e) = self.completion_wait() {
            errors.push(e);
        }
        errors.into_iter().next().map_or(Ok(()), Err)
    }

    /// Reads and consumes the pending events (`iommu_poll_events`: decode, zero, HEAD).
    pub fn poll_events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        let mut head = self.r32(offset::EVT_HEAD);
        let tail = self.r32(offset::EVT_TAIL);
        let mut guard = 0;
        while head != tail && guard < 1024 {
            let at = EVT_LOG + head;
            let q0: u64 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let q1: u64 = self.mem.read_obj(GuestAddress(at + 8)).unwrap();
            out.push(Event::decode([u64::from_le(q0), u64::from_le(q1)]).expect("valid event"));
            self.mem.write_obj([0u64; 2], GuestAddress(at)).unwrap();
            head = (head + 16) % 8192;
            guard += 1;
        }
        self.w32(offset::EVT_HEAD, head).unwrap();
        out
    }

    /// Emulated DMA through the model, bypassing any cache.
    pub fn dma(&self, requester: u16, iova: u64, perm: Perm) -> Result<DmaTranslation, DmaFault> {
        self.iommu.translate(&DmaRequest {
            requester_id: u32::from(requester),
            pasid: None,
            iova,
            perm,
        })
    }

    /// Allocates a zeroed 4 KiB table page.
    pub fn alloc_table(&mut self) -> u64 {
        let t = self.next_table;
        assert!(t < TABLES.1, "table area exhausted");
        self.mem.write_slice(&[0u8; 4096], GuestAddress(t)).unwrap();
        self.next_table += 4096;
        t
    }

    pub fn new_tables(&mut self, levels: u8) -> PageTables {
        PageTables {
            fmt: AmdV1Format::new(levels).unwrap(),
            root: self.alloc_table(),
        }
    }

    pub fn load(&self, addr: u64) -> u64 {
        u64::from_le(self.mem.read_obj(GuestAddress(addr)).unwrap())
    }

    pub fn store(&self, addr: u64, v: u64) {
        self.mem.write_obj(v.to_le(), GuestAddress(addr)).unwrap();
    }
}

/// A v1 page table as Linux's `iommu_v1_map_pages` builds it: default NextLevel pointers,
/// one PTE for a level's default size, a NextLevel-7 run of PTEs for other sizes.
pub struct PageTables {
    pub fmt: AmdV1Format,
    pub root: u64,
}

impl PageTables {
    pub fn levels(&self) -> u8 {
        self.fmt.levels()
    }

    pub fn entry_addr(&self, table: u64, level: u8, iova: u64) -> u64 {
        table + ((iova >> self.fmt.level_shift(level)) & 0x1ff) * 8
    }

    /// The table at `level` covering `iova`, created with default pointers as needed.
    pub fn table_for(&self, g: &mut Guest, level: u8, iova: u64) -> u64 {
        let mut table = self.root;
        let mut l = self.fmt.top_level();
        while l > level {
            let ea = self.entry_addr(table, l, iova);
            let e = g.load(ea);
            table = if e & PTE_PR != 0 {
                e & 0x000f_ffff_ffff_f000
            } else {
                let t = g.alloc_table();
                g.store(ea, self.fmt.encode_table_to(l, t, l - 1, Perm::RW).unwrap());
                t
            };
            l -= 1;
        }
        table
    }

    /// Maps one page of `size` (a power of two ≥ 4 KiB) at `iova` to `gpa`.
    pub fn map(&self, g: &mut Guest, iova: u64, gpa: u64, size: u64, perm: Perm) {
        let log2 = size.trailing_zeros();
        let level = ((log2 - 12) / 9) as u8;
        let count = 1u64 << ((log2 - 12) % 9);
        let pte = self
            .fmt
            .encode_sized_leaf(level, gpa, log2, perm)
            .expect("encodable page");
        let table = self.table_for(g, level, iova);
        let first = self.entry_addr(table, level, iova);
        for i in 0..count {
            g.store(first + 8 * i, pte);
        }
    }

    /// Clears the PTEs of the page of `size` at `iova`.
    pub fn unmap(&self, g: &mut Guest, iova: u64, size: u64) {
        let log2 = size.trailing_zeros();
        let level = ((log2 - 12) / 9) as u8;
        let count = 1u64 << ((log2 - 12) % 9);
        let table = self.table_for(g, level, iova);
        let first = self.entry_addr(table, level, iova);
        for i in 0..count {
            g.store(first + 8 * i, 0);
        }
    }
}
