//! Executes parsed scenarios against a model.

use crate::ast::{
    CallSpec, DevRef, DmaExpect, Expr, IrqCall, IrqExpect, IrqInvalidationSpec, MemoryEventKind,
    Op, Stmt,
};
use crate::expr::{Vars, eval};
use crate::irq::{self, IrqState, show_invalidation};
use crate::target::{DmaReq, ScenarioTarget, TargetEnv, make_target};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use viommu_shared::host::{HostCall, HostError, HostFlavour, SharedSimHost, SimHostConfig};
use viommu_shared::irq::{IrFault, IrInvalidation, RemapMode, RemappingMsiSink, Resolution};
use viommu_shared::memory::MemoryEvent;
use viommu_shared::regs::{Msi, RecordingMsiSink};
use viommu_shared::{AddrRange, GuestAddress, Perm};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Most iterations one scenario may run in total (a typo in a repeat count must not hang).
pub const MAX_ITERATIONS: u64 = 1_000_000;
/// Default guest RAM when a scenario names none: 64 MiB at 0.
pub const DEFAULT_MEMORY: u64 = 64 << 20;
/// Most guest RAM a scenario may ask for.
pub const MAX_MEMORY: u64 = 4 << 30;

/// A failed scenario: where, and what was expected versus what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// 1-based line.
    pub line: usize,
    /// Message (expected vs got).
    pub msg: String,
}

type Res<T> = Result<T, String>;

struct Host {
    sim: SharedSimHost,
    /// How it was made (a `restore` makes a fresh one like it).
    cfg: SimHostConfig,
    /// Calls before the last checkpoint, already consumed.
    seen: usize,
}

/// What `snapshot NAME` keeps: the model's stream and the guest memory at that point.
struct Saved {
    stream: Vec<u8>,
    memory: Vec<(u64, Vec<u8>)>,
}

/// The state of one running scenario.
pub struct Runner {
    memory: Vec<(u64, u64)>,
    mem: Option<GuestMemoryMmap>,
    msi: Arc<RecordingMsiSink>,
    msis: Vec<Msi>,
    target: Option<Box<dyn ScenarioTarget>>,
    model: Option<String>,
    model_opts: Vec<(String, String)>,
    hosts: BTreeMap<u32, Host>,
    irq: Option<IrqState>,
    snapshots: HashMap<String, Saved>,
    vars: Vars,
    iterations: u64,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

fn perm_of(s: &str) -> Res<Perm> {
    match s {
        "r" => Ok(Perm::READ),
        "w" => Ok(Perm::WRITE),
        "rw" => Ok(Perm::RW),
        _ => Err(format!("unknown permission '{s}' (want r, w or rw)")),
    }
}

fn perm_name(p: Perm) -> &'static str {
    match (p.contains(Perm::READ), p.contains(Perm::WRITE)) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        _ => "-",
    }
}

fn error_name(e: &HostError) -> String {
    match e {
        HostError::OutOfResources => "enospc".into(),
        HostError::Overlap => "eexist".into(),
        HostError::Invalid => "einval".into(),
        HostError::NotFound => "enoent".into(),
        HostError::BadAddress => "efault".into(),
        HostError::Overflow => "eoverflow".into(),
        HostError::Errno(n) => format!("errno{n}"),
    }
}

fn show_call(c: &HostCall) -> String {
    match c {
        HostCall::Map {
            iova,
            gpa,
            size,
            perm,
            result,
        } => format!(
            "map {iova:#x} {gpa:#x} {size:#x} {} {}",
            perm_name(*perm),
            result.as_ref().map_or_else(error_name, |_| "ok".into())
        ),
        HostCall::Unmap { iova, size, result } => format!(
            "unmap {iova:#x} {size:#x} {}",
            result
                .as_ref()
                .map_or_else(error_name, |n| format!("{n:#x}"))
        ),
        HostCall::UnmapAll { result } => format!(
            "unmap-all {}",
            result
                .as_ref()
                .map_or_else(error_name, |n| format!("{n:#x}"))
        ),
    }
}

impl Runner {
    /// A fresh runner (no model yet).
    pub fn new() -> Self {
        Runner {
            memory: Vec::new(),
            mem: None,
            msi: Arc::new(RecordingMsiSink::new()),
            msis: Vec::new(),
            target: None,
            model: None,
            model_opts: Vec::new(),
            hosts: BTreeMap::new(),
            irq: None,
            snapshots: HashMap::new(),
            vars: HashMap::new(),
            iterations: 0,
        }
    }

    /// The mappings the simulated host of device `dev` holds, in IOVA order (`None` without
    /// a host), for property tests that drive a runner step by step.
    pub fn host_mappings(&self, dev: u32) -> Option<Vec<viommu_shared::host::HostMapping>> {
        self.hosts.get(&dev).map(|h| h.sim.with(|s| s.mappings()))
    }

    /// How many calls the simulated host of device `dev` has received so far.
    pub fn host_call_count(&self, dev: u32) -> Option<usize> {
        self.hosts
            .get(&dev)
            .map(|h| h.sim.with(|s| s.calls().len()))
    }

    /// Host DMA mappings of every passthrough device that reach guest-physical `range`, as
    /// the model answers the VMM's query.
    pub fn dma_mappings(
        &mut self,
        range: AddrRange,
    ) -> Result<Vec<viommu_shared::memory::DmaMapping>, String> {
        self.target()?
            .dma_mappings(range)
            .map_err(|e| e.to_string())
    }

    /// Detaches the host of device `dev` through the model; returns how many mappings the
    /// host still holds afterwards (0 unless something leaked).
    pub fn detach_host(&mut self, dev: u32) -> Result<usize, String> {
        self.target()?.detach_host(dev).map_err(|e| e.to_string())?;
        let host = self.hosts.remove(&dev).ok_or("no such host")?;
        Ok(host.sim.with(|s| s.mapping_count()))
    }

    /// Runs `stmts`, stopping at the first failure.
    pub fn run(&mut self, stmts: &[Stmt]) -> Result<(), Failure> {
        for s in stmts {
            self.step(s)?;
        }
        Ok(())
    }

    /// Runs one statement; a failure inside a `repeat` keeps the inner line.
    fn step(&mut self, s: &Stmt) -> Result<(), Failure> {
        let Op::Repeat { count, var, body } = &s.op else {
            return self.op(s).map_err(|msg| Failure { line: s.line, msg });
        };
        let n = self
            .ev(count)
            .map_err(|msg| Failure { line: s.line, msg })?;
        if n > MAX_ITERATIONS - self.iterations {
            return Err(Failure {
                line: s.line,
                msg: format!("repeat {n}: more than {MAX_ITERATIONS} iterations in all"),
            });
        }
        self.iterations += n;
        for i in 0..n {
            if let Some(v) = var {
                self.vars.insert(v.clone(), i);
            }
            for st in body {
                self.step(st).map_err(|f| Failure {
                    line: f.line,
                    msg: format!("{} (iteration {i} of the repeat at line {})", f.msg, s.line),
                })?;
            }
        }
        Ok(())
    }

    fn ev(&self, e: &Expr) -> Res<u64> {
        eval(&e.0, &self.vars)
    }

    fn dev(&self, d: &DevRef) -> Res<u32> {
        match d {
            DevRef::Bdf(v) => Ok(*v),
            DevRef::Expr(e) => {
                u32::try_from(self.ev(e)?).map_err(|_| format!("device '{}' out of range", e.0))
            }
        }
    }

    fn mem(&mut self) -> Res<&GuestMemoryMmap> {
        if self.mem.is_none() {
            if self.memory.is_empty() {
                self.memory.push((0, DEFAULT_MEMORY));
            }
            let ranges: Vec<(GuestAddress, usize)> = self
                .memory
                .iter()
                .map(|&(s, l)| (GuestAddress(s), l as usize))
                .collect();
            let m =
                GuestMemoryMmap::from_ranges(&ranges).map_err(|e| format!("guest memory: {e}"))?;
            self.mem = Some(m);
        }
        self.mem.as_ref().ok_or_else(|| "no guest memory".into())
    }

    fn target(&mut self) -> Res<&mut Box<dyn ScenarioTarget>> {
        self.target
            .as_mut()
            .ok_or_else(|| "no model yet: the scenario must start with 'model'".into())
    }

    fn host(&self, d: &DevRef) -> Res<&Host> {
        let dev = self.dev(d)?;
        self.hosts
            .get(&dev)
            .ok_or_else(|| format!("no host attached to device {dev:#x}"))
    }

    fn irq(&mut self) -> Res<&mut IrqState> {
        if self.target.is_none() {
            return Err("no model yet: the scenario must start with 'model'".into());
        }
        self.irq
            .as_mut()
            .ok_or_else(|| "unsupported: interrupt remapping is not supported by this model".into())
    }

    /// Drains the model's invalidation notifications into the unmatched list.
    fn collect_irq(&mut self) {
        if let Some(irq) = &mut self.irq {
            irq.collect();
        }
    }

    /// Compares an interrupt-remapping result with an expected `OUTCOME`.
    fn check_irq(&self, got: &Result<Resolution, IrFault>, want: &IrqExpect) -> Res<()> {
        irq::check(got, want, &|v| eval(v, &self.vars), &|f| self.fault_name(f))
    }

    fn fault_name(&self, f: &IrFault) -> String {
        match &self.target {
            Some(t) => t.irq_fault_name(f),
            None => format!("{:#x}", f.code),
        }
    }

    /// Drains interrupts the model sent into the runner's list.
    fn collect_msis(&mut self) {
        self.msis.extend(self.msi.take());
    }

    fn op(&mut self, s: &Stmt) -> Res<()> {
        match &s.op {
            Op::Model { name, opts } => {
                if self.target.is_some() {
                    return Err("a scenario has one 'model' line".into());
                }
                let env = TargetEnv {
                    mem: self.mem()?.clone(),
                    msi: self.msi.clone(),
                };
                let target = make_target(name, opts, env)?;
                self.irq = target.interrupt_remapper().map(IrqState::new);
                self.target = Some(target);
                self.model = Some(name.clone());
                self.model_opts = opts.clone();
            }
            Op::Memory { start, size } => {
                if self.mem.is_some() {
                    return Err("'memory' must come before 'model' and any memory access".into());
                }
                let (start, size) = (self.ev(start)?, self.ev(size)?);
                let total: u64 = self
                    .memory
                    .iter()
                    .map(|r| r.1)
                    .sum::<u64>()
                    .saturating_add(size);
                if size == 0
                    || !size.is_multiple_of(4096)
                    || !start.is_multiple_of(4096)
                    || total > MAX_MEMORY
                {
                    return Err(format!(
                        "memory {start:#x} {size:#x}: want 4K-aligned, non-empty, at most 4G in all"
                    ));
                }
                self.memory.push((start, size));
            }
            Op::Let { name, value } => {
                let v = self.ev(value)?;
                self.vars.insert(name.clone(), v);
            }
            Op::Write {
                width,
                addr,
                value,
                big_endian,
            } => {
                let (a, v) = (self.ev(addr)?, self.ev(value)?);
                let bytes = to_bytes(v, *width, *big_endian)?;
                self.mem()?
                    .write_slice(&bytes, GuestAddress(a))
                    .map_err(|e| format!("write at {a:#x}: {e}"))?;
            }
            Op::WriteBytes { addr, bytes } => {
                let a = self.ev(addr)?;
                self.mem()?
                    .write_slice(bytes, GuestAddress(a))
                    .map_err(|e| format!("write at {a:#x}: {e}"))?;
            }
            Op::ExpectMem {
                width,
                addr,
                value,
                mask,
                big_endian,
            } => {
                let a = self.ev(addr)?;
                let want = self.ev(value)?;
                let m = match mask {
                    Some(m) => self.ev(m)?,
                    None => u64::MAX,
                };
                let mut buf = vec![0u8; *width];
                self.mem()?
                    .read_slice(&mut buf, GuestAddress(a))
                    .map_err(|e| format!("read at {a:#x}: {e}"))?;
                let got = from_bytes(&buf, *big_endian);
                if got & m != want & m {
                    return Err(format!(
                        "memory at {a:#x}: expected {:#x}, got {:#x} (mask {m:#x})",
                        want & m,
                        got & m
                    ));
                }
            }
            Op::ExpectBytes { addr, bytes } => {
                let a = self.ev(addr)?;
                let mut buf = vec![0u8; bytes.len()];
                self.mem()?
                    .read_slice(&mut buf, GuestAddress(a))
                    .map_err(|e| format!("read at {a:#x}: {e}"))?;
                if &buf != bytes {
                    return Err(format!(
                        "memory at {a:#x}: expected {}, got {}",
                        hex(bytes),
                        hex(&buf)
                    ));
                }
            }
            Op::MmioWrite {
                offset,
                size,
                value,
                expect_error,
            } => {
                let (o, n, v) = (self.ev(offset)?, self.ev(size)?, self.ev(value)?);
                let r = self.target()?.mmio_write(o, n as usize, v);
                self.collect_msis();
                match (r, expect_error) {
                    (Ok(()), None) => {}
                    (Err(e), Some(k)) if &e.kind == k => {}
                    (Ok(()), Some(k)) => {
                        return Err(format!(
                            "mmio write {o:#x}: expected error {k}, got success"
                        ));
                    }
                    (Err(e), _) => {
                        return Err(format!(
                            "mmio write {o:#x}: expected {}, got error {e}",
                            expect_error
                                .as_deref()
                                .map_or("success".into(), |k| format!("error {k}"))
                        ));
                    }
                }
            }
            Op::MmioRead {
                offset,
                size,
                expect,
            } => {
                let (o, n) = (self.ev(offset)?, self.ev(size)?);
                let got = self
                    .target()?
                    .mmio_read(o, n as usize)
                    .map_err(|e| format!("mmio read {o:#x}: {e}"))?;
                self.collect_msis();
                if let Some((v, m)) = expect {
                    let want = self.ev(v)?;
                    let m = match m {
                        Some(m) => self.ev(m)?,
                        None => u64::MAX,
                    };
                    if got & m != want & m {
                        return Err(format!(
                            "mmio read {o:#x}: expected {:#x}, got {:#x} (mask {m:#x})",
                            want & m,
                            got & m
                        ));
                    }
                }
            }
            Op::Dma {
                dev,
                pasid,
                iova,
                len,
                write,
                expect,
            } => {
                let req = DmaReq {
                    dev: self.dev(dev)?,
                    pasid: match pasid {
                        Some(p) => {
                            Some(u32::try_from(self.ev(p)?).map_err(|_| "pasid out of range")?)
                        }
                        None => None,
                    },
                    iova: self.ev(iova)?,
                    len: self.ev(len)?,
                    perm: if *write { Perm::WRITE } else { Perm::READ },
                };
                let r = self.target()?.dma(&req);
                self.collect_msis();
                match (r, expect) {
                    (Ok(pieces), DmaExpect::Ok(gpa)) => {
                        let total: u64 = pieces.iter().map(|p| p.1).sum();
                        if total != req.len {
                            return Err(format!(
                                "dma {:#x}: translated {total:#x} of {:#x} bytes",
                                req.iova, req.len
                            ));
                        }
                        if let Some(g) = gpa {
                            let want = self.ev(g)?;
                            let got = pieces.first().map_or(0, |p| p.0);
                            if want != got {
                                return Err(format!(
                                    "dma {:#x}: expected gpa {want:#x}, got {got:#x}",
                                    req.iova
                                ));
                            }
                        }
                    }
                    (Err(reason), DmaExpect::Fault(want)) => {
                        if let Some(w) = want
                            && w != &reason
                        {
                            return Err(format!(
                                "dma {:#x}: expected fault {w}, got fault {reason}",
                                req.iova
                            ));
                        }
                    }
                    (Ok(pieces), DmaExpect::Fault(_)) => {
                        return Err(format!(
                            "dma {:#x}: expected a fault, got translation to {:#x}",
                            req.iova,
                            pieces.first().map_or(0, |p| p.0)
                        ));
                    }
                    (Err(reason), DmaExpect::Ok(_)) => {
                        return Err(format!(
                            "dma {:#x}: expected success, got fault {reason}",
                            req.iova
                        ));
                    }
                }
            }
            Op::Host { dev, opts } => {
                let d = self.dev(dev)?;
                let expect_error = opts
                    .iter()
                    .find(|(k, _)| k == "expect-error")
                    .map(|(_, v)| v.clone());
                let opts: Vec<(String, String)> = opts
                    .iter()
                    .filter(|(k, _)| k != "expect-error")
                    .cloned()
                    .collect();
                let cfg = self.host_config(&opts)?;
                let sim = SharedSimHost::new(cfg.clone());
                self.hosts.insert(
                    d,
                    Host {
                        sim: sim.clone(),
                        cfg,
                        seen: 0,
                    },
                );
                let r = self.target()?.attach_host(d, sim);
                self.collect_msis();
                match (r, expect_error) {
                    (Ok(()), None) => {}
                    (Err(e), Some(k)) if e.kind == k => {
                        self.hosts.remove(&d);
                    }
                    (Ok(()), Some(k)) => {
                        return Err(format!(
                            "attach host to {d:#x}: expected error {k}, got success"
                        ));
                    }
                    (Err(e), _) => return Err(format!("attach host to {d:#x}: {e}")),
                }
            }
            Op::HostRemaining { dev, value } => {
                let v = u32::try_from(self.ev(value)?).map_err(|_| "entry count out of range")?;
                self.host(dev)?.sim.with(|h| h.set_remaining(v));
            }
            Op::ExpectHostCount { dev, count } => {
                let want = self.ev(count)?;
                let got = self.host(dev)?.sim.with(|h| h.mapping_count()) as u64;
                if want != got {
                    return Err(format!("host mappings: expected {want}, got {got}"));
                }
            }
            Op::ExpectHostRemaining { dev, value } => {
                let want = match value {
                    Some(v) => Some(self.ev(v)?),
                    None => None,
                };
                let got = self
                    .host(dev)?
                    .sim
                    .with(|h| viommu_shared::host::HostDma::remaining_entries(h))
                    .map(u64::from);
                if want != got {
                    return Err(format!(
                        "host remaining entries: expected {want:?}, got {got:?}"
                    ));
                }
            }
            Op::ExpectHostMappings { dev, list } => {
                let mut want = Vec::new();
                for (i, g, sz, p) in list {
                    want.push(format!(
                        "{:#x} {:#x} {:#x} {}",
                        self.ev(i)?,
                        self.ev(g)?,
                        self.ev(sz)?,
                        perm_name(perm_of(p)?)
                    ));
                }
                let got: Vec<String> = self
                    .host(dev)?
                    .sim
                    .with(|h| h.mappings())
                    .iter()
                    .map(|m| {
                        format!(
                            "{:#x} {:#x} {:#x} {}",
                            m.iova,
                            m.gpa,
                            m.size,
                            perm_name(m.perm)
                        )
                    })
                    .collect();
                if want != got {
                    return Err(format!(
                        "host mappings:\n  expected [{}]\n  got      [{}]",
                        want.join("; "),
                        got.join("; ")
                    ));
                }
            }
            Op::ExpectHostCalls { dev, calls } => {
                let mut want = Vec::new();
                for c in calls {
                    want.push(self.call_text(c)?);
                }
                let h = self.host(dev)?;
                let got: Vec<String> = h.sim.with(|s| {
                    s.calls()[h.seen.min(s.calls().len())..]
                        .iter()
                        .map(show_call)
                        .collect()
                });
                if want != got {
                    return Err(format!(
                        "host calls since last checkpoint:\n  expected [{}]\n  got      [{}]",
                        want.join("; "),
                        got.join("; ")
                    ));
                }
            }
            Op::ExpectMsi { addr, data } => {
                let (a, d) = (self.ev(addr)?, self.ev(data)?);
                self.collect_msis();
                if self.msis.is_empty() {
                    return Err(format!("expected MSI addr={a:#x} data={d:#x}, got none"));
                }
                let m = self.msis.remove(0);
                if (m.address, u64::from(m.data)) != (a, d) {
                    return Err(format!(
                        "expected MSI addr={a:#x} data={d:#x}, got addr={:#x} data={:#x}",
                        m.address, m.data
                    ));
                }
            }
            Op::ExpectNoMsi => {
                self.collect_msis();
                if let Some(m) = self.msis.first() {
                    return Err(format!(
                        "expected no MSI, got addr={:#x} data={:#x} ({} in all)",
                        m.address,
                        m.data,
                        self.msis.len()
                    ));
                }
            }
            Op::MemoryEvent {
                kind,
                start,
                size,
                expect_error,
            } => {
                let range = AddrRange::from_len(self.ev(start)?, self.ev(size)?);
                let event = match kind {
                    MemoryEventKind::Discard => MemoryEvent::Discard(range),
                    MemoryEventKind::Populate => MemoryEvent::Populate(range),
                    MemoryEventKind::ToPrivate => MemoryEvent::ConvertToPrivate(range),
                    MemoryEventKind::ToShared => MemoryEvent::ConvertToShared(range),
                    MemoryEventKind::ExpectConversions => MemoryEvent::ExpectConversions(range),
                };
                let r = self.target()?.memory_event(event);
                self.collect_msis();
                match (r, expect_error) {
                    (Ok(()), None) => {}
                    (Err(e), Some(k)) if &e.kind == k => {}
                    (Ok(()), Some(k)) => {
                        return Err(format!("{event:?}: expected error {k}, got success"));
                    }
                    (Err(e), _) => return Err(format!("{event:?}: got error {e}")),
                }
            }
            Op::ExpectDmaMapped { start, size, count } => {
                let range = AddrRange::from_len(self.ev(start)?, self.ev(size)?);
                let want = self.ev(count)?;
                let got = self
                    .target()?
                    .dma_mappings(range)
                    .map_err(|e| e.to_string())?;
                if got.len() as u64 != want {
                    return Err(format!(
                        "DMA mappings of [{:#x}, {:#x}): expected {want}, got {}: {got:?}",
                        range.start,
                        range.end,
                        got.len()
                    ));
                }
            }
            Op::Irq {
                call,
                dev,
                addr,
                data,
                expect,
            } => {
                let source = u16::try_from(self.dev(dev)?)
                    .map_err(|_| "irq: the source id must fit 16 bits".to_string())?;
                let msi = Msi {
                    address: self.ev(addr)?,
                    data: u32::try_from(self.ev(data)?)
                        .map_err(|_| "irq: data must fit 32 bits".to_string())?,
                };
                // Only `route-set` names a route.
                let route_id = match call {
                    IrqCall::RouteSet(id) => u32::try_from(self.ev(id)?)
                        .map_err(|_| "irq route-set: id must fit 32 bits".to_string())?,
                    _ => 0,
                };
                let irq = self.irq()?;
                let (remapper, routes) = (irq.remapper.clone(), irq.routes.clone());
                let got = match call {
                    IrqCall::RouteSet(_) => routes.set(route_id, source, msi),
                    IrqCall::Route => remapper.remap(source, msi, RemapMode::Route),
                    // The IOMMU's decision on a request (faults recorded), not delivered.
                    IrqCall::Remap => remapper.remap(source, msi, RemapMode::Request),
                    // As a VMM wires an emulated device: remapped as a request, delivered to
                    // the interrupt controller (the runner's MSI list).
                    IrqCall::Request => {
                        RemappingMsiSink::new(remapper, source, self.msi.clone()).deliver(msi)
                    }
                };
                self.collect_msis();
                self.collect_irq();
                if let Some(want) = expect {
                    self.check_irq(&got, want)?;
                }
            }
            Op::ExpectIrqInvalidation(spec) => {
                self.collect_irq();
                let want = match spec {
                    None => None,
                    Some(IrqInvalidationSpec::All) => Some(IrInvalidation::All),
                    Some(IrqInvalidationSpec::Indices { first, count }) => {
                        let f = u32::try_from(self.ev(first)?)
                            .map_err(|_| "first must fit 32 bits".to_string())?;
                        let c = u32::try_from(self.ev(count)?)
                            .map_err(|_| "count must fit 32 bits".to_string())?;
                        Some(IrInvalidation::Indices { first: f, count: c })
                    }
                    Some(IrqInvalidationSpec::Source(d)) => Some(IrInvalidation::Source(
                        u16::try_from(self.dev(d)?)
                            .map_err(|_| "source must fit 16 bits".to_string())?,
                    )),
                };
                let irq = self.irq()?;
                match (want, irq.unmatched.first()) {
                    (None, None) => {}
                    (None, Some(got)) => {
                        return Err(format!(
                            "expected no interrupt-remapping invalidation, got {} ({} in all)",
                            show_invalidation(got),
                            irq.unmatched.len()
                        ));
                    }
                    (Some(w), None) => {
                        return Err(format!(
                            "expected invalidation {}, got none",
                            show_invalidation(&w)
                        ));
                    }
                    (Some(w), Some(got)) => {
                        if *got != w {
                            return Err(format!(
                                "expected invalidation {}, got {}",
                                show_invalidation(&w),
                                show_invalidation(got)
                            ));
                        }
                        irq.unmatched.remove(0);
                    }
                }
            }
            Op::ExpectRouteUpdates(list) => {
                let updates = self.irq()?.routes.take_updates();
                self.collect_msis();
                self.collect_irq();
                let ids: Vec<u32> = updates.iter().map(|u| u.id).collect();
                let mut want_ids = Vec::new();
                for spec in list {
                    want_ids.push(
                        u32::try_from(self.ev(&spec.id)?)
                            .map_err(|_| "route id must fit 32 bits".to_string())?,
                    );
                }
                if ids != want_ids {
                    return Err(format!("expected route updates {want_ids:?}, got {ids:?}"));
                }
                for (u, spec) in updates.iter().zip(list) {
                    if let Some(c) = spec.changed
                        && c != u.changed
                    {
                        return Err(format!(
                            "route {}: expected {}, got {}",
                            u.id,
                            if c { "changed" } else { "unchanged" },
                            if u.changed { "changed" } else { "unchanged" }
                        ));
                    }
                    if let Some(want) = &spec.expect {
                        self.check_irq(&u.result, want)
                            .map_err(|e| format!("route {}: {e}", u.id))?;
                    }
                }
            }
            Op::Snapshot { name } => {
                let stream = self
                    .target()?
                    .snapshot()
                    .map_err(|e| format!("snapshot: {e}"))?;
                let mem = self.mem()?;
                let mut memory = Vec::new();
                for r in mem.iter() {
                    let mut buf = vec![0u8; r.len() as usize];
                    mem.read_slice(&mut buf, r.start_addr())
                        .map_err(|e| format!("snapshot: guest memory: {e}"))?;
                    memory.push((r.start_addr().0, buf));
                }
                self.snapshots
                    .insert(name.clone(), Saved { stream, memory });
            }
            Op::Restore {
                name,
                attach_before,
                limit,
                truncate,
                expect_error,
            } => self.restore(name, *attach_before, limit, truncate, expect_error)?,
            Op::ExpectIrqRoute { id, expect } => {
                let id = u32::try_from(self.ev(id)?)
                    .map_err(|_| "expect-irq-route: id must fit 32 bits".to_string())?;
                let got = self
                    .irq()?
                    .routes
                    .get(id)
                    .ok_or_else(|| format!("no route {id}"))?;
                self.check_irq(&got, expect)
                    .map_err(|e| format!("route {id}: {e}"))?;
            }
            Op::Checkpoint { .. } => {
                self.collect_msis();
                self.msis.clear();
                self.collect_irq();
                if let Some(irq) = &mut self.irq {
                    irq.unmatched.clear();
                }
                for h in self.hosts.values_mut() {
                    h.seen = h.sim.with(|s| s.calls().len());
                }
            }
            Op::Repeat { .. } => unreachable_repeat()?,
            Op::Instruction { name, args, expect } => {
                let mut a = BTreeMap::new();
                for (k, v) in args {
                    a.insert(k.clone(), self.ev(v)?);
                }
                let r = self.target()?.instruction(name, &a);
                self.collect_msis();
                // `expect error=KIND`: the instruction must fail with that error kind (for
                // example an s390 program interruption), and nothing else is expected.
                let want_error = expect.iter().find(|(k, _)| k == "error");
                if want_error.is_some() && expect.len() > 1 {
                    return Err(format!("{name}: 'expect error=KIND' takes no other field"));
                }
                let out = match (r, want_error) {
                    (Ok(out), None) => out,
                    (Err(e), Some((_, k))) if e.kind == k.0 => return Ok(()),
                    (Err(e), None) => return Err(format!("{name}: {e}")),
                    (Err(e), Some((_, k))) => {
                        return Err(format!("{name}: expected error {}, got error {e}", k.0));
                    }
                    (Ok(out), Some((_, k))) => {
                        let cc = out.get("cc").map_or("?".into(), |c| c.to_string());
                        return Err(format!("{name}: expected error {}, got cc={cc}", k.0));
                    }
                };
                for (k, v) in expect {
                    let want = self.ev(v)?;
                    match out.get(k) {
                        Some(&got) if got == want => {}
                        Some(&got) => {
                            return Err(format!(
                                "{name}: expected {k}={want:#x}, got {k}={got:#x}"
                            ));
                        }
                        None => {
                            return Err(format!(
                                "{name}: expected {k}={want:#x}, but the instruction reports no {k}"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn call_text(&self, c: &CallSpec) -> Res<String> {
        Ok(match c {
            CallSpec::Map {
                iova,
                gpa,
                size,
                perm,
                result,
            } => format!(
                "map {:#x} {:#x} {:#x} {} {}",
                self.ev(iova)?,
                self.ev(gpa)?,
                self.ev(size)?,
                perm_name(perm_of(perm)?),
                result
            ),
            CallSpec::Unmap { iova, size, result } => {
                let sz = self.ev(size)?;
                let r = match result {
                    None => format!("{sz:#x}"),
                    Some(r) if r.starts_with('e') => r.clone(),
                    Some(r) => format!("{:#x}", eval(r, &self.vars)?),
                };
                format!("unmap {:#x} {sz:#x} {r}", self.ev(iova)?)
            }
            CallSpec::UnmapAll { bytes } => match bytes {
                Some(b) => format!("unmap-all {:#x}", self.ev(b)?),
                None => return Err("unmap-all in an expectation needs its byte count".into()),
            },
        })
    }

    /// `restore`: the source model, its memory and hosts are dropped; a fresh model (same
    /// `model` line) over fresh guest memory holding the snapshot's contents gets fresh
    /// hosts like the old ones, attached after (or before) the restore.
    fn restore(
        &mut self,
        name: &str,
        attach_before: bool,
        limit: &Option<Expr>,
        truncate: &Option<Expr>,
        expect_error: &Option<String>,
    ) -> Res<()> {
        let saved = self
            .snapshots
            .get(name)
            .ok_or_else(|| format!("no snapshot named '{name}'"))?;
        let model = self
            .model
            .clone()
            .ok_or("no model yet: the scenario must start with 'model'")?;
        let limit = match limit {
            Some(l) => {
                Some(u32::try_from(self.ev(l)?).map_err(|_| "limit out of range".to_string())?)
            }
            None => None,
        };
        let mut stream = saved.stream.clone();
        if let Some(t) = truncate {
            let n = usize::try_from(self.ev(t)?).unwrap_or(usize::MAX);
            stream.truncate(n);
        }
        let ranges: Vec<(GuestAddress, usize)> = saved
            .memory
            .iter()
            .map(|(s, b)| (GuestAddress(*s), b.len()))
            .collect();
        let mem =
            GuestMemoryMmap::from_ranges(&ranges).map_err(|e| format!("guest memory: {e}"))?;
        for (start, bytes) in &saved.memory {
            mem.write_slice(bytes, GuestAddress(*start))
                .map_err(|e| format!("guest memory: {e}"))?;
        }
        self.collect_msis();
        // The source goes away first (its hosts with it).
        self.target = None;
        let env = TargetEnv {
            mem: mem.clone(),
            msi: self.msi.clone(),
        };
        let mut target = make_target(&model, &self.model_opts, env)?;
        self.mem = Some(mem);
        let mut hosts = BTreeMap::new();
        for (&dev, old) in &self.hosts {
            // `limit=` applies to this restore's hosts only; later restores start again
            // from the `host` line's configuration.
            let mut cfg = old.cfg.clone();
            if let Some(l) = limit {
                cfg.entry_limit = l;
            }
            hosts.insert(
                dev,
                Host {
                    sim: SharedSimHost::new(cfg),
                    cfg: old.cfg.clone(),
                    seen: 0,
                },
            );
        }
        let mut first = None;
        let attach = |target: &mut Box<dyn ScenarioTarget>, first: &mut Option<_>| {
            for (&dev, h) in &hosts {
                if let Err(e) = target.attach_host(dev, h.sim.clone()) {
                    first.get_or_insert(e);
                }
            }
        };
        if attach_before {
            attach(&mut target, &mut first);
        }
        if let Err(e) = target.restore(&stream) {
            first.get_or_insert(e);
        }
        if !attach_before {
            attach(&mut target, &mut first);
        }
        // The VMM's routes are its own state: it sets them again on the destination model
        // (whose remapper now notifies a fresh route table).
        // Notifications the source sent and the scenario did not match yet stay pending.
        self.collect_irq();
        let (routes, unmatched) = self
            .irq
            .take()
            .map(|i| (i.routes.routes(), i.unmatched))
            .unwrap_or_default();
        self.irq = target.interrupt_remapper().map(IrqState::new);
        if let Some(irq) = &mut self.irq {
            irq.unmatched = unmatched;
            for (id, source, msi) in routes {
                let _ = irq.routes.set(id, source, msi);
            }
        }
        self.target = Some(target);
        self.hosts = hosts;
        self.collect_msis();
        match (first, expect_error) {
            (None, None) => Ok(()),
            (Some(e), Some(k)) if e.kind == *k => Ok(()),
            (Some(e), Some(k)) => Err(format!("restore: expected error {k}, got {e}")),
            (None, Some(k)) => Err(format!("restore: expected error {k}, got success")),
            (Some(e), None) => Err(format!("restore: {e}")),
        }
    }

    fn host_config(&self, opts: &[(String, String)]) -> Res<SimHostConfig> {
        let mut cfg = match self.model.as_deref() {
            Some("amd-vi") => SimHostConfig::amd_vi(),
            Some("zpci") => s390_host(),
            _ => SimHostConfig::vtd(),
        };
        for (k, v) in opts {
            match k.as_str() {
                "preset" => {
                    cfg = match v.as_str() {
                        "vtd" => SimHostConfig::vtd(),
                        "amd-vi" => SimHostConfig::amd_vi(),
                        "s390" => s390_host(),
                        _ => return Err(format!("unknown host preset '{v}'")),
                    }
                }
                "flavour" => {
                    cfg.flavour = match v.as_str() {
                        "type1v2" => HostFlavour::Type1v2,
                        "type1v1" => HostFlavour::Type1v1,
                        "iommufd" => HostFlavour::Iommufd,
                        _ => return Err(format!("unknown host flavour '{v}'")),
                    }
                }
                "coherent" => {
                    cfg.coherent = match v.as_str() {
                        "0" => false,
                        "1" => true,
                        _ => return Err(format!("host coherent takes 0 or 1, got '{v}'")),
                    }
                }
                "limit" => {
                    cfg.entry_limit =
                        u32::try_from(eval(v, &self.vars)?).map_err(|_| "limit out of range")?;
                }
                "aperture" => {
                    let (a, b) = v.split_once("..").ok_or("aperture takes START..END")?;
                    cfg.iova_ranges =
                        vec![AddrRange::new(eval(a, &self.vars)?, eval(b, &self.vars)?)];
                }
                _ => return Err(format!("unknown host option '{k}'")),
            }
        }
        Ok(cfg)
    }
}

/// The `s390` host preset: aperture `[4G, 5G)`.
fn s390_host() -> SimHostConfig {
    SimHostConfig::s390(AddrRange::new(1 << 32, (1 << 32) + (1 << 30)))
}

/// `repeat` is handled by `step`; reaching `op` with one is a runner bug reported as an error.
fn unreachable_repeat() -> Res<()> {
    Err("internal: repeat reached op()".into())
}

fn to_bytes(v: u64, width: usize, be: bool) -> Res<Vec<u8>> {
    if width < 8 && v >> (width * 8) != 0 {
        return Err(format!("value {v:#x} does not fit in {width} byte(s)"));
    }
    Ok(if be {
        v.to_be_bytes()[8 - width..].to_vec()
    } else {
        v.to_le_bytes()[..width].to_vec()
    })
}

fn from_bytes(b: &[u8], be: bool) -> u64 {
    let mut buf = [0u8; 8];
    if be {
        buf[8 - b.len()..].copy_from_slice(b);
        u64::from_be_bytes(buf)
    } else {
        buf[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(buf)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
