//! Shared setup of the integration tests: guest memory, one enabled function with a
//! memory-backed device, optionally a simulated s390 host, Linux-like tables.

#![allow(dead_code)]

use std::sync::Arc;

use viommu_s390_zpci::testing::{GuestCpu, MemFunction, ZpciTables};
use viommu_s390_zpci::{Config, Designation, Fh, Fid, FunctionConfig, Zpci};
use viommu_shared::host::{HostMapping, SharedSimHost, SimHostConfig};
use viommu_shared::regs::RecordingMsiSink;
use viommu_shared::testing::guest_memory;
use viommu_shared::{AddrRange, Perm};
use vm_memory::GuestMemoryMmap;

/// Guest RAM size.
pub const RAM: u64 = 0x400_0000;
/// Scratch area of the guest CPU.
pub const SCRATCH: u64 = 0x10_0000;
/// Measurement block.
pub const FMB: u64 = 0x20_0000;
/// Table area.
pub const TABLES: (u64, u64) = (0x100_0000, 0x200_0000);
/// First data page handed out as DMA target.
pub const DATA: u64 = 0x200_0000;
/// Start of the DMA range.
pub const SDMA: u64 = 0x1_0000_0000;
/// The host's aperture.
pub const HOST_APERTURE: AddrRange = AddrRange::new(SDMA, SDMA + (1 << 30));
/// The function id of the first function.
pub const FID: Fid = Fid(0x10);

pub struct Env {
    pub mem: GuestMemoryMmap,
    pub zpci: Zpci,
    pub msi: Arc<RecordingMsiSink>,
    pub host: Option<SharedSimHost>,
    pub dev: MemFunction,
    /// Disabled handle.
    pub fh0: Fh,
}

impl Env {
    pub fn cpu(&self) -> GuestCpu<'_> {
        GuestCpu::new(&self.zpci, &self.mem, SCRATCH)
    }

    /// Enables the function through CLP; returns the enabled handle.
    pub fn enable(&self) -> Fh {
        self.cpu().enable(self.fh0).expect("enable")
    }

    pub fn tables(&self, d: Designation) -> ZpciTables {
        ZpciTables::new(&self.mem, d, TABLES.0, TABLES.1).expect("tables")
    }

    /// Host mappings as (iova, gpa, size, perm).
    pub fn host_mappings(&self) -> Vec<(u64, u64, u64, Perm)> {
        self.host
            .as_ref()
            .map(|h| {
                h.with(|h| {
                    h.mappings()
                        .into_iter()
                        .map(
                            |HostMapping {
                                 iova,
                                 gpa,
                                 size,
                                 perm,
                             }| (iova, gpa, size, perm),
                        )
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    pub fn host_count(&self) -> usize {
        self.host
            .as_ref()
            .map_or(0, |h| h.with(|h| h.mapping_count()))
    }
}

/// A model with one function (fid 0x10, BAR0 of 4 KiB) and, with `host`, a simulated s390
/// host attached.
pub fn env_with(config: Config, host: Option<SimHostConfig>) -> Env {
    env_fn(config, host, FunctionConfig::new(FID, 0x77))
}

pub fn env_fn(config: Config, host: Option<SimHostConfig>, mut fcfg: FunctionConfig) -> Env {
    let mem = guest_memory(&[(0, RAM as usize)]);
    let msi = Arc::new(RecordingMsiSink::new());
    let zpci = Zpci::new(config, mem.clone(), msi.clone());
    let dev = MemFunction::new(
        0x1014,
        0x04ed,
        [4096, 0, 0, 0, 0, 0],
        [0xc000_0004, 0, 0, 0, 0, 0],
    );
    fcfg.bar_sizes[0] = 4096;
    let fid = fcfg.fid;
    let fh0 = zpci
        .add_function(fcfg, Box::new(dev.clone()))
        .expect("add function");
    let host = host.map(|cfg| {
        let h = SharedSimHost::new(cfg);
        zpci.attach_host(fid, Box::new(h.clone())).expect("attach");
        h
    });
    Env {
        mem,
        zpci,
        msi,
        host,
        dev,
        fh0,
    }
}

/// A model with the full DMA range advertised (no shrink) and a host of `limit` entries.
pub fn env_limit(limit: u32) -> Env {
    let config = Config {
        aperture: viommu_s390_zpci::AperturePolicy::Full,
        ..Config::default()
    };
    env_with(
        config,
        Some(SimHostConfig::s390(HOST_APERTURE).with_entry_limit(limit)),
    )
}
