//! Emulated-device DMA through a model: the [`DmaTranslate`] seam every model implements, and
//! [`DeviceIommu`], the `vm_memory::iommu::Iommu` of one device that caches the model's
//! answers in an [`IotlbRegistry`](crate::iotlb::IotlbRegistry).
//!
//! The model (VT-d, AMD-Vi, zPCI) implements [`DmaTranslate`]: given a request from a device,
//! it finds the device's context, walks the guest's tables, records its architected fault if
//! the walk fails (fault record, event log entry, zPCI error), and returns one page. The model
//! owns an `IotlbRegistry` and calls its invalidation methods when the guest invalidates. The
//! VMM wraps each emulated device's view of memory in an
//! `IommuMemory<GuestMemoryMmap, DeviceIommu>`; the device does its usual `vm_memory` accesses
//! with IOVAs.
//!
//! ```
//! use std::sync::Arc;
//! use viommu_shared::dma::{DeviceIommu, DmaFault, DmaRequest, DmaTranslate, DmaTranslation};
//! use viommu_shared::iotlb::IotlbRegistry;
//! use viommu_shared::{AddrRange, Perm};
//! use vm_memory::iommu::IommuMemory;
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//!
//! /// A toy model: every device is in domain 7, which maps IOVA x to GPA x + 1 MiB.
//! #[derive(Debug)]
//! struct Model {
//!     iotlb: Arc<IotlbRegistry>,
//! }
//!
//! impl DmaTranslate for Model {
//!     fn translate(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault> {
//!         // A real model walks the guest's tables here and records its fault on failure.
//!         let iova = req.iova & !0xfff;
//!         Ok(DmaTranslation { domain: 7, iova, addr: iova + (1 << 20), size: 0x1000, perm: Perm::RW })
//!     }
//! }
//!
//! // Model side: one registry for all devices behind this IOMMU.
//! let model = Arc::new(Model { iotlb: Arc::new(IotlbRegistry::new()) });
//!
//! // VMM side: give an emulated device (requester id 00:03.0) an IOVA view of guest memory.
//! let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
//! let iommu = DeviceIommu::new(model.iotlb.register(0x18, None), model.clone());
//! let dev_mem = IommuMemory::new(ram.clone(), iommu, true, ());
//!
//! // The device DMAs to IOVA 0x2000, which lands at GPA 0x102000.
//! dev_mem.write_slice(b"hello", GuestAddress(0x2000)).unwrap();
//! let mut buf = [0u8; 5];
//! ram.read_slice(&mut buf, GuestAddress(0x102000)).unwrap();
//! assert_eq!(&buf, b"hello");
//!
//! // The guest unmaps and invalidates: the model flushes; the call returns once no DMA can
//! // still use the old translation.
//! model.iotlb.invalidate_range(7, AddrRange::from_len(0x2000, 0x1000));
//! ```

use crate::addr::{AddrRange, PAGE_SIZE_4K, align_down};
use crate::iotlb::{DeviceTlb, FillError};
use crate::perm::Perm;
use crate::pt::WalkFault;
use std::fmt;
use std::sync::{Arc, RwLockReadGuard};
use vm_memory::iommu::{Error, Iommu, Iotlb, IotlbIterator, IovaRange};
use vm_memory::{GuestAddress, Permissions};

/// Longest single access [`DeviceIommu`] translates by default (1 GiB); longer ones fail.
pub const MAX_DMA_LEN: usize = 1 << 30;

/// How many times [`DeviceIommu`] asks the model again when invalidations keep racing with its
/// fills before it fails the access. Bounded so a guest flooding invalidations cannot spin a
/// device thread forever, and large enough (with a growing back-off after each lost race, see
/// [`backoff`]) that a storm of legitimate invalidations does not fail DMA that hardware would
/// complete: the attempts span about 50 ms, far longer than any invalidation burst a driver
/// issues, even on an overloaded host.
pub const MAX_FILL_ATTEMPTS: u32 = 64;

/// Waits after lost race number `attempt`: a yield for the first few (the invalidating
/// thread usually finishes at once), then sleeps doubling from 1 µs up to 1 ms, so a thread
/// that keeps losing stops competing with the invalidations for the CPU.
fn backoff(attempt: u32) {
    const YIELDS: u32 = 8;
    if attempt < YIELDS {
        std::thread::yield_now();
    } else {
        let micros = 1u64 << (attempt - YIELDS).min(10);
        std::thread::sleep(std::time::Duration::from_micros(micros));
    }
}

/// One DMA request as the IOMMU sees it on the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DmaRequest {
    /// Requester: PCI requester id (bus << 8 | devfn, with the segment above bit 16 if the
    /// model has several), or the s390 function id.
    pub requester_id: u32,
    /// PASID of the request, if it carries one.
    pub pasid: Option<u32>,
    /// Address the device accesses.
    pub iova: u64,
    /// What the access needs (empty for a mere existence check).
    pub perm: Perm,
}

/// One page of translation, as the model returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DmaTranslation {
    /// Cache tag chosen by the model (VT-d domain id, AMD-Vi domain id, zPCI function); what
    /// [`invalidate_domain`](crate::iotlb::IotlbRegistry::invalidate_domain) and
    /// [`invalidate_range`](crate::iotlb::IotlbRegistry::invalidate_range) match.
    pub domain: u64,
    /// IOVA of the start of the page (aligned to `size`).
    pub iova: u64,
    /// Guest-physical address of the start of the page.
    pub addr: u64,
    /// Page size in bytes: a power of two, at least 4 KiB.
    pub size: u64,
    /// What the translation grants (the cache keeps the read/write part).
    pub perm: Perm,
}

impl DmaTranslation {
    /// True when this is a valid answer to a request for `iova`: `size` is a power of two of
    /// at least 4 KiB, `self.iova` is aligned to it, the page contains `iova`, and the output
    /// page does not wrap around the 64-bit space.
    pub fn is_well_formed(&self, iova: u64) -> bool {
        self.size.is_power_of_two()
            && self.size >= PAGE_SIZE_4K
            && self.iova & (self.size - 1) == 0
            && iova >= self.iova
            && iova - self.iova < self.size
            && self.addr.checked_add(self.size - 1).is_some()
    }

    /// IOVA range of the page (clamped at the top of the 64-bit space).
    pub fn iova_range(&self) -> AddrRange {
        AddrRange::from_len(self.iova, self.size)
    }

    /// The largest naturally aligned part of this page that contains `iova` and does not
    /// overlap `hole` (an input range the model must not let a cached page cover, e.g. the
    /// x86 interrupt range), or `None` when `iova` is in `hole` or not even its 4 KiB page
    /// avoids it. Unchanged when the page does not overlap `hole`.
    pub fn avoiding(&self, hole: AddrRange, iova: u64) -> Option<DmaTranslation> {
        if hole.contains(iova) {
            return None;
        }
        let mut t = *self;
        while t.iova_range().overlaps(&hole) {
            if t.size <= PAGE_SIZE_4K {
                return None;
            }
            t.size /= 2;
            let base = align_down(iova, t.size);
            t.addr += base - t.iova;
            t.iova = base;
        }
        Some(t)
    }
}

/// Why a DMA failed, as far as the device is concerned. The model has already recorded its
/// architected fault (or decided the fault is suppressed) when it returns one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmaFaultKind {
    /// Nothing is mapped at the address (including addresses beyond the table's width).
    NotPresent,
    /// A translation exists but does not grant the access.
    Permission,
    /// The device may not DMA at all (translation disabled for it, blocked domain, device
    /// not enabled, interrupt-remapping range, ...).
    Blocked,
    /// A context or table structure is malformed, unreadable, or the model's answer was
    /// unusable.
    Malformed,
}

impl DmaFaultKind {
    /// The kind matching a walker fault.
    pub fn from_walk(fault: &WalkFault) -> Self {
        match fault {
            WalkFault::IovaTooWide { .. } | WalkFault::NotPresent { .. } => {
                DmaFaultKind::NotPresent
            }
            WalkFault::Permission { .. } => DmaFaultKind::Permission,
            WalkFault::Reserved { .. }
            | WalkFault::TableOutsideRam { .. }
            | WalkFault::WorkLimit { .. } => DmaFaultKind::Malformed,
        }
    }
}

/// A failed DMA translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DmaFault {
    /// The address that could not be translated.
    pub iova: u64,
    /// Why.
    pub kind: DmaFaultKind,
}

impl DmaFault {
    /// A fault of `kind` at `iova`.
    pub fn new(iova: u64, kind: DmaFaultKind) -> Self {
        DmaFault { iova, kind }
    }

    /// The fault matching a walker fault for an access to `iova`.
    pub fn from_walk(iova: u64, fault: &WalkFault) -> Self {
        DmaFault::new(iova, DmaFaultKind::from_walk(fault))
    }
}

impl fmt::Display for DmaFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            DmaFaultKind::NotPresent => "not present",
            DmaFaultKind::Permission => "permission denied",
            DmaFaultKind::Blocked => "DMA blocked",
            DmaFaultKind::Malformed => "malformed translation structures",
        };
        write!(f, "DMA fault at iova {:#x}: {what}", self.iova)
    }
}

impl std::error::Error for DmaFault {}

/// What a model implements so emulated devices can DMA through it.
///
/// Called on IOTLB misses, from any thread doing emulated DMA, concurrently, and never with an
/// IOTLB lock held: a model may take its own locks and may call its registry's invalidation
/// methods while holding them.
pub trait DmaTranslate: Send + Sync + fmt::Debug {
    /// Translates the page containing `req.iova` for an access needing `req.perm`.
    ///
    /// On success returns a page satisfying [`DmaTranslation::is_well_formed`] for
    /// `req.iova` whose permissions allow `req.perm` (an answer that does not is treated as a
    /// [`DmaFaultKind::Malformed`] or [`DmaFaultKind::Permission`] fault). On failure the model
    /// records its architected fault itself, then returns the fault for the device.
    fn translate(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault>;
}

/// The IOMMU as seen by one emulated device: implements `vm_memory::iommu::Iommu` by looking up
/// the device's [`DeviceTlb`] and asking the model on misses.
///
/// Use it as `vm_memory::iommu::IommuMemory<GuestMemoryMmap, DeviceIommu>`. Every translation
/// holds the device's cache read-locked until the returned iterator is dropped, which is what
/// makes the registry's invalidations barriers; see [`crate::iotlb`] for the locking rules.
#[derive(Debug)]
pub struct DeviceIommu {
    tlb: Arc<DeviceTlb>,
    model: Arc<dyn DmaTranslate>,
    max_len: usize,
}

impl DeviceIommu {
    /// The IOMMU of the device cached in `tlb`, translated by `model`.
    pub fn new(tlb: Arc<DeviceTlb>, model: Arc<dyn DmaTranslate>) -> Self {
        DeviceIommu {
            tlb,
            model,
            max_len: MAX_DMA_LEN,
        }
    }

    /// Replaces the longest accepted access (default [`MAX_DMA_LEN`]). Longer accesses fail
    /// without asking the model; the model is asked at most `max_len / 4 KiB + 2` times per
    /// attempt.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The device's cache.
    pub fn tlb(&self) -> &Arc<DeviceTlb> {
        &self.tlb
    }

    /// The model answering misses.
    pub fn model(&self) -> &Arc<dyn DmaTranslate> {
        &self.model
    }

    /// Asks the model for every page of `ranges` (sorted, inside `[.., end)`), needing `need`.
    fn resolve(
        &self,
        ranges: &[(u64, u64)],
        need: Perm,
        budget: u64,
    ) -> Result<Vec<DmaTranslation>, DmaFault> {
        let mut out = Vec::new();
        let mut done = 0u64; // everything below this IOVA is resolved (0: nothing yet)
        let mut asked = 0u64;
        for &(start, end) in ranges {
            let mut cur = start.max(done);
            while cur < end {
                asked += 1;
                if asked > budget {
                    return Err(DmaFault::new(cur, DmaFaultKind::Malformed));
                }
                let req = DmaRequest {
                    requester_id: self.tlb.requester_id(),
                    pasid: self.tlb.pasid(),
                    iova: cur,
                    perm: need,
                };
                let t = self.model.translate(&req)?;
                if !t.is_well_formed(cur) {
                    return Err(DmaFault::new(cur, DmaFaultKind::Malformed));
                }
                if !t.perm.allows(need) {
                    return Err(DmaFault::new(cur, DmaFaultKind::Permission));
                }
                out.push(t);
                match t.iova.checked_add(t.size) {
                    Some(next) => cur = next,
                    None => {
                        // The page reaches the top of the 64-bit space: nothing is left.
                        return Ok(out);
                    }
                }
                done = cur;
            }
        }
        Ok(out)
    }
}

/// The `vm_memory` error for a failed translation of `[start, end)`.
fn cannot_resolve(start: u64, end: u64, reason: String) -> Error {
    Error::CannotResolve {
        iova_range: IovaRange {
            base: GuestAddress(start),
            length: usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX),
        },
        reason,
    }
}

impl Iommu for DeviceIommu {
    type IotlbGuard<'a> = RwLockReadGuard<'a, Iotlb>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, Error> {
        let start = iova.0;
        if length > self.max_len {
            return Err(cannot_resolve(
                start,
                start.saturating_add(length as u64),
                format!(
                    "access of {length} bytes exceeds the {} byte limit",
                    self.max_len
                ),
            ));
        }
        // `Iotlb` computes `iova + length` unchecked: the end must be representable.
        let Some(end) = u64::try_from(length)
            .ok()
            .and_then(|l| start.checked_add(l))
        else {
            return Err(cannot_resolve(
                start,
                u64::MAX,
                "access wraps around the address space".into(),
            ));
        };
        let need = Perm::from_vm_memory(access);
        let budget = (end - align_down(start, PAGE_SIZE_4K)) / PAGE_SIZE_4K + 2;
        for attempt in 0..MAX_FILL_ATTEMPTS {
            let guard = self.tlb.read();
            let ticket = self.tlb.ticket_locked(&guard);
            let fails = match Iotlb::lookup(guard, iova, length, access) {
                Ok(hit) => return Ok(hit),
                Err(fails) => fails,
            };
            let mut ranges: Vec<(u64, u64)> = fails
                .misses
                .iter()
                .chain(&fails.access_fails)
                .map(|r| (r.base.0, r.base.0.saturating_add(r.length as u64).min(end)))
                .collect();
            ranges.sort_unstable();
            let fills = self
                .resolve(&ranges, need, budget)
                .map_err(|f| cannot_resolve(f.iova.max(start), end, f.to_string()))?;
            // Either way, look up again: after a fill the lookup hits unless an invalidation
            // (or eviction) removed it meanwhile; after a race the model is asked again.
            match self.tlb.fill(ticket, &fills) {
                Ok(()) => {}
                // Let the invalidating thread finish before asking the model again.
                Err(FillError::Raced) => backoff(attempt),
            }
        }
        Err(cannot_resolve(
            start,
            end,
            "translation kept racing with invalidations".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PAGE_SIZE_2M;

    #[test]
    fn avoiding_shrinks_around_a_hole() {
        let gig = DmaTranslation {
            domain: 1,
            iova: 0xc000_0000,
            addr: 0x4000_0000,
            size: 1 << 30,
            perm: Perm::RW,
        };
        let hole = AddrRange::from_len(0xfee0_0000, 0x10_0000);
        assert_eq!(gig.avoiding(hole, 0xfee0_0000), None);
        let low = gig.avoiding(hole, 0xc123_4567).unwrap();
        assert_eq!((low.iova, low.size), (0xc000_0000, 1 << 29));
        assert_eq!(low.addr, 0x4000_0000);
        let near = gig.avoiding(hole, 0xfef0_1000).unwrap();
        assert_eq!((near.iova, near.size), (0xfef0_0000, 0x10_0000));
        assert_eq!(near.addr, 0x4000_0000 + 0x3ef0_0000);
        assert!(near.is_well_formed(0xfef0_1000) && !near.iova_range().overlaps(&hole));
        let away = AddrRange::from_len(0, 0x1000);
        assert_eq!(gig.avoiding(away, 0xc000_0000), Some(gig));
    }
    use crate::iotlb::IotlbRegistry;
    use crate::pt::{ByteOrder, TableBuilder, Walker};
    use crate::testing::{RadixFormat, guest_memory};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::thread;
    use std::time::Duration;
    use vm_memory::iommu::IommuMemory;
    use vm_memory::{Bytes, GuestMemoryError, GuestMemoryMmap};

    const TABLES: (u64, u64) = (0x10_0000, 0x20_0000);

    /// A toy model: every device shares one x86-like table; the domain is chosen per
    /// requester id. Logs every request; can invalidate its registry in the middle of a walk.
    struct ToyModel {
        mem: GuestMemoryMmap,
        format: RadixFormat,
        root: u64,
        registry: Arc<IotlbRegistry>,
        log: Mutex<Vec<DmaRequest>>,
        faults: Mutex<Vec<DmaFault>>,
        /// Invalidate everything after walking, this many more times.
        race_after_walk: AtomicUsize,
        /// Run once after the walk of the next request (simulates a concurrent guest).
        hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl fmt::Debug for ToyModel {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ToyModel")
                .field("root", &self.root)
                .finish_non_exhaustive()
        }
    }

    impl ToyModel {
        fn domain_of(rid: u32) -> u64 {
            u64::from(rid) * 10
        }

        fn requests(&self) -> usize {
            self.log.lock().unwrap().len()
        }
    }

    impl DmaTranslate for ToyModel {
        fn translate(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault> {
            self.log.lock().unwrap().push(*req);
            let walked =
                Walker::new(&self.format, &self.mem, self.root).translate(req.iova, req.perm);
            if let Some(hook) = self.hook.lock().unwrap().take() {
                hook();
            }
            if self
                .race_after_walk
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                self.registry.invalidate_all();
            }
            match walked {
                Ok((_, leaf)) => Ok(DmaTranslation {
                    domain: Self::domain_of(req.requester_id),
                    iova: leaf.iova,
                    addr: leaf.addr,
                    size: leaf.size,
                    perm: leaf.perm,
                }),
                Err(f) => {
                    let fault = DmaFault::from_walk(req.iova, &f);
                    self.faults.lock().unwrap().push(fault);
                    Err(fault)
                }
            }
        }
    }

    /// Guest RAM 0..32 MiB and the table format; tables go in `TABLES`.
    struct Env {
        mem: GuestMemoryMmap,
        format: RadixFormat,
    }

    fn env() -> Env {
        Env {
            mem: guest_memory(&[(0, 32 << 20)]),
            format: RadixFormat::x86_like(4, ByteOrder::Little),
        }
    }

    /// A running model over the table at `root`.
    struct Setup {
        mem: GuestMemoryMmap,
        model: Arc<ToyModel>,
        registry: Arc<IotlbRegistry>,
    }

    impl Env {
        fn builder(&self) -> TableBuilder<'_, RadixFormat, GuestMemoryMmap> {
            TableBuilder::new(&self.format, &self.mem, TABLES.0, TABLES.1).unwrap()
        }

        fn start(&self, root: u64, capacity: usize) -> Setup {
            let registry = Arc::new(IotlbRegistry::with_capacity(capacity));
            let model = Arc::new(ToyModel {
                mem: self.mem.clone(),
                format: self.format.clone(),
                root,
                registry: Arc::clone(&registry),
                log: Mutex::new(Vec::new()),
                faults: Mutex::new(Vec::new()),
                race_after_walk: AtomicUsize::new(0),
                hook: Mutex::new(None),
            });
            Setup {
                mem: self.mem.clone(),
                model,
                registry,
            }
        }

        /// A model with the given (iova, gpa, perm) 4 KiB pages mapped.
        fn with_pages(&self, capacity: usize, pages: &[(u64, u64, Perm)]) -> Setup {
            let mut b = self.builder();
            for &(iova, gpa, perm) in pages {
                b.map_page(0, iova, gpa, perm).unwrap();
            }
            self.start(b.root(), capacity)
        }
    }

    impl Setup {
        fn device(&self, rid: u32) -> IommuMemory<GuestMemoryMmap, DeviceIommu> {
            let iommu = DeviceIommu::new(self.registry.register(rid, None), self.model.clone());
            IommuMemory::new(self.mem.clone(), iommu, true, ())
        }
    }

    fn is_cannot_resolve(e: &GuestMemoryError) -> bool {
        matches!(e, GuestMemoryError::IommuError(Error::CannotResolve { .. }))
    }

    const IOVA: u64 = 0x4000_0000;

    #[test]
    fn write_spans_two_noncontiguous_pages() {
        let s = env().with_pages(
            64,
            &[
                (IOVA, 0x30_0000, Perm::RW),
                (IOVA + 0x1000, 0x50_0000, Perm::RW),
            ],
        );
        let dev = s.device(1);
        let data: Vec<u8> = (0..0x1000u32).map(|i| (i * 7) as u8).collect();
        dev.write_slice(&data, GuestAddress(IOVA + 0x800)).unwrap();
        let mut a = vec![0u8; 0x800];
        let mut b = vec![0u8; 0x800];
        s.mem.read_slice(&mut a, GuestAddress(0x30_0800)).unwrap();
        s.mem.read_slice(&mut b, GuestAddress(0x50_0000)).unwrap();
        assert_eq!(a, data[..0x800]);
        assert_eq!(b, data[0x800..]);
        let mut back = vec![0u8; 0x1000];
        dev.read_slice(&mut back, GuestAddress(IOVA + 0x800))
            .unwrap();
        assert_eq!(back, data);
        // Two pages, two requests, then cached.
        assert_eq!(s.model.requests(), 2);
        let log = s.model.log.lock().unwrap().clone();
        assert_eq!(log[0].requester_id, 1);
        assert_eq!(log[0].iova, IOVA + 0x800);
        assert_eq!(log[0].perm, Perm::WRITE);
        assert_eq!(log[1].iova, IOVA + 0x1000);
        assert_eq!(dev.iommu().tlb().domain(), Some(10));
    }

    #[test]
    fn read_only_mapping_refuses_writes() {
        let s = env().with_pages(64, &[(IOVA, 0x30_0000, Perm::READ)]);
        s.mem.write_slice(b"ro", GuestAddress(0x30_0010)).unwrap();
        let dev = s.device(1);
        let mut buf = [0u8; 2];
        dev.read_slice(&mut buf, GuestAddress(IOVA + 0x10)).unwrap();
        assert_eq!(&buf, b"ro");
        let err = dev
            .write_slice(b"xx", GuestAddress(IOVA + 0x10))
            .unwrap_err();
        assert!(is_cannot_resolve(&err), "{err:?}");
        s.mem.read_slice(&mut buf, GuestAddress(0x30_0010)).unwrap();
        assert_eq!(&buf, b"ro");
        let faults = s.model.faults.lock().unwrap().clone();
        assert_eq!(
            faults,
            vec![DmaFault::new(IOVA + 0x10, DmaFaultKind::Permission)]
        );
    }

    #[test]
    fn unmapped_iova_faults_and_model_saw_it() {
        let s = env().with_pages(64, &[(IOVA, 0x30_0000, Perm::RW)]);
        let dev = s.device(3);
        let mut buf = [0u8; 4];
        let err = dev
            .read_slice(&mut buf, GuestAddress(0x7000_0000))
            .unwrap_err();
        assert!(is_cannot_resolve(&err), "{err:?}");
        let log = s.model.log.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![DmaRequest {
                requester_id: 3,
                pasid: None,
                iova: 0x7000_0000,
                perm: Perm::READ,
            }]
        );
        // Partially mapped access: the first page resolves, the second faults.
        let err = dev
            .read_slice(&mut [0u8; 0x20], GuestAddress(IOVA + 0xff0))
            .unwrap_err();
        assert!(is_cannot_resolve(&err), "{err:?}");
        assert_eq!(
            *s.model.faults.lock().unwrap().last().unwrap(),
            DmaFault::new(IOVA + 0x1000, DmaFaultKind::NotPresent)
        );
    }

    #[test]
    fn stale_until_invalidated() {
        let env = env();
        let mut b = env.builder();
        b.map_page(0, IOVA, 0x30_0000, Perm::RW).unwrap();
        let s = env.start(b.root(), 64);
        let dev = s.device(1);
        let mut buf = [0u8; 8];
        dev.read_slice(&mut buf, GuestAddress(IOVA)).unwrap();
        assert_eq!(s.model.requests(), 1);
        assert!(b.unmap_page(IOVA).unwrap());
        // No invalidation yet: the cached translation is still served, model not asked.
        dev.read_slice(&mut buf, GuestAddress(IOVA)).unwrap();
        assert_eq!(s.model.requests(), 1);
        // Another domain's invalidation does not flush it.
        s.registry
            .invalidate_range(20, AddrRange::from_len(IOVA, 0x1000));
        dev.read_slice(&mut buf, GuestAddress(IOVA)).unwrap();
        assert_eq!(s.model.requests(), 1);
        s.registry
            .invalidate_range(10, AddrRange::from_len(IOVA, 0x1000));
        assert!(dev.read_slice(&mut buf, GuestAddress(IOVA)).is_err());
        assert_eq!(s.model.requests(), 2);
    }

    #[test]
    fn invalidate_domain_only_hits_that_domain() {
        let s = env().with_pages(64, &[(IOVA, 0x30_0000, Perm::RW)]);
        let d1 = s.device(1); // domain 10
        let d2 = s.device(2); // domain 20
        let mut buf = [0u8; 8];
        d1.read_slice(&mut buf, GuestAddress(IOVA)).unwrap();
        d2.read_slice(&mut buf, GuestAddress(IOVA)).unwrap();
        assert_eq!(s.model.requests(), 2);
        s.registry.invalidate_domain(10);
        assert_eq!(d1.iommu().tlb().entries(), 0);
        assert_eq!(d2.iommu().tlb().entries(), 1);
        d2.read_slice(&mut buf, GuestAddress(IOVA)).unwrap();
        assert_eq!(s.model.requests(), 2);
        d1.read_slice(&mut buf, GuestAddress(IOVA)).unwrap();
        assert_eq!(s.model.requests(), 3);
        s.registry.invalidate_device(2);
        d2.read_slice(&mut buf, GuestAddress(IOVA)).unwrap();
        assert_eq!(s.model.requests(), 4);
    }

    #[test]
    fn capacity_bound() {
        let pages: Vec<_> = (0..16u64)
            .map(|i| (IOVA + (i << 12), 0x40_0000 + (i << 13), Perm::RW))
            .collect();
        let s = env().with_pages(4, &pages);
        let dev = s.device(1);
        let mut buf = [0u8; 8];
        for round in 0..3 {
            for &(iova, ..) in &pages {
                dev.read_slice(&mut buf, GuestAddress(iova)).unwrap();
                assert!(dev.iommu().tlb().entries() <= 4, "round {round}");
            }
        }
        // Evicted pages were asked for again.
        assert_eq!(s.model.requests(), 48);
        // One access needing more pages than the capacity still works.
        let mut big = vec![0u8; 8 << 12];
        dev.read_slice(&mut big, GuestAddress(IOVA)).unwrap();
        assert!(dev.iommu().tlb().entries() <= 8);
    }

    #[test]
    fn invalidation_waits_for_inflight_dma() {
        let s = env().with_pages(64, &[(IOVA, 0x30_0000, Perm::RW)]);
        let dev = s.device(1);
        let iommu = dev.iommu();
        let done = AtomicBool::new(false);
        thread::scope(|scope| {
            let held = iommu
                .translate(GuestAddress(IOVA), 0x100, Permissions::Read)
                .unwrap();
            let h = scope.spawn(|| {
                s.registry
                    .invalidate_range(10, AddrRange::from_len(IOVA, 0x1000));
                done.store(true, Ordering::SeqCst);
            });
            thread::sleep(Duration::from_millis(50));
            assert!(
                !done.load(Ordering::SeqCst),
                "invalidation returned during DMA"
            );
            let mapped: Vec<_> = held.collect();
            assert_eq!(mapped[0].base, GuestAddress(0x30_0000));
            h.join().unwrap();
            assert!(done.load(Ordering::SeqCst));
        });
        // An unrelated domain's invalidation does not wait for this device.
        let held = iommu
            .translate(GuestAddress(IOVA), 0x100, Permissions::Read)
            .unwrap();
        s.registry.invalidate_domain(99);
        drop(held);
    }

    #[test]
    fn huge_lengths_and_overflow_fail_cleanly() {
        let s = env().with_pages(64, &[(IOVA, 0x30_0000, Perm::RW)]);
        let dev = s.device(1);
        let iommu = dev.iommu();
        assert!(
            iommu
                .translate(GuestAddress(u64::MAX - 10), 100, Permissions::Read)
                .is_err()
        );
        assert!(
            iommu
                .translate(GuestAddress(u64::MAX), 1, Permissions::Read)
                .is_err()
        );
        assert!(
            iommu
                .translate(GuestAddress(0), usize::MAX, Permissions::Read)
                .is_err()
        );
        assert!(
            iommu
                .translate(GuestAddress(IOVA), MAX_DMA_LEN + 1, Permissions::Read)
                .is_err()
        );
        assert_eq!(s.model.requests(), 0);
        // Beyond the table's 48-bit width: a fault, not a panic.
        assert!(
            iommu
                .translate(GuestAddress(u64::MAX - 0x1000), 0x10, Permissions::Read)
                .is_err()
        );
        assert!(
            iommu
                .translate(GuestAddress(IOVA), 0, Permissions::Read)
                .is_ok()
        );
        let mut buf = vec![0u8; 0x10000];
        assert!(
            dev.read_slice(&mut buf, GuestAddress(u64::MAX - 0x100))
                .is_err()
        );
        let small =
            DeviceIommu::new(s.registry.register(9, None), s.model.clone()).with_max_len(0x1000);
        assert!(
            small
                .translate(GuestAddress(IOVA), 0x1001, Permissions::Read)
                .is_err()
        );
        assert!(
            small
                .translate(GuestAddress(IOVA), 0x1000, Permissions::Read)
                .is_ok()
        );
    }

    #[test]
    fn invalidation_during_walk_is_not_lost() {
        let env = env();
        let mut b = env.builder();
        b.map_page(0, IOVA, 0x30_0000, Perm::RW).unwrap();
        b.map_page(0, IOVA + 0x1000, 0x31_0000, Perm::RW).unwrap();
        let entry = b.entry_for(0, IOVA).unwrap();
        let s = env.start(b.root(), 64);
        let dev = s.device(1);
        let mut buf = [0u8; 8];
        // Tag the device with its domain first, so the per-device generation is what catches
        // the race (an untagged device is caught by the registry epoch).
        dev.read_slice(&mut buf, GuestAddress(IOVA + 0x1000))
            .unwrap();
        // The guest unmaps and invalidates right after the model walked the old table: the
        // stale answer must not be cached.
        let mem = s.mem.clone();
        let registry = Arc::clone(&s.registry);
        *s.model.hook.lock().unwrap() = Some(Box::new(move || {
            mem.write_obj(0u64, GuestAddress(entry)).unwrap();
            registry.invalidate_range(10, AddrRange::from_len(IOVA, 0x1000));
        }));
        assert!(dev.read_slice(&mut buf, GuestAddress(IOVA)).is_err());
        assert_eq!(s.model.requests(), 3);
        assert!(
            Iotlb::lookup(
                dev.iommu().tlb().read(),
                GuestAddress(IOVA),
                1,
                Permissions::No
            )
            .is_err()
        );
    }

    #[test]
    fn racing_invalidations_retry_then_fail() {
        let s = env().with_pages(64, &[(IOVA, 0x30_0000, Perm::RW)]);
        let dev = s.device(1);
        let mut buf = [0u8; 8];
        s.model.race_after_walk.store(3, Ordering::SeqCst);
        dev.read_slice(&mut buf, GuestAddress(IOVA)).unwrap();
        assert_eq!(s.model.requests(), 4);
        s.registry.invalidate_all();
        s.model.race_after_walk.store(usize::MAX, Ordering::SeqCst);
        let err = dev.read_slice(&mut buf, GuestAddress(IOVA)).unwrap_err();
        assert!(is_cannot_resolve(&err), "{err:?}");
        assert_eq!(s.model.requests(), 4 + MAX_FILL_ATTEMPTS as usize);
    }

    /// A model returning whatever it is told, for malformed answers and the top page.
    #[derive(Debug)]
    struct Canned(Mutex<Option<DmaTranslation>>);

    impl DmaTranslate for Canned {
        fn translate(&self, req: &DmaRequest) -> Result<DmaTranslation, DmaFault> {
            match *self.0.lock().unwrap() {
                Some(t) => Ok(t),
                None => Err(DmaFault::new(req.iova, DmaFaultKind::Blocked)),
            }
        }
    }

    #[test]
    fn malformed_answers_and_top_page() {
        let registry = IotlbRegistry::new();
        let model = Arc::new(Canned(Mutex::new(None)));
        let iommu = DeviceIommu::new(registry.register(1, None), model.clone());
        let tr = |iova: u64, len: usize| {
            iommu
                .translate(GuestAddress(iova), len, Permissions::Read)
                .map(|_| ())
        };
        assert!(tr(0x1000, 8).is_err()); // blocked
        let good = DmaTranslation {
            domain: 1,
            iova: 0x20_0000,
            addr: 0x40_0000,
            size: PAGE_SIZE_2M,
            perm: Perm::READ,
        };
        for bad in [
            DmaTranslation { size: 0, ..good },
            DmaTranslation {
                size: 0x3000,
                ..good
            },
            DmaTranslation {
                size: 0x800,
                iova: 0x20_0800,
                ..good
            },
            DmaTranslation {
                iova: 0x20_1000,
                ..good
            },
            DmaTranslation {
                addr: u64::MAX - 0x1000,
                ..good
            },
            DmaTranslation {
                perm: Perm::WRITE,
                ..good
            },
        ] {
            *model.0.lock().unwrap() = Some(bad);
            assert!(tr(0x20_0000, 8).is_err(), "{bad:?}");
        }
        *model.0.lock().unwrap() = Some(good);
        let it: Vec<_> = iommu
            .translate(GuestAddress(0x20_1234), 0x10, Permissions::Read)
            .unwrap()
            .collect();
        assert_eq!(it[0].base, GuestAddress(0x40_1234));
        // A page not containing later parts of the access: malformed, no endless loop.
        assert!(tr(0x3f_f000, 0x2000).is_err());
        // The top page of the 64-bit space is clipped, not overflowed.
        let top = align_down(u64::MAX, PAGE_SIZE_4K);
        *model.0.lock().unwrap() = Some(DmaTranslation {
            iova: top,
            addr: 0x1000,
            size: 0x1000,
            ..good
        });
        let it: Vec<_> = iommu
            .translate(GuestAddress(u64::MAX - 0x100), 0x100, Permissions::Read)
            .unwrap()
            .collect();
        assert_eq!(it[0].base, GuestAddress(0x1f00 - 1));
        assert!(tr(u64::MAX - 0x100, 0x101).is_err());
    }

    #[test]
    fn fault_kinds_from_walk() {
        assert_eq!(
            DmaFaultKind::from_walk(&WalkFault::NotPresent { level: 0, iova: 0 }),
            DmaFaultKind::NotPresent
        );
        assert_eq!(
            DmaFaultKind::from_walk(&WalkFault::WorkLimit { entries_read: 1 }),
            DmaFaultKind::Malformed
        );
        let f = DmaFault::new(0x1000, DmaFaultKind::Blocked);
        assert!(f.to_string().contains("0x1000"));
    }
}
