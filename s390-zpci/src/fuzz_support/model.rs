//! Fuzz target `zpci`: a hostile guest issuing zPCI instructions — CLP blocks (well-formed
//! headers and long random ones), MPCIFC FIBs, STPCIFC, PCILG/PCISTG/PCISTB, RPCIT with any
//! registers — and editing its DMA tables (structured maps, unmaps, cut and restored segment
//! entries, raw entry values), interleaved with Linux-like RPCITs over ranges, emulated DMA
//! and host changes, for one function shadowed into a [`SharedSimHost`] with a small or large
//! entry limit, with 3-, 4- or 5-level tables.
//!
//! The guest's tables are tracked ([`Guest`]) as long as only structured edits touch them
//! and no hostile instruction ran (`pristine`). Oracles, after every step
//! ([`World::check`]): the host holds exactly the shadow's record
//! ([`check_mappings_match_host`]), inside the host aperture and guest RAM, and the model
//! reports the host's real free entries. An RPCIT over a range leaves nothing stale in that
//! range on the host, even when it answers status 16 (unmaps come first); it answers CC 0,
//! or CC 1 status 16 — never with a large enough host. Instruction completions only write
//! general registers 0–15 and give a status only with CC 1; emulated DMA answers are well
//! formed and allow the access (a fault puts the function in the error state; while
//! pristine the guest recovers with MPCIFC reset-error, after which the host is rebuilt from
//! the tables). At the end, while pristine: a global RPCIT succeeds exactly
//! when the coalesced guest truth fits the host and then makes the host equal to it.
//! Deregistration (or unplugging) removes every host mapping and returns every host entry.

use crate::config::{ExhaustionPolicy, GroupConfig};
use crate::format::{Designation, level};
use crate::insn::mpcifc::oc;
use crate::testing::{GuestCpu, MemFunction, ZpciTables};
use crate::{
    AperturePolicy, Cc, Config, Fh, Fib, Fid, FunctionConfig, FunctionState, InsnResult, Zpci,
    status,
};
use arbitrary::{Arbitrary, Unstructured};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use viommu_shared::dma::{DmaRequest, DmaTranslate};
use viommu_shared::fuzz_support::{XorShift, check_mappings_match_host};
use viommu_shared::host::{HostDma, SharedSimHost, SimHostConfig};
use viommu_shared::regs::RecordingMsiSink;
use viommu_shared::testing::guest_memory;
use viommu_shared::{AddrRange, Perm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: 64 MiB at 0.
pub const RAM: u64 = 0x400_0000;
/// Scratch area for instruction operands.
pub const SCRATCH: u64 = 0x10_0000;
/// DMA-table area.
pub const TABLES: (u64, u64) = (0x100_0000, 0x200_0000);
/// First guest page the structured maps point to.
pub const DATA: u64 = 0x200_0000;
/// Start of the registered DMA range.
pub const SDMA: u64 = 0x1_0000_0000;
/// Pages of the registered DMA range (16 MiB: 16 segments).
pub const PAGES: u64 = 4096;
/// Last byte of the registered DMA range.
pub const PAL: u64 = SDMA + PAGES * 0x1000 - 1;
/// The host's aperture.
pub const HOST_APERTURE: AddrRange = AddrRange::new(SDMA, SDMA + (1 << 30));
/// The function.
pub const FID: Fid = Fid(0x10);
/// Largest host mapping of translated spaces (the shadow's default `max_run`).
pub const MAX_RUN: u64 = 2 << 20;

/// How the world starts.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Tables: region-third, -second, -first (`% 3`).
    pub designation: u8,
    /// Host entry limit: 65535, 24, 64, or 1 + `(limit / 4) % 32` (`limit % 4` picks).
    pub limit: u8,
    /// Reclaim before signalling exhaustion ([`ExhaustionPolicy::ReclaimThenSignal`]).
    pub reclaim: bool,
    /// The group offers relaxed translation.
    pub relaxed: bool,
    /// Leave the function disabled with no address space registered.
    pub blank: bool,
}

impl Setup {
    /// The host entry limit.
    pub fn host_limit(&self) -> u32 {
        match self.limit % 4 {
            0 => 65535,
            1 => 24,
            2 => 64,
            _ => 1 + u32::from(self.limit / 4) % 32,
        }
    }

    /// The table designation.
    pub fn designation(&self) -> Designation {
        [
            Designation::RegionThird,
            Designation::RegionSecond,
            Designation::RegionFirst,
        ][usize::from(self.designation % 3)]
    }
}

/// A general-register value: raw, or one of the shapes instructions expect.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    /// Shape (`% 8`): raw (0, 1), function handle word with PCIAS and length (2), DMA
    /// address (3), the scratch area (4), handle word with DMAAS and operation control (5),
    /// a length in pages (6), a small value (7).
    pub kind: u8,
    /// The bits the shape is made from.
    pub raw: u64,
}

impl Operand {
    /// The register value, given the function's enabled and disabled handles.
    pub fn value(&self, fh: Fh, fh0: Fh) -> u64 {
        let r = self.raw;
        let handle = || {
            let h = [fh.0, fh0.0, 0x8000_0002, 0][(r % 4) as usize];
            let h = if r & 4 != 0 { h | Fh::ENABLE } else { h };
            u64::from(h) << 32
        };
        match self.kind % 8 {
            0 | 1 => r,
            2 => handle() | (((r >> 8) % 16) << 16) | ((r >> 16) % 0x2000),
            3 => SDMA + ((r >> 8) % PAGES) * 0x1000 + (r & 0xff) * 8,
            4 => SCRATCH,
            5 => handle() | (((r >> 8) & 0xff) << 16) | ((r >> 16) % 16),
            6 => ((r >> 8) % 0x2000) * 0x1000,
            _ => r & 0xffff,
        }
    }
}

/// A hostile instruction.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Insn {
    /// RPCIT R1, R2.
    Rpcit {
        /// R1.
        r1: u8,
        /// R2.
        r2: u8,
    },
    /// PCILG R1, R2.
    Pcilg {
        /// R1.
        r1: u8,
        /// R2.
        r2: u8,
    },
    /// PCISTG R1, R2.
    Pcistg {
        /// R1.
        r1: u8,
        /// R2.
        r2: u8,
    },
    /// PCISTB R1, R3, D2(B2).
    Pcistb {
        /// R1.
        r1: u8,
        /// R3.
        r3: u8,
        /// Operand address.
        #[arbitrary(with = operand_addr)]
        addr: u64,
    },
    /// MPCIFC R1, D2(B2) with `fib` stored at the operand (format 0 unless byte 1 says
    /// otherwise, so the operation is mostly reached).
    Mpcifc {
        /// R1.
        r1: u8,
        /// Operand address.
        #[arbitrary(with = operand_addr)]
        addr: u64,
        /// FIB bytes.
        fib: [u8; 80],
    },
    /// STPCIFC R1, D2(B2).
    Stpcifc {
        /// R1.
        r1: u8,
        /// Operand address.
        #[arbitrary(with = operand_addr)]
        addr: u64,
    },
    /// CLP with a 48-byte block at the scratch area: request length, command, body,
    /// response length.
    Clp {
        /// R2 (set to the scratch area).
        r2: u8,
        /// LPS (`% 4`).
        lps: u8,
        /// Request length (32 when even).
        len: u16,
        /// Command (`% 8`).
        command: u16,
        /// Request body.
        body: [u8; 16],
        /// Response length (`% 5` picks 64, 4064, 48, 0x100 or `rsp` itself).
        rsp: u16,
    },
    /// CLP LPS 2 with a random block of up to 9000 bytes from `seed`, request length
    /// `len & !7`, command `command % 8`, response length `rsp & !7` at the request's end.
    ClpLong {
        /// Block length (`% 9000`, at least 64).
        size: u16,
        /// Request length.
        len: u16,
        /// Command.
        command: u16,
        /// Response length.
        rsp: u16,
        /// Fill.
        seed: u64,
    },
}

fn operand_addr(u: &mut Unstructured) -> arbitrary::Result<u64> {
    Ok(match u.arbitrary::<u8>()? % 4 {
        1 | 2 => SCRATCH + u64::from(u.arbitrary::<u16>()? % 0x4000),
        3 => RAM - 8,
        _ => u.arbitrary::<u64>()?,
    })
}

/// One step of the guest (or of the VMM: [`Op::Dma`], [`Op::Reattach`]).
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Map `pages % 48 + 1` pages from page `at % PAGES` to guest page `gpa % 512 × 8 +
    /// at % 8` onwards, read-only if `ro` (no RPCIT).
    Map {
        /// First page.
        at: u16,
        /// Page count.
        pages: u8,
        /// Guest frame selector (few frames, so neighbours are often contiguous).
        gpa: u16,
        /// Read-only.
        ro: bool,
    },
    /// Invalidate `pages % 64 + 1` PTEs from page `at % PAGES` (no RPCIT: lazy).
    Unmap {
        /// First page.
        at: u16,
        /// Page count.
        pages: u8,
    },
    /// Set the invalid bit of segment entry `seg % 16`.
    CutSegment {
        /// Segment.
        seg: u8,
    },
    /// Clear it again.
    RestoreSegment {
        /// Segment.
        seg: u8,
    },
    /// Linux's RPCIT over `pages % 600 + 1` pages from page `at % PAGES` plus `skew % 4096`
    /// bytes; on status 16, Linux's recovery (a global RPCIT).
    Rpcit {
        /// First page.
        at: u16,
        /// Page count.
        pages: u16,
        /// Byte offset.
        skew: u16,
    },
    /// Deregister, then register the same tables again.
    Reregister,
    /// Emulated DMA.
    Dma {
        /// Address.
        #[arbitrary(with = dma_iova)]
        iova: u64,
        /// Write (else read).
        write: bool,
    },
    /// The VMM detaches the host and attaches a fresh one of the same limit.
    Reattach,
    /// A hostile instruction with registers R1, R1 + 1, R2 (or R3), R2 + 1 from `operands`
    /// (the others zero).
    Insn {
        /// The instruction.
        insn: Insn,
        /// Register values.
        operands: [Operand; 4],
    },
    /// A raw value in the table entry at `lvl % 3` for page `page % PAGES` (if the tables
    /// above it exist).
    Entry {
        /// Level.
        lvl: u8,
        /// Page.
        page: u16,
        /// Value.
        value: u64,
    },
}

fn dma_iova(u: &mut Unstructured) -> arbitrary::Result<u64> {
    Ok(match u.arbitrary::<u8>()? % 4 {
        0..=2 => SDMA + u64::from(u.arbitrary::<u16>()? % PAGES as u16) * 0x1000 + 8,
        _ => u.arbitrary::<u64>()?,
    })
}

/// A whole input: the setup and the steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// How the world starts.
    pub setup: Setup,
    /// The steps, in order (at most [`MAX_OPS`] are run).
    pub ops: Vec<Op>,
}

/// Most steps one input runs.
pub const MAX_OPS: usize = 48;

impl Input {
    /// Decodes an input: the setup, then steps until the data runs out.
    pub fn decode(data: &[u8]) -> Option<Input> {
        let (setup, ops) = viommu_shared::fuzz_support::decode_steps(data, MAX_OPS)?;
        Some(Input { setup, ops })
    }
}

/// The guest's tables and the translation they give: IOVA page → (guest page, permission)
/// for valid PTEs, and the segments whose entry is cut.
pub struct Guest {
    /// The tables.
    pub tables: ZpciTables,
    /// Valid PTEs.
    pub ptes: BTreeMap<u64, (u64, Perm)>,
    /// Segments (`(iova - SDMA) >> 20`) whose entry has the invalid bit set.
    pub cut: BTreeSet<u64>,
}

impl Guest {
    /// What the tables map: valid PTEs under valid segment entries.
    pub fn truth(&self) -> BTreeMap<u64, (u64, Perm)> {
        self.ptes
            .iter()
            .filter(|(i, _)| !self.cut.contains(&((*i - SDMA) >> 20)))
            .map(|(i, v)| (*i, *v))
            .collect()
    }

    /// Applies a structured edit; other ops leave the tables alone.
    pub fn apply(&mut self, op: &Op) -> Result<(), String> {
        let err = |e| format!("table edit: {e:?}");
        match *op {
            Op::Map { at, pages, gpa, ro } => {
                let at = u64::from(at) % PAGES;
                let gpa = (u64::from(gpa) % 512) * 8 + at % 8;
                let perm = if ro { Perm::READ } else { Perm::RW };
                for p in 0..(u64::from(pages % 48) + 1).min(PAGES - at) {
                    let iova = SDMA + (at + p) * 0x1000;
                    let g = DATA + ((gpa + p) % 8192) * 0x1000;
                    self.tables.map(iova, g, perm).map_err(err)?;
                    self.ptes.insert(iova, (g, perm));
                    // Mapping through a cut segment entry makes it valid again.
                    self.cut.remove(&((iova - SDMA) >> 20));
                }
            }
            Op::Unmap { at, pages } => {
                let at = u64::from(at) % PAGES;
                for p in 0..(u64::from(pages % 64) + 1).min(PAGES - at) {
                    let iova = SDMA + (at + p) * 0x1000;
                    self.tables.unmap(iova).map_err(err)?;
                    self.ptes.remove(&iova);
                }
            }
            Op::CutSegment { seg } => {
                let seg = u64::from(seg % 16);
                let iova = SDMA + (seg << 20);
                self.tables.entry_for(level::PAGE, iova).map_err(err)?;
                self.tables
                    .invalidate_table_entry(level::SEGMENT, iova)
                    .map_err(err)?;
                self.cut.insert(seg);
            }
            Op::RestoreSegment { seg } => {
                let seg = u64::from(seg % 16);
                if self.cut.remove(&seg) {
                    self.tables
                        .revalidate_table_entry(level::SEGMENT, SDMA + (seg << 20))
                        .map_err(err)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The canonical coalesced host layout of `truth` (IOVA page → (guest page, permission)):
/// maximal runs contiguous in IOVA and guest-physical address with equal permissions, cut
/// at `max_run` multiples.
pub fn coalesce(truth: &BTreeMap<u64, (u64, Perm)>, max_run: u64) -> Vec<(u64, u64, u64, Perm)> {
    let mut out: Vec<(u64, u64, u64, Perm)> = Vec::new();
    for (&iova, &(gpa, perm)) in truth {
        if let Some(last) = out.last_mut() {
            let (li, lg, ls, lp) = *last;
            if li + ls == iova && lg + ls == gpa && lp == perm && iova % max_run != 0 {
                last.2 += 0x1000;
                continue;
            }
        }
        out.push((iova, gpa, 0x1000, perm));
    }
    out
}

/// The model with one function, its guest memory, tables and host.
pub struct World {
    /// The model.
    pub zpci: Zpci,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The host.
    pub host: SharedSimHost,
    /// Its entry limit.
    pub limit: u32,
    /// The guest's tables and their truth.
    pub guest: Guest,
    /// The disabled handle.
    pub fh0: Fh,
    /// No hostile instruction or raw entry write happened and no registration failed:
    /// `guest` is what the tables hold and the function is enabled with the tables
    /// registered.
    pub pristine: bool,
}

/// Plugs function [`FID`] (a 4 KiB BAR 0 of memory) into `zpci`; returns its handle.
pub(crate) fn plug(zpci: &Zpci) -> Result<Fh, String> {
    let dev = MemFunction::new(
        0x1014,
        0x04ed,
        [4096, 0, 0, 0, 0, 0],
        [0xc000_0004, 0, 0, 0, 0, 0],
    );
    let mut fcfg = FunctionConfig::new(FID, 0x77);
    fcfg.bar_sizes[0] = 4096;
    zpci.add_function(fcfg, Box::new(dev))
        .map_err(|e| format!("add_function: {e:?}"))
}

pub(crate) fn host_config(limit: u32) -> SimHostConfig {
    // Like VFIO, the host refuses guest-physical addresses outside RAM.
    let mut c = SimHostConfig::s390(HOST_APERTURE).with_entry_limit(limit);
    c.backed = Some(vec![AddrRange::new(0, RAM)]);
    c
}

fn insn_ok(r: &InsnResult, what: &str) -> Result<(), String> {
    if let Ok(c) = r {
        if c.writes.iter().any(|w| w.reg >= 16) {
            return Err(format!(
                "{what}: completion writes a register beyond 15: {c:?}"
            ));
        }
        if c.status.is_some() && c.cc != Cc::Error {
            return Err(format!("{what}: status without CC 1: {c:?}"));
        }
    }
    Ok(())
}

impl World {
    /// The model with function [`FID`] plugged and a host attached; unless `setup.blank`,
    /// enabled through CLP with empty tables of the setup's designation registered over
    /// `[SDMA, PAL]`.
    pub fn new(setup: Setup) -> Result<World, String> {
        let mem = guest_memory(&[(0, RAM as usize)]);
        let config = Config {
            groups: vec![GroupConfig {
                max_designation: Designation::RegionFirst,
                relaxed_translation: setup.relaxed,
                ..GroupConfig::default()
            }],
            exhaustion: if setup.reclaim {
                ExhaustionPolicy::ReclaimThenSignal
            } else {
                ExhaustionPolicy::SignalGuest
            },
            aperture: AperturePolicy::Full,
            ..Config::default()
        };
        let zpci = Zpci::new(config, mem.clone(), Arc::new(RecordingMsiSink::new()));
        let fh0 = plug(&zpci)?;
        let limit = setup.host_limit();
        let host = SharedSimHost::new(host_config(limit));
        zpci.attach_host(FID, Box::new(host.clone()))
            .map_err(|e| format!("attach: {e:?}"))?;
        let tables = ZpciTables::new(&mem, setup.designation(), TABLES.0, TABLES.1)
            .map_err(|e| format!("tables: {e:?}"))?;
        let mut w = World {
            zpci,
            mem,
            host,
            limit,
            guest: Guest {
                tables,
                ptes: BTreeMap::new(),
                cut: BTreeSet::new(),
            },
            fh0,
            pristine: !setup.blank,
        };
        if !setup.blank {
            let fh = w.cpu().enable(fh0).map_err(|e| format!("enable: {e:?}"))?;
            w.register(fh)?;
        }
        Ok(w)
    }

    /// A guest CPU using the scratch area.
    pub fn cpu(&self) -> GuestCpu<'_> {
        GuestCpu::new(&self.zpci, &self.mem, SCRATCH)
    }

    /// The function's current handle.
    pub fn fh(&self) -> Fh {
        self.zpci.function(FID).map(|f| f.fh).unwrap_or(self.fh0)
    }

    fn register(&mut self, fh: Fh) -> Result<(), String> {
        let iota = self.guest.tables.iota().0;
        let c = self
            .cpu()
            .register_ioat(fh, SDMA, PAL, iota)
            .map_err(|e| format!("register: {e:?}"))?;
        match (c.cc, c.status) {
            (Cc::Ok, _) => Ok(()),
            // A host too small for what the tables already map answers status 16 and
            // nothing stays registered: the RPCIT oracles no longer apply.
            (Cc::Error, Some(status::INSUFFICIENT_RESOURCES)) => {
                self.pristine = false;
                Ok(())
            }
            _ => Err(format!("register: {c:?}")),
        }
    }

    /// Linux's RPCIT over `[start, start + len)`; checks nothing stale is left there.
    fn rpcit(&self, start: u64, len: u64) -> Result<(), String> {
        let fh = self.fh();
        let c = self
            .cpu()
            .rpcit(fh, start, len)
            .map_err(|e| format!("rpcit: {e:?}"))?;
        let exhausted = c.cc == Cc::Error && c.status == Some(status::INSUFFICIENT_RESOURCES);
        if c.cc != Cc::Ok && !exhausted {
            return Err(format!("rpcit [{start:#x}, +{len:#x}): {c:?}"));
        }
        if exhausted && self.limit >= PAGES as u32 {
            return Err(format!("status 16 with a host of {} entries", self.limit));
        }
        self.check_range(AddrRange::from_len(start, len))?;
        if exhausted {
            // Linux's recovery: a global RPCIT.
            let c = self
                .cpu()
                .rpcit(fh, SDMA, PAL - SDMA + 1)
                .map_err(|e| format!("global rpcit: {e:?}"))?;
            if c.cc != Cc::Ok && c.status != Some(status::INSUFFICIENT_RESOURCES) {
                return Err(format!("global rpcit: {c:?}"));
            }
            self.check_range(AddrRange::new(SDMA, PAL + 1))?;
        }
        Ok(())
    }

    /// Every host page in `range` (within the DMA range) is what the guest's tables map.
    pub fn check_range(&self, range: AddrRange) -> Result<(), String> {
        let truth = self.guest.truth();
        let range = range.intersect(&AddrRange::new(SDMA, PAL + 1));
        for m in self.host.with(|h| h.mappings()) {
            let r = AddrRange::from_len(m.iova, m.size).intersect(&range);
            let mut p = r.start & !0xfff;
            while p < r.end {
                let want = Some(&(m.gpa + (p - m.iova), m.perm));
                if truth.get(&p) != want {
                    return Err(format!(
                        "after RPCIT over {range} the host maps {p:#x} -> {want:x?}, the \
                         tables give {:x?}",
                        truth.get(&p)
                    ));
                }
                p += 0x1000;
            }
        }
        Ok(())
    }

    fn dma(&self, iova: u64, write: bool) -> Result<(), String> {
        let perm = if write { Perm::WRITE } else { Perm::READ };
        let req = DmaRequest {
            requester_id: FID.0,
            pasid: None,
            iova,
            perm,
        };
        match self.zpci.translate(&req) {
            Ok(t) if !t.is_well_formed(iova) || !t.perm.allows(perm) => {
                Err(format!("translation {t:?} for {req:?}"))
            }
            Ok(_) => Ok(()),
            Err(_) if self.pristine => self.recover(),
            Err(_) => Ok(()),
        }
    }

    /// After a DMA fault put the function in the error state: the guest's recovery, MPCIFC
    /// reset-error, after which the host is rebuilt from the tables.
    fn recover(&self) -> Result<(), String> {
        let info = self
            .zpci
            .function(FID)
            .map_err(|e| format!("function: {e:?}"))?;
        if info.state != FunctionState::Error {
            return Ok(());
        }
        let c = self
            .cpu()
            .mpcifc(info.fh, oc::RESET_ERROR, 0, &Fib::default())
            .map_err(|e| format!("reset error: {e:?}"))?;
        if c.cc != Cc::Ok && c.status != Some(status::INSUFFICIENT_RESOURCES) {
            return Err(format!("reset error: {c:?}"));
        }
        let state = self.zpci.function(FID).map(|f| f.state);
        if state != Ok(FunctionState::Enabled) {
            return Err(format!("reset error left {state:?}"));
        }
        Ok(())
    }

    fn insn(&mut self, insn: &Insn, operands: &[Operand; 4]) -> Result<(), String> {
        let (fh, fh0) = (self.fh(), self.fh0);
        let mut regs = [0u64; 16];
        let mut set = |r: u8, i: usize| regs[usize::from(r % 16)] = operands[i].value(fh, fh0);
        let (a, b) = match *insn {
            Insn::Rpcit { r1, r2 } | Insn::Pcilg { r1, r2 } | Insn::Pcistg { r1, r2 } => (r1, r2),
            Insn::Pcistb { r1, r3, .. } => (r1, r3),
            Insn::Mpcifc { r1, .. } | Insn::Stpcifc { r1, .. } => (r1, r1.wrapping_add(2)),
            Insn::Clp { r2, .. } => (r2.wrapping_add(1), r2.wrapping_add(3)),
            Insn::ClpLong { .. } => (0, 4),
        };
        set(a, 0);
        set(a.wrapping_add(1), 1);
        set(b, 2);
        set(b.wrapping_add(1), 3);
        let z = &self.zpci;
        let mem = &self.mem;
        let r = match *insn {
            Insn::Rpcit { r1, r2 } => z.rpcit(r1 % 16, r2 % 16, &regs),
            Insn::Pcilg { r1, r2 } => z.pcilg(r1 % 16, r2 % 16, &regs),
            Insn::Pcistg { r1, r2 } => z.pcistg(r1 % 16, r2 % 16, &regs),
            Insn::Pcistb { r1, r3, addr } => z.pcistb(mem, r1 % 16, r3 % 16, addr, &regs),
            Insn::Mpcifc { r1, addr, mut fib } => {
                if fib[1] & 3 != 0 {
                    fib[0] = 0;
                }
                let _ = mem.write_slice(&fib, GuestAddress(addr));
                z.mpcifc(mem, r1 % 16, addr, &regs)
            }
            Insn::Stpcifc { r1, addr } => z.stpcifc(mem, r1 % 16, addr, &regs),
            Insn::Clp {
                r2,
                lps,
                len,
                command,
                body,
                rsp,
            } => {
                let mut b = [0u8; 48];
                let len = if len.is_multiple_of(2) { 32 } else { len };
                let rsp = [64, 4064, 48, 0x100, rsp][usize::from(rsp % 5)];
                b[0..2].copy_from_slice(&len.to_be_bytes());
                b[2..4].copy_from_slice(&(command % 8).to_be_bytes());
                b[16..32].copy_from_slice(&body);
                b[32..34].copy_from_slice(&rsp.to_be_bytes());
                let _ = mem.write_slice(&b, GuestAddress(SCRATCH));
                regs[usize::from(r2 % 16)] = SCRATCH;
                z.clp(mem, r2 % 16, lps % 4, &regs)
            }
            Insn::ClpLong {
                size,
                len,
                command,
                rsp,
                seed,
            } => {
                let mut block = XorShift::new(seed).bytes(usize::from(size % 9000).max(64));
                block[0..2].copy_from_slice(&(len & !7).to_be_bytes());
                block[2..4].copy_from_slice(&(command % 8).to_be_bytes());
                let at = usize::from(len & !7);
                if at + 2 <= block.len() {
                    block[at..at + 2].copy_from_slice(&(rsp & !7).to_be_bytes());
                }
                let _ = mem.write_slice(&block, GuestAddress(SCRATCH));
                regs[2] = SCRATCH;
                z.clp(mem, 2, crate::insn::clp::LPS_PCI, &regs)
            }
        };
        insn_ok(&r, &format!("{insn:?}"))
    }

    /// Runs one step, then checks the invariants.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Map { .. } | Op::Unmap { .. } | Op::CutSegment { .. } => {
                if self.guest.apply(op).is_err() {
                    // The walk met a raw entry written earlier: the tables are no longer
                    // what the guest model thinks.
                    self.pristine = false;
                }
            }
            Op::RestoreSegment { .. } => {
                if self.guest.apply(op).is_err() {
                    self.pristine = false;
                }
            }
            Op::Rpcit { at, pages, skew } => {
                let start = SDMA + (u64::from(at) % PAGES) * 0x1000 + u64::from(skew % 4096);
                let len = (u64::from(pages % 600) + 1) * 0x1000;
                if self.pristine {
                    self.rpcit(start, len)?;
                } else {
                    let r = self.cpu().rpcit(self.fh(), start, len);
                    insn_ok(&r, "rpcit")?;
                }
            }
            Op::Reregister => {
                let fh = self.fh();
                let r = self.cpu().deregister_ioat(fh);
                insn_ok(&r, "deregister")?;
                if self.pristine {
                    if self.host.with(|h| h.mapping_count()) != 0 {
                        return Err("deregistration left host mappings".into());
                    }
                    self.register(fh)?;
                }
            }
            Op::Dma { iova, write } => self.dma(iova, write)?,
            Op::Reattach => {
                self.zpci
                    .detach_host(FID)
                    .map_err(|e| format!("detach: {e:?}"))?;
                self.check_host_empty("detach")?;
                self.host = SharedSimHost::new(host_config(self.limit));
                match self.zpci.attach_host(FID, Box::new(self.host.clone())) {
                    // Typed host trouble with what the guest maps (out of entries, or
                    // guest-physical addresses outside RAM) leaves the host attached.
                    Ok(())
                    | Err(crate::ModelError::HostOutOfResources { .. })
                    | Err(crate::ModelError::HostRefused { .. }) => {}
                    Err(e) => return Err(format!("attach: {e:?}")),
                }
            }
            Op::Insn {
                ref insn,
                ref operands,
            } => {
                self.pristine = false;
                self.insn(insn, operands)?;
            }
            Op::Entry { lvl, page, value } => {
                self.pristine = false;
                let iova = SDMA + (u64::from(page) % PAGES) * 0x1000;
                if let Ok(Some(ea)) = self.guest.tables.find(lvl % 3, iova) {
                    // Earlier garbage may point the walk outside RAM.
                    let _ = self.guest.tables.store(ea, value);
                }
            }
        }
        self.check()
    }

    /// The invariants that hold after every step.
    pub fn check(&self) -> Result<(), String> {
        let maps = self
            .zpci
            .host_mappings(FID)
            .map_err(|e| format!("host_mappings: {e:?}"))?;
        if let Some(m) = maps
            .iter()
            .find(|m| m.gpa_range().end > RAM || !HOST_APERTURE.contains(m.iova))
        {
            return Err(format!("host mapping outside RAM or the aperture: {m:?}"));
        }
        self.host
            .with(|h| check_mappings_match_host(&maps, h))
            .map_err(|e| format!("host oracle: {e}"))?;
        let info = self
            .zpci
            .function(FID)
            .map_err(|e| format!("function: {e:?}"))?;
        let remaining = self.host.with(|h| h.remaining_entries());
        if info.host_remaining != remaining {
            return Err(format!(
                "model reports {:?} free host entries, the host has {remaining:?}",
                info.host_remaining
            ));
        }
        Ok(())
    }

    fn check_host_empty(&self, what: &str) -> Result<(), String> {
        let (count, remaining) = self
            .host
            .with(|h| (h.mapping_count(), h.remaining_entries()));
        if count != 0 {
            return Err(format!("{what} left {count} host mappings"));
        }
        if remaining != Some(self.limit) {
            return Err(format!(
                "{what} leaked host entries: {remaining:?} of {} free",
                self.limit
            ));
        }
        Ok(())
    }

    /// The end of an input: while pristine, a global RPCIT brings the host to the coalesced
    /// truth (or answers status 16 exactly when it does not fit) and deregistration empties
    /// the host; in any case unplugging the function returns every host entry.
    pub fn finish(self) -> Result<(), String> {
        if self.pristine {
            let fh = self.fh();
            let c = self
                .cpu()
                .rpcit(fh, SDMA, PAL - SDMA + 1)
                .map_err(|e| format!("global rpcit: {e:?}"))?;
            let truth = self.guest.truth();
            let want = coalesce(&truth, MAX_RUN);
            let fits = want.len() <= self.limit as usize;
            if (c.cc == Cc::Ok) != fits {
                return Err(format!(
                    "global RPCIT answered {c:?}; the truth needs {} of {} entries",
                    want.len(),
                    self.limit
                ));
            }
            self.check_range(AddrRange::new(SDMA, PAL + 1))?;
            if fits {
                let got: Vec<_> = self
                    .host
                    .with(|h| h.mappings())
                    .iter()
                    .map(|m| (m.iova, m.gpa, m.size, m.perm))
                    .collect();
                if got != want {
                    return Err(format!(
                        "after a global RPCIT the host holds {got:x?}, the coalesced truth is \
                         {want:x?}"
                    ));
                }
            }
            let info = self
                .zpci
                .function(FID)
                .map_err(|e| format!("function: {e:?}"))?;
            if info.state != FunctionState::Enabled {
                return Err(format!("function left {:?}", info.state));
            }
            let r = self.cpu().deregister_ioat(fh);
            insn_ok(&r, "deregister")?;
            self.check_host_empty("deregistration")?;
        }
        let _ = self.zpci.take_events();
        self.zpci
            .remove_function(FID)
            .map_err(|e| format!("remove_function: {e:?}"))?;
        self.check_host_empty("unplug")
    }
}

/// Runs `input` from setup to unplug; the first oracle failure is returned.
pub fn run(input: &Input) -> Result<(), String> {
    let mut w = World::new(input.setup)?;
    for (i, op) in input.ops.iter().take(MAX_OPS).enumerate() {
        w.step(op).map_err(|e| format!("step {i} {op:?}: {e}"))?;
    }
    w.finish()
}

/// The fuzz target: decodes `data` and runs it; panics when an oracle fails.
pub fn model(data: &[u8]) {
    let Some(input) = Input::decode(data) else {
        return;
    };
    if let Err(e) = run(&input) {
        panic!("zpci oracle: {e}\n{input:#?}");
    }
}

/// Encodes `input` so that [`Input::decode`] gives it back (for seed inputs). Biased fields
/// are written through their "any value" branch.
pub fn encode(input: &Input) -> Vec<u8> {
    let mut e = super::Encoder::new();
    let s = &input.setup;
    e.u8(s.designation)
        .u8(s.limit)
        .bool(s.reclaim)
        .bool(s.relaxed)
        .bool(s.blank);
    const N: u32 = 10;
    for op in &input.ops {
        match *op {
            Op::Map { at, pages, gpa, ro } => {
                e.variant(0, N).u16(at).u8(pages).u16(gpa).bool(ro);
            }
            Op::Unmap { at, pages } => {
                e.variant(1, N).u16(at).u8(pages);
            }
            Op::CutSegment { seg } => {
                e.variant(2, N).u8(seg);
            }
            Op::RestoreSegment { seg } => {
                e.variant(3, N).u8(seg);
            }
            Op::Rpcit { at, pages, skew } => {
                e.variant(4, N).u16(at).u16(pages).u16(skew);
            }
            Op::Reregister => {
                e.variant(5, N);
            }
            Op::Dma { iova, write } => {
                e.variant(6, N).u8(3).u64(iova).bool(write);
            }
            Op::Reattach => {
                e.variant(7, N);
            }
            Op::Insn {
                ref insn,
                ref operands,
            } => {
                e.variant(8, N);
                const I: u32 = 8;
                match *insn {
                    Insn::Rpcit { r1, r2 } => e.variant(0, I).u8(r1).u8(r2),
                    Insn::Pcilg { r1, r2 } => e.variant(1, I).u8(r1).u8(r2),
                    Insn::Pcistg { r1, r2 } => e.variant(2, I).u8(r1).u8(r2),
                    Insn::Pcistb { r1, r3, addr } => e.variant(3, I).u8(r1).u8(r3).u8(0).u64(addr),
                    Insn::Mpcifc { r1, addr, fib } => {
                        e.variant(4, I).u8(r1).u8(0).u64(addr);
                        for b in fib {
                            e.u8(b);
                        }
                        &mut e
                    }
                    Insn::Stpcifc { r1, addr } => e.variant(5, I).u8(r1).u8(0).u64(addr),
                    Insn::Clp {
                        r2,
                        lps,
                        len,
                        command,
                        body,
                        rsp,
                    } => {
                        e.variant(6, I).u8(r2).u8(lps).u16(len).u16(command);
                        for b in body {
                            e.u8(b);
                        }
                        e.u16(rsp)
                    }
                    Insn::ClpLong {
                        size,
                        len,
                        command,
                        rsp,
                        seed,
                    } => e
                        .variant(7, I)
                        .u16(size)
                        .u16(len)
                        .u16(command)
                        .u16(rsp)
                        .u64(seed),
                };
                for o in operands {
                    e.u8(o.kind).u64(o.raw);
                }
            }
            Op::Entry { lvl, page, value } => {
                e.variant(9, N).u8(lvl).u16(page).u64(value);
            }
        }
    }
    e.into_bytes()
}
