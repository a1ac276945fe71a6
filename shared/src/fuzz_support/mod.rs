//! Bodies of the fuzz targets on guest-controlled input, and the oracles they check.
//!
//! They live here, not in `fuzz/`, so that `cargo test` runs them too (over the checked-in
//! corpus in `fuzz/corpus/<target>/` and over deterministic pseudo-random inputs) on the
//! stable toolchain; `fuzz/` only wraps them for libFuzzer. Each target panics when an oracle
//! fails, which is what a fuzzer reports.

pub mod encode;
pub mod migration;
pub mod oracle;
pub mod replay;
pub mod shadow;
pub mod stream;
pub mod walker;

pub use encode::Encoder;
pub use oracle::{
    check_enumeration, check_lookups, check_mappings_match_host, check_record_matches_host,
};
pub use shadow::shadow;
pub use stream::hostile_stream;
pub use walker::walker;

/// A deterministic xorshift64* generator for pseudo-random replay inputs.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Decodes a fuzz input as a head followed by steps until the data runs out (at most `max`
/// steps). A derived `Vec` stops at the first even "continue" byte, which would make random
/// inputs one or two steps long; this keeps decoding while bytes remain.
pub fn decode_steps<'a, H, S>(data: &'a [u8], max: usize) -> Option<(H, Vec<S>)>
where
    H: arbitrary::Arbitrary<'a>,
    S: arbitrary::Arbitrary<'a>,
{
    let mut u = arbitrary::Unstructured::new(data);
    let head = H::arbitrary(&mut u).ok()?;
    let mut steps = Vec::new();
    while !u.is_empty() && steps.len() < max {
        steps.push(S::arbitrary(&mut u).ok()?);
    }
    Some((head, steps))
}
