//! s390 zPCI driven like Linux's `arch/s390/pci` + `drivers/iommu/s390-iommu.c`
//! (`anchors-s390-vfio.md` A.12.5, A.13, A.14): CLP LIST / QUERY / ENABLE, an aperture of
//! the guest's memory size from the function's start of DMA, region-third tables filled with
//! invalid entries, MPCIFC register IOAT, an RPCIT after every map (the group's refresh bit),
//! unmaps that only invalidate page-table entries (the DMA API's flush queue later issues one
//! global RPCIT for many), and the `iotlb_sync_map` recovery: on CC 1 status 16 a global
//! RPCIT, and if that fails too the mapping is undone and the DMA mapping fails.

use crate::baseline::{QemuRpcit, RpcitAnswer};
use crate::dma_api::{DomainOutcome, IommuDomain, MapFailed, Stopwatch};
use crate::error::DemoError;
use crate::host::HostHandle;
use crate::layout::{RAM, STRUCTS, TABLES};
use crate::pages::PageMap;
use crate::report::RunReport;
use crate::run::{RunConfig, Strategy, drive};
use crate::workload::{Direction, Segment};
use std::sync::Arc;
use viommu_s390_zpci::codes::status;
use viommu_s390_zpci::testing::{GuestCpu, MemFunction, ZpciTables};
use viommu_s390_zpci::{
    AperturePolicy, Cc, Config, Designation, Fh, Fid, FunctionConfig, GroupConfig, RefreshPolicy,
    Zpci,
};
use viommu_shared::pt::Walker;
use viommu_shared::regs::NullMsiSink;
use viommu_shared::{AddrRange, Perm};
use vm_memory::GuestMemoryMmap;

const MODEL: &str = "zPCI";
/// The passthrough function.
pub const FID: Fid = Fid(0x10);
/// The host's DMA aperture (one range, as s390 hosts have).
pub const HOST_APERTURE: AddrRange = AddrRange::new(1 << 32, (1 << 32) + (64 << 30));

/// The model configuration of every zPCI run: the full DMA range advertised (exhaustion is
/// signalled by RPCIT, as QEMU does for functions with relaxed translation), and the refresh
/// bit on whether or not a host is attached (QEMU sets it for every passthrough function, so
/// the baseline's guest sees it too).
pub fn config() -> Config {
    Config {
        aperture: AperturePolicy::Full,
        groups: vec![GroupConfig {
            refresh: RefreshPolicy::Always,
            ..GroupConfig::default()
        }],
        ..Config::default()
    }
}

/// How one RPCIT was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Insufficient,
    Other,
}

/// The guest's zPCI function with its DMA tables registered.
pub struct ZpciDomain<'a> {
    zpci: &'a Zpci,
    cpu: GuestCpu<'a>,
    fh: Fh,
    tables: ZpciTables,
    aperture: AddrRange,
    refresh: bool,
    host: HostHandle,
    baseline: Option<QemuRpcit<HostHandle>>,
    rpcits: u64,
    global_rpcits: u64,
    map_insufficient: u64,
    retry_ok: u64,
    retry_failed: u64,
    flush_insufficient: u64,
    other: u64,
}

impl<'a> ZpciDomain<'a> {
    /// Plugs the function (the VMM attaches its host first), then brings it up as Linux
    /// does.
    pub fn boot(
        zpci: &'a Zpci,
        mem: &GuestMemoryMmap,
        host: HostHandle,
        strategy: Strategy,
    ) -> Result<Self, DemoError> {
        let mut fcfg = FunctionConfig::new(FID, 0x77);
        fcfg.bar_sizes[0] = 4096;
        let device = MemFunction::new(
            0x1014,
            0x04ed,
            [4096, 0, 0, 0, 0, 0],
            [0xc000_0004, 0, 0, 0, 0, 0],
        );
        zpci.add_function(fcfg, Box::new(device))
            .map_err(|e| DemoError::setup(MODEL, "plug function", e))?;
        if strategy == Strategy::Viommu {
            zpci.attach_host(FID, Box::new(host.clone()))
                .map_err(|e| DemoError::setup(MODEL, "attach_host", e))?;
        }
        let mut cpu = GuestCpu::new(zpci, mem, STRUCTS.start);
        let list = cpu
            .list_pci()
            .map_err(|e| DemoError::setup(MODEL, "CLP LIST PCI", e))?;
        let entry = list
            .iter()
            .find(|e| e.fid == FID.0 && e.configured)
            .ok_or_else(|| DemoError::setup(MODEL, "CLP LIST PCI", "function not listed"))?;
        let q = cpu
            .query_function(entry.fh)
            .map_err(|e| DemoError::setup(MODEL, "CLP QUERY PCI FUNCTION", e))?;
        let group = cpu
            .query_group(q.pfgid)
            .map_err(|e| DemoError::setup(MODEL, "CLP QUERY PCI FUNCTION GROUP", e))?;
        let fh = cpu
            .enable(entry.fh)
            .map_err(|e| DemoError::setup(MODEL, "CLP SET PCI FUNCTION enable", e))?;
        // `zpci_init_iommu`: start_dma page-aligned; size = min(memory × aperture factor 1,
        // what region-third tables reach, the function's range).
        let start = q.sdma.div_ceil(4096) * 4096;
        let size = RAM
            .min(q.edma.saturating_sub(start).saturating_add(1))
            .min((1u64 << 42).saturating_sub(start));
        let aperture = AddrRange::from_len(start, size);
        let tables = ZpciTables::new(mem, Designation::RegionThird, TABLES.start, TABLES.end)
            .map_err(|e| DemoError::setup(MODEL, "allocate DMA tables", e))?;
        let reg = cpu
            .register_ioat(fh, aperture.start, aperture.end - 1, tables.iota().0)
            .map_err(|e| DemoError::setup(MODEL, "MPCIFC register IOAT", e))?;
        if reg.cc != Cc::Ok {
            return Err(DemoError::setup(MODEL, "MPCIFC register IOAT", reg));
        }
        let baseline = match strategy {
            Strategy::Viommu => None,
            Strategy::PerLeaf => Some(QemuRpcit::new(host.clone(), aperture)),
        };
        Ok(ZpciDomain {
            zpci,
            cpu,
            fh,
            tables,
            aperture,
            refresh: group.flags & GroupConfig::FLAG_REFRESH != 0,
            host,
            baseline,
            rpcits: 0,
            global_rpcits: 0,
            map_insufficient: 0,
            retry_ok: 0,
            retry_failed: 0,
            flush_insufficient: 0,
            other: 0,
        })
    }

    /// The registered DMA range.
    pub fn aperture(&self) -> AddrRange {
        self.aperture
    }

    fn rpcit(&mut self, start: u64, len: u64) -> Answer {
        self.rpcits += 1;
        if AddrRange::from_len(start, len) == self.aperture {
            self.global_rpcits += 1;
        }
        let answer = match &mut self.baseline {
            None => match self.cpu.rpcit(self.fh, start, len) {
                Ok(c) if c.cc == Cc::Ok => Answer::Ok,
                Ok(c) if c.cc == Cc::Error && c.status == Some(status::INSUFFICIENT_RESOURCES) => {
                    Answer::Insufficient
                }
                _ => Answer::Other,
            },
            Some(b) => {
                let format = *self.tables.format();
                let walker = Walker::new(&format, self.tables.mem(), self.tables.root());
                match b.rpcit(&format, &walker, start, len) {
                    RpcitAnswer::Ok => Answer::Ok,
                    RpcitAnswer::InsufficientResources => Answer::Insufficient,
                    RpcitAnswer::TableError => Answer::Other,
                }
            }
        };
        if answer == Answer::Other {
            self.other += 1;
        }
        answer
    }

    fn global_rpcit(&mut self) -> Answer {
        self.rpcit(self.aperture.start, self.aperture.len())
    }
}

impl IommuDomain for ZpciDomain<'_> {
    fn iova_window(&self) -> AddrRange {
        self.aperture
    }

    fn lazy_unmap(&self) -> bool {
        true
    }

    fn perm(&self, dir: Direction) -> Perm {
        match dir {
            Direction::ToDevice => Perm::READ,
            // s390 page-table entries are read-only (protected) or read-write.
            Direction::FromDevice => Perm::RW,
        }
    }

    fn map(&mut self, iova: u64, segments: &[Segment], perm: Perm) -> Result<(), MapFailed> {
        let mut at = iova;
        for s in segments {
            self.tables
                .map_range(at, s.gpa, s.len / 4096, perm)
                .map_err(|_| MapFailed)?;
            at += s.len;
        }
        if !self.refresh {
            return Ok(());
        }
        match self.rpcit(iova, at - iova) {
            Answer::Ok => Ok(()),
            Answer::Insufficient => {
                // `s390_iommu_iotlb_sync_map`: -ENOMEM → `zpci_refresh_all`.
                self.map_insufficient += 1;
                if self.global_rpcit() == Answer::Ok {
                    self.retry_ok += 1;
                    Ok(())
                } else {
                    self.retry_failed += 1;
                    Err(MapFailed)
                }
            }
            Answer::Other => Err(MapFailed),
        }
    }

    fn unmap(&mut self, iova: u64, len: u64, sync: bool) {
        let mut off = 0;
        while off < len {
            let _ = self.tables.unmap(iova + off);
            off += 4096;
        }
        if sync {
            // `iotlb_sync` ignores the answer.
            let _ = self.rpcit(iova, len);
        }
    }

    fn flush_all(&mut self) {
        // `flush_iotlb_all` ignores the answer; a CC 1 here means live mappings do not fit.
        if self.global_rpcit() == Answer::Insufficient {
            self.flush_insufficient += 1;
        }
    }

    fn guest_pages(&self) -> PageMap {
        let format = *self.tables.format();
        let walker = Walker::new(&format, self.tables.mem(), self.tables.root());
        PageMap::of_view(&walker, self.aperture)
    }

    fn host(&self) -> &HostHandle {
        &self.host
    }

    fn outcome(&self) -> DomainOutcome {
        let info = self.zpci.function(FID).ok();
        let st = info.as_ref().map(|i| i.stats).unwrap_or_default();
        let mut o = DomainOutcome {
            invalidations: self.rpcits,
            global_flushes: self.global_rpcits,
            out_of_resources: self.map_insufficient + self.flush_insufficient,
            resolved: self.retry_ok,
            unresolved: self.retry_failed + self.flush_insufficient,
            iommu_faults: st.dma_faults
                + st.table_errors
                + self.zpci.stats().events_pending as u64
                + self.zpci.stats().events_dropped,
            ..DomainOutcome::default()
        };
        match &self.baseline {
            None => {
                o.resolution = "CC 1 status 16 → the guest's global RPCIT frees what it \
                                invalidated lazily and maps the buffer in the same pass"
                    .into();
                o.notes.push(format!(
                    "{} full re-syncs of the shadow (registration and global RPCITs); \
                     entries the guest invalidated lazily stay mapped until one (A.14.1), \
                     so the host fills up by design and each re-sync frees them",
                    st.full_syncs
                ));
                if info.as_ref().is_some_and(|i| i.full_sync_pending) {
                    o.notes.push("a full re-sync is pending".into());
                }
            }
            Some(b) => {
                let s = b.stats();
                o.resolution = "CC 1 status 16 from QEMU's DMA counter → the guest's global \
                                RPCIT (QEMU looks up every 4 KiB page of the aperture); \
                                if that fails too, the guest fails the DMA mapping"
                    .into();
                o.notes.push(format!(
                    "{} page-cache lookups, {} table walks, {} second passes",
                    s.cache_lookups, s.walk_steps, s.second_passes
                ));
                if s.host_map_errors > 0 {
                    o.notes.push(format!(
                        "{} VFIO_MAP_DMA failures only logged (mappings lost)",
                        s.host_map_errors
                    ));
                }
            }
        }
        if self.other > 0 {
            o.notes.push(format!(
                "{} RPCITs answered other than CC 0/CC 1-16",
                self.other
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
            None => self.zpci.detach_host(FID).map_err(|e| e.to_string()),
        }
    }
}

/// One zPCI run.
pub fn run(
    cfg: &RunConfig,
    mem: GuestMemoryMmap,
    host: HostHandle,
) -> Result<RunReport, DemoError> {
    let mut clock = Stopwatch::default();
    let zpci = clock.time(|| Zpci::new(config(), mem.clone(), Arc::new(NullMsiSink)));
    let mut domain = clock.time(|| ZpciDomain::boot(&zpci, &mem, host, cfg.strategy))?;
    Ok(drive(&mut domain, cfg, clock))
}
