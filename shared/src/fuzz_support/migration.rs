//! The migration property shared by the models' fuzz worlds: a scenario run with a
//! save/restore into a fresh model and fresh hosts part-way behaves, from the guest's side,
//! exactly like the same scenario run without one.
//!
//! [`run_migrated`] runs the steps twice from the same setup. The reference run goes through
//! unchanged, except that its emulated-DMA caches are dropped at the split (a cache may drop
//! entries at any time; the restored model starts empty, and a guest that changed its tables
//! without invalidating may otherwise legitimately see the old translation on one side only).
//! The migrated run, at the split, moves to a fresh model and fresh hosts through the
//! snapshot stream ([`MigrationWorld::migrate`], which also checks that attaching the hosts
//! before or after the restore gives the same mappings). After every later step both models'
//! architectural state must be equal, and at the end the guest memory too. Then both runs
//! issue the guest's global invalidation; when it completes on both without host exhaustion,
//! the host mappings must be identical. Both worlds are torn down (their oracles check that
//! nothing leaks).

use std::fmt::Debug;
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// How the migrated run moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Steps run before the snapshot.
    pub split: usize,
    /// Attach the destination's hosts after the restore instead of before.
    pub attach_after: bool,
    /// The destination hosts' entry limit (`None`: the source's).
    pub limit: Option<u32>,
}

/// A model's fuzz world as the migration property drives it.
pub trait MigrationWorld: Sized {
    /// What builds a world.
    type Setup: Copy;
    /// One step.
    type Op: Debug;
    /// The model's architectural state (its snapshot).
    type State: PartialEq + Debug;
    /// Every passthrough device's host mappings.
    type Mappings: PartialEq + Debug;

    /// A world booted from `setup`.
    fn create(setup: Self::Setup) -> Result<Self, String>;
    /// Runs one step with the world's oracles.
    fn run_step(&mut self, op: &Self::Op) -> Result<(), String>;
    /// Whether a step is VMM topology rather than migrated state (skipped in both runs).
    fn skipped(op: &Self::Op) -> bool;
    /// Drops the emulated-DMA caches.
    fn drop_caches(&self);
    /// Moves to a fresh model and fresh hosts through the snapshot stream; whether the
    /// destination's hosts ran out of entries.
    fn migrate(&mut self, m: Migration) -> Result<bool, String>;
    /// The world's invariants.
    fn check(&self) -> Result<(), String>;
    /// The architectural state.
    fn state(&self) -> Self::State;
    /// Guest memory.
    fn memory(&self) -> &GuestMemoryMmap;
    /// The guest's global invalidation with its wait: (completed, fit the hosts).
    fn final_flush(&mut self) -> Result<(bool, bool), String>;
    /// Every passthrough device's host mappings.
    fn host_mappings(&self) -> Self::Mappings;
    /// Detaches every host (the world's oracles check nothing leaks).
    fn detach_all(&mut self) -> Result<(), String>;
}

fn memory_bytes(mem: &GuestMemoryMmap) -> Vec<u8> {
    let mut out = Vec::new();
    for r in mem.iter() {
        let mut buf = vec![0u8; r.len() as usize];
        let _ = mem.read_slice(&mut buf, r.start_addr());
        out.extend_from_slice(&buf);
    }
    out
}

/// Runs `ops` (skipped ones left out) from `setup` with and without a migration at
/// `m.split`; the first difference is returned.
pub fn run_migrated<W: MigrationWorld>(
    setup: W::Setup,
    ops: &[W::Op],
    m: Migration,
) -> Result<(), String> {
    let ops: Vec<&W::Op> = ops.iter().filter(|op| !W::skipped(op)).collect();
    let mut reference = W::create(setup)?;
    let mut migrated = W::create(setup)?;
    let split = m.split.min(ops.len());
    for (i, op) in ops[..split].iter().enumerate() {
        reference
            .run_step(op)
            .map_err(|e| format!("step {i}: {e}"))?;
        migrated
            .run_step(op)
            .map_err(|e| format!("step {i}: {e}"))?;
    }
    reference.drop_caches();
    let restore_oor = migrated.migrate(m)?;
    migrated
        .check()
        .map_err(|e| format!("after restore: {e}"))?;
    for (i, op) in ops.iter().enumerate().skip(split) {
        reference
            .run_step(op)
            .map_err(|e| format!("reference step {i}: {e}"))?;
        migrated
            .run_step(op)
            .map_err(|e| format!("migrated step {i}: {e}"))?;
        let (a, b) = (reference.state(), migrated.state());
        if a != b {
            return Err(format!(
                "state differs after step {i} {op:?}:\n{a:?}\n{b:?}"
            ));
        }
    }
    if memory_bytes(reference.memory()) != memory_bytes(migrated.memory()) {
        return Err("guest memory differs".into());
    }
    let (done_r, fit_r) = reference.final_flush()?;
    let (done_m, fit_m) = migrated.final_flush()?;
    if done_r != done_m {
        return Err("the final flush completed on one side only".into());
    }
    if done_r && fit_r && fit_m && m.limit.is_none() && !restore_oor {
        let (a, b) = (reference.host_mappings(), migrated.host_mappings());
        if a != b {
            return Err(format!(
                "host mappings differ after the final flush:\n{a:x?}\n{b:x?}"
            ));
        }
    }
    migrated.detach_all()?;
    reference.detach_all()
}

/// The split-everywhere property of a model's migration runner: `cases` pseudo-random inputs
/// (every other one made Linux-like by `linux_like`), each migrated at every fifth step with
/// the attach order alternating and, every third case, a destination host of two entries
/// (its restore reclaims and reports out of resources, as at runtime). Panics with the case,
/// input and migration on the first failure of `run`.
pub fn every_split_of_random_inputs<I: Debug>(
    cases: usize,
    decode: impl Fn(&[u8]) -> Option<I>,
    linux_like: impl Fn(I) -> I,
    steps: impl Fn(&I) -> usize,
    run: impl Fn(&I, Migration) -> Result<(), String>,
) {
    let mut rng = super::XorShift::new(0x13);
    for case in 0..cases {
        let len = 100 + (rng.next_u64() % 500) as usize;
        let Some(input) = decode(&rng.bytes(len)) else {
            continue;
        };
        let input = if case % 2 == 0 {
            linux_like(input)
        } else {
            input
        };
        for split in (0..=steps(&input)).step_by(5) {
            let m = Migration {
                split,
                attach_after: split % 2 == 1,
                limit: (case % 3 == 0).then_some(2),
            };
            if let Err(e) = run(&input, m) {
                panic!("case {case}: {e}\n{input:#?}\n{m:?}");
            }
        }
    }
}
