//! Intel VT-d driven like Linux's `intel_iommu` under caching mode (`anchors-x86.md` §3.1):
//! queued invalidation, legacy root/context tables, a 4-level second-stage domain, the
//! caching-mode attach flush, superpages where IOVA and address are 2 MiB aligned, a
//! page-selective invalidation after every map and (strict mode) every unmap.

use crate::baseline::PerLeafShadow;
use crate::dma_api::{DomainOutcome, Exhaustion, IommuDomain, MapFailed, Stopwatch, host_lacks};
use crate::error::DemoError;
use crate::host::HostHandle;
use crate::layout::{RAM, STRUCTS, TABLES};
use crate::pages::PageMap;
use crate::report::RunReport;
use crate::run::{RunConfig, Strategy, drive};
use crate::tables::{X86Tables, split_pages};
use crate::workload::{Direction, Segment};
use std::sync::Arc;
use viommu_shared::regs::NullMsiSink;
use viommu_shared::{AddrRange, Perm};
use viommu_vtd::regs::GCMD_TE;
use viommu_vtd::testing::{DriverError, GuestDriver, desc, entry};
use viommu_vtd::{Config, SecondStage, Vtd, VtdError};
use vm_memory::GuestMemoryMmap;

const MODEL: &str = "VT-d";
/// The passthrough device: 00:05.0.
pub const SID: u16 = 0x0028;
/// Its domain id.
pub const DID: u16 = 2;
/// Page sizes Linux uses with CAP.SLLPS = 2 MiB | 1 GiB.
const PAGE_SIZES: u64 = (1 << 12) | (1 << 21) | (1 << 30);
/// Input width of a 4-level (AW = 2) domain.
const DOMAIN: AddrRange = AddrRange::new(0, 1 << 48);
/// The interrupt window, which Linux reserves in every DMA domain.
const MSI_WINDOW_START: u64 = 0xfee0_0000;

/// The 4-level second-stage format of a legacy context with AW = 2.
pub fn format() -> SecondStage {
    SecondStage::new(4, 48, false, true, true)
}

/// The range a page-selective invalidation of `[iova, iova + size)` covers (the aligned
/// block `GuestDriver::flush_range` asks for), or the whole domain beyond MAMV.
pub fn psi_block(iova: u64, size: u64) -> AddrRange {
    let pages = size.div_ceil(4096).max(1);
    let mut am = u64::from(pages.next_power_of_two().trailing_zeros());
    while am <= viommu_vtd::caps::MAMV {
        let block = 1u64 << (12 + am);
        let start = iova & !(block - 1);
        if start.saturating_add(block) >= iova.saturating_add(size) {
            return AddrRange::from_len(start, block);
        }
        am += 1;
    }
    DOMAIN
}

/// The guest's VT-d domain with the passthrough device attached.
pub struct VtdDomain<'a> {
    vtd: &'a Vtd,
    drv: GuestDriver<'a>,
    tables: X86Tables<SecondStage>,
    host: HostHandle,
    baseline: Option<PerLeafShadow<HostHandle>>,
    invalidations: u64,
    global_flushes: u64,
    model_errors: u64,
    queue_errors: u64,
    exhaustion: Exhaustion,
    enospc_pending: bool,
}

fn step(what: &'static str) -> impl Fn(DriverError) -> DemoError {
    move |e| DemoError::setup(MODEL, what, e)
}

impl<'a> VtdDomain<'a> {
    /// Boots `vtd` the way Linux does and attaches the passthrough device `SID` to a fresh
    /// domain. With [`Strategy::Viommu`] the VMM attached the device's host before the guest
    /// booted (its space is then guest RAM, identity); with [`Strategy::PerLeaf`] VFIO maps
    /// RAM through its memory listener until translation is enabled.
    pub fn boot(
        vtd: &'a Vtd,
        mem: &GuestMemoryMmap,
        host: HostHandle,
        strategy: Strategy,
    ) -> Result<Self, DemoError> {
        let mut baseline = None;
        let mut model_errors = 0;
        match strategy {
            // A host too small for guest RAM: the device stays attached, partly mapped, and
            // the next invalidations retry (the error is the VMM's to log).
            Strategy::Viommu => match vtd.attach_host(u32::from(SID), Box::new(host.clone())) {
                Ok(()) => {}
                Err(VtdError::HostOutOfResources { .. }) => model_errors += 1,
                Err(e) => return Err(DemoError::setup(MODEL, "attach_host", e)),
            },
            Strategy::PerLeaf => {
                let mut b = PerLeafShadow::new(host.clone());
                b.map_system_memory(AddrRange::new(0, RAM));
                baseline = Some(b);
            }
        }
        let mut drv = GuestDriver::new(vtd, mem.clone(), STRUCTS.start, STRUCTS.end);
        drv.enable_qi(false)
            .map_err(step("enable queued invalidation"))?;
        drv.set_root_table(false).map_err(step("set root table"))?;
        drv.enable_fault_interrupt(0xfee0_0000, 0x41)
            .map_err(step("fault interrupt"))?;
        let tables = X86Tables::new(format(), mem, TABLES)
            .map_err(|e| DemoError::setup(MODEL, "allocate domain tables", e))?;
        drv.write_context(SID, entry::context(tables.root(), 2, DID, 0, false))
            .map_err(step("context entry"))?;
        drv.flush_context_present(SID, DID)
            .map_err(step("context-present flush"))?;
        drv.gcmd(GCMD_TE, true)
            .map_err(step("enable translation"))?;
        if let Some(b) = &mut baseline {
            // Translation on: QEMU drops the system-memory view and replays the domain.
            b.unmap_system_memory();
            b.sync(&tables.view(), DOMAIN);
        }
        Ok(VtdDomain {
            vtd,
            drv,
            tables,
            host,
            baseline,
            invalidations: 1,
            global_flushes: 1,
            model_errors,
            queue_errors: 0,
            exhaustion: Exhaustion::default(),
            enospc_pending: false,
        })
    }

    fn submit(&mut self, descs: &[[u64; 2]], range: AddrRange) {
        self.invalidations += 1;
        let before = self.host.with(|h| h.stats().out_of_resources);
        match self.drv.submit(descs) {
            Ok(()) => {}
            Err(DriverError::Host(_)) => self.model_errors += 1,
            Err(_) => self.queue_errors += 1,
        }
        if let Some(b) = &mut self.baseline {
            b.sync(&self.tables.view(), range);
        }
        if self.host.with(|h| h.stats().out_of_resources) > before {
            // Whether the strategy recovered is checked by `settle`, outside the timing.
            self.enospc_pending = true;
        }
    }

    fn flush(&mut self, iova: u64, len: u64, ih: bool) {
        let block = psi_block(iova, len);
        if block == DOMAIN {
            self.global_flushes += 1;
            return self.submit(&[desc::iotlb_domain(DID)], DOMAIN);
        }
        let am = (block.len() / 4096).trailing_zeros() as u8;
        self.submit(&[desc::iotlb_page(DID, block.start, am, ih)], block);
    }
}

impl IommuDomain for VtdDomain<'_> {
    fn iova_window(&self) -> AddrRange {
        // dma-iommu allocates below 4 GiB first for PCI devices; the interrupt window is a
        // reserved region.
        AddrRange::new(0x1000, MSI_WINDOW_START)
    }

    fn lazy_unmap(&self) -> bool {
        // Caching mode: "IOMMU batching disallowed due to virtualization" (strict).
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
                let level = ((size.trailing_zeros() - 12) / 9) as u8;
                self.tables
                    .map_page(level, i, g, perm)
                    .map_err(|_| MapFailed)?;
            }
            at += s.len;
        }
        self.flush(iova, at - iova, false);
        Ok(())
    }

    fn unmap(&mut self, iova: u64, len: u64, sync: bool) {
        let mut off = 0;
        while off < len {
            off += match self.tables.unmap_leaf(iova + off) {
                Ok(Some(size)) => size,
                _ => 4096,
            };
        }
        if sync {
            // No page-table page was freed: invalidation hint set.
            self.flush(iova, len, true);
        }
    }

    fn flush_all(&mut self) {
        self.global_flushes += 1;
        self.submit(&[desc::iotlb_domain(DID)], DOMAIN);
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
        let st = self.vtd.stats();
        let mut o = DomainOutcome {
            invalidations: self.invalidations,
            global_flushes: self.global_flushes,
            iommu_faults: st.faults_recorded + st.faults_compressed + st.faults_overflowed,
            model_errors: self.model_errors,
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
        if self.queue_errors > 0 {
            o.notes.push(format!(
                "{} invalidation waits did not complete",
                self.queue_errors
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
            None => self
                .vtd
                .detach_host(u32::from(SID))
                .map_err(|e| e.to_string()),
        }
    }
}

/// One VT-d run.
pub fn run(
    cfg: &RunConfig,
    mem: GuestMemoryMmap,
    host: HostHandle,
) -> Result<RunReport, DemoError> {
    let mut clock = Stopwatch::default();
    let vtd = clock.time(|| Vtd::new(Config::default(), mem.clone(), Arc::new(NullMsiSink)));
    let mut domain = clock.time(|| VtdDomain::boot(&vtd, &mem, host, cfg.strategy))?;
    Ok(drive(&mut domain, cfg, clock))
}
