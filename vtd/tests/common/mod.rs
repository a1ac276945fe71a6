//! Shared fixture for the integration tests: guest RAM, a unit, an MSI recorder, a Linux-like
//! driver and a second-stage table builder.

#![allow(dead_code)]

use std::sync::Arc;
use viommu_shared::Perm;
use viommu_shared::host::{HostCall, SharedSimHost, SimHostConfig};
use viommu_shared::pt::TableBuilder;
use viommu_shared::regs::RecordingMsiSink;
use viommu_shared::testing::guest_memory;
use viommu_vtd::testing::GuestDriver;
use viommu_vtd::{Config, SecondStage, Vtd};
use vm_memory::GuestMemoryMmap;

/// Guest RAM size.
pub const RAM: u64 = 256 << 20;
/// Area for driver structures (root/context tables, queue, status words).
pub const STRUCTS: (u64, u64) = (0x100_0000, 0x180_0000);
/// Area for second-stage page tables.
pub const TABLES: (u64, u64) = (0x180_0000, 0x300_0000);
/// Where test data pages live.
pub const DATA: u64 = 0x400_0000;

/// The fault event message the driver programs.
pub const FAULT_MSI: (u64, u32) = (0xfee0_0000, 0x41);

pub struct Fixture {
    pub mem: GuestMemoryMmap,
    pub vtd: Vtd,
    pub msi: Arc<RecordingMsiSink>,
}

impl Fixture {
    pub fn new(config: Config) -> Fixture {
        let mem = guest_memory(&[(0, RAM as usize)]);
        let msi = Arc::new(RecordingMsiSink::new());
        let vtd = Vtd::new(config, mem.clone(), msi.clone());
        Fixture { mem, vtd, msi }
    }

    pub fn driver(&self) -> GuestDriver<'_> {
        GuestDriver::new(&self.vtd, self.mem.clone(), STRUCTS.0, STRUCTS.1)
    }

    /// The 4-level (AW=2) format the unit uses for a default legacy context.
    pub fn format(&self) -> SecondStage {
        SecondStage::new(4, 48, false, true, true)
    }
}

/// A second-stage table builder over the fixture's table area.
pub fn builder<'a>(
    format: &'a SecondStage,
    mem: &'a GuestMemoryMmap,
) -> TableBuilder<'a, SecondStage, GuestMemoryMmap> {
    TableBuilder::new(format, mem, TABLES.0, TABLES.1).expect("table area")
}

/// A type1 v2 simulated host like the measured VT-d host.
pub fn sim_host() -> SharedSimHost {
    SharedSimHost::new(SimHostConfig::vtd())
}

/// (iova, gpa, size) of every host mapping.
pub fn host_maps(host: &SharedSimHost) -> Vec<(u64, u64, u64)> {
    host.with(|h| {
        h.mappings()
            .iter()
            .map(|m| (m.iova, m.gpa, m.size))
            .collect()
    })
}

/// The calls made since the last call, as compact tuples: ("map"|"unmap", iova, size).
pub fn take_calls(host: &SharedSimHost) -> Vec<(&'static str, u64, u64)> {
    host.with(|h| h.take_calls())
        .into_iter()
        .map(|c| match c {
            HostCall::Map { iova, size, .. } => ("map", iova, size),
            HostCall::Unmap { iova, size, .. } => ("unmap", iova, size),
            HostCall::UnmapAll { .. } => ("unmap_all", 0, 0),
        })
        .collect()
}

pub const RW: Perm = Perm::RW;

use viommu_shared::dma::{DmaFault, DmaRequest, DmaTranslate, DmaTranslation};
use viommu_vtd::FaultRecord;

/// A DMA request from `sid` through the unit.
pub fn dma(
    vtd: &Vtd,
    sid: u16,
    pasid: Option<u32>,
    iova: u64,
    perm: Perm,
) -> Result<DmaTranslation, DmaFault> {
    vtd.translate(&DmaRequest {
        requester_id: u32::from(sid),
        pasid,
        iova,
        perm,
    })
}

/// The one pending fault record, acknowledged (F cleared) through MMIO.
pub fn take_fault(vtd: &Vtd) -> FaultRecord {
    let recs = vtd.fault_records();
    assert_eq!(recs.len(), 1, "expected exactly one fault record: {recs:?}");
    let r = recs[0];
    let off = viommu_vtd::regs::FRCD_BASE + 16 * r.index as u64 + 12;
    vtd.mmio_write(off, 4, 1 << 31).unwrap();
    assert!(vtd.fault_records().is_empty());
    r
}
