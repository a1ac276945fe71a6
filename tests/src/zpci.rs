//! The s390 zPCI model (`viommu_s390_zpci::Zpci`) behind the scenario seam:
//! `model zpci [key=value…]`.
//!
//! zPCI has no MMIO: `mmio …` is `unsupported`. The guest drives it with intercepted
//! instructions (`clp`, `mpcifc`, `stpcifc`, `rpcit`, `pcilg`, `pcistg`, `pcistb`) whose
//! operands the adapter loads into the general registers the way the instruction encodes them
//! (reference `anchors-s390-vfio.md` A.3.2, A.4–A.9), then calls the model's handler.
//!
//! # Model options
//!
//! Values are numbers or expressions without variables; unknown keys are errors.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `functions=N` | plugs N functions (1..=64) with FIDs 1..N (see below) | 1 |
//! | `levels=3\|4\|5` | deepest DMA table the function group offers (`GroupConfig::max_designation`: region-third, -second, -first) | 3 |
//! | `relaxed=0\|1` | the group offers relaxed translation (RTR, A.16) | 0 |
//! | `refresh=shadowing\|always\|never` | when the group advertises the refresh bit (`RefreshPolicy`) | `shadowing` |
//! | `aperture=shrink\|full` | advertised DMA range versus the host budget (`AperturePolicy`, A.13) | `shrink` |
//! | `exhaustion=signal\|reclaim` | what RPCIT does when the host is full (`ExhaustionPolicy`) | `signal` |
//! | `sdma=A`, `edma=A` | every function's DMA range before host limits (QUERY PCI FUNCTION) | 4G, `0x1ff_ffff_ffff_ffff` |
//! | `maxstbl=N` | the group's largest PCISTB | 128 |
//! | `standby=FID` | that function is plugged in the standby state (not configured) | none |
//!
//! Function FID `n` (1..=N) has UID `0x100 + n`, is in group 0xff, and is backed by a
//! [`MemFunction`] with vendor [`VENDOR`], device [`DEVICE`], a 4 KiB BAR 0 whose config
//! register holds [`BAR0`], and the utility string [`UTIL_STR`]. Its disabled handle is `n`
//! (the model allocates slot indexes from 1 in plug order); enabled, `0x8000_0000 | n`.
//!
//! # Instructions
//!
//! Operands (`key=value`), and how they land in the registers; `r1=`, `r2=`, `r3=` override
//! the register numbers of the instruction text (defaults as Linux's wrappers: R1 = 1,
//! R2 = 2, R3 = 3), e.g. an odd `r2` to provoke a specification exception. Operands that do
//! not fit their field are errors of the scenario (`bad-operand`).
//!
//! | instruction | operands | registers |
//! |---|---|---|
//! | `clp` | `req=GPA [lps=N]` | R2 = request block address, LPS from the instruction (default 2, PCI) |
//! | `mpcifc` | `fh=FH oc=OC fib=GPA [dmaas=N]` | R1 = `fh << 32 \| dmaas << 16 \| oc`; FIB address = the second operand |
//! | `stpcifc` | `fh=FH fib=GPA [dmaas=N]` | R1 = `fh << 32 \| dmaas << 16` |
//! | `rpcit` | `fh=FH start=IOVA len=N` | R1 = `fh << 32`; R2 = start, R2+1 = length |
//! | `pcilg` | `fh=FH space=N offset=N len=N` | R2 = `fh << 32 \| space << 16 \| len`, R2+1 = offset; value into R1 |
//! | `pcistg` | `fh=FH space=N offset=N len=N value=N` | as `pcilg`, R1 = value |
//! | `pcistb` | `fh=FH space=N offset=N len=N gpa=GPA` | R1 = `fh << 32 \| space << 16 \| len` (13-bit), R3 = offset, second operand = source |
//!
//! `space` is the PCIAS: 0..=5 a BAR, 15 config space. Operand addresses are guest absolute
//! addresses (a VMM that already translated the logical address).
//!
//! Outcome fields: `cc`; `status` when the instruction stored a status code; `value` (PCILG
//! on CC 0: the loaded data); `rN` for every general register the instruction writes (its
//! full new value, e.g. `r1` with the status field, or STPCIFC's handle with the enable bit);
//! `pec` and `faddr` of the last error event the instruction raised (A.11) — each event also
//! rings the doorbell MSI (address `0x7a70_6369_0000_0000`, data = FID), which `expect-msi`
//! checks.
//!
//! A program interruption is the error `program-check-KIND` (checked with
//! `expect error=KIND`): `program-check-operation`, `-privileged`, `-protection`,
//! `-addressing`, `-specification`, `-operand`, or `program-check-0xCODE` for any other
//! interruption code.
//!
//! # DMA and host
//!
//! `dma dev=FID …` translates page by page through the model's `DmaTranslate` with
//! requester id = FID. A fault is named by the event code (PEC, A.11) the model raised for
//! it, in lower-case hex (`0x7` invalid table entry, `0x4` translation protection, `0x2` out
//! of range, `0x1` no address space); a fault that raised no event (the function is not
//! enabled, in an error state, or does not exist) is `blocked`. A DMA error puts the function
//! into the error state (A.11), which empties its host shadow.
//!
//! `host dev=FID …` attaches the `SharedSimHost` with `Zpci::attach_host`. Model errors are
//! the kinds `no-such-function`, `duplicate-fid`, `too-many-functions`, `unknown-group`,
//! `host-already-attached`, `no-host`, `host-out-of-resources`, `host-unmap`,
//! `host-refused`, `invalid-config`.

use crate::expr::{Vars, eval};
use crate::target::{
    DmaReq, InsnOutcome, ScenarioTarget, TargetEnv, TargetError, translate_pieces,
};
use std::collections::BTreeMap;
use viommu_s390_zpci::config::{DEFAULT_EDMA, DEFAULT_SDMA};
use viommu_s390_zpci::testing::MemFunction;
use viommu_s390_zpci::{
    AperturePolicy, Config, Designation, ErrorEvent, ExhaustionPolicy, Fid, FunctionConfig,
    FunctionState, GeneralRegs, InsnResult, ModelError, ProgramCheck, RefreshPolicy, Zpci,
};
use viommu_shared::AddrRange;
use viommu_shared::host::SharedSimHost;
use viommu_shared::memory::{DmaMapping, MemoryEvent, MemoryEvents};
use vm_memory::GuestMemoryMmap;

/// Vendor id of every function.
pub const VENDOR: u16 = 0x1af4;
/// Device id of every function.
pub const DEVICE: u16 = 0x1041;
/// BAR 0 register value in config space (a 32-bit memory BAR).
pub const BAR0: u32 = 0xfe00_0000;
/// Size of BAR 0.
pub const BAR0_SIZE: usize = 4096;
/// Utility string of every function.
pub const UTIL_STR: &[u8] = b"viommu";
/// Most functions a scenario may plug.
pub const MAX_FUNCTIONS: u64 = 64;

/// The zPCI adapter. See the module documentation.
pub struct ZpciTarget {
    zpci: Zpci,
    mem: GuestMemoryMmap,
    devices: BTreeMap<u32, MemFunction>,
}

fn number(key: &str, v: &str) -> Result<u64, String> {
    eval(v, &Vars::new()).map_err(|e| format!("model zpci: option '{key}': {e}"))
}

fn flag(key: &str, v: &str) -> Result<bool, String> {
    match number(key, v)? {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(format!("model zpci: option '{key}' takes 0 or 1, got {n}")),
    }
}

/// What the `model zpci` options ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Model configuration.
    pub config: Config,
    /// Number of functions (FIDs 1..=functions).
    pub functions: u32,
    /// DMA range of every function.
    pub sdma: u64,
    /// Last byte of every function's DMA range.
    pub edma: u64,
    /// The function plugged in standby, if any.
    pub standby: Option<u32>,
}

/// Parses the `model zpci` options.
pub fn options(opts: &[(String, String)]) -> Result<Options, String> {
    let mut o = Options {
        config: Config::default(),
        functions: 1,
        sdma: DEFAULT_SDMA,
        edma: DEFAULT_EDMA,
        standby: None,
    };
    for (k, v) in opts {
        let group = &mut o.config.groups[0];
        match k.as_str() {
            "functions" => {
                let n = number(k, v)?;
                if !(1..=MAX_FUNCTIONS).contains(&n) {
                    return Err(format!(
                        "model zpci: functions takes 1..={MAX_FUNCTIONS}, got {n}"
                    ));
                }
                o.functions = n as u32;
            }
            "levels" => {
                group.max_designation = match number(k, v)? {
                    3 => Designation::RegionThird,
                    4 => Designation::RegionSecond,
                    5 => Designation::RegionFirst,
                    n => return Err(format!("model zpci: levels takes 3, 4 or 5, got {n}")),
                }
            }
            "relaxed" => group.relaxed_translation = flag(k, v)?,
            "refresh" => {
                group.refresh = match v.as_str() {
                    "shadowing" => RefreshPolicy::WhenShadowing,
                    "always" => RefreshPolicy::Always,
                    "never" => RefreshPolicy::Never,
                    _ => {
                        return Err(format!(
                            "model zpci: refresh takes shadowing, always or never, got '{v}'"
                        ));
                    }
                }
            }
            "maxstbl" => {
                let n = number(k, v)?;
                group.maxstbl = u16::try_from(n)
                    .ok()
                    .filter(|n| *n <= 0x1fff)
                    .ok_or_else(|| format!("model zpci: maxstbl takes 0..=0x1fff, got {n:#x}"))?;
            }
            "aperture" => {
                o.config.aperture = match v.as_str() {
                    "shrink" => AperturePolicy::ShrinkToHostBudget,
                    "full" => AperturePolicy::Full,
                    _ => {
                        return Err(format!(
                            "model zpci: aperture takes shrink or full, got '{v}'"
                        ));
                    }
                }
            }
            "exhaustion" => {
                o.config.exhaustion = match v.as_str() {
                    "signal" => ExhaustionPolicy::SignalGuest,
                    "reclaim" => ExhaustionPolicy::ReclaimThenSignal,
                    _ => {
                        return Err(format!(
                            "model zpci: exhaustion takes signal or reclaim, got '{v}'"
                        ));
                    }
                }
            }
            "sdma" => o.sdma = number(k, v)?,
            "edma" => o.edma = number(k, v)?,
            "standby" => {
                let n = number(k, v)?;
                o.standby =
                    Some(u32::try_from(n).map_err(|_| format!("model zpci: standby FID {n:#x}"))?);
            }
            _ => return Err(format!("unknown option '{k}' for model zpci")),
        }
    }
    if let Some(s) = o.standby
        && !(1..=o.functions).contains(&s)
    {
        return Err(format!(
            "model zpci: standby={s} names no function (1..={})",
            o.functions
        ));
    }
    Ok(o)
}

/// Stable kind names of the model's errors.
fn model_error(e: ModelError) -> TargetError {
    let kind = match &e {
        ModelError::NoSuchFunction(_) => "no-such-function",
        ModelError::DuplicateFid(_) => "duplicate-fid",
        ModelError::TooManyFunctions => "too-many-functions",
        ModelError::UnknownGroup(_) => "unknown-group",
        ModelError::HostAlreadyAttached(_) => "host-already-attached",
        ModelError::NoHost(_) => "no-host",
        ModelError::HostOutOfResources { .. } => "host-out-of-resources",
        ModelError::HostUnmap { .. } => "host-unmap",
        ModelError::HostRefused { .. } => "host-refused",
        ModelError::InvalidConfig(_) => "invalid-config",
        ModelError::Snapshot(_) => "snapshot",
    };
    TargetError::new(kind, e.to_string())
}

/// The error kind of a program interruption.
pub fn program_check_kind(pc: ProgramCheck) -> String {
    match pc {
        ProgramCheck::Operation => "program-check-operation".into(),
        ProgramCheck::Privileged => "program-check-privileged".into(),
        ProgramCheck::Protection => "program-check-protection".into(),
        ProgramCheck::Addressing => "program-check-addressing".into(),
        ProgramCheck::Specification => "program-check-specification".into(),
        ProgramCheck::Operand => "program-check-operand".into(),
        ProgramCheck::Other(code) => format!("program-check-{code:#x}"),
    }
}

/// The operands of one instruction, checked against what it takes.
struct Operands<'a> {
    insn: &'a str,
    args: &'a BTreeMap<String, u64>,
}

impl Operands<'_> {
    /// Fails on keys outside `allowed`.
    fn only(&self, allowed: &[&str]) -> Result<(), TargetError> {
        match self.args.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(TargetError::new(
                "bad-operand",
                format!(
                    "{}: unknown operand '{k}' (takes {})",
                    self.insn,
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// Operand `key` (or `default`), at most `max`.
    fn get(&self, key: &str, default: Option<u64>, max: u64) -> Result<u64, TargetError> {
        let v = match (self.args.get(key), default) {
            (Some(v), _) => *v,
            (None, Some(d)) => d,
            (None, None) => {
                return Err(TargetError::new(
                    "bad-operand",
                    format!("{}: operand '{key}' is required", self.insn),
                ));
            }
        };
        if v > max {
            return Err(TargetError::new(
                "bad-operand",
                format!(
                    "{}: {key}={v:#x} does not fit (at most {max:#x})",
                    self.insn
                ),
            ));
        }
        Ok(v)
    }

    fn required(&self, key: &str, max: u64) -> Result<u64, TargetError> {
        self.get(key, None, max)
    }

    /// A register number operand (`r1`, `r2`, `r3`) with its default.
    fn reg(&self, key: &str, default: u8) -> Result<u8, TargetError> {
        Ok(self.get(key, Some(u64::from(default)), 15)? as u8)
    }

    /// The function handle, in bits 32..63 of a request word.
    fn fh(&self) -> Result<u64, TargetError> {
        Ok(self.required("fh", u64::from(u32::MAX))? << 32)
    }
}

/// Writes the even/odd pair at `r` (the odd register wraps to 0 after R15, which the model
/// rejects before reading it: an odd `r` is a specification exception).
fn set_pair(regs: &mut GeneralRegs, r: u8, even: u64, odd: u64) {
    regs[usize::from(r & 0xf)] = even;
    regs[usize::from((r + 1) & 0xf)] = odd;
}

impl ZpciTarget {
    /// Builds the model and plugs its functions from the `model zpci` options.
    pub fn new(opts: &[(String, String)], env: TargetEnv) -> Result<Self, String> {
        let o = options(opts)?;
        let zpci = Zpci::new(o.config, env.mem.clone(), env.msi);
        let mut devices = BTreeMap::new();
        for fid in 1..=o.functions {
            let mut cfg = FunctionConfig::new(Fid(fid), 0x100 + fid);
            cfg.bar_sizes[0] = BAR0_SIZE as u64;
            cfg.sdma = o.sdma;
            cfg.edma = o.edma;
            cfg.util_str = UTIL_STR.to_vec();
            if o.standby == Some(fid) {
                cfg.initial_state = FunctionState::Standby;
            }
            let dev = MemFunction::new(
                VENDOR,
                DEVICE,
                [BAR0_SIZE, 0, 0, 0, 0, 0],
                [BAR0, 0, 0, 0, 0, 0],
            );
            zpci.add_function(cfg, Box::new(dev.clone()))
                .map_err(|e| format!("model zpci: function {fid}: {e}"))?;
            devices.insert(fid, dev);
        }
        Ok(ZpciTarget {
            zpci,
            mem: env.mem,
            devices,
        })
    }

    /// The model (for tests of the adapter itself).
    pub fn zpci(&self) -> &Zpci {
        &self.zpci
    }

    /// The device behind function `fid`.
    pub fn device(&self, fid: u32) -> Option<&MemFunction> {
        self.devices.get(&fid)
    }

    /// Runs the handler of `name` with the registers its operands describe.
    fn execute(&self, name: &str, args: &BTreeMap<String, u64>) -> Result<InsnResult, TargetError> {
        let op = Operands { insn: name, args };
        let mut regs: GeneralRegs = [0; 16];
        let mem = &self.mem;
        let z = &self.zpci;
        Ok(match name {
            "clp" => {
                op.only(&["req", "lps", "r2"])?;
                let r2 = op.reg("r2", 2)?;
                let lps = op.get("lps", Some(2), 0xff)? as u8;
                regs[usize::from(r2)] = op.required("req", u64::MAX)?;
                z.clp(mem, r2, lps, &regs)
            }
            "mpcifc" | "stpcifc" => {
                let mpcifc = name == "mpcifc";
                if mpcifc {
                    op.only(&["fh", "oc", "fib", "dmaas", "r1"])?;
                } else {
                    op.only(&["fh", "fib", "dmaas", "r1"])?;
                }
                let r1 = op.reg("r1", 1)?;
                let oc = if mpcifc { op.required("oc", 0xff)? } else { 0 };
                let fib = op.required("fib", u64::MAX)?;
                regs[usize::from(r1)] = op.fh()? | op.get("dmaas", Some(0), 0xff)? << 16 | oc;
                if mpcifc {
                    z.mpcifc(mem, r1, fib, &regs)
                } else {
                    z.stpcifc(mem, r1, fib, &regs)
                }
            }
            "rpcit" => {
                op.only(&["fh", "start", "len", "r1", "r2"])?;
                let (r1, r2) = (op.reg("r1", 1)?, op.reg("r2", 2)?);
                regs[usize::from(r1)] = op.fh()?;
                let start = op.required("start", u64::MAX)?;
                let len = op.required("len", u64::MAX)?;
                set_pair(&mut regs, r2, start, len);
                z.rpcit(r1, r2, &regs)
            }
            "pcilg" | "pcistg" => {
                let load = name == "pcilg";
                if load {
                    op.only(&["fh", "space", "offset", "len", "r1", "r2"])?;
                } else {
                    op.only(&["fh", "space", "offset", "len", "value", "r1", "r2"])?;
                }
                let (r1, r2) = (op.reg("r1", 1)?, op.reg("r2", 2)?);
                if !load {
                    regs[usize::from(r1)] = op.required("value", u64::MAX)?;
                }
                let word = op.fh()? | op.required("space", 0xf)? << 16 | op.required("len", 0xf)?;
                set_pair(&mut regs, r2, word, op.required("offset", u64::MAX)?);
                if load {
                    z.pcilg(r1, r2, &regs)
                } else {
                    z.pcistg(r1, r2, &regs)
                }
            }
            "pcistb" => {
                op.only(&["fh", "space", "offset", "len", "gpa", "r1", "r3"])?;
                let (r1, r3) = (op.reg("r1", 1)?, op.reg("r3", 3)?);
                regs[usize::from(r3)] = op.required("offset", u64::MAX)?;
                regs[usize::from(r1)] =
                    op.fh()? | op.required("space", 0xf)? << 16 | op.required("len", 0x1fff)?;
                let gpa = op.required("gpa", u64::MAX)?;
                z.pcistb(mem, r1, r3, gpa, &regs)
            }
            _ => return Err(TargetError::unsupported(name)),
        })
    }
}

impl ScenarioTarget for ZpciTarget {
    fn mmio_read(&mut self, _offset: u64, _len: usize) -> Result<u64, TargetError> {
        Err(TargetError::unsupported(
            "MMIO (zPCI is driven by instructions)",
        ))
    }

    fn mmio_write(&mut self, _offset: u64, _len: usize, _value: u64) -> Result<(), TargetError> {
        Err(TargetError::unsupported(
            "MMIO (zPCI is driven by instructions)",
        ))
    }

    fn dma(&mut self, req: &DmaReq) -> Result<Vec<(u64, u64)>, String> {
        self.zpci.take_events();
        translate_pieces(&self.zpci, req).map_err(|e| {
            e.describe(|_| {
                let ev = self
                    .zpci
                    .take_events()
                    .into_iter()
                    .rfind(|e| e.fid == Fid(req.dev));
                match ev {
                    Some(e) => format!("{:#x}", e.pec.0),
                    None => "blocked".into(),
                }
            })
        })
    }

    fn detach_host(&mut self, dev: u32) -> Result<(), TargetError> {
        self.zpci.detach_host(Fid(dev)).map_err(model_error)
    }

    fn memory_event(&mut self, event: MemoryEvent) -> Result<(), TargetError> {
        self.zpci
            .memory_event(event)
            .map(|_| ())
            .map_err(model_error)
    }

    fn dma_mappings(&mut self, range: AddrRange) -> Result<Vec<DmaMapping>, TargetError> {
        Ok(self.zpci.dma_mappings(range))
    }

    fn attach_host(&mut self, dev: u32, host: SharedSimHost) -> Result<(), TargetError> {
        let r = self
            .zpci
            .attach_host(Fid(dev), Box::new(host))
            .map_err(model_error);
        self.zpci.take_events();
        r
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, TargetError> {
        Ok(self.zpci.save_bytes())
    }

    /// The functions are plugged by `new` from the same `model` options, with fresh PCI
    /// backends (device state is the VMM's to migrate, not the IOMMU's).
    fn restore(&mut self, stream: &[u8]) -> Result<(), TargetError> {
        let r = self.zpci.restore_bytes(stream).map_err(model_error);
        self.zpci.take_events();
        r
    }

    fn instruction(
        &mut self,
        name: &str,
        args: &BTreeMap<String, u64>,
    ) -> Result<InsnOutcome, TargetError> {
        self.zpci.take_events();
        let r = self.execute(name, args)?;
        let events: Vec<ErrorEvent> = self.zpci.take_events();
        let c = r.map_err(|pc| TargetError::new(&program_check_kind(pc), pc.to_string()))?;
        let mut out = InsnOutcome::new();
        out.insert("cc".into(), u64::from(c.cc.value()));
        if let Some(s) = c.status {
            out.insert("status".into(), u64::from(s));
        }
        for w in &c.writes {
            out.insert(format!("r{}", w.reg), w.value);
        }
        if name == "pcilg"
            && c.cc.value() == 0
            && let Some(w) = c.writes.last()
        {
            out.insert("value".into(), w.value);
        }
        if let Some(e) = events.last() {
            out.insert("pec".into(), u64::from(e.pec.0));
            out.insert("faddr".into(), e.faddr);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_map_onto_config() {
        let o = options(&opts(&[
            ("functions", "3"),
            ("levels", "5"),
            ("relaxed", "1"),
            ("refresh", "never"),
            ("aperture", "full"),
            ("exhaustion", "reclaim"),
            ("sdma", "8G"),
            ("edma", "16G-1"),
            ("maxstbl", "0x800"),
            ("standby", "2"),
        ]))
        .unwrap();
        let g = &o.config.groups[0];
        assert_eq!(o.functions, 3);
        assert_eq!(g.max_designation, Designation::RegionFirst);
        assert!(g.relaxed_translation);
        assert_eq!(g.refresh, RefreshPolicy::Never);
        assert_eq!(g.maxstbl, 0x800);
        assert_eq!(o.config.aperture, AperturePolicy::Full);
        assert_eq!(o.config.exhaustion, ExhaustionPolicy::ReclaimThenSignal);
        assert_eq!((o.sdma, o.edma), (8 << 30, (16 << 30) - 1));
        assert_eq!(o.standby, Some(2));
        assert_eq!(options(&[]).unwrap().config, Config::default());
    }

    #[test]
    fn bad_options_are_rejected() {
        for (k, v) in [
            ("functions", "0"),
            ("functions", "65"),
            ("levels", "2"),
            ("relaxed", "2"),
            ("refresh", "sometimes"),
            ("aperture", "half"),
            ("exhaustion", "panic"),
            ("maxstbl", "0x2000"),
            ("standby", "2"),
            ("colour", "1"),
        ] {
            assert!(options(&opts(&[(k, v)])).is_err(), "{k}={v}");
        }
    }

    fn target(opts: &[(&str, &str)]) -> ZpciTarget {
        let env = TargetEnv {
            mem: viommu_shared::testing::guest_memory(&[(0, 0x10_0000)]),
            msi: std::sync::Arc::new(viommu_shared::regs::RecordingMsiSink::new()),
        };
        ZpciTarget::new(&self::tests::opts(opts), env).unwrap()
    }

    fn args(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
        list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn functions_are_plugged_with_their_ids() {
        let t = target(&[("functions", "2"), ("standby", "2")]);
        let z = t.zpci();
        assert_eq!(z.fids(), vec![Fid(1), Fid(2)]);
        let f2 = z.function(Fid(2)).unwrap();
        assert_eq!(f2.state, FunctionState::Standby);
        assert_eq!(f2.fh.0, 2);
        assert!(t.device(2).is_some() && t.device(3).is_none());
    }

    #[test]
    fn operands_are_checked() {
        let mut t = target(&[]);
        let e = t
            .instruction("rpcit", &args(&[("fh", 1), ("start", 0)]))
            .unwrap_err();
        assert_eq!(e.kind, "bad-operand");
        assert!(e.detail.contains("'len'"), "{e}");
        let e = t
            .instruction(
                "rpcit",
                &args(&[("fh", 1), ("start", 0), ("len", 1), ("x", 1)]),
            )
            .unwrap_err();
        assert!(e.detail.contains("unknown operand 'x'"), "{e}");
        let e = t
            .instruction(
                "pcilg",
                &args(&[("fh", 1), ("space", 16), ("offset", 0), ("len", 4)]),
            )
            .unwrap_err();
        assert!(e.detail.contains("space=0x10 does not fit"), "{e}");
        let e = t
            .instruction("rpcit", &args(&[("fh", 1 << 32), ("start", 0), ("len", 1)]))
            .unwrap_err();
        assert_eq!(e.kind, "bad-operand");
        assert_eq!(t.mmio_read(0, 8).unwrap_err().kind, "unsupported");
    }

    #[test]
    fn registers_are_loaded_as_the_instruction_encodes_them() {
        let mut t = target(&[]);
        // Disabled function, exact disabled handle: RPCIT answers CC 3.
        let out = t
            .instruction("rpcit", &args(&[("fh", 1), ("start", 0), ("len", 1)]))
            .unwrap();
        assert_eq!(out.get("cc"), Some(&3));
        assert_eq!(out.get("status"), None);
        // An odd R2 is a specification exception.
        let e = t
            .instruction(
                "rpcit",
                &args(&[("fh", 1), ("start", 0), ("len", 1), ("r2", 3)]),
            )
            .unwrap_err();
        assert_eq!(e.kind, "program-check-specification");
        // STPCIFC of the disabled function with dmaas 1: status 28 in R1 (here R5).
        let out = t
            .instruction(
                "stpcifc",
                &args(&[("fh", 1), ("fib", 0x800), ("dmaas", 1), ("r1", 5)]),
            )
            .unwrap();
        assert_eq!(out.get("status"), Some(&28));
        assert_eq!(out.get("r5"), Some(&0x0000_0001_1c01_0000));
    }

    #[test]
    fn scenarios_expect_instruction_errors() {
        let ok =
            "model zpci\nrpcit fh=1 start=0 len=1 r2=3 expect error=program-check-specification\n";
        crate::run_str(ok).unwrap();
        let wrong =
            "model zpci\nrpcit fh=1 start=0 len=1 r2=3 expect error=program-check-operand\n";
        let e = crate::run_str(wrong).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.msg.contains(
                "expected error program-check-operand, got error program-check-specification"
            ),
            "{}",
            e.msg
        );
        let success = "model zpci\nrpcit fh=1 start=0 len=1 expect error=program-check-operand\n";
        let e = crate::run_str(success).unwrap_err();
        assert!(e.msg.contains("got cc=3"), "{}", e.msg);
        let mixed = "model zpci\nrpcit fh=1 start=0 len=1 r2=3 expect cc=3 error=program-check-specification\n";
        let e = crate::run_str(mixed).unwrap_err();
        assert!(e.msg.contains("takes no other field"), "{}", e.msg);
        let unexpected = "model zpci\nrpcit fh=1 start=0 len=1 r2=3 expect cc=3\n";
        let e = crate::run_str(unexpected).unwrap_err();
        assert!(e.msg.contains("program-check-specification"), "{}", e.msg);
    }

    #[test]
    fn program_check_kinds_are_stable() {
        assert_eq!(
            program_check_kind(ProgramCheck::Operand),
            "program-check-operand"
        );
        assert_eq!(
            program_check_kind(ProgramCheck::Specification),
            "program-check-specification"
        );
        assert_eq!(
            program_check_kind(ProgramCheck::Other(0x11)),
            "program-check-0x11"
        );
    }
}
