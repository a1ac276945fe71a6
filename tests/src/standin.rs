//! A minimal stand-in model that exercises the shared core through the runner until the real
//! models are wired in (delete it then). It is a toy IOMMU, not an architecture:
//!
//! | offset | register | access |
//! |---|---|---|
//! | 0x00 | ROOT: root of a 4-level x86-style table (`RadixFormat`) | RW |
//! | 0x08 | CMD: 1 enable, 2 disable, 3 invalidate `[INV_START, +INV_LEN)`, 4 invalidate all | WO |
//! | 0x10 | INV_START | RW |
//! | 0x18 | INV_LEN | RW |
//! | 0x20 | STATUS: bit 0 enabled (RO), bit 1 fault pending (W1C) | |
//! | 0x28 | FAULT_IOVA | RO |
//! | 0x30 | MSI_ADDR, 0x38 MSI_DATA: the fault interrupt | RW |
//!
//! Enabled: DMA translates through the table, passthrough devices are shadowed. Disabled: DMA
//! is blocked and shadows are empty. Out-of-resources after reclaim + retry fails the CMD write
//! with `host-out-of-resources`.

use crate::target::{DmaReq, ScenarioTarget, TargetEnv, TargetError};
use std::collections::BTreeMap;
use std::sync::Arc;
use viommu_shared::AddrRange;
use viommu_shared::host::SharedSimHost;
use viommu_shared::pt::{ByteOrder, Walker};
use viommu_shared::regs::{
    Msi, MsiSink, RecordingMsiSink, RegSpec, RegWrite, RegisterBank, RegisterFile, WriteHandler,
};
use viommu_shared::shadow::{EmptyView, GuestView, ShadowConfig, ShadowEngine, ShadowError};
use viommu_shared::testing::RadixFormat;
use vm_memory::GuestMemoryMmap;

const ROOT: u64 = 0x00;
const CMD: u64 = 0x08;
const INV_START: u64 = 0x10;
const INV_LEN: u64 = 0x18;
const STATUS: u64 = 0x20;
const FAULT_IOVA: u64 = 0x28;
const MSI_ADDR: u64 = 0x30;
const MSI_DATA: u64 = 0x38;
const ENABLED: u64 = 1;
const FAULT: u64 = 2;

static REGS: &[RegSpec] = &[
    RegSpec::rw64("ROOT", ROOT, 0, !0xfff),
    RegSpec::wo64("CMD", CMD, !0),
    RegSpec::rw64("INV_START", INV_START, 0, !0xfff),
    RegSpec::rw64("INV_LEN", INV_LEN, 0, !0),
    RegSpec::w1c64("STATUS", STATUS, 0, FAULT),
    RegSpec::ro64("FAULT_IOVA", FAULT_IOVA, 0),
    RegSpec::rw64("MSI_ADDR", MSI_ADDR, 0, !0x3),
    RegSpec::rw64("MSI_DATA", MSI_DATA, 0, 0xffff_ffff),
];

static HANDLERS: &[(u64, WriteHandler<State>)] = &[(CMD, cmd)];

struct State {
    mem: GuestMemoryMmap,
    fmt: RadixFormat,
    shadows: BTreeMap<u32, ShadowEngine<SharedSimHost>>,
    error: Option<TargetError>,
}

impl State {
    /// Syncs every shadow over `range` (everything when `None`) with the current view.
    fn sync_all(&mut self, regs: &RegisterFile, range: Option<AddrRange>) {
        let enabled = regs.get_at(STATUS).unwrap_or(0) & ENABLED != 0;
        let root = regs.get_at(ROOT).unwrap_or(0);
        let walker = Walker::new(&self.fmt, &self.mem, root);
        let view: &dyn GuestView = if enabled { &walker } else { &EmptyView };
        for (dev, eng) in &mut self.shadows {
            let r = match range {
                Some(r) => eng.sync_or_reclaim(view, r),
                None => eng.reclaim(view),
            };
            match r {
                Ok(_) => {}
                Err(ShadowError::OutOfResources { not_mapped, .. }) => {
                    self.error = Some(TargetError::new(
                        "host-out-of-resources",
                        format!("device {dev:#x}: {} run(s) not mapped", not_mapped.len()),
                    ));
                }
                Err(e) => self.error = Some(TargetError::new("host-error", e.to_string())),
            }
        }
    }
}

fn cmd(state: &mut State, regs: &mut RegisterFile, w: RegWrite) {
    match w.written {
        1 => {
            regs.update_at(STATUS, ENABLED, ENABLED);
            state.sync_all(regs, None);
        }
        2 => {
            regs.update_at(STATUS, ENABLED, 0);
            state.sync_all(regs, None);
        }
        3 => {
            let start = regs.get_at(INV_START).unwrap_or(0);
            let len = regs.get_at(INV_LEN).unwrap_or(0);
            state.sync_all(regs, Some(AddrRange::from_len(start, len)));
        }
        4 => state.sync_all(regs, None),
        _ => {}
    }
}

/// The stand-in model. See the module documentation.
pub struct StandIn {
    bank: RegisterBank<State>,
    state: State,
    msi: Arc<RecordingMsiSink>,
}

impl StandIn {
    /// Builds it; it takes no options.
    pub fn new(opts: &[(String, String)], env: TargetEnv) -> Result<Self, String> {
        if let Some((k, _)) = opts.first() {
            return Err(format!("unknown option '{k}' for model standin"));
        }
        let regs = RegisterFile::new(REGS).map_err(|e| format!("{e:?}"))?;
        let bank = RegisterBank::new(regs, HANDLERS).map_err(|e| format!("{e:?}"))?;
        Ok(StandIn {
            bank,
            state: State {
                mem: env.mem,
                fmt: RadixFormat::x86_like(4, ByteOrder::Little),
                shadows: BTreeMap::new(),
                error: None,
            },
            msi: env.msi,
        })
    }

    fn fault(&mut self, iova: u64) {
        let regs = self.bank.regs_mut();
        regs.set_at(FAULT_IOVA, iova);
        regs.update_at(STATUS, FAULT, FAULT);
        let address = regs.get_at(MSI_ADDR).unwrap_or(0);
        let data = regs.get_at(MSI_DATA).unwrap_or(0) as u32;
        self.msi.send(Msi { address, data });
    }
}

impl ScenarioTarget for StandIn {
    fn mmio_read(&mut self, offset: u64, len: usize) -> Result<u64, TargetError> {
        Ok(self.bank.read(offset, len))
    }

    fn mmio_write(&mut self, offset: u64, len: usize, value: u64) -> Result<(), TargetError> {
        self.bank.write(&mut self.state, offset, len, value);
        match self.state.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn dma(&mut self, req: &DmaReq) -> Result<Vec<(u64, u64)>, String> {
        let regs = self.bank.regs();
        if regs.get_at(STATUS).unwrap_or(0) & ENABLED == 0 {
            return Err("blocked".into());
        }
        let root = regs.get_at(ROOT).unwrap_or(0);
        let end = req.iova.checked_add(req.len).ok_or("overflow")?;
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut at = req.iova;
        while at < end {
            let w = Walker::new(&self.state.fmt, &self.state.mem, root);
            match w.translate(at, req.perm) {
                Ok((gpa, leaf)) => {
                    let n = (leaf.iova + leaf.size).min(end) - at;
                    match out.last_mut() {
                        Some((g, l)) if *g + *l == gpa => *l += n,
                        _ => out.push((gpa, n)),
                    }
                    at += n;
                }
                Err(f) => {
                    self.fault(at);
                    return Err(fault_name(&f).into());
                }
            }
        }
        Ok(out)
    }

    fn attach_host(&mut self, dev: u32, host: SharedSimHost) -> Result<(), TargetError> {
        let eng = ShadowEngine::new(host, ShadowConfig::default());
        self.state.shadows.insert(dev, eng);
        let regs = self.bank.regs().clone();
        self.state.sync_all(&regs, None);
        match self.state.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn fault_name(f: &viommu_shared::pt::WalkFault) -> &'static str {
    use viommu_shared::pt::WalkFault::*;
    match f {
        IovaTooWide { .. } => "iova-too-wide",
        NotPresent { .. } => "not-present",
        Reserved { .. } => "reserved",
        TableOutsideRam { .. } => "outside-ram",
        Permission { .. } => "permission",
        WorkLimit { .. } => "work-limit",
    }
}
