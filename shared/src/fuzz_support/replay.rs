//! Replaying a fuzz target under `cargo test`: the checked-in corpus plus deterministic
//! pseudo-random inputs. Every crate's replay test uses these.

use super::XorShift;
use std::path::{Path, PathBuf};

/// The checked-in corpus of `target`: `fuzz/corpus/<target>` at the workspace root, found
/// from the calling crate's `CARGO_MANIFEST_DIR` (every crate sits one level below the root).
pub fn corpus_dir(manifest_dir: &str, target: &str) -> PathBuf {
    Path::new(manifest_dir).join("../fuzz/corpus").join(target)
}

/// Every file of `target`'s corpus, in name order.
///
/// # Panics
/// If a corpus file cannot be read (test code only).
pub fn corpus(manifest_dir: &str, target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(manifest_dir, target))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("corpus file"))
        .collect()
}

/// How many pseudo-random inputs to replay: `FUZZ_REPLAY_CASES` if set, else `default`.
pub fn cases(default: u64) -> u64 {
    std::env::var("FUZZ_REPLAY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `body` on every corpus input of `target`, then on `random` pseudo-random inputs of
/// up to `max_len` bytes (seeded from the target name, so runs repeat).
///
/// # Panics
/// If the corpus is empty, or whenever `body` panics (an oracle failed).
pub fn replay(manifest_dir: &str, target: &str, body: fn(&[u8]), random: u64, max_len: usize) {
    let seeds = corpus(manifest_dir, target);
    assert!(!seeds.is_empty(), "no corpus for {target}");
    for s in &seeds {
        body(s);
    }
    let mut rng = XorShift::new(0x5eed ^ target.len() as u64);
    for _ in 0..random {
        let len = (rng.next_u64() as usize) % max_len.max(1);
        body(&rng.bytes(len));
    }
}

/// Writes `inputs` into `target`'s corpus as `seed-00`, `seed-01`, …
pub fn write_seeds(manifest_dir: &str, target: &str, inputs: &[Vec<u8>]) -> std::io::Result<()> {
    let dir = corpus_dir(manifest_dir, target);
    std::fs::create_dir_all(&dir)?;
    for (i, bytes) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), bytes)?;
    }
    Ok(())
}
