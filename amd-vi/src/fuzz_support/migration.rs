//! Migration property: a scenario run with a save/restore into a fresh IOMMU and fresh
//! [`SharedSimHost`]s part-way behaves, from the guest's side, exactly like the same
//! scenario run without one.
//!
//! [`run_migrated`] runs the input twice from the same setup. The reference run goes through
//! unchanged, except that its emulated-DMA caches are flushed at the split (a cache may drop
//! entries at any time; the restored IOMMU starts empty). The migrated run, at the split,
//! saves the IOMMU as a stream, builds a new IOMMU over the same guest memory with new hosts
//! (attached before or after the restore), and restores the stream; a witness IOMMU
//! attaching its hosts the other way round must end with the same host mappings. After every
//! later step the two IOMMUs' architectural state ([`AmdVi::save`]: every register, the
//! command-halt latch) must be equal, and at the end the guest memory (event log, completion
//! stores, …) too. Then both runs issue INVALIDATE_IOMMU_ALL and a completion wait; when it
//! completes on both without host exhaustion, the host mappings must be identical.

use super::model::{Host, Input, MAX_OPS, Op, SEM, Setup, World};
use crate::{AmdVi, AmdViError};
use std::sync::Arc;
use viommu_shared::fuzz_support::migration::{self, MigrationWorld};
use viommu_shared::host::PinBudget;
use viommu_shared::irq::RouteTable;
use viommu_shared::regs::RecordingMsiSink;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub use viommu_shared::fuzz_support::migration::Migration;

/// What a restore and its attaches returned: out of resources is acceptable (and noted).
fn accept(r: Result<(), AmdViError>, oor: &mut bool) -> Result<(), String> {
    match r {
        Ok(()) => Ok(()),
        Err(AmdViError::HostOutOfResources { .. }) => {
            *oor = true;
            Ok(())
        }
        Err(e) => Err(format!("migration: {e:?}")),
    }
}

impl World {
    /// A fresh IOMMU like this one's, with fresh hosts like this world's (entry limit
    /// `limit` if given), restored from `bytes` with the hosts attached before or after.
    /// Returns the IOMMU, its hosts (sharing a fresh pin budget like this world's, if it has
    /// one: the destination is another process), and whether the last step ran out of host
    /// entries.
    fn restored(
        &self,
        bytes: &[u8],
        attach_after: bool,
        limit: Option<u32>,
        msi: Arc<RecordingMsiSink>,
    ) -> Result<(AmdVi, Vec<Host>, Option<PinBudget>, bool), String> {
        let iommu = AmdVi::new(self.iommu.config().clone(), self.mem.clone(), msi);
        let budget = self.budget.as_ref().map(|b| PinBudget::new(b.limit()));
        let hosts: Vec<Host> = self
            .hosts
            .iter()
            .map(|h| {
                let limit = limit.map_or(h.limit, |l| l.min(h.limit));
                Host::new(h.device, h.flavour, limit, budget.as_ref())
            })
            .collect();
        let attach = |oor: &mut bool| -> Result<(), String> {
            for h in &hosts {
                accept(iommu.attach_host(h.device, Box::new(h.host.clone())), oor)?;
            }
            Ok(())
        };
        let mut first = false;
        let mut last = false;
        if attach_after {
            accept(iommu.restore_bytes(bytes), &mut first)?;
            attach(&mut last)?;
        } else {
            attach(&mut first)?;
            accept(iommu.restore_bytes(bytes), &mut last)?;
        }
        Ok((iommu, hosts, budget, last))
    }

    /// Moves this world to a fresh IOMMU and fresh hosts over the same guest memory, through
    /// the snapshot stream; checks that attaching before or after the restore gives the same
    /// host mappings. Returns whether the destination ran out of host entries.
    pub fn migrate(&mut self, m: Migration) -> Result<bool, String> {
        let bytes = self.iommu.save_bytes();
        let (iommu, hosts, budget, oor) =
            self.restored(&bytes, m.attach_after, m.limit, self.msi.clone())?;
        if iommu.save() != self.iommu.save() {
            return Err("the restored IOMMU's state differs from the saved one".into());
        }
        let (witness, _witness_hosts, _witness_budget, witness_oor) = self.restored(
            &bytes,
            !m.attach_after,
            m.limit,
            Arc::new(RecordingMsiSink::new()),
        )?;
        if !oor && !witness_oor {
            for h in &self.hosts {
                let (a, b) = (
                    iommu.host_mappings(h.device),
                    witness.host_mappings(h.device),
                );
                if a != b {
                    return Err(format!(
                        "device {}: attaching before and after the restore differ:\n{a:x?}\n{b:x?}",
                        h.device
                    ));
                }
            }
        }
        self.iommu = iommu;
        // The destination's interrupt output is the World's; its routes are the VMM's, set
        // again on the destination (derived state is never migrated).
        let routes = RouteTable::new(Arc::new(self.iommu.clone()), None);
        for (id, source, msi) in self.routes.routes() {
            let _ = routes.set(id, source, msi);
        }
        self.routes = routes;
        self.hosts = hosts;
        self.budget = budget;
        Ok(oor)
    }

    /// INVALIDATE_IOMMU_ALL and a completion wait; whether it completed and fit the hosts.
    fn final_flush(&mut self) -> Result<(bool, bool), String> {
        let oor_before = self.iommu.stats().host_out_of_resources;
        let _ = self.mem.write_obj(0u64, GuestAddress(SEM));
        self.step(&Op::Flush {
            domain: 0,
            index: 0,
            order: 0,
            all: true,
        })?;
        let done: u64 = self.mem.read_obj(GuestAddress(SEM)).unwrap_or(0);
        Ok((
            done != 0,
            self.iommu.stats().host_out_of_resources == oor_before,
        ))
    }
}

impl MigrationWorld for World {
    type Setup = Setup;
    type Op = Op;
    type State = crate::AmdViSnapshot;
    type Mappings = Vec<Option<Vec<viommu_shared::shadow::ShadowMapping>>>;

    fn create(setup: Setup) -> Result<World, String> {
        World::new(setup)
    }

    fn run_step(&mut self, op: &Op) -> Result<(), String> {
        self.step(op)
    }

    fn skipped(op: &Op) -> bool {
        matches!(op, Op::Alias { .. })
    }

    fn drop_caches(&self) {
        self.iommu.iotlb().invalidate_all();
    }

    fn migrate(&mut self, m: Migration) -> Result<bool, String> {
        World::migrate(self, m)
    }

    fn check(&self) -> Result<(), String> {
        World::check(self)
    }

    fn state(&self) -> Self::State {
        self.iommu.save()
    }

    fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    fn final_flush(&mut self) -> Result<(bool, bool), String> {
        World::final_flush(self)
    }

    fn host_mappings(&self) -> Self::Mappings {
        self.hosts
            .iter()
            .map(|h| self.iommu.host_mappings(h.device))
            .collect()
    }

    fn detach_all(&mut self) -> Result<(), String> {
        for i in 0..self.hosts.len() {
            World::detach(self, i)?;
        }
        Ok(())
    }
}

/// Runs `input` with and without a migration at `m.split`
/// ([`viommu_shared::fuzz_support::migration::run_migrated`]); the first difference is
/// returned. IVRS aliases are the VMM's topology, not migrated state: [`Op::Alias`] steps are skipped
/// in both runs.
pub fn run_migrated(input: &Input, m: Migration) -> Result<(), String> {
    let n = input.ops.len().min(MAX_OPS);
    migration::run_migrated::<World>(input.setup, &input.ops[..n], m)
}
