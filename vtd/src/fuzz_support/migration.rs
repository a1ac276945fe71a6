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

use super::model::{DEV, Desc, Input, MAX_OPS, Op, QUEUE, World};
use crate::{Vtd, VtdError};
use std::sync::Arc;
use viommu_shared::host::{SharedSimHost, SimHostConfig};
use viommu_shared::regs::RecordingMsiSink;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// How the migrated run moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Steps run before the snapshot.
    pub split: usize,
    /// Attach the destination's host after the restore instead of before.
    pub attach_after: bool,
    /// The destination host's entry limit (`None`: the source's).
    pub limit: Option<u32>,
}

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
/// IVRS-like aliases are the VMM's topology, not migrated state: [`Op::Alias`] steps are
/// skipped in both runs.
pub fn run_migrated(input: &Input, m: Migration) -> Result<(), String> {
    let ops: Vec<&Op> = input
        .ops
        .iter()
        .take(MAX_OPS)
        .filter(|op| !matches!(op, Op::Alias { .. }))
        .collect();
    let mut reference = World::new(input.setup)?;
    let mut migrated = World::new(input.setup)?;
    let split = m.split.min(ops.len());
    for (i, op) in ops[..split].iter().enumerate() {
        reference.step(op).map_err(|e| format!("step {i}: {e}"))?;
        migrated.step(op).map_err(|e| format!("step {i}: {e}"))?;
    }
    reference.vtd.iotlb().invalidate_all();
    let restore_error = migrated.migrate(m)?;
    migrated
        .check()
        .map_err(|e| format!("after restore: {e}"))?;
    for (i, op) in ops.iter().enumerate().skip(split) {
        reference
            .step(op)
            .map_err(|e| format!("reference step {i}: {e}"))?;
        migrated
            .step(op)
            .map_err(|e| format!("migrated step {i}: {e}"))?;
        if reference.vtd.save() != migrated.vtd.save() {
            return Err(format!(
                "state differs after step {i} {op:?}:\n{:?}\n{:?}",
                reference.vtd.save(),
                migrated.vtd.save()
            ));
        }
    }
    if memory(&reference) != memory(&migrated) {
        return Err("guest memory differs".into());
    }
    let (done_r, fit_r) = reference.final_flush()?;
    let (done_m, fit_m) = migrated.final_flush()?;
    if done_r != done_m {
        return Err("the final flush completed on one side only".into());
    }
    let same_limit = m.limit.is_none();
    if done_r && fit_r && fit_m && same_limit && restore_error.is_none() {
        let (a, b) = (
            reference.vtd.host_mappings(u32::from(DEV)),
            migrated.vtd.host_mappings(u32::from(DEV)),
        );
        if a != b {
            return Err(format!(
                "host mappings differ after the final flush:\n{a:x?}\n{b:x?}"
            ));
        }
    }
    migrated.detach()?;
    reference.detach()
}
