//! `viommu-scenario FILE…`: runs scenario files (directories are searched for `*.scn`),
//! prints one line per failure as `file:line: message`, then `N passed, M failed`; exits
//! non-zero on any failure.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        eprintln!("usage: viommu-scenario FILE|DIR…");
        return ExitCode::from(2);
    }
    let mut files = Vec::new();
    for a in args {
        if a.is_dir() {
            files.extend(viommu_conformance::scenario_files(&a));
        } else {
            files.push(a);
        }
    }
    let (mut passed, mut failed) = (0, 0);
    for f in &files {
        match viommu_conformance::run_file(f) {
            Ok(()) => {
                passed += 1;
                println!("ok   {}", f.display());
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
