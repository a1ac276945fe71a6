//! The nested real-guest test: runs `tests/nested/run.sh`, which boots L0 QEMU TCG (emulated
//! AMD SVM), loads kvm_amd in L1, runs this crate's VMM there and lets real Linux drivers in
//! L2 drive the VT-d and AMD-Vi models. It takes minutes of CPU and needs root (apt, QEMU
//! from Debian's archive), so it is run explicitly — by `.ci/run` and with
//! `cargo test -p viommu-vmm --test nested -- --ignored` — not by `cargo test --workspace`.
//! The script fails (never skips) when a piece is missing, and so does this test.

use std::process::Command;

#[test]
#[ignore = "boots QEMU TCG with nested KVM for several minutes; run by .ci/run (--ignored)"]
fn real_linux_drives_vtd_and_amd_vi_through_viommu_vmm() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let status = Command::new("bash")
        .arg(format!("{root}/tests/nested/run.sh"))
        .args(["--iommu", "both"])
        .status()
        .expect("cannot run bash tests/nested/run.sh");
    assert!(status.success(), "tests/nested/run.sh failed: {status}");
}
