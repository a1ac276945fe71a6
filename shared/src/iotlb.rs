//! IOTLB: per-device translation caches, tagged with the model's domain, that the model
//! invalidates.
//!
//! A model owns one [`IotlbRegistry`] and [`register`](IotlbRegistry::register)s every
//! emulated device (requester id, optional PASID) that DMAs through it; each registration is a
//! [`DeviceTlb`], which [`DeviceIommu`](crate::dma::DeviceIommu) fills from the model on misses.
//! Every entry of a device's cache belongs to the device's current domain tag (the
//! [`DmaTranslation::domain`](crate::dma::DmaTranslation::domain) the model reported); a fill
//! from another domain empties the cache first.
//!
//! # Invalidation is a barrier
//!
//! Each cache is a `vm_memory::iommu::Iotlb` behind an `RwLock`. An emulated DMA holds the read
//! guard for as long as it uses a translation (the `IotlbIterator` returned by
//! `Iommu::translate` owns it); every invalidation takes the write lock of each affected
//! device. So when an invalidation method returns, no emulated DMA can still be using a
//! translation it removed, and the model may complete the guest's invalidation request.
//!
//! Fills cannot resurrect what an invalidation removed: a fill that asked the model before an
//! invalidation and inserts after it is detected (per-device generation and registry-wide
//! epoch counters) and retried.
//!
//! # Bounded
//!
//! Each device counts the entries it inserted; a fill that would exceed the capacity empties
//! that device's cache first. A single translation needs all of its pages cached at once, so
//! the real bound per device is the larger of the capacity and the page count of the longest
//! allowed access ([`MAX_DMA_LEN`](crate::dma::MAX_DMA_LEN) / 4 KiB + 2).
//!
//! # Locking rules
//!
//! Invalidation methods block until in-flight DMA of the affected devices has finished. A
//! thread must therefore not call them while it holds a translation of an affected device, and
//! must not start a new translation on a device while holding one of the same device (a
//! waiting invalidation blocks new readers, and a fill needs the write lock).

use crate::addr::{AddrRange, PAGE_SIZE_4K, align_down, align_up};
use crate::dma::DmaTranslation;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use vm_memory::GuestAddress;
use vm_memory::iommu::Iotlb;

/// Default per-device capacity of an [`IotlbRegistry`], in entries (pages).
pub const DEFAULT_CAPACITY: usize = 4096;

/// Key of a registered device: requester id and PASID.
type DeviceKey = (u32, Option<u32>);

/// State every device of one registry shares.
#[derive(Debug, Default)]
struct Shared {
    /// Bumped at the start of every invalidation of the registry.
    epoch: AtomicU64,
}

/// The translation caches of every device behind one IOMMU model.
///
/// Shared by the model (which invalidates) and the devices' [`DeviceIommu`]s (which fill);
/// typically held in an `Arc`.
///
/// [`DeviceIommu`]: crate::dma::DeviceIommu
pub struct IotlbRegistry {
    shared: Arc<Shared>,
    capacity: usize,
    devices: Mutex<HashMap<DeviceKey, Weak<DeviceTlb>>>,
}

impl fmt::Debug for IotlbRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IotlbRegistry")
            .field("capacity", &self.capacity)
            .field("devices", &self.devices().len())
            .finish()
    }
}

impl Default for IotlbRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl IotlbRegistry {
    /// An empty registry whose devices cache up to [`DEFAULT_CAPACITY`] entries each.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// An empty registry whose devices cache up to `capacity` entries each (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        IotlbRegistry {
            shared: Arc::default(),
            capacity: capacity.max(1),
            devices: Mutex::new(HashMap::new()),
        }
    }

    /// Per-device capacity in entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The cache of the device `requester_id` (PCI requester id, or s390 function id) for
    /// requests with `pasid`.
    ///
    /// Registering a live key again returns the same cache. The registry only keeps weak
    /// references: a cache is dropped with the last `DeviceIommu` using it, and dead entries
    /// are pruned here, so the registry never outgrows the live devices.
    pub fn register(&self, requester_id: u32, pasid: Option<u32>) -> Arc<DeviceTlb> {
        let mut devices = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tlb) = devices.get(&(requester_id, pasid)).and_then(Weak::upgrade) {
            return tlb;
        }
        devices.retain(|_, w| w.strong_count() > 0);
        let tlb = Arc::new(DeviceTlb {
            requester_id,
            pasid,
            capacity: self.capacity,
            shared: Arc::clone(&self.shared),
            iotlb: RwLock::new(Iotlb::new()),
            generation: AtomicU64::new(0),
            entries: AtomicUsize::new(0),
            tag: AtomicU64::new(0),
            tagged: AtomicBool::new(false),
        });
        devices.insert((requester_id, pasid), Arc::downgrade(&tlb));
        tlb
    }

    /// Live caches, optionally only those of one requester id.
    fn devices_matching(&self, requester_id: Option<u32>) -> Vec<Arc<DeviceTlb>> {
        let devices = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        devices
            .iter()
            .filter(|((rid, _), _)| requester_id.is_none_or(|r| r == *rid))
            .filter_map(|(_, w)| w.upgrade())
            .collect()
    }

    /// Every live cache.
    pub fn devices(&self) -> Vec<Arc<DeviceTlb>> {
        self.devices_matching(None)
    }

    /// Starts an invalidation: fills that asked the model before this point and would change
    /// a device's domain tag afterwards are retried.
    fn begin_invalidation(&self) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Empties every device's cache. Returns once no DMA uses a removed translation.
    pub fn invalidate_all(&self) {
        self.begin_invalidation();
        for dev in self.devices() {
            dev.invalidate_all_locked(&mut dev.write());
        }
    }

    /// Empties the caches of every device (any PASID) with this requester id.
    pub fn invalidate_device(&self, requester_id: u32) {
        self.begin_invalidation();
        for dev in self.devices_matching(Some(requester_id)) {
            dev.invalidate_all_locked(&mut dev.write());
        }
    }

    /// Empties the caches of the devices whose entries belong to `domain`; other devices are
    /// not touched (and not waited for).
    pub fn invalidate_domain(&self, domain: u64) {
        self.begin_invalidation();
        for dev in self.devices() {
            if let Some(mut tlb) = dev.write_if_tagged(domain) {
                dev.invalidate_all_locked(&mut tlb);
            }
        }
    }

    /// Removes the translations of `range` (widened to whole 4 KiB pages) from the caches of
    /// the devices whose entries belong to `domain`. A cached large page overlapping the range
    /// is removed only in part; the rest stays valid, as in hardware that splits on
    /// invalidation, which is harmless because over-invalidation only costs a refill.
    pub fn invalidate_range(&self, domain: u64, range: AddrRange) {
        let start = align_down(range.start, PAGE_SIZE_4K);
        let end = if range.end > align_down(u64::MAX, PAGE_SIZE_4K) {
            u64::MAX
        } else {
            align_up(range.end, PAGE_SIZE_4K)
        };
        if start >= end {
            return;
        }
        self.begin_invalidation();
        for dev in self.devices() {
            if let Some(mut tlb) = dev.write_if_tagged(domain) {
                dev.invalidate_range_locked(&mut tlb, start, end);
            }
        }
    }
}

/// The translation cache of one device (requester id and PASID), created by
/// [`IotlbRegistry::register`] and filled by [`DeviceIommu`](crate::dma::DeviceIommu).
pub struct DeviceTlb {
    requester_id: u32,
    pasid: Option<u32>,
    capacity: usize,
    shared: Arc<Shared>,
    iotlb: RwLock<Iotlb>,
    // The fields below change only while `iotlb` is write-locked; the lock orders them.
    /// Bumped by every invalidation of this device and every domain-tag change.
    generation: AtomicU64,
    /// Entries inserted since the cache was last emptied (an upper bound on what it holds).
    entries: AtomicUsize,
    /// Domain every cached entry belongs to (valid when `tagged`).
    tag: AtomicU64,
    tagged: AtomicBool,
}

impl fmt::Debug for DeviceTlb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceTlb")
            .field("requester_id", &self.requester_id)
            .field("pasid", &self.pasid)
            .field("domain", &self.domain())
            .field("entries", &self.entries())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Counters read under a device's read lock before asking the model; a fill is inserted only
/// if no invalidation that could concern it happened since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FillTicket {
    generation: u64,
    epoch: u64,
}

/// Why a fill was not inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FillError {
    /// An invalidation may have raced with the model's walk; ask the model again.
    Raced,
}

impl DeviceTlb {
    /// Requester id this cache was registered for.
    pub fn requester_id(&self) -> u32 {
        self.requester_id
    }

    /// PASID this cache was registered for.
    pub fn pasid(&self) -> Option<u32> {
        self.pasid
    }

    /// Maximum entries before a fill empties the cache.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Domain tag of the cached entries (`None` before the first fill). Does not lock: a
    /// concurrent fill may change it right after.
    pub fn domain(&self) -> Option<u64> {
        self.tag_locked()
    }

    /// Entries inserted since the cache was last emptied (an upper bound on the entries it
    /// holds; never more than the larger of the capacity and one access's page count).
    pub fn entries(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// The cache, read-locked. Holding the guard delays invalidations of this device.
    pub fn read(&self) -> RwLockReadGuard<'_, Iotlb> {
        self.iotlb.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Iotlb> {
        self.iotlb.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tag; exact when called with the lock held (either way).
    fn tag_locked(&self) -> Option<u64> {
        // `tag` is stored before `tagged` is first set (release), so an unlocked reader that
        // sees `tagged` also sees a tag that was current at some point.
        self.tagged
            .load(Ordering::Acquire)
            .then(|| self.tag.load(Ordering::Relaxed))
    }

    /// The write lock if this device's entries belong to `domain`, else `None` (checked under
    /// the read lock first so unrelated devices are not waited for).
    fn write_if_tagged(&self, domain: u64) -> Option<RwLockWriteGuard<'_, Iotlb>> {
        if self.tag_locked_under_read() != Some(domain) {
            return None;
        }
        let tlb = self.write();
        (self.tag_locked() == Some(domain)).then_some(tlb)
    }

    fn tag_locked_under_read(&self) -> Option<u64> {
        let _guard = self.read();
        self.tag_locked()
    }

    fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn invalidate_all_locked(&self, tlb: &mut Iotlb) {
        tlb.invalidate_all();
        self.entries.store(0, Ordering::Relaxed);
        self.bump_generation();
    }

    fn invalidate_range_locked(&self, tlb: &mut Iotlb, start: u64, end: u64) {
        let Ok(len) = usize::try_from(end - start) else {
            self.invalidate_all_locked(tlb);
            return;
        };
        tlb.invalidate_mapping(GuestAddress(start), len);
        self.bump_generation();
        // Removing the middle of an entry splits it: one more entry at most.
        let n = self.entries.load(Ordering::Relaxed).saturating_add(1);
        if n > self.capacity {
            self.invalidate_all_locked(tlb);
        } else {
            self.entries.store(n, Ordering::Relaxed);
        }
    }

    /// Counters to pass to [`fill`](Self::fill); take them while holding the read guard of the
    /// lookup that missed, before asking the model.
    pub(crate) fn ticket_locked(&self, _guard: &RwLockReadGuard<'_, Iotlb>) -> FillTicket {
        FillTicket {
            generation: self.generation.load(Ordering::Relaxed),
            epoch: self.shared.epoch.load(Ordering::SeqCst),
        }
    }

    /// Inserts translations the model returned after `ticket` was taken. All must carry the
    /// same domain and satisfy [`DmaTranslation::is_well_formed`].
    pub(crate) fn fill(
        &self,
        ticket: FillTicket,
        fills: &[DmaTranslation],
    ) -> Result<(), FillError> {
        let Some(first) = fills.first() else {
            return Ok(());
        };
        if fills.iter().any(|t| t.domain != first.domain) {
            // The device changed domain while the model was walking.
            return Err(FillError::Raced);
        }
        let mut tlb = self.write();
        if self.generation.load(Ordering::Relaxed) != ticket.generation {
            return Err(FillError::Raced);
        }
        if self.tag_locked() != Some(first.domain) {
            // An invalidation of the new domain skips this device while it has the old tag,
            // so any invalidation since the ticket may concern these translations.
            if self.shared.epoch.load(Ordering::SeqCst) != ticket.epoch {
                return Err(FillError::Raced);
            }
            self.invalidate_all_locked(&mut tlb);
            self.tag.store(first.domain, Ordering::Relaxed);
            self.tagged.store(true, Ordering::Release);
        }
        let mut n = self.entries.load(Ordering::Relaxed);
        if n.saturating_add(fills.len()) > self.capacity {
            // Emptying only removes translations; nothing stale can appear, so other fills in
            // flight need not retry because of it (their re-lookup will miss and retry).
            tlb.invalidate_all();
            n = 0;
        }
        for t in fills {
            // The top page of the 64-bit space cannot be represented whole: clip it.
            let len = t.size.min(u64::MAX - t.iova);
            let Ok(len) = usize::try_from(len) else {
                continue;
            };
            if len == 0 {
                continue;
            }
            // Infallible in vm-memory 0.18; an error would only leave a miss behind.
            let _ = tlb.set_mapping(
                GuestAddress(t.iova),
                GuestAddress(t.addr),
                len,
                t.perm.to_vm_memory(),
            );
            n = n.saturating_add(1);
        }
        self.entries.store(n, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perm::Perm;
    use vm_memory::Permissions;

    fn page(domain: u64, iova: u64, addr: u64) -> DmaTranslation {
        DmaTranslation {
            domain,
            iova,
            addr,
            size: PAGE_SIZE_4K,
            perm: Perm::RW,
        }
    }

    fn cached(dev: &DeviceTlb, iova: u64) -> bool {
        Iotlb::lookup(dev.read(), GuestAddress(iova), 1, Permissions::Read).is_ok()
    }

    fn fill(dev: &DeviceTlb, fills: &[DmaTranslation]) -> Result<(), FillError> {
        let ticket = dev.ticket_locked(&dev.read());
        dev.fill(ticket, fills)
    }

    #[test]
    fn register_shares_and_prunes() {
        let reg = IotlbRegistry::new();
        let a = reg.register(1, None);
        let b = reg.register(1, None);
        assert!(Arc::ptr_eq(&a, &b));
        let c = reg.register(1, Some(3));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(reg.devices().len(), 2);
        drop((a, b));
        let _d = reg.register(2, None);
        assert_eq!(reg.devices().len(), 2);
        assert_eq!(reg.devices.lock().unwrap().len(), 2);
    }

    #[test]
    fn domain_tags_and_invalidation_targets() {
        let reg = IotlbRegistry::new();
        let a = reg.register(1, None);
        let b = reg.register(2, None);
        fill(&a, &[page(10, 0x1000, 0x9000)]).unwrap();
        fill(&b, &[page(20, 0x1000, 0x9000)]).unwrap();
        assert_eq!(a.domain(), Some(10));
        reg.invalidate_domain(10);
        assert!(!cached(&a, 0x1000));
        assert!(cached(&b, 0x1000));
        reg.invalidate_range(30, AddrRange::from_len(0, 1 << 20));
        assert!(cached(&b, 0x1000));
        reg.invalidate_range(20, AddrRange::new(0x1fff, 0x2000));
        assert!(!cached(&b, 0x1000), "range widened to whole pages");
        fill(&b, &[page(20, 0x1000, 0x9000)]).unwrap();
        reg.invalidate_device(2);
        assert!(!cached(&b, 0x1000));
        assert_eq!(b.entries(), 0);
    }

    #[test]
    fn domain_change_empties_cache() {
        let reg = IotlbRegistry::new();
        let a = reg.register(1, None);
        fill(&a, &[page(10, 0x1000, 0x9000)]).unwrap();
        fill(&a, &[page(11, 0x2000, 0x9000)]).unwrap();
        assert_eq!(a.domain(), Some(11));
        assert!(!cached(&a, 0x1000));
        assert!(cached(&a, 0x2000));
        assert!(fill(&a, &[page(11, 0x3000, 0), page(12, 0x4000, 0)]).is_err());
    }

    #[test]
    fn stale_tickets_are_refused() {
        let reg = IotlbRegistry::new();
        let a = reg.register(1, None);
        // Same domain: only invalidations of this device count.
        fill(&a, &[page(10, 0x1000, 0x9000)]).unwrap();
        let t = a.ticket_locked(&a.read());
        reg.invalidate_domain(99);
        assert!(a.fill(t, &[page(10, 0x2000, 0)]).is_ok());
        let t = a.ticket_locked(&a.read());
        reg.invalidate_range(10, AddrRange::from_len(0x5000, 0x1000));
        assert_eq!(a.fill(t, &[page(10, 0x2000, 0)]), Err(FillError::Raced));
        // Domain change: any invalidation counts.
        let t = a.ticket_locked(&a.read());
        reg.invalidate_domain(20);
        assert_eq!(a.fill(t, &[page(20, 0x2000, 0)]), Err(FillError::Raced));
        assert_eq!(a.domain(), Some(10));
    }

    #[test]
    fn capacity_bound_and_split_accounting() {
        let reg = IotlbRegistry::with_capacity(3);
        let a = reg.register(1, None);
        for i in 0..10u64 {
            fill(&a, &[page(1, i << 12, i << 20)]).unwrap();
            assert!(a.entries() <= 3);
            assert!(cached(&a, i << 12));
        }
        assert!(!cached(&a, 0));
        // Splitting a large page by invalidation is counted too.
        reg.invalidate_all();
        let big = DmaTranslation {
            size: 1 << 21,
            ..page(1, 0, 0)
        };
        fill(&a, &[big]).unwrap();
        for i in 0..8u64 {
            reg.invalidate_range(1, AddrRange::from_len((2 * i + 1) << 12, 1));
            assert!(a.entries() <= 3);
        }
    }

    #[test]
    fn top_of_address_space() {
        let reg = IotlbRegistry::new();
        let a = reg.register(1, None);
        let top = align_down(u64::MAX, PAGE_SIZE_4K);
        fill(&a, &[page(1, top, top)]).unwrap();
        assert!(cached(&a, u64::MAX - 1));
        reg.invalidate_range(1, AddrRange::new(u64::MAX - 1, u64::MAX));
        assert!(!cached(&a, top));
        reg.invalidate_range(1, AddrRange::new(5, 5));
        reg.invalidate_range(1, AddrRange::new(9, 5));
    }
}
