//! Executing invalidations on the emulated-device IOTLB and the passthrough shadows, and
//! re-resolving shadowed devices when their context may have changed.

use super::{Unit, sid_matches};
use crate::events;
use crate::invalidation::{IecScope, Invalidation, PasidCacheScope};
use crate::shadow::Extent;
use crate::space::Space;
use std::sync::atomic::Ordering;
use viommu_shared::irq::IrInvalidation;
use viommu_shared::regs::RegisterFile;
use vm_memory::{Bytes, GuestAddress};

impl Unit {
    // ---- Executing invalidations ----------------------------------------------------

    /// Performs one invalidation: the emulated-device IOTLB first (a barrier: when it
    /// returns no DMA uses the old translations), then the shadows.
    pub(crate) fn execute(&mut self, regs: &mut RegisterFile, inv: Invalidation) {
        match inv {
            Invalidation::ContextGlobal => {
                self.iotlb.invalidate_all();
                self.refresh(|_, _| true);
            }
            Invalidation::ContextDomain { did } => {
                self.iotlb.invalidate_domain(u64::from(did));
                // Under caching mode not-present entries are cached with DID 0; looking at
                // every blocked device again is a harmless superset of that.
                self.refresh(|old, new| {
                    old.did() == Some(did)
                        || new.did() == Some(did)
                        || matches!(old, Space::Blocked { .. })
                });
            }
            Invalidation::ContextDevice { sid, fm, .. } => {
                self.invalidate_devices(sid, fm);
                let ids: Vec<u16> = self.shadows.devices.keys().copied().collect();
                for id in ids {
                    if sid_matches(self.source_id(id), sid, fm) {
                        self.refresh_device(id);
                    }
                }
            }
            Invalidation::IotlbGlobal => {
                self.iotlb.invalidate_all();
                self.resync(|s| matches!(s, Space::Translated { .. }), Extent::All);
            }
            Invalidation::IotlbDomain { did } => {
                self.iotlb.invalidate_domain(u64::from(did));
                self.resync(
                    |s| matches!(s, Space::Translated { .. }) && s.did() == Some(did),
                    Extent::All,
                );
            }
            Invalidation::IotlbPage { did, range, .. } => {
                self.iotlb.invalidate_range(u64::from(did), range);
                self.resync(
                    |s| matches!(s, Space::Translated { .. }) && s.did() == Some(did),
                    Extent::Range(range),
                );
            }
            Invalidation::PasidIotlb { did, pasid, range } => {
                // The emulated-device IOTLB is tagged by domain only: flushing the whole
                // domain's range over-invalidates other PASIDs, which is harmless.
                let extent = match range {
                    Some(r) => {
                        self.iotlb.invalidate_range(u64::from(did), r);
                        Extent::Range(r)
                    }
                    None => {
                        self.iotlb.invalidate_domain(u64::from(did));
                        Extent::All
                    }
                };
                self.resync(
                    |s| {
                        matches!(s, Space::Translated { .. })
                            && s.did() == Some(did)
                            && s.pasid() == Some(pasid)
                    },
                    extent,
                );
            }
            Invalidation::PasidCache(scope) => match scope {
                PasidCacheScope::Global => {
                    self.iotlb.invalidate_all();
                    self.refresh(|_, _| true);
                }
                PasidCacheScope::Domain { did } => {
                    self.iotlb.invalidate_domain(u64::from(did));
                    // A space that was blocked has no domain yet: look again.
                    self.refresh(|old, new| {
                        old.did() == Some(did)
                            || new.did() == Some(did)
                            || matches!(old, Space::Blocked { .. })
                    });
                }
                PasidCacheScope::Pasid { did, pasid } => {
                    self.iotlb.invalidate_domain(u64::from(did));
                    self.refresh(|old, new| {
                        let hit = |s: &Space| s.did() == Some(did) && s.pasid() == Some(pasid);
                        hit(old) || hit(new) || matches!(old, Space::Blocked { .. })
                    });
                }
            },
            Invalidation::DeviceTlb { sid } => self.invalidate_devices(sid, 0),
            Invalidation::InterruptEntryCache(scope) => self.notify_ir(match scope {
                IecScope::Global => IrInvalidation::All,
                IecScope::Index { first, count } => IrInvalidation::Indices { first, count },
            }),
            Invalidation::Wait {
                status, interrupt, ..
            } => {
                // Everything before this descriptor is already complete (processing is in
                // order and synchronous), so the fence needs nothing more.
                if let Some((addr, data)) = status {
                    let stored =
                        self.mem
                            .store(data.to_le(), GuestAddress(addr), Ordering::Release);
                    if stored.is_err() {
                        self.stats.wait_status_write_failures += 1;
                    }
                }
                if interrupt {
                    events::completion(regs, &*self.msi);
                }
            }
        }
    }

    /// Flushes the emulated-device IOTLB of every registered device whose source id matches.
    fn invalidate_devices(&self, sid: u16, fm: u8) {
        let rids: Vec<u32> = self
            .iotlb
            .devices()
            .iter()
            .map(|d| d.requester_id())
            .filter(|&rid| {
                u16::try_from(rid).is_ok_and(|rid| sid_matches(self.source_id(rid), sid, fm))
            })
            .collect();
        for rid in rids {
            self.iotlb.invalidate_device(rid);
        }
    }

    /// Re-resolves every passthrough device; those for which `filter(old, new)` holds and
    /// whose space changed are re-synced in full.
    pub(crate) fn refresh(&mut self, filter: impl Fn(&Space, &Space) -> bool) {
        let ids: Vec<u16> = self.shadows.devices.keys().copied().collect();
        for id in ids {
            let new = self.space_of(id);
            let Some(dev) = self.shadows.devices.get_mut(&id) else {
                continue;
            };
            if filter(&dev.space, &new) && dev.space != new {
                dev.space = new;
                let r = self.shadows.sync(
                    id,
                    &self.mem,
                    self.config.shadow.walk_limits,
                    Extent::All,
                    &mut self.stats,
                );
                self.note(r);
            }
        }
    }

    /// Re-resolves one passthrough device, re-syncing it in full if its space changed.
    pub(crate) fn refresh_device(&mut self, id: u16) {
        let new = self.space_of(id);
        if let Some(dev) = self.shadows.devices.get_mut(&id)
            && dev.space != new
        {
            dev.space = new;
            let r = self.shadows.sync(
                id,
                &self.mem,
                self.config.shadow.walk_limits,
                Extent::All,
                &mut self.stats,
            );
            self.note(r);
        }
    }

    /// Syncs every passthrough device whose space satisfies `filter` over `extent`.
    fn resync(&mut self, filter: impl Fn(&Space) -> bool, extent: Extent) {
        let ids: Vec<u16> = self
            .shadows
            .devices
            .iter()
            .filter(|(_, d)| filter(&d.space))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let r = self.shadows.sync(
                id,
                &self.mem,
                self.config.shadow.walk_limits,
                extent,
                &mut self.stats,
            );
            self.note(r);
        }
    }
}
