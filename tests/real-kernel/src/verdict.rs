//! Verdict lines on the serial console and their tally.
//!
//! Every line the harness parses starts with `REALKERNEL`; run.sh greps them out of the serial
//! log. One line per compared step (`AGREE` / `DISAGREE`) and per DMA check (`PASS` /
//! `FAIL`), then one `REALKERNEL-RESULT` line.

use std::fmt::Display;
use viommu_shared::host::HostError;

/// Counts of compared steps and device checks.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Steps where the real backend and SimHost answered the same.
    pub agreed: u32,
    /// Steps where they did not.
    pub disagreed: u32,
    /// Device (edu DMA) and state checks that held.
    pub passed: u32,
    /// Device and state checks that did not.
    pub failed: u32,
}

impl Verdicts {
    /// Compares one step's outcomes and prints the verdict line.
    pub fn compare<T: PartialEq + Display>(
        &mut self,
        tag: &str,
        index: usize,
        what: &str,
        real: &T,
        sim: &T,
    ) {
        let verdict = if real == sim {
            self.agreed += 1;
            "AGREE"
        } else {
            self.disagreed += 1;
            "DISAGREE"
        };
        println!("REALKERNEL [{tag}] {index:03} {what} | real: {real} | sim: {sim} | {verdict}");
    }

    /// Records a check that only the real kernel/device can answer.
    pub fn check(&mut self, tag: &str, what: &str, ok: bool, detail: impl Display) {
        let verdict = if ok {
            self.passed += 1;
            "PASS"
        } else {
            self.failed += 1;
            "FAIL"
        };
        println!("REALKERNEL [{tag}] check {what} | {detail} | {verdict}");
    }

    /// True when nothing disagreed or failed and something was compared.
    pub fn ok(&self) -> bool {
        self.disagreed == 0 && self.failed == 0 && self.agreed > 0
    }
}

/// Errno name of a host error (`ENOSPC` also stands for `ENOMEM`: both are "out of
/// resources" to [`HostError`]).
pub fn errno_name(e: &HostError) -> String {
    match e {
        HostError::OutOfResources => "ENOSPC".into(),
        HostError::Overlap => "EEXIST".into(),
        HostError::Invalid => "EINVAL".into(),
        HostError::NotFound => "ENOENT".into(),
        HostError::BadAddress => "EFAULT".into(),
        HostError::Overflow => "EOVERFLOW".into(),
        HostError::Errno(n) => format!("errno {n}"),
    }
}

/// `Some(n)` as `n`, `None` as `-`.
pub fn avail(remaining: Option<u32>) -> String {
    remaining.map_or_else(|| "-".into(), |n| n.to_string())
}
