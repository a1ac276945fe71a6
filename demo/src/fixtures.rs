//! Set-ups shared by the benchmarks and the instruction-count runner
//! (`examples/measure.rs`): emulated-device translation through each model, and the s390
//! global flush over a 4 GiB aperture with 64 Ki live 4 KiB mappings.

use crate::baseline::QemuRpcit;
use crate::dma_api::IommuDomain;
use crate::guest;
use crate::host::{self, HostHandle};
use crate::layout::{DATA, new_guest_memory};
use crate::run::{ModelKind, Strategy};
use crate::workload::Segment;
use std::sync::Arc;
use viommu_amd_vi::AmdVi;
use viommu_s390_zpci::testing::{GuestCpu, MemFunction, ZpciTables};
use viommu_s390_zpci::{Cc, Designation, Fh, FunctionConfig, Zpci};
use viommu_shared::dma::DeviceIommu;
use viommu_shared::host::SimHostConfig;
use viommu_shared::pt::Walker;
use viommu_shared::regs::NullMsiSink;
use viommu_shared::testing::guest_memory;
use viommu_shared::{AddrRange, Perm};
use viommu_vtd::Vtd;
use vm_memory::GuestMemoryMmap;

/// Pages the translation benchmarks cycle through.
pub const TRANSLATE_PAGES: u64 = 1024;

/// A model with `TRANSLATE_PAGES` scattered 4 KiB pages mapped for one device, and that
/// device's `vm_memory` IOMMU.
pub struct TranslateFixture {
    /// The device's IOMMU (`vm_memory::iommu::Iommu`).
    pub iommu: DeviceIommu,
    /// IOVAs of the mapped pages.
    pub iovas: Vec<u64>,
    // Keeps the model alive (the IOMMU holds it too; this keeps its type visible).
    _model: Box<dyn std::any::Any>,
}

fn scattered() -> Vec<Segment> {
    (0..TRANSLATE_PAGES)
        .map(|i| Segment {
            gpa: DATA.start + i * 0x2000,
            len: 4096,
        })
        .collect()
}

fn unlimited(model: ModelKind) -> HostHandle {
    host::simulated(model.sim_host(u32::MAX))
}

/// Maps the scattered pages through `domain` at its window's start; returns their IOVAs.
fn map_pages(domain: &mut dyn IommuDomain) -> Vec<u64> {
    let base = domain.iova_window().start.next_multiple_of(1 << 22);
    let perm = domain.perm(crate::workload::Direction::FromDevice) | Perm::READ;
    domain
        .map(base, &scattered(), perm)
        .expect("fixture mapping");
    (0..TRANSLATE_PAGES).map(|i| base + i * 4096).collect()
}

/// The translation fixture of `model`, whose emulated-DMA cache holds `iotlb_capacity`
/// pages per device (1: every lookup of another page misses).
pub fn translate_fixture(model: ModelKind, iotlb_capacity: usize) -> TranslateFixture {
    let mem = new_guest_memory();
    match model {
        ModelKind::Vtd => {
            let config = viommu_vtd::Config {
                iotlb_capacity,
                ..viommu_vtd::Config::default()
            };
            let vtd = Vtd::new(config, mem.clone(), Arc::new(NullMsiSink));
            let iovas = {
                let mut d =
                    guest::vtd::VtdDomain::boot(&vtd, &mem, unlimited(model), Strategy::Viommu)
                        .expect("VT-d boot");
                map_pages(&mut d)
            };
            TranslateFixture {
                iommu: vtd.device_iommu(u32::from(guest::vtd::SID)),
                iovas,
                _model: Box::new(vtd),
            }
        }
        ModelKind::AmdVi => {
            let config = viommu_amd_vi::Config {
                iotlb_capacity,
                ..viommu_amd_vi::Config::default()
            };
            let amd = AmdVi::new(config, mem.clone(), Arc::new(NullMsiSink));
            let iovas = {
                let mut d =
                    guest::amd_vi::AmdDomain::boot(&amd, &mem, unlimited(model), Strategy::Viommu)
                        .expect("AMD-Vi boot");
                map_pages(&mut d)
            };
            TranslateFixture {
                iommu: amd.device_iommu(guest::amd_vi::DEVID),
                iovas,
                _model: Box::new(amd),
            }
        }
        ModelKind::Zpci => {
            let config = viommu_s390_zpci::Config {
                iotlb_capacity,
                ..guest::zpci::config()
            };
            let zpci = Zpci::new(config, mem.clone(), Arc::new(NullMsiSink));
            let iovas = {
                let mut d =
                    guest::zpci::ZpciDomain::boot(&zpci, &mem, unlimited(model), Strategy::Viommu)
                        .expect("zPCI boot");
                map_pages(&mut d)
            };
            let iommu = zpci
                .device_iommu(guest::zpci::FID)
                .expect("function plugged");
            TranslateFixture {
                iommu,
                iovas,
                _model: Box::new(zpci),
            }
        }
    }
}

/// The global-flush aperture: 4 GiB from the default start of DMA.
pub const FLUSH_APERTURE: AddrRange = AddrRange::new(1 << 32, 2 << 32);
/// Live 4 KiB mappings in it: one every 64 KiB.
pub const FLUSH_PAGES: u64 = 1 << 16;

/// s390 DMA tables mapping `FLUSH_PAGES` pages spread over `FLUSH_APERTURE`, in 512 MiB of
/// guest memory.
pub struct FlushTables {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The tables.
    pub tables: ZpciTables,
}

/// Builds the tables.
pub fn flush_tables() -> FlushTables {
    let mem = guest_memory(&[(0, 512 << 20)]);
    let mut tables = ZpciTables::new(&mem, Designation::RegionThird, 0x100_0000, 0x400_0000)
        .expect("table area");
    let stride = FLUSH_APERTURE.len() / FLUSH_PAGES;
    for i in 0..FLUSH_PAGES {
        tables
            .map(
                FLUSH_APERTURE.start + i * stride,
                (128 << 20) + i * 4096,
                Perm::RW,
            )
            .expect("map");
    }
    FlushTables { mem, tables }
}

/// viommu's side: a zPCI function with a simulated host, the tables registered (so the host
/// already holds the 64 Ki mappings).
pub struct ZpciFlush {
    /// The model.
    pub zpci: Zpci,
    /// Enabled handle.
    pub fh: Fh,
    /// The host.
    pub host: HostHandle,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    _tables: ZpciTables,
}

/// Scratch area of the guest CPU issuing RPCITs.
pub const SCRATCH: u64 = 0x10_0000;

/// Sets up viommu's side of the global-flush benchmark.
pub fn zpci_flush() -> ZpciFlush {
    let FlushTables { mem, tables } = flush_tables();
    let zpci = Zpci::new(guest::zpci::config(), mem.clone(), Arc::new(NullMsiSink));
    let fid = guest::zpci::FID;
    let fh0 = zpci
        .add_function(
            FunctionConfig::new(fid, 1),
            Box::new(MemFunction::new(0x1014, 0x04ed, [0; 6], [0; 6])),
        )
        .expect("plug");
    let host =
        host::simulated(SimHostConfig::s390(guest::zpci::HOST_APERTURE).with_entry_limit(1 << 20));
    zpci.attach_host(fid, Box::new(host.clone()))
        .expect("attach");
    let fh = {
        let mut cpu = GuestCpu::new(&zpci, &mem, SCRATCH);
        let fh = cpu.enable(fh0).expect("enable");
        let c = cpu
            .register_ioat(
                fh,
                FLUSH_APERTURE.start,
                FLUSH_APERTURE.end - 1,
                tables.iota().0,
            )
            .expect("register");
        assert_eq!(c.cc, Cc::Ok);
        fh
    };
    assert_eq!(host.with(|h| h.stats().entries), FLUSH_PAGES);
    ZpciFlush {
        zpci,
        fh,
        host,
        mem,
        _tables: tables,
    }
}

impl ZpciFlush {
    /// One global RPCIT; true on CC 0.
    pub fn global_rpcit(&self) -> bool {
        let mut cpu = GuestCpu::new(&self.zpci, &self.mem, SCRATCH);
        cpu.rpcit(self.fh, FLUSH_APERTURE.start, FLUSH_APERTURE.len())
            .is_ok_and(|c| c.cc == Cc::Ok)
    }
}

/// QEMU's side: its RPCIT handler with the page cache already holding the 64 Ki pages.
pub struct QemuFlush {
    /// The tables.
    pub tables: FlushTables,
    /// QEMU's RPCIT state.
    pub qemu: QemuRpcit<HostHandle>,
}

/// Sets up QEMU's side of the global-flush benchmark.
pub fn qemu_flush() -> QemuFlush {
    let tables = flush_tables();
    let host =
        host::simulated(SimHostConfig::s390(guest::zpci::HOST_APERTURE).with_entry_limit(1 << 20));
    let mut q = QemuFlush {
        tables,
        qemu: QemuRpcit::new(host, FLUSH_APERTURE),
    };
    q.global_rpcit();
    assert_eq!(q.qemu.host().with(|h| h.stats().entries), FLUSH_PAGES);
    q
}

impl QemuFlush {
    /// One global RPCIT; true on CC 0.
    pub fn global_rpcit(&mut self) -> bool {
        let format = *self.tables.tables.format();
        let walker = Walker::new(&format, &self.tables.mem, self.tables.tables.root());
        self.qemu
            .rpcit(&format, &walker, FLUSH_APERTURE.start, FLUSH_APERTURE.len())
            == crate::baseline::RpcitAnswer::Ok
    }
}
