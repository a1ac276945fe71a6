//! Runs every scenario under `tests/scenarios/**`, and checks the runner's own error paths.

use std::path::Path;
use viommu_conformance::{run_file, run_str, scenario_files};

#[test]
fn every_scenario_file_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let files = scenario_files(&dir);
    assert!(!files.is_empty(), "no scenarios under {}", dir.display());
    let failures: Vec<String> = files.iter().filter_map(|f| run_file(f).err()).collect();
    println!(
        "{} passed, {} failed",
        files.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn unknown_operation_is_a_file_line_error() {
    let dir = std::env::temp_dir().join(format!("viommu-scn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.scn");
    std::fs::write(
        &f,
        "model vtd\n# comment\n\nmmio write 0 8 1\nfrobnicate 1 2\n",
    )
    .unwrap();
    let e = run_file(&f).unwrap_err();
    assert_eq!(
        e,
        format!("{}:5: unknown operation 'frobnicate'", f.display())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_numbers_are_line_errors() {
    let e = run_str("model vtd\nwrite64 0x10 0xZZ\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(
        e.msg.contains("malformed number or expression '0xZZ'"),
        "{}",
        e.msg
    );
    let e = run_str("model vtd\nrepeat 2 as i {\n  mmio write 0x1g 8 1\n}\n").unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.msg.contains("'0x1g'"), "{}", e.msg);
    let e = run_str("model vtd\nwrite8 0 0x100\n").unwrap_err();
    assert!(e.msg.contains("does not fit"), "{}", e.msg);
}

#[test]
fn expectation_failures_say_expected_and_got() {
    let e = run_str("model vtd\nmmio read 0x20 8 expect 1\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert_eq!(
        e.msg,
        "mmio read 0x20: expected 0x1, got 0x0 (mask 0xffffffffffffffff)"
    );
    let e = run_str("model vtd\nwrite32 0x100 7\nexpect-mem32 0x100 8\n").unwrap_err();
    assert_eq!(
        (e.line, e.msg.as_str()),
        (
            3,
            "memory at 0x100: expected 0x8, got 0x7 (mask 0xffffffffffffffff)"
        )
    );
    let e = run_str("model vtd\nexpect-msi addr=1 data=2\n").unwrap_err();
    assert!(e.msg.contains("got none"));
    let e = run_str("model vtd\nhost dev=1\nexpect-host-count dev=1 3\n").unwrap_err();
    // Translation is off, so the passthrough device sees guest RAM (64 MiB) identity-mapped
    // in 2 MiB host mappings.
    assert_eq!(e.msg, "host mappings: expected 3, got 32");
    let e = run_str("model nosuch\n").unwrap_err();
    assert_eq!(e.msg, "unknown model 'nosuch'");
    let e = run_str("model vtd mode=9\n").unwrap_err();
    assert!(e.msg.contains("unknown option 'mode'"));
    let e = run_str("model vtd\nrpcit fh=1 expect cc=0\n").unwrap_err();
    assert!(e.msg.contains("unsupported"));
    let e = run_str("write8 0 1\nmemory 1M\n").unwrap_err();
    assert_eq!(e.line, 2);
    let e = run_str("model vtd\nrepeat 100000000 {\n  write8 0 1\n}\n").unwrap_err();
    assert!(e.msg.contains("iterations"));
}

#[test]
fn big_endian_writes_and_bytes() {
    run_str("model vtd\nwrite32 0x100 0x11223344 be\nexpect-bytes 0x100 \"11 22 33 44\"\nexpect-mem32 0x100 0x44332211\nexpect-mem16 0x100 0x1122 be\nwrite-bytes 0x200 deadbeef\nexpect-mem32 0x200 0xdeadbeef be\n").unwrap();
}
