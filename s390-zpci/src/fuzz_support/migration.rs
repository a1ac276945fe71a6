//! Migration property: a scenario run with a save/restore into a fresh model and a fresh
//! [`SharedSimHost`] part-way behaves, from the guest's side, exactly like the same scenario
//! run without one.
//!
//! [`run_migrated`] runs the input twice from the same setup. The reference run goes through
//! unchanged, except that its emulated-DMA cache is flushed at the split (a cache may drop
//! entries at any time; the restored model starts empty). The migrated run, at the split,
//! saves the model as a stream, builds a new model over the same guest memory with the same
//! function plugged (a fresh PCI backend: device state is the VMM's to migrate) and a new
//! host (attached before or after the restore), and restores the stream; a witness model
//! attaching its host the other way round must end with the same host mappings. After every
//! later step the two models' architectural state ([`Zpci::save`]: handles, states,
//! registrations, measurement, pending events) must be equal, and so must the guest-visible
//! answers counted since the split (RPCITs answered CC 1 status 16, table errors, DMA
//! faults); at the end the guest memory (measurement blocks, STPCIFC and CLP responses) too.
//! Then both runs issue a global RPCIT: same answer, and when it fits, the same host
//! mappings; finally each run's own end-of-input oracles ([`World::finish`]). With a smaller
//! destination host (`limit`), answers may legitimately differ (status 16 where the source
//! had room), so the migrated run then only has to pass its own oracles.

use super::model::{FID, Input, MAX_OPS, Op, PAL, SDMA, World, host_config, plug};
use crate::{FunctionStats, ModelError, Zpci};
use std::sync::Arc;
use viommu_shared::host::SharedSimHost;
use viommu_shared::regs::RecordingMsiSink;
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

pub use viommu_shared::fuzz_support::migration::Migration;

/// A restore's or attach's answer: out of resources is acceptable (and noted).
fn accept(r: Result<(), ModelError>, oor: &mut bool) -> Result<(), String> {
    match r {
        Ok(()) | Err(ModelError::HostRefused { .. }) => Ok(()),
        Err(ModelError::HostOutOfResources { .. }) => {
            *oor = true;
            Ok(())
        }
        Err(e) => Err(format!("migration: {e:?}")),
    }
}

impl World {
    /// A fresh model with the function plugged and a fresh host of `limit` entries,
    /// restored from `bytes` with the host attached before or after. Returns the model, its
    /// host, and whether the restore or attach ran out of host entries.
    fn restored(
        &self,
        bytes: &[u8],
        attach_after: bool,
        limit: u32,
    ) -> Result<(Zpci, SharedSimHost, bool), String> {
        let zpci = Zpci::new(
            self.zpci.config().clone(),
            self.mem.clone(),
            Arc::new(RecordingMsiSink::new()),
        );
        plug(&zpci)?;
        let host = SharedSimHost::new(host_config(limit));
        let attach = || zpci.attach_host(FID, Box::new(host.clone()));
        let mut oor = false;
        if attach_after {
            accept(zpci.restore_bytes(bytes), &mut oor)?;
            accept(attach(), &mut oor)?;
        } else {
            accept(attach(), &mut oor)?;
            accept(zpci.restore_bytes(bytes), &mut oor)?;
        }
        Ok((zpci, host, oor))
    }

    /// Moves this world to a fresh model and host over the same guest memory, through the
    /// snapshot stream; checks that attaching before or after the restore gives the same
    /// host mappings. Returns whether the destination ran out of host entries.
    pub fn migrate(&mut self, m: Migration) -> Result<bool, String> {
        let bytes = self.zpci.save_bytes();
        let limit = m.limit.unwrap_or(self.limit);
        let (zpci, host, oor) = self.restored(&bytes, m.attach_after, limit)?;
        if zpci.save() != self.zpci.save() {
            return Err(format!(
                "the restored model's state differs from the saved one:\n{:?}\n{:?}",
                zpci.save(),
                self.zpci.save()
            ));
        }
        let (witness, _witness_host, witness_oor) =
            self.restored(&bytes, !m.attach_after, limit)?;
        if oor != witness_oor {
            return Err("only one attach order ran out of host entries".into());
        }
        let (a, b) = (zpci.host_mappings(FID), witness.host_mappings(FID));
        if a != b {
            return Err(format!(
                "attaching before and after the restore differ:\n{a:x?}\n{b:x?}"
            ));
        }
        // The source's pending events were delivered there; the destination re-queues them.
        self.zpci = zpci;
        self.host = host;
        self.limit = limit;
        Ok(oor)
    }

    fn stats(&self) -> Result<FunctionStats, String> {
        self.zpci
            .function(FID)
            .map(|f| f.stats)
            .map_err(|e| format!("function: {e:?}"))
    }
}

/// The guest-visible answers counted in `s`.
fn answers(s: &FunctionStats) -> [u64; 4] {
    [
        s.rpcits,
        s.insufficient_resources,
        s.table_errors,
        s.dma_faults,
    ]
}

fn since(now: &FunctionStats, then: &FunctionStats) -> [u64; 4] {
    let (a, b) = (answers(now), answers(then));
    [0, 1, 2, 3].map(|i| a[i].wrapping_sub(b[i]))
}

fn memory(w: &World) -> Vec<u8> {
    let mut out = Vec::new();
    for r in w.mem.iter() {
        let mut buf = vec![0u8; r.len() as usize];
        let _ = w.mem.read_slice(&mut buf, r.start_addr());
        out.extend_from_slice(&buf);
    }
    out
}

/// Runs `input` with and without a migration at `m.split`; the first difference is returned.
pub fn run_migrated(input: &Input, m: Migration) -> Result<(), String> {
    let ops: Vec<&Op> = input.ops.iter().take(MAX_OPS).collect();
    let mut reference = World::new(input.setup)?;
    let mut migrated = World::new(input.setup)?;
    let split = m.split.min(ops.len());
    for (i, op) in ops[..split].iter().enumerate() {
        reference.step(op).map_err(|e| format!("step {i}: {e}"))?;
        migrated.step(op).map_err(|e| format!("step {i}: {e}"))?;
    }
    reference.zpci.iotlb().invalidate_all();
    let base_r = reference.stats()?;
    migrated.migrate(m)?;
    let base_m = migrated.stats()?;
    migrated
        .check()
        .map_err(|e| format!("after restore: {e}"))?;
    if m.limit.is_some() {
        // A smaller destination host changes guest-visible answers (status 16 where the
        // source had room): the migrated run only has to pass its own oracles.
        for (i, op) in ops.iter().enumerate().skip(split) {
            migrated
                .step(op)
                .map_err(|e| format!("migrated step {i}: {e}"))?;
        }
        return migrated.finish();
    }
    for (i, op) in ops.iter().enumerate().skip(split) {
        reference
            .step(op)
            .map_err(|e| format!("reference step {i}: {e}"))?;
        migrated
            .step(op)
            .map_err(|e| format!("migrated step {i}: {e}"))?;
        if reference.zpci.save() != migrated.zpci.save() {
            return Err(format!(
                "state differs after step {i} {op:?}:\n{:?}\n{:?}",
                reference.zpci.save(),
                migrated.zpci.save()
            ));
        }
        let (a, b) = (
            since(&reference.stats()?, &base_r),
            since(&migrated.stats()?, &base_m),
        );
        if a != b {
            return Err(format!(
                "answers since the split differ after step {i} {op:?} (rpcits, status 16, \
                 table errors, DMA faults): {a:?} vs {b:?}"
            ));
        }
    }
    if memory(&reference) != memory(&migrated) {
        return Err("guest memory differs".into());
    }
    let global = |w: &World| w.cpu().rpcit(w.fh(), SDMA, PAL - SDMA + 1);
    let (a, b) = (global(&reference), global(&migrated));
    let cc = |r: &crate::InsnResult| r.as_ref().map(|c| (c.cc, c.status)).ok();
    if cc(&a) != cc(&b) {
        return Err(format!("the global RPCIT answered {a:?} vs {b:?}"));
    }
    let fits = matches!(&a, Ok(c) if c.cc == crate::Cc::Ok);
    if fits && reference.zpci.host_mappings(FID) != migrated.zpci.host_mappings(FID) {
        return Err("host mappings differ after the global RPCIT".into());
    }
    migrated.finish()?;
    reference.finish()
}
