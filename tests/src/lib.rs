//! viommu conformance: a plain-text scenario format (`.scn`, specified in
//! `tests/SCENARIOS.md`) and a runner that executes scenarios against any model through the
//! [`ScenarioTarget`](target::ScenarioTarget) seam.

#![deny(missing_docs)]

pub mod amd_vi;
pub mod ast;
pub mod exec;
pub mod expr;
pub mod fuzz_support;
pub mod irq;
pub mod parse;
pub mod target;
pub mod vtd;
pub mod zpci;

use std::path::Path;

pub use exec::{Failure, Runner};

/// Runs scenario `text`; `Err` holds the first failure (syntax or expectation).
pub fn run_str(text: &str) -> Result<(), Failure> {
    let stmts = parse::parse(text).map_err(|e| Failure {
        line: e.line,
        msg: e.msg,
    })?;
    Runner::new().run(&stmts)
}

/// Runs the scenario file at `path`; the error is `file:line: message`.
pub fn run_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    run_str(&text).map_err(|f| format!("{}:{}: {}", path.display(), f.line, f.msg))
}

/// Every `.scn` file below `dir`, sorted.
pub fn scenario_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "scn") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
