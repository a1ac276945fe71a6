//! Guest-side helpers for tests, scenarios, fuzzing and demos: encoders for every structure
//! the unit reads (root/context/PASID entries, invalidation descriptors) and a
//! [`GuestDriver`] that programs a [`Vtd`] through its registers the way Linux's
//! `intel_iommu` driver does (`anchors-x86.md` §3.1). The model itself never uses them.

use crate::error::VtdError;
use crate::model::Vtd;
use crate::regs::*;
use std::sync::atomic::Ordering;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Encoders of root, context and PASID-table entries.
pub mod entry {
    /// Legacy root entry: present, context table at `ctp`.
    pub fn root(ctp: u64) -> [u64; 2] {
        [ctp | 1, 0]
    }

    /// Legacy context entry: present, table `slptptr`, AW (1 = 3-level, 2 = 4-level,
    /// 3 = 5-level), domain `did`, translation type `tt` (0 translated, 1 with device-TLB,
    /// 2 pass-through), FPD.
    pub fn context(slptptr: u64, aw: u64, did: u16, tt: u64, fpd: bool) -> [u64; 2] {
        [
            slptptr | ((tt & 3) << 2) | (u64::from(fpd) << 1) | 1,
            (aw & 7) | (u64::from(did) << 8),
        ]
    }

    /// Scalable-mode root entry: context tables for devfn 0..127 and 128..255.
    pub fn sm_root(lower: Option<u64>, upper: Option<u64>) -> [u64; 2] {
        let half = |t: Option<u64>| t.map_or(0, |a| a | 1);
        [half(lower), half(upper)]
    }

    /// Scalable-mode context entry: present, PASID directory at `dir` with 2^(`pdts` + 7)
    /// entries, RID_PASID, PASID enable, FPD.
    pub fn sm_context(dir: u64, pdts: u64, rid_pasid: u32, paside: bool, fpd: bool) -> [u64; 4] {
        [
            dir | ((pdts & 7) << 9) | (u64::from(paside) << 3) | (u64::from(fpd) << 1) | 1,
            u64::from(rid_pasid & 0xf_ffff),
            0,
            0,
        ]
    }

    /// PASID directory entry: present, PASID table at `table`, FPD.
    pub fn pasid_dir(table: u64, fpd: bool) -> u64 {
        table | (u64::from(fpd) << 1) | 1
    }

    /// PASID entry with second-stage translation (PGTT = 010b).
    pub fn pasid_second_stage(ssptptr: u64, aw: u64, did: u16, fpd: bool) -> [u64; 8] {
        let mut e = [0; 8];
        e[0] = ssptptr | (0b010 << 6) | ((aw & 7) << 2) | (u64::from(fpd) << 1) | 1;
        e[1] = u64::from(did);
        e
    }

    /// PASID entry with pass-through (PGTT = 100b).
    pub fn pasid_pass_through(did: u16) -> [u64; 8] {
        let mut e = [0; 8];
        e[0] = (0b100 << 6) | 1;
        e[1] = u64::from(did);
        e
    }
}

/// Encoders of invalidation descriptors (low and high quadwords).
pub mod desc {
    /// Global context-cache invalidation.
    pub fn context_global() -> [u64; 2] {
        [1 | (1 << 4), 0]
    }

    /// Domain-selective context-cache invalidation.
    pub fn context_domain(did: u16) -> [u64; 2] {
        [1 | (2 << 4) | (u64::from(did) << 16), 0]
    }

    /// Device-selective context-cache invalidation.
    pub fn context_device(did: u16, sid: u16, fm: u8) -> [u64; 2] {
        [
            1 | (3 << 4)
                | (u64::from(did) << 16)
                | (u64::from(sid) << 32)
                | (u64::from(fm & 3) << 48),
            0,
        ]
    }

    /// Global IOTLB invalidation (with read/write draining, as Linux asks when CAP.DRD/DWD).
    pub fn iotlb_global() -> [u64; 2] {
        [2 | (1 << 4) | (3 << 6), 0]
    }

    /// Domain-selective IOTLB invalidation.
    pub fn iotlb_domain(did: u16) -> [u64; 2] {
        [2 | (2 << 4) | (3 << 6) | (u64::from(did) << 16), 0]
    }

    /// Page-selective IOTLB invalidation of 2^`am` pages at `addr`.
    pub fn iotlb_page(did: u16, addr: u64, am: u8, ih: bool) -> [u64; 2] {
        [
            2 | (3 << 4) | (3 << 6) | (u64::from(did) << 16),
            (addr & !0xfff) | (u64::from(ih) << 6) | u64::from(am & 0x3f),
        ]
    }

    /// Invalidation wait: write `data` at `status` (if given), interrupt if `interrupt`.
    pub fn wait(status: Option<(u64, u32)>, interrupt: bool) -> [u64; 2] {
        match status {
            Some((addr, data)) => [
                5 | (1 << 5) | (u64::from(interrupt) << 4) | (u64::from(data) << 32),
                addr,
            ],
            None => [5 | (u64::from(interrupt) << 4), 0],
        }
    }

    /// Global interrupt entry cache invalidation.
    pub fn iec_global() -> [u64; 2] {
        [4, 0]
    }

    /// Index-selective interrupt-entry-cache invalidation of the 2^`im` entries from
    /// `index` (low `im` bits ignored).
    pub fn iec_index(index: u16, im: u8) -> [u64; 2] {
        [
            4 | (1 << 4) | (u64::from(im & 0x1f) << 27) | (u64::from(index) << 32),
            0,
        ]
    }

    /// Device-TLB invalidation (needs ECAP.DT).
    pub fn device_tlb(sid: u16, addr: u64, size_bit: bool) -> [u64; 2] {
        [3 | (u64::from(sid) << 32), addr | u64::from(size_bit)]
    }

    /// PASID-based IOTLB invalidation: all of the PASID, or 2^am pages at an address
    /// (256-bit queues only).
    pub fn pasid_iotlb(did: u16, pasid: u32, page: Option<(u64, u8)>) -> [u64; 2] {
        let g = if page.is_some() { 3 } else { 2 };
        let hi = page.map_or(0, |(a, am)| (a & !0xfff) | u64::from(am & 0x3f));
        [
            6 | (g << 4) | (u64::from(did) << 16) | (u64::from(pasid & 0xf_ffff) << 32),
            hi,
        ]
    }

    /// PASID-cache invalidation: granularity 0 domain, 1 PASID, 3 global (256-bit queues
    /// only).
    pub fn pasid_cache(granularity: u8, did: u16, pasid: u32) -> [u64; 2] {
        [
            7 | (u64::from(granularity & 3) << 4)
                | (u64::from(did) << 16)
                | (u64::from(pasid & 0xf_ffff) << 32),
            0,
        ]
    }
}

/// Value Linux's `qi_submit_sync` waits for in the status word.
pub const QI_DONE: u32 = 2;

/// A Linux-like guest driver for one [`Vtd`]: keeps a GCMD shadow, allocates its structures
/// from a guest-memory area, runs a 256-entry invalidation queue with a wait descriptor after
/// every batch.
pub struct GuestDriver<'a> {
    vtd: &'a Vtd,
    mem: GuestMemoryMmap,
    next: u64,
    end: u64,
    gcmd: u64,
    queue: u64,
    wide: bool,
    tail: u64,
    status: u64,
    root: u64,
}

/// What [`GuestDriver`] reports when an operation did not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverError {
    /// The structure area is exhausted or guest memory could not be written.
    Memory,
    /// The unit returned a host error (the guest-visible operation completed).
    Host(VtdError),
    /// The wait descriptor did not complete: FSTS.IQE (with this IQH) or nothing.
    NotCompleted {
        /// FSTS after the attempt.
        fsts: u64,
        /// IQH after the attempt.
        iqh: u64,
    },
}

impl From<VtdError> for DriverError {
    fn from(e: VtdError) -> Self {
        DriverError::Host(e)
    }
}

impl<'a> GuestDriver<'a> {
    /// A driver allocating 4 KiB-aligned structures from `[area_start, area_end)` of `mem`.
    pub fn new(vtd: &'a Vtd, mem: GuestMemoryMmap, area_start: u64, area_end: u64) -> Self {
        GuestDriver {
            vtd,
            mem,
            next: area_start,
            end: area_end,
            gcmd: 0,
            queue: 0,
            wide: false,
            tail: 0,
            status: 0,
            root: 0,
        }
    }

    /// The unit.
    pub fn vtd(&self) -> &Vtd {
        self.vtd
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// A zeroed, 4 KiB-aligned allocation of `pages` pages.
    pub fn alloc(&mut self, pages: u64) -> Result<u64, DriverError> {
        let start = self.next.div_ceil(0x1000) * 0x1000;
        let end = start
            .checked_add(pages * 0x1000)
            .filter(|&e| e <= self.end)
            .ok_or(DriverError::Memory)?;
        let zeros = vec![0u8; (pages * 0x1000) as usize];
        self.mem
            .write_slice(&zeros, GuestAddress(start))
            .map_err(|_| DriverError::Memory)?;
        self.next = end;
        Ok(start)
    }

    /// Writes little-endian quadwords at `addr`.
    pub fn write(&self, addr: u64, qwords: &[u64]) -> Result<(), DriverError> {
        for (i, q) in qwords.iter().enumerate() {
            self.mem
                .write_obj(q.to_le(), GuestAddress(addr + 8 * i as u64))
                .map_err(|_| DriverError::Memory)?;
        }
        Ok(())
    }

    /// Reads a 32-bit register.
    pub fn read32(&self, offset: u64) -> u64 {
        self.vtd.mmio_read(offset, 4)
    }

    /// Sets or clears one GCMD bit (through the driver's GCMD shadow, as Linux does) and
    /// checks GSTS followed.
    pub fn gcmd(&mut self, bit: u64, on: bool) -> Result<(), DriverError> {
        if on {
            self.gcmd |= bit;
        } else {
            self.gcmd &= !bit;
        }
        // One-shot bits are never kept in the shadow.
        let value = self.gcmd | if on { bit } else { 0 };
        self.gcmd &= !(GCMD_SRTP | GCMD_SIRTP | GCMD_WBF);
        self.vtd.mmio_write(GCMD, 4, value)?;
        let sts = self.read32(GSTS);
        if (sts & bit != 0) != on {
            return Err(DriverError::NotCompleted {
                fsts: self.read32(FSTS),
                iqh: self.vtd.mmio_read(IQH, 8),
            });
        }
        Ok(())
    }

    /// Enables queued invalidation with a one-page queue (256 128-bit or 128 256-bit
    /// descriptors), as `__dmar_enable_qi`.
    pub fn enable_qi(&mut self, wide: bool) -> Result<(), DriverError> {
        self.queue = self.alloc(1)?;
        self.status = self.alloc(1)?;
        self.wide = wide;
        self.tail = 0;
        self.vtd.mmio_write(IQT, 8, 0)?;
        self.vtd
            .mmio_write(IQA, 8, self.queue | if wide { IQA_DW } else { 0 })?;
        self.gcmd(GCMD_QIE, true)
    }

    fn entries(&self) -> u64 {
        if self.wide { 128 } else { 256 }
    }

    fn shift(&self) -> u64 {
        if self.wide { 5 } else { 4 }
    }

    /// Writes descriptors at the tail without moving IQT; returns the index after them.
    pub fn queue_descriptors(&mut self, descs: &[[u64; 2]]) -> Result<u64, DriverError> {
        for d in descs {
            let slot = self.queue + (self.tail << self.shift());
            let mut q = vec![d[0], d[1]];
            if self.wide {
                q.extend([0, 0]);
            }
            self.write(slot, &q)?;
            self.tail = (self.tail + 1) % self.entries();
        }
        Ok(self.tail)
    }

    /// Moves IQT to the current tail.
    pub fn ring(&mut self) -> Result<(), VtdError> {
        self.vtd.mmio_write(IQT, 8, self.tail << self.shift())
    }

    /// `qi_submit_sync`: queues `descs` plus a wait descriptor writing [`QI_DONE`] to the
    /// status word, rings, and checks the status word. A host error is returned after the
    /// guest-visible completion.
    pub fn submit(&mut self, descs: &[[u64; 2]]) -> Result<(), DriverError> {
        self.mem
            .store(0u32, GuestAddress(self.status), Ordering::Release)
            .map_err(|_| DriverError::Memory)?;
        let mut all = descs.to_vec();
        all.push(desc::wait(Some((self.status, QI_DONE)), false));
        self.queue_descriptors(&all)?;
        let host = self.ring();
        let done: u32 = self
            .mem
            .load(GuestAddress(self.status), Ordering::Acquire)
            .map_err(|_| DriverError::Memory)?;
        if done != QI_DONE {
            return Err(DriverError::NotCompleted {
                fsts: self.read32(FSTS),
                iqh: self.vtd.mmio_read(IQH, 8),
            });
        }
        host.map_err(DriverError::Host)
    }

    /// Allocates a root table, programs RTADDR (TTM scalable if asked), SRTP. With ESRTPS no
    /// flush is needed afterwards.
    pub fn set_root_table(&mut self, scalable: bool) -> Result<u64, DriverError> {
        self.root = self.alloc(1)?;
        let ttm = if scalable { RTADDR_TTM_SCALABLE } else { 0 };
        self.vtd.mmio_write(RTADDR, 8, self.root | ttm)?;
        self.gcmd(GCMD_SRTP, true)?;
        Ok(self.root)
    }

    /// The root table allocated by [`set_root_table`](Self::set_root_table).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Writes the legacy context entry of `sid` (allocating the bus's context table and root
    /// entry on first use). No invalidation is sent.
    pub fn write_context(&mut self, sid: u16, ctx: [u64; 2]) -> Result<u64, DriverError> {
        let table = self.context_table(sid, 16)?;
        let addr = table + u64::from(sid & 0xff) * 16;
        self.write(addr, &ctx)?;
        Ok(addr)
    }

    /// Writes the scalable-mode context entry of `sid`.
    pub fn write_sm_context(&mut self, sid: u16, ctx: [u64; 4]) -> Result<u64, DriverError> {
        let table = self.context_table(sid, 32)?;
        let addr = table + u64::from(sid & 0x7f) * 32;
        self.write(addr, &ctx)?;
        Ok(addr)
    }

    fn context_table(&mut self, sid: u16, entry_size: u64) -> Result<u64, DriverError> {
        let bus = u64::from(sid >> 8);
        let root_slot = self.root + bus * 16;
        let mut buf = [0u64; 2];
        for (i, q) in buf.iter_mut().enumerate() {
            let v: u64 = self
                .mem
                .read_obj(GuestAddress(root_slot + 8 * i as u64))
                .map_err(|_| DriverError::Memory)?;
            *q = u64::from_le(v);
        }
        let upper = entry_size == 32 && sid & 0x80 != 0;
        let half = if upper { buf[1] } else { buf[0] };
        if half & 1 != 0 {
            return Ok(half & !0xfff);
        }
        let table = self.alloc(1)?;
        if upper {
            buf[1] = table | 1;
        } else {
            buf[0] = table | 1;
        }
        self.write(root_slot, &buf)?;
        Ok(table)
    }

    /// Linux's caching-mode attach flush (`context_present_cache_flush`): device-selective
    /// context-cache invalidation with DID 0, then a domain-selective IOTLB flush.
    pub fn flush_context_present(&mut self, sid: u16, did: u16) -> Result<(), DriverError> {
        self.submit(&[desc::context_device(0, sid, 0), desc::iotlb_domain(did)])
    }

    /// `iommu_flush_iotlb_psi` for `[iova, iova + size)` in `did`: a page-selective
    /// invalidation with AM = log2 of the power-of-two-rounded page count, widened until the
    /// aligned block covers the range; a domain-selective one beyond MAMV, as Linux does.
    pub fn flush_range(
        &mut self,
        did: u16,
        iova: u64,
        size: u64,
        ih: bool,
    ) -> Result<(), DriverError> {
        let pages = size.div_ceil(0x1000).max(1);
        let mut am = u64::from(pages.next_power_of_two().trailing_zeros());
        while am <= crate::caps::MAMV {
            let block = 1u64 << (12 + am);
            if (iova & !(block - 1)).saturating_add(block) >= iova.saturating_add(size) {
                break;
            }
            am += 1;
        }
        if am > crate::caps::MAMV {
            return self.submit(&[desc::iotlb_domain(did)]);
        }
        self.submit(&[desc::iotlb_page(did, iova, am as u8, ih)])
    }

    /// Linux's interrupt-remapping bring-up (`iommu_set_irq_remapping` +
    /// `iommu_enable_irq_remapping`, anchors-x86.md §3.1 step 2): allocates a 65536-entry
    /// table (1 MiB), IRTA = table | EIME (if `x2apic`) | S = 0xf, SIRTP, a global IEC unless
    /// CAP.ESIRTPS, IRE, and CFI cleared if CFIS reads set. Queued invalidation must be on.
    /// Returns the table address.
    pub fn enable_interrupt_remapping(&mut self, x2apic: bool) -> Result<u64, DriverError> {
        let table = self.alloc(256)?;
        let eime = if x2apic { crate::irte::IRTA_EIME } else { 0 };
        self.vtd.mmio_write(IRTA, 8, table | eime | 0xf)?;
        self.gcmd(GCMD_SIRTP, true)?;
        if self.vtd.cap() & crate::caps::CAP_ESIRTPS == 0 {
            self.submit(&[desc::iec_global()])?;
        }
        self.gcmd(GCMD_IRE, true)?;
        if self.read32(GSTS) & GCMD_CFI != 0 {
            self.gcmd(GCMD_CFI, false)?;
        }
        Ok(table)
    }

    /// `modify_irte`: writes 128-bit entry `index` of the table at `table`, then
    /// `qi_flush_iec(index, 0)` and a wait.
    pub fn write_irte(
        &mut self,
        table: u64,
        index: u16,
        irte: [u64; 2],
    ) -> Result<(), DriverError> {
        self.write(table + u64::from(index) * 16, &irte)?;
        self.submit(&[desc::iec_index(index, 0)])
    }

    /// Programs the fault event interrupt and unmasks it (`dmar_set_interrupt`).
    pub fn enable_fault_interrupt(&mut self, address: u64, data: u32) -> Result<(), DriverError> {
        self.vtd.mmio_write(FEDATA, 4, u64::from(data))?;
        self.vtd.mmio_write(FEADDR, 4, address & 0xffff_ffff)?;
        self.vtd.mmio_write(FEUADDR, 4, address >> 32)?;
        self.vtd.mmio_write(FECTL, 4, 0)?;
        Ok(())
    }

    /// `dmar_fault`: reads and acknowledges every pending record from FSTS.FRI on, then
    /// clears PFO/PPF/PRO; returns (source id, reason, page address, is_read) per record.
    pub fn service_faults(&mut self) -> Result<Vec<(u16, u8, u64, bool)>, DriverError> {
        let mut out = Vec::new();
        let fsts = self.read32(FSTS);
        if fsts & FSTS_PPF == 0 {
            return Ok(out);
        }
        let cap = self.vtd.mmio_read(CAP, 8);
        let nfr = ((cap >> 40) & 0xff) + 1;
        let fro = ((cap >> 24) & 0x3ff) * 16;
        let mut index = (fsts >> 8) & 0xff;
        for _ in 0..nfr {
            let reg = fro + index * 16;
            let d3 = self.vtd.mmio_read(reg + 12, 4);
            if d3 & (1 << 31) == 0 {
                break;
            }
            let d2 = self.vtd.mmio_read(reg + 8, 4);
            let addr = self.vtd.mmio_read(reg, 8);
            out.push((d2 as u16, d3 as u8, addr & !0xfff, d3 & (1 << 30) != 0));
            self.vtd.mmio_write(reg + 12, 4, 1 << 31)?;
            index = (index + 1) % nfr;
        }
        self.vtd
            .mmio_write(FSTS, 4, FSTS_PFO | FSTS_PPF | (1 << 7))?;
        Ok(out)
    }
}
