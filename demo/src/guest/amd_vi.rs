//! AMD-Vi driven like Linux's `drivers/iommu/amd` with NpCache (`anchors-x86.md` §3.2):
//! `early_enable_iommu`, blocking device-table entries, the command buffer with a
//! completion-wait semaphore, a 3-level v1 domain with pages of every power-of-two size, and
//! INVALIDATE_IOMMU_PAGES (naturally aligned chunks) after every map and every unmap.

use crate::baseline::PerLeafShadow;
use crate::dma_api::{DomainOutcome, Exhaustion, IommuDomain, MapFailed, Stopwatch, host_lacks};
use crate::error::DemoError;
use crate::host::HostHandle;
use crate::layout::{RAM, TABLES};
use crate::pages::PageMap;
use crate::report::RunReport;
use crate::run::{RunConfig, Strategy, drive};
use crate::tables::{AmdTables, split_pages};
use crate::workload::{Direction, Segment};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use viommu_amd_vi::regs::{LEN_SHIFT, control, offset, status};
use viommu_amd_vi::{AmdVi, AmdViError, Command, Config, Dte, invalidation_range};
use viommu_shared::regs::{Msi, NullMsiSink};
use viommu_shared::{AddrRange, Perm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MODEL: &str = "AMD-Vi";
/// The passthrough device: 00:04.0.
pub const DEVID: u16 = 0x0020;
/// Its domain id.
pub const DOMAIN_ID: u16 = 1;
/// Device table (64 Ki entries, 2 MiB).
const DEV_TAB: u64 = 0x20_0000;
/// Command buffer (512 entries).
const CMD_BUF: u64 = 0x40_0000;
/// Event log (512 entries).
const EVT_LOG: u64 = 0x40_2000;
/// Completion-wait semaphore.
const SEM: u64 = 0x40_4000;
/// Linux's v1 page sizes: every power of two from 4 KiB, except 512 GiB.
const PAGE_SIZES: u64 = !0xfff & !(1 << 39);
/// Levels of the domain (Linux starts at 3 and grows on demand; the DMA window is below
/// 4 GiB, so it never grows here).
const LEVELS: u8 = 3;
/// The input range of a 3-level domain.
const DOMAIN: AddrRange = AddrRange::new(0, 1 << 39);

fn e<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> DemoError {
    move |err| DemoError::setup(MODEL, what, err)
}

/// The guest's driver state for one AMD-Vi unit.
pub struct AmdDriver<'a> {
    iommu: &'a AmdVi,
    mem: GuestMemoryMmap,
    cmd_tail: u64,
    seq: u64,
    /// Commands whose tail write returned a host error (already counted by the model).
    pub host_errors: u64,
    /// Completion waits whose semaphore was not written.
    pub wait_timeouts: u64,
}

impl<'a> AmdDriver<'a> {
    /// A driver for `iommu` over `mem`.
    pub fn new(iommu: &'a AmdVi, mem: &GuestMemoryMmap) -> Self {
        AmdDriver {
            iommu,
            mem: mem.clone(),
            cmd_tail: 0,
            seq: 0,
            host_errors: 0,
            wait_timeouts: 0,
        }
    }

    fn w32(&self, off: u64, v: u64) -> Result<(), AmdViError> {
        self.iommu.mmio_write(off, 4, v & 0xffff_ffff)
    }

    /// `iommu_feature_enable` / `iommu_feature_disable`: 64-bit read-modify-write.
    fn feature(&self, bits: u64, on: bool) -> Result<(), AmdViError> {
        let c = self.iommu.mmio_read(offset::CONTROL, 8);
        self.iommu
            .mmio_write(offset::CONTROL, 8, if on { c | bits } else { c & !bits })
    }

    /// `memcpy_toio` of a 64-bit base register: two 32-bit writes, low half first.
    fn base(&self, off: u64, v: u64) -> Result<(), AmdViError> {
        self.w32(off, v)?;
        self.w32(off + 4, v >> 32)
    }

    /// `early_enable_iommu` + `init_device_table_dma` + `amd_iommu_flush_all_caches`.
    pub fn init(&mut self) -> Result<(), DemoError> {
        for bit in [
            control::CMD_BUF_EN,
            control::EVENT_INT_EN,
            control::EVENT_LOG_EN,
            control::PPR_LOG_EN | control::PPR_INT_EN,
            control::IOMMU_EN,
        ] {
            self.feature(bit, false).map_err(e("disable"))?;
        }
        // Every entry valid, translation valid, Mode 0, no IR/IW: DMA blocked until a
        // domain is attached.
        let blocked = Dte::untranslated(0, Perm::empty());
        for devid in 0..0x1_0000u64 {
            blocked
                .write(&self.mem, DEV_TAB + devid * 32)
                .map_err(e("device table"))?;
        }
        self.feature(1 << 10, true).map_err(e("coherent"))?;
        let c = self.iommu.mmio_read(offset::CONTROL, 8);
        self.iommu
            .mmio_write(offset::CONTROL, 8, (c & !(7 << 5)) | (4 << 5))
            .map_err(e("invalidation timeout"))?;
        self.base(offset::DEV_TAB_BASE, DEV_TAB | 0x1ff)
            .map_err(e("device table base"))?;
        self.base(offset::CMD_BUF_BASE, CMD_BUF | (9 << LEN_SHIFT))
            .map_err(e("command buffer base"))?;
        self.feature(control::CMD_BUF_EN, false)
            .map_err(e("command buffer"))?;
        self.w32(offset::CMD_HEAD, 0).map_err(e("command head"))?;
        self.w32(offset::CMD_TAIL, 0).map_err(e("command tail"))?;
        self.cmd_tail = 0;
        self.feature(control::CMD_BUF_EN, true)
            .map_err(e("command buffer"))?;
        self.base(offset::EVT_LOG_BASE, EVT_LOG | (9 << LEN_SHIFT))
            .map_err(e("event log base"))?;
        self.w32(offset::EVT_HEAD, 0).map_err(e("event head"))?;
        self.w32(offset::EVT_TAIL, 0).map_err(e("event tail"))?;
        self.feature(control::EVENT_LOG_EN, true)
            .map_err(e("event log"))?;
        self.feature(control::IOMMU_EN, true).map_err(e("enable"))?;
        self.feature(control::EVENT_INT_EN, true)
            .map_err(e("event interrupt"))?;
        let st = self.iommu.mmio_read(offset::STATUS, 4);
        let run = status::CMD_BUF_RUN | status::EVENT_LOG_RUN;
        if st & run != run {
            return Err(DemoError::setup(MODEL, "status after enable", st));
        }
        let _ = self.queue(Command::InvalidateIommuAll);
        if !self.completion_wait() {
            return Err(DemoError::setup(
                MODEL,
                "flush all caches",
                self.wait_timeouts,
            ));
        }
        Ok(())
    }

    /// Copies a command at the tail and writes TAIL (`__iommu_queue_command_sync`); returns
    /// the host error the model reported for it (the guest-visible side completed anyway).
    pub fn queue(&mut self, cmd: Command) -> Option<AmdViError> {
        let [lo, hi] = cmd.encode();
        let at = CMD_BUF + self.cmd_tail;
        let stored = self
            .mem
            .write_obj(lo.to_le(), GuestAddress(at))
            .and_then(|()| self.mem.write_obj(hi.to_le(), GuestAddress(at + 8)));
        if stored.is_err() {
            self.wait_timeouts += 1;
            return None;
        }
        self.cmd_tail = (self.cmd_tail + 16) % 8192;
        let r = self.w32(offset::CMD_TAIL, self.cmd_tail).err();
        if r.is_some() {
            self.host_errors += 1;
        }
        r
    }

    /// `iommu_completion_wait`: COMPLETION_WAIT storing the next sequence number; returns
    /// whether the semaphore holds it when the tail write returns.
    pub fn completion_wait(&mut self) -> bool {
        self.seq += 1;
        let _ = self.queue(Command::CompletionWait {
            store: true,
            interrupt: false,
            fence: false,
            address: SEM,
            data: self.seq,
        });
        let done = self
            .mem
            .load::<u64>(GuestAddress(SEM), Ordering::Acquire)
            .is_ok_and(|v| v == self.seq);
        if !done {
            self.wait_timeouts += 1;
        }
        done
    }
}

/// The guest's AMD-Vi domain with the passthrough device attached.
pub struct AmdDomain<'a> {
    drv: AmdDriver<'a>,
    tables: AmdTables,
    host: HostHandle,
    baseline: Option<PerLeafShadow<HostHandle>>,
    invalidations: u64,
    global_flushes: u64,
    exhaustion: Exhaustion,
    enospc_pending: bool,
}

impl<'a> AmdDomain<'a> {
    /// Brings `iommu` up as Linux does and attaches `DEVID` to a fresh domain (the VMM
    /// attached its host before the guest booted: with the IOMMU off, guest RAM identity).
    pub fn boot(
        iommu: &'a AmdVi,
        mem: &GuestMemoryMmap,
        host: HostHandle,
        strategy: Strategy,
    ) -> Result<Self, DemoError> {
        iommu.set_msi(Some(Msi {
            address: 0xfee0_0000,
            data: 0x4041,
        }));
        let mut baseline = None;
        let mut attach_errors = 0;
        match strategy {
            // A host too small for guest RAM: the device stays attached, partly mapped; the
            // guest's blocking entries free everything at init.
            Strategy::Viommu => match iommu.attach_host(DEVID, Box::new(host.clone())) {
                Ok(()) => {}
                Err(AmdViError::HostOutOfResources { .. }) => attach_errors += 1,
                Err(e) => return Err(DemoError::setup(MODEL, "attach_host", e)),
            },
            Strategy::PerLeaf => {
                let mut b = PerLeafShadow::new(host.clone());
                b.map_system_memory(AddrRange::new(0, RAM));
                baseline = Some(b);
            }
        }
        let mut drv = AmdDriver::new(iommu, mem);
        drv.host_errors += attach_errors;
        drv.init()?;
        let tables = AmdTables::new(LEVELS, mem, TABLES)
            .map_err(|e| DemoError::setup(MODEL, "allocate domain tables", e))?;
        let mut d = AmdDomain {
            drv,
            tables,
            host,
            baseline,
            invalidations: 0,
            global_flushes: 0,
            exhaustion: Exhaustion::default(),
            enospc_pending: false,
        };
        // `do_attach`: DTE, INVALIDATE_DEVTAB_ENTRY, domain flush, completion wait.
        let dte = Dte::translated(DOMAIN_ID, d.tables.root(), LEVELS, Perm::RW);
        dte.write(&d.drv.mem, DEV_TAB + u64::from(DEVID) * 32)
            .map_err(|e| DemoError::setup(MODEL, "device table entry", e))?;
        d.drv
            .queue(Command::InvalidateDevtabEntry { device_id: DEVID });
        if let Some(b) = &mut d.baseline {
            // QEMU switches the device to its translated region: the system-memory view goes,
            // the domain is synced in full.
            b.unmap_system_memory();
            b.sync(&d.tables.view(), DOMAIN);
        }
        d.flush_range(AddrRange::new(0, u64::MAX), true);
        if d.drv.wait_timeouts > 0 {
            return Err(DemoError::setup(MODEL, "attach", d.drv.wait_timeouts));
        }
        Ok(d)
    }

    /// `amd_iommu_domain_flush_pages`: one INVALIDATE_IOMMU_PAGES per naturally aligned
    /// power-of-two chunk, then a completion wait. The whole space is one command.
    fn flush_range(&mut self, range: AddrRange, pde: bool) {
        let mut chunks = Vec::new();
        if range.end == u64::MAX || range.len() >= DOMAIN.len() {
            self.global_flushes += 1;
            chunks.push(AddrRange::new(0, u64::MAX));
        } else {
            let mut at = range.start;
            while at < range.end {
                let align = if at == 0 { 63 } else { at.trailing_zeros() };
                let fit = 63 - (range.end - at).leading_zeros();
                let len = 1u64 << align.min(fit).max(12);
                chunks.push(AddrRange::from_len(at, len));
                at += len;
            }
        }
        let before = self.host.with(|h| h.stats().out_of_resources);
        for c in chunks {
            let cmd = Command::invalidate_pages(DOMAIN_ID, c, pde);
            self.invalidations += 1;
            let _ = self.drv.queue(cmd);
            if let Some(b) = &mut self.baseline {
                // QEMU syncs what each command covers.
                let covered = match cmd {
                    Command::InvalidateIommuPages { address, size, .. } => {
                        invalidation_range(address, size)
                    }
                    _ => c,
                };
                b.sync(&self.tables.view(), covered.intersect(&DOMAIN));
            }
        }
        self.drv.completion_wait();
        if self.host.with(|h| h.stats().out_of_resources) > before {
            // Whether the strategy recovered is checked by `settle`, outside the timing.
            self.enospc_pending = true;
        }
    }
}

impl IommuDomain for AmdDomain<'_> {
    fn iova_window(&self) -> AddrRange {
        AddrRange::new(0x1000, 0xfee0_0000)
    }

    fn lazy_unmap(&self) -> bool {
        // NpCache: "Using strict mode due to virtualization".
        false
    }

    fn perm(&self, dir: Direction) -> Perm {
        match dir {
            Direction::ToDevice => Perm::READ,
            Direction::FromDevice => Perm::WRITE,
        }
    }

    fn map(&mut self, iova: u64, segments: &[Segment], perm: Perm) -> Result<(), MapFailed> {
        let mut at = iova;
        for s in segments {
            for (i, g, size) in split_pages(at, s.gpa, s.len, PAGE_SIZES) {
                self.tables.map(i, g, size, perm).map_err(|_| MapFailed)?;
            }
            at += s.len;
        }
        self.flush_range(AddrRange::new(iova, at), false);
        Ok(())
    }

    fn unmap(&mut self, iova: u64, len: u64, sync: bool) {
        let mut off = 0;
        while off < len {
            off += match self.tables.unmap_page(iova + off) {
                Ok(Some(size)) => size,
                _ => 4096,
            };
        }
        if sync {
            self.flush_range(AddrRange::from_len(iova, len), false);
        }
    }

    fn flush_all(&mut self) {
        self.flush_range(AddrRange::new(0, u64::MAX), true);
    }

    fn settle(&mut self) {
        if std::mem::take(&mut self.enospc_pending) {
            let lost = host_lacks(&self.guest_pages(), &self.host);
            self.exhaustion.record(lost);
        }
    }

    fn guest_pages(&self) -> PageMap {
        PageMap::of_view(&self.tables.view(), DOMAIN)
    }

    fn host(&self) -> &HostHandle {
        &self.host
    }

    fn outcome(&self) -> DomainOutcome {
        let st = self.drv.iommu.stats();
        let mut o = DomainOutcome {
            invalidations: self.invalidations,
            global_flushes: self.global_flushes,
            iommu_faults: st.events_logged + st.events_dropped,
            model_errors: self.drv.host_errors,
            ..DomainOutcome::default()
        };
        self.exhaustion.fill(&mut o);
        match &self.baseline {
            None => {
                o.resolution = "reclaim every shadowed space, retry; a typed \
                                HostOutOfResources to the VMM if it still fails"
                    .into();
                if st.host_reclaims > 0 {
                    o.notes.push(format!(
                        "model counters: {} reclaims, {} syncs still out of resources",
                        st.host_reclaims, st.host_out_of_resources
                    ));
                }
            }
            Some(b) => {
                let s = b.stats();
                o.resolution =
                    "none: QEMU logs the failed VFIO_MAP_DMA and drops the mapping".into();
                if s.dropped_pages > 0 {
                    o.notes.push(format!(
                        "{} guest pages never reached the host",
                        s.dropped_pages
                    ));
                }
            }
        }
        if self.drv.wait_timeouts > 0 {
            o.notes.push(format!(
                "{} completion waits timed out",
                self.drv.wait_timeouts
            ));
        }
        o
    }

    fn teardown(&mut self) -> Result<(), String> {
        match &mut self.baseline {
            Some(b) => {
                b.teardown();
                Ok(())
            }
            None => self.drv.iommu.detach_host(DEVID).map_err(|e| e.to_string()),
        }
    }
}

/// One AMD-Vi run.
pub fn run(
    cfg: &RunConfig,
    mem: GuestMemoryMmap,
    host: HostHandle,
) -> Result<RunReport, DemoError> {
    let mut clock = Stopwatch::default();
    let iommu = clock.time(|| AmdVi::new(Config::default(), mem.clone(), Arc::new(NullMsiSink)));
    let mut domain = clock.time(|| AmdDomain::boot(&iommu, &mem, host, cfg.strategy))?;
    Ok(drive(&mut domain, cfg, clock))
}
