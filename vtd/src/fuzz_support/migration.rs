//! Migration property: a scenario run with a save/restore into a fresh unit and a fresh
//! [`SharedSimHost`] part-way behaves, from the guest's side, exactly like the same scenario
//! run without one.
//!
//! [`run_migrated`] runs the input twice from the same setup. The reference run goes through
//! unchanged, except that its emulated-device IOTLB is flushed at the split (a cache may
//! drop entries at any time; the restored unit starts empty, and a guest that changed its
//! tables without invalidating may otherwise legitimately see the old translation on one
//! side only). The migrated run, at the split, saves the unit as a stream, builds a new unit
//! over the same guest memory with a new host (attached before or after the restore), and
//! restores the stream; a witness unit attaching its host the other way round (after instead
//! of before the restore, or vice versa) must end with the same host mappings. After every
//! later step the two units' architectural state
//! ([`Vtd::save`]: registers, fault records, queue, root) must be equal, and at the end the
//! guest memory (completion writes, …) too. Then both runs issue Linux's global context and
//! IOTLB flush; when it completes on both without host exhaustion, the host mappings must
//! be identical.

use super::model::{DEV, Desc, Input, MAX_OPS, Op, QUEUE, Setup, World};
use crate::{Vtd, VtdError};
use std::sync::Arc;
use viommu_shared::fuzz_support::migration::{self, MigrationWorld};
use viommu_shared::host::{SharedSimHost, SimHostConfig};
use viommu_shared::regs::RecordingMsiSink;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub use viommu_shared::fuzz_support::migration::Migration;

impl World {
    /// Moves this world to a fresh unit and a fresh host over the same guest memory, through
    /// the snapshot stream. Returns the restore's (or late attach's) host error, if any.
    pub fn migrate(&mut self, m: Migration) -> Result<Option<VtdError>, String> {
        let bytes = self.vtd.save_bytes();
        let (flavour, limit) = self.host_config;
        let limit = m.limit.unwrap_or(limit);
        self.host_config = (flavour, limit);
        let host = SharedSimHost::new(
            SimHostConfig::vtd()
                .with_flavour(flavour)
                .with_entry_limit(limit),
        );
        let vtd = Vtd::new(self.vtd.config().clone(), self.mem.clone(), self.msi_sink());
        let attach = |v: &Vtd| v.attach_host(u32::from(DEV), Box::new(host.clone()));
        let mut host_error = None;
        let mut keep = |r: Result<(), VtdError>| -> Result<(), String> {
            match r {
                Ok(()) => Ok(()),
                Err(e @ VtdError::HostOutOfResources { .. }) => {
                    host_error.get_or_insert(e);
                    Ok(())
                }
                Err(e) => Err(format!("migration: {e:?}")),
            }
        };
        if !m.attach_after {
            keep(attach(&vtd))?;
        }
        keep(vtd.restore_bytes(&bytes))?;
        if m.attach_after {
            keep(attach(&vtd))?;
        }
        if vtd.save() != self.vtd.save() {
            return Err("the restored unit's state differs from the saved one".into());
        }
        // Attaching before or after the restore must give the same host: a witness unit does
        // it the other way round.
        if host_error.is_none() {
            let witness_host = SharedSimHost::new(
                SimHostConfig::vtd()
                    .with_flavour(flavour)
                    .with_entry_limit(limit),
            );
            let witness = Vtd::new(
                self.vtd.config().clone(),
                self.mem.clone(),
                Arc::new(RecordingMsiSink::new()),
            );
            let attach = || witness.attach_host(u32::from(DEV), Box::new(witness_host.clone()));
            let restore = || witness.restore_bytes(&bytes);
            // The first step may run out of host entries (attaching to a unit in its reset
            // state maps all guest RAM); only the last one decides.
            let (first, last) = if m.attach_after {
                (attach(), restore())
            } else {
                (restore(), attach())
            };
            let fits = match (first, last) {
                (Ok(()) | Err(VtdError::HostOutOfResources { .. }), Ok(())) => true,
                (
                    Ok(()) | Err(VtdError::HostOutOfResources { .. }),
                    Err(VtdError::HostOutOfResources { .. }),
                ) => false,
                (a, b) => return Err(format!("witness: {a:?} {b:?}")),
            };
            let (a, b) = (
                vtd.host_mappings(u32::from(DEV)),
                witness.host_mappings(u32::from(DEV)),
            );
            if fits && a != b {
                return Err(format!(
                    "attaching the host before and after the restore differ:\n{a:x?}\n{b:x?}"
                ));
            }
        }
        // The source host goes away with the source unit.
        self.vtd = vtd;
        self.host = host;
        self.rebuild_routes();
        Ok(host_error)
    }

    /// Linux's global context-cache and IOTLB flush with a wait; whether the wait completed.
    fn final_flush(&mut self) -> Result<(bool, bool), String> {
        let ctx = Op::Descriptor {
            desc: Desc::Valid {
                kind: 0,
                did: 0,
                sid: 0,
                page: 0,
                am: 0,
                flag: false,
                pasid: 0,
            },
            ring: false,
        };
        let oor_before = self.vtd.stats().host_out_of_resources;
        self.step(&ctx)?;
        let flush = Op::Flush {
            index: 0,
            am: 0,
            global: true,
        };
        let status = QUEUE + 0xff0;
        let _ = self.mem.write_obj(0u32, GuestAddress(status));
        let r = self.step(&flush);
        let done: u32 = self.mem.read_obj(GuestAddress(status)).unwrap_or(0);
        r?;
        Ok((
            done == 2,
            self.vtd.stats().host_out_of_resources == oor_before,
        ))
    }
}

impl MigrationWorld for World {
    type Setup = Setup;
    type Op = Op;
    type State = crate::VtdSnapshot;
    type Mappings = Option<Vec<viommu_shared::shadow::ShadowMapping>>;

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
        self.vtd.iotlb().invalidate_all();
    }

    fn migrate(&mut self, m: Migration) -> Result<bool, String> {
        World::migrate(self, m).map(|e| e.is_some())
    }

    fn check(&self) -> Result<(), String> {
        World::check(self)
    }

    fn state(&self) -> Self::State {
        self.vtd.save()
    }

    fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    fn final_flush(&mut self) -> Result<(bool, bool), String> {
        World::final_flush(self)
    }

    fn host_mappings(&self) -> Self::Mappings {
        self.vtd.host_mappings(u32::from(DEV))
    }

    fn detach_all(&mut self) -> Result<(), String> {
        World::detach(self)
    }
}

/// Runs `input` with and without a migration at `m.split`
/// ([`viommu_shared::fuzz_support::migration::run_migrated`]); the first difference is
/// returned. IVRS-like aliases are the VMM's topology, not migrated state: [`Op::Alias`] steps are
/// skipped in both runs.
pub fn run_migrated(input: &Input, m: Migration) -> Result<(), String> {
    let n = input.ops.len().min(MAX_OPS);
    migration::run_migrated::<World>(input.setup, &input.ops[..n], m)
}
