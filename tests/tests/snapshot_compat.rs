//! Format compatibility: a snapshot of each model written by the current format version is
//! checked in under `tests/snapshots/` and must keep restoring, to the expected state, and
//! save back byte for byte. A build that changes a model's format must bump its version
//! *and* keep restoring these files (or say in its commit why compatibility is broken);
//! `cargo test -p viommu-conformance --test snapshot_compat -- --ignored write_snapshots`
//! writes the files of the current version.
//!
//! Each file is the state of the corresponding `fuzz_support::restore::valid_stream(0)`
//! source: a Linux-like booted model (tables built by the `fuzz_support` world in guest
//! memory) with one DMA fault recorded (VT-d fault record, AMD-Vi event log entry, zPCI
//! error event). The destination here rebuilds the same guest memory and attaches its host
//! after the restore.

use std::path::PathBuf;
use std::sync::Arc;
use viommu_shared::host::{SharedSimHost, SimHostConfig};
use viommu_shared::regs::RecordingMsiSink;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn vtd_v1_keeps_restoring() {
    use viommu_vtd::fuzz_support::model::{DATA, DEV, QUEUE, ROOT, Setup, World};
    use viommu_vtd::regs::*;
    use viommu_vtd::{RootMode, VTD_SNAPSHOT_VERSION, Vtd};
    let bytes = read("vtd-v1.json");
    let w = World::new(Setup {
        scalable: false,
        levels: 1,
        flavour: 0,
        limit: 63,
        blank: false,
    })
    .unwrap();
    // The v1 stream was saved from this world's unit before interrupt remapping was
    // modelled, when EIM was off by default: a unit restoring it must advertise the same
    // ECAP (restore refuses another configuration).
    let config = viommu_vtd::Config {
        extended_interrupt_mode: false,
        ..w.vtd.config().clone()
    };
    let vtd = Vtd::new(config, w.mem.clone(), Arc::new(RecordingMsiSink::new()));
    vtd.restore_bytes(&bytes).unwrap();
    let host = SharedSimHost::new(SimHostConfig::vtd());
    vtd.attach_host(u32::from(DEV), Box::new(host.clone()))
        .unwrap();
    // The expected state.
    let s = vtd.save();
    assert_eq!(s.version, VTD_SNAPSHOT_VERSION);
    assert_eq!(vtd.mmio_read(GSTS, 4), GCMD_TE | GCMD_SRTP | GCMD_QIE);
    assert!(vtd.translation_enabled());
    assert_eq!(vtd.root_pointer().addr, ROOT);
    assert_eq!(vtd.root_pointer().mode, RootMode::Legacy);
    assert_eq!(vtd.mmio_read(IQA, 8) & IQA_ADDR_MASK, QUEUE);
    assert_eq!(vtd.mmio_read(FSTS, 4) & FSTS_PPF, FSTS_PPF);
    let records = vtd.fault_records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].source_id, records[0].address, records[0].reason),
        (DEV, 0x4_0000, 0x5)
    );
    // The shadow rebuilt from the guest's tables: 16 pages at IOVA 0.
    let maps: Vec<_> = host.with(|h| {
        h.mappings()
            .iter()
            .map(|m| (m.iova, m.gpa, m.size))
            .collect()
    });
    assert_eq!(maps, vec![(0, DATA, 0x1_0000)]);
    // Nothing lost: it saves back to the same bytes.
    assert_eq!(vtd.save_bytes(), bytes);
}

#[test]
fn amd_vi_v1_keeps_restoring() {
    use viommu_amd_vi::fuzz_support::model::{CMD_BUF, DATA, EVT_LOG, PASSTHROUGH, Setup, World};
    use viommu_amd_vi::regs::{control, offset, status};
    use viommu_amd_vi::{AMD_VI_SNAPSHOT_VERSION, AmdVi};
    let bytes = read("amd-vi-v1.json");
    let w = World::new(Setup {
        levels: 0,
        flavour: 0,
        limit: 31,
        blank: false,
    })
    .unwrap();
    // The v1 stream was saved before interrupt remapping was modelled, when EFR did not
    // advertise GASup and XTSup: a unit restoring it must advertise the same EFR (restore
    // refuses another configuration).
    let config = viommu_amd_vi::Config {
        ga: false,
        x2apic: false,
        ..w.iommu.config().clone()
    };
    let iommu = AmdVi::new(config, w.mem.clone(), Arc::new(RecordingMsiSink::new()));
    iommu.restore_bytes(&bytes).unwrap();
    let host = SharedSimHost::new(SimHostConfig::amd_vi());
    iommu
        .attach_host(PASSTHROUGH[0], Box::new(host.clone()))
        .unwrap();
    assert_eq!(iommu.save().version, AMD_VI_SNAPSHOT_VERSION);
    let ctl = iommu.mmio_read(offset::CONTROL, 8);
    assert_eq!(
        ctl & (control::IOMMU_EN | control::CMD_BUF_EN | control::EVENT_LOG_EN),
        control::IOMMU_EN | control::CMD_BUF_EN | control::EVENT_LOG_EN
    );
    assert_eq!(
        iommu.mmio_read(offset::CMD_BUF_BASE, 8) & 0xf_ffff_ffff_f000,
        CMD_BUF
    );
    assert_eq!(
        iommu.mmio_read(offset::EVT_LOG_BASE, 8) & 0xf_ffff_ffff_f000,
        EVT_LOG
    );
    // The boot's flush (2 commands) ran; one event (the DMA fault) is in the log.
    assert_eq!(iommu.mmio_read(offset::CMD_HEAD, 8), 0x20);
    assert_eq!(iommu.mmio_read(offset::EVT_TAIL, 8), 0x10);
    let st = iommu.mmio_read(offset::STATUS, 8);
    assert_eq!(
        st & (status::CMD_BUF_RUN | status::EVENT_LOG_RUN | status::EVENT_LOG_INT),
        status::CMD_BUF_RUN | status::EVENT_LOG_RUN | status::EVENT_LOG_INT
    );
    let maps: Vec<_> = host.with(|h| {
        h.mappings()
            .iter()
            .map(|m| (m.iova, m.gpa, m.size))
            .collect()
    });
    assert_eq!(maps, vec![(0, DATA, 0x1_0000)]);
    // Saved back: the v1 stream's registers with their values, plus the x2APIC interrupt
    // registers (0x170, 0x178, 0x180) added with interrupt remapping, at their reset value.
    let v1 = viommu_amd_vi::AmdViSnapshot::from_bytes(&bytes).unwrap();
    let now = iommu.save();
    let added: Vec<_> = now
        .registers
        .iter()
        .filter(|r| !v1.registers.iter().any(|o| o.offset == r.offset))
        .map(|r| (r.offset, r.value))
        .collect();
    assert_eq!(added, [(0x170, 0), (0x178, 0), (0x180, 0)]);
    for r in &v1.registers {
        assert!(now.registers.contains(r), "{r:?}");
    }
    assert_eq!(now.command_halted, v1.command_halted);
}

#[test]
fn zpci_v1_keeps_restoring() {
    use viommu_s390_zpci::fuzz_support::model::{DATA, FID, HOST_APERTURE, Op, SDMA, Setup, World};
    use viommu_s390_zpci::{FunctionState, Pec, ZPCI_SNAPSHOT_VERSION};
    let bytes = read("zpci-v1.json");
    let setup = Setup {
        designation: 0,
        limit: 1,
        reclaim: false,
        relaxed: false,
        blank: false,
    };
    // The destination: the world's own model, its host detached, the source's tables
    // rebuilt in guest memory (the source mapped 21 pages), restored, a fresh host attached
    // after the restore.
    let mut w = World::new(setup).unwrap();
    w.zpci.detach_host(FID).unwrap();
    w.guest
        .apply(&Op::Map {
            at: 3,
            pages: 20,
            gpa: 5,
            ro: false,
        })
        .unwrap();
    w.zpci.restore_bytes(&bytes).unwrap();
    let host = SharedSimHost::new(SimHostConfig::s390(HOST_APERTURE));
    w.zpci.attach_host(FID, Box::new(host.clone())).unwrap();
    let s = w.zpci.save();
    assert_eq!(s.version, ZPCI_SNAPSHOT_VERSION);
    let f = w.zpci.function(FID).unwrap();
    // The source's DMA fault put the function in the error state and the guest recovered
    // (MPCIFC reset error): enabled, the event still pending for the VMM.
    assert_eq!(f.state, FunctionState::Enabled);
    assert_eq!(f.fh.0, 0x8000_0001);
    let ioat = f.ioat.unwrap();
    assert_eq!((ioat.pba, ioat.relaxed), (SDMA, false));
    assert_eq!(f.counters.rpcits, 1);
    assert_eq!(f.last_error.map(|e| e.pec), Some(Pec::INVALID_TABLE_ENTRY));
    assert_eq!(s.events.len(), 1);
    // The shadow rebuilt from the registered tables: 21 pages at page 3.
    let maps: Vec<_> = host.with(|h| {
        h.mappings()
            .iter()
            .map(|m| (m.iova, m.gpa, m.size))
            .collect()
    });
    assert_eq!(maps, vec![(SDMA + 0x3000, DATA + 43 * 0x1000, 21 * 0x1000)]);
    assert_eq!(w.zpci.save_bytes(), bytes);
}

#[test]
#[ignore = "writes the checked-in snapshots of the current format version"]
fn write_snapshots() {
    let files = [
        (
            "vtd-v1.json",
            viommu_vtd::fuzz_support::restore::valid_stream(0),
        ),
        (
            "amd-vi-v1.json",
            viommu_amd_vi::fuzz_support::restore::valid_stream(0),
        ),
        (
            "zpci-v1.json",
            viommu_s390_zpci::fuzz_support::restore::valid_stream(0),
        ),
    ];
    for (name, bytes) in files {
        std::fs::write(path(name), bytes.unwrap()).unwrap();
    }
}

/// A stream of another format version is refused with a typed error naming both versions,
/// before its body is looked at, and the model is left in its reset state.
#[test]
fn other_versions_are_refused() {
    use viommu_shared::snapshot::SnapshotError;
    let bump = |name: &str| {
        let text = String::from_utf8(read(name)).unwrap();
        assert!(text.contains("\"version\": 1,"));
        text.replacen("\"version\": 1,", "\"version\": 2, \"future\": [1, 2],", 1)
            .into_bytes()
    };
    let want = SnapshotError::UnsupportedVersion {
        found: 2,
        supported: 1,
    };
    let mem = viommu_shared::testing::guest_memory(&[(0, 16 << 20)]);
    let msi = || Arc::new(RecordingMsiSink::new());

    let vtd = viommu_vtd::Vtd::new(Default::default(), mem.clone(), msi());
    let reset = vtd.save();
    assert_eq!(
        vtd.restore_bytes(&bump("vtd-v1.json")),
        Err(viommu_vtd::VtdError::Snapshot(want.clone()))
    );
    assert_eq!(vtd.save(), reset);

    let amd = viommu_amd_vi::AmdVi::new(Default::default(), mem.clone(), msi());
    let reset = amd.save();
    assert_eq!(
        amd.restore_bytes(&bump("amd-vi-v1.json")),
        Err(viommu_amd_vi::AmdViError::Snapshot(want.clone()))
    );
    assert_eq!(amd.save(), reset);

    let zpci = viommu_s390_zpci::Zpci::new(Default::default(), mem, msi());
    let reset = zpci.save();
    assert_eq!(
        zpci.restore_bytes(&bump("zpci-v1.json")),
        Err(viommu_s390_zpci::ModelError::Snapshot(want))
    );
    assert_eq!(zpci.save(), reset);
}
