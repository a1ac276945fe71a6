//! Replays the `restore` fuzz target on the stable toolchain: every checked-in corpus entry
//! under `fuzz/corpus/restore/` and deterministic pseudo-random inputs built on the seeds
//! (random bytes alone would almost never pick a model and a mutation that parses).
//! `FUZZ_REPLAY_CASES` scales the number of pseudo-random inputs.
//!
//! `cargo test -p viommu-conformance --test fuzz_replay -- --ignored write_seed_corpus`
//! (re)writes the seed files into the corpus.

use viommu_conformance::fuzz_support::{restore, seeds};
use viommu_shared::fuzz_support::XorShift;
use viommu_shared::fuzz_support::replay::{self, cases, corpus};

#[test]
fn restore_corpus_and_random_inputs() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let corpus = corpus(dir, "restore");
    assert!(!corpus.is_empty(), "no corpus for restore");
    for input in &corpus {
        restore(input);
    }
    // Pseudo-random mutations: model, configuration and mutation kind from the generator,
    // then random mutation bytes.
    let mut rng = XorShift::new(0x5e5_7012e);
    for _ in 0..cases(240) {
        let head = rng.bytes(3);
        let len = (rng.next_u64() % 80) as usize;
        let mut input = vec![head[0] % 3, head[1], 1 + head[2] % 3];
        input.extend(rng.bytes(len));
        restore(&input);
    }
    // And fully random inputs (mostly raw garbage streams).
    replay::replay(dir, "restore", restore, cases(60), 200);
}

#[test]
fn seeds_pass() {
    for s in seeds().unwrap() {
        restore(&s);
    }
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_seed_corpus() {
    replay::write_seeds(env!("CARGO_MANIFEST_DIR"), "restore", &seeds().unwrap()).unwrap();
}
