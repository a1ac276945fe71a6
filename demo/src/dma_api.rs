//! The guest's DMA API over an IOMMU domain, after Linux's `dma-iommu`: each request is
//! mapped at one IOVA range from the [`IovaAllocator`] (`iommu_map_sg` + one
//! `iotlb_sync_map`), and unmapped when it completes — strictly (invalidated at once, what
//! Linux does under VT-d caching mode and AMD-Vi NpCache) or lazily (s390: page-table entries
//! invalidated, the IOVA parked in a flush queue that a global flush empties).
//!
//! After every map the simulated passthrough device DMAs to every page of the buffer through
//! the *host* mappings; after every invalidated unmap it checks nothing of the buffer is still
//! reachable. Those checks are not timed.

use crate::host::HostHandle;
use crate::iova::IovaAllocator;
use crate::pages::PageMap;
use crate::progress::Progress;
use crate::workload::{Direction, Generator, Request, Segment, WorkloadConfig};
use std::time::{Duration, Instant};
use viommu_shared::{AddrRange, Perm};

/// A guest-visible DMA mapping failure (`DMA_MAPPING_ERROR`): the driver gets an I/O error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFailed;

/// What the IOMMU side reports about one run (driver and model or baseline counters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainOutcome {
    /// Guest invalidation requests (descriptors, commands or RPCITs) sent.
    pub invalidations: u64,
    /// Global flushes sent (domain-selective invalidations, global RPCITs).
    pub global_flushes: u64,
    /// Times the shadowing strategy found the host out of entries.
    pub out_of_resources: u64,
    /// Of those, resolved without loss (reclaim and retry, or the guest's global RPCIT).
    pub resolved: u64,
    /// Of those, not resolved (a mapping lost, or a mapping the guest had to fail).
    pub unresolved: u64,
    /// How exhaustion is handled, in words.
    pub resolution: String,
    /// Architected IOMMU faults recorded (VT-d fault records, AMD-Vi events, zPCI errors).
    pub iommu_faults: u64,
    /// Typed host errors the model returned to the VMM.
    pub model_errors: u64,
    /// Anything else worth a line.
    pub notes: Vec<String>,
}

/// True when the host lacks (or maps differently) a page `guest` maps: after an invalidation
/// that met `ENOSPC`, the strategy did not recover.
pub fn host_lacks(guest: &PageMap, host: &HostHandle) -> bool {
    let c = crate::pages::Comparison::of(guest, &host.with(|h| h.pages()));
    c.missing + c.different > 0
}

/// Invalidations during which the host refused a map for lack of entries, and whether the
/// host still lacked a guest mapping afterwards (the strategy did not recover).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exhaustion {
    /// Invalidations that met `ENOSPC`.
    pub events: u64,
    /// Of those, the ones that left a guest mapping off the host.
    pub lost: u64,
}

impl Exhaustion {
    /// Records one invalidation that met `ENOSPC`.
    pub fn record(&mut self, lost: bool) {
        self.events += 1;
        self.lost += u64::from(lost);
    }

    /// Fills the exhaustion fields of `o`.
    pub fn fill(&self, o: &mut DomainOutcome) {
        o.out_of_resources = self.events;
        o.unresolved = self.lost;
        o.resolved = self.events - self.lost;
    }
}

/// One guest IOMMU domain with a passthrough device, driven the way its Linux driver does.
pub trait IommuDomain {
    /// Where the DMA API allocates IOVAs.
    fn iova_window(&self) -> AddrRange;

    /// True when unmaps are deferred to a flush queue (s390).
    fn lazy_unmap(&self) -> bool;

    /// The permissions the driver gives a buffer of `dir`.
    fn perm(&self, dir: Direction) -> Perm;

    /// `iommu_map_sg`: writes the page-table entries of `segments` from `iova` on, then
    /// `iotlb_sync_map` (the invalidation caching mode / NpCache / the refresh bit ask for).
    fn map(&mut self, iova: u64, segments: &[Segment], perm: Perm) -> Result<(), MapFailed>;

    /// `iommu_unmap`: clears the entries of `[iova, iova + len)`; with `sync`, invalidates
    /// the range at once (`iotlb_sync`).
    fn unmap(&mut self, iova: u64, len: u64, sync: bool);

    /// `flush_iotlb_all`: a domain-wide invalidation (a global RPCIT on s390).
    fn flush_all(&mut self);

    /// Untimed bookkeeping after each call above (e.g. checking whether an invalidation that
    /// met `ENOSPC` left a mapping off the host).
    fn settle(&mut self) {}

    /// Every page the guest's tables map now.
    fn guest_pages(&self) -> PageMap;

    /// The host backend the passthrough device's DMA goes through.
    fn host(&self) -> &HostHandle;

    /// Counters so far.
    fn outcome(&self) -> DomainOutcome;

    /// Detaches the passthrough device: every host mapping must go.
    fn teardown(&mut self) -> Result<(), String>;
}

/// What the DMA API saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaStats {
    /// Requests mapped.
    pub maps: u64,
    /// Requests unmapped.
    pub unmaps: u64,
    /// Bytes mapped over the run.
    pub bytes_mapped: u64,
    /// Guest-visible mapping failures (`DMA_MAPPING_ERROR`).
    pub map_errors: u64,
    /// Requests that found no IOVA space.
    pub iova_exhausted: u64,
    /// Lazy flushes (flush-queue flushes).
    pub queue_flushes: u64,
    /// Pages the device could not reach on the host right after a completed map (a lost
    /// mapping: the host IOMMU faults the device).
    pub device_faults: u64,
    /// Pages the device reached at the wrong guest-physical address (memory corruption).
    pub wrong_translations: u64,
    /// Pages still mapped on the host after their invalidation completed (the device can
    /// still reach memory the guest took back).
    pub stale_after_invalidation: u64,
    /// Requests in flight at the end (mapped, to be checked against the tables).
    pub in_flight: u64,
    /// The request during which the host first refused a map for lack of entries.
    pub first_enospc: Option<u64>,
}

/// A buffer the device owns.
struct InFlight {
    iova: u64,
    request: Request,
    perm: Perm,
    mapped: bool,
}

/// Time spent in the guest driver, the model and the host (not in the simulated device's
/// checks).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stopwatch {
    /// Accumulated time.
    pub total: Duration,
}

impl Stopwatch {
    /// Runs `f`, adding its duration.
    pub fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        self.total += t.elapsed();
        r
    }
}

fn need(dir: Direction) -> Perm {
    match dir {
        Direction::ToDevice => Perm::READ,
        Direction::FromDevice => Perm::WRITE,
    }
}

/// The device DMAs to every page of a freshly mapped buffer through the host.
fn device_dma(host: &HostHandle, b: &InFlight, stats: &mut DmaStats) {
    let want = need(b.request.direction);
    host.with(|h| {
        let mut iova = b.iova;
        for s in &b.request.segments {
            let mut off = 0;
            while off < s.len {
                match h.translate(iova + off) {
                    Some((gpa, p)) if p.allows(want) => {
                        if gpa != s.gpa + off {
                            stats.wrong_translations += 1;
                        }
                    }
                    _ => stats.device_faults += 1,
                }
                off += 4096;
            }
            iova += s.len;
        }
    });
}

/// After an invalidation: nothing of `[iova, iova + len)` may still be mapped on the host.
fn check_gone(host: &HostHandle, iova: u64, len: u64, stats: &mut DmaStats) {
    host.with(|h| {
        let mut off = 0;
        while off < len {
            if h.translate(iova + off).is_some() {
                stats.stale_after_invalidation += 1;
            }
            off += 4096;
        }
    });
}

/// The expected guest mappings of the buffers still in flight.
pub struct Expected(pub PageMap);

/// Runs `config`'s requests through `domain`. Returns the DMA API's counters and the pages
/// the in-flight buffers should map (for the final comparison with the guest tables).
pub fn run_workload(
    domain: &mut dyn IommuDomain,
    config: &WorkloadConfig,
    clock: &mut Stopwatch,
    progress: &mut Progress,
) -> (DmaStats, Expected) {
    let mut stats = DmaStats::default();
    let mut requests = Generator::new(config.seed);
    let mut iovas = IovaAllocator::new(domain.iova_window());
    let mut in_flight: Vec<InFlight> = Vec::new();
    let mut queue: Vec<InFlight> = Vec::new();
    let lazy = domain.lazy_unmap();
    let host = domain.host().clone();

    for n in 0..config.requests {
        progress.tick(n, config.requests);
        let request = requests.next_request();
        let len = request.len();
        let perm = domain.perm(request.direction);
        let pick = request.pick;
        let Some(iova) = iovas.alloc(len) else {
            stats.iova_exhausted += 1;
            stats.map_errors += 1;
            continue;
        };
        let mapped = clock.time(|| domain.map(iova, &request.segments, perm));
        domain.settle();
        let b = InFlight {
            iova,
            request,
            perm,
            mapped: mapped.is_ok(),
        };
        if mapped.is_ok() {
            stats.maps += 1;
            stats.bytes_mapped += len;
            device_dma(&host, &b, &mut stats);
        } else {
            // `iommu_map` undoes a failed sync: the entries go, the range is invalidated.
            stats.map_errors += 1;
            clock.time(|| domain.unmap(iova, len, true));
            domain.settle();
            check_gone(&host, iova, len, &mut stats);
            iovas.free(iova, len);
        }
        in_flight.push(b);

        if stats.first_enospc.is_none() && host.with(|h| h.stats().out_of_resources) > 0 {
            stats.first_enospc = Some(n);
        }

        if in_flight.len() > config.queue_depth {
            let i = (pick % in_flight.len() as u64) as usize;
            let done = in_flight.swap_remove(i);
            if !done.mapped {
                continue;
            }
            let len = done.request.len();
            stats.unmaps += 1;
            clock.time(|| domain.unmap(done.iova, len, !lazy));
            domain.settle();
            if lazy {
                queue.push(done);
                if queue.len() >= config.flush_queue {
                    flush_queue(domain, &mut queue, &mut iovas, &mut stats, clock, &host);
                }
            } else {
                check_gone(&host, done.iova, len, &mut stats);
                iovas.free(done.iova, len);
            }
        }
    }
    if lazy && !queue.is_empty() {
        flush_queue(domain, &mut queue, &mut iovas, &mut stats, clock, &host);
    }
    progress.finish();

    let mut expected = PageMap::new();
    for b in in_flight.iter().filter(|b| b.mapped) {
        stats.in_flight += 1;
        let mut iova = b.iova;
        for s in &b.request.segments {
            expected.add_run(iova, s.gpa, s.len, b.perm);
            iova += s.len;
        }
    }
    (stats, Expected(expected))
}

fn flush_queue(
    domain: &mut dyn IommuDomain,
    queue: &mut Vec<InFlight>,
    iovas: &mut IovaAllocator,
    stats: &mut DmaStats,
    clock: &mut Stopwatch,
    host: &HostHandle,
) {
    stats.queue_flushes += 1;
    clock.time(|| domain.flush_all());
    domain.settle();
    for b in queue.drain(..) {
        let len = b.request.len();
        check_gone(host, b.iova, len, stats);
        iovas.free(b.iova, len);
    }
}
