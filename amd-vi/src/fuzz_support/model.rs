//! Fuzz target `amd_vi`: a hostile guest driving the IOMMU — random register accesses,
//! command-buffer contents (well-formed and raw), device-table entries, page-table entries,
//! Linux-like map/unmap/flush sequences, emulated DMA, aliases, resets — with two
//! passthrough devices shadowed into [`SharedSimHost`]s (one type1 of any flavour and entry
//! limit, one iommufd), over 3- to 6-level tables — and interrupt remapping: DTE interrupt
//! fields, IRTEs of either format, MSI requests and route resolutions, interrupt-table
//! invalidations.
//!
//! Oracles, after every step ([`World::check`]): the EFR reads as configured; head and tail
//! pointers stay inside their fields; each host holds exactly its device's shadow record
//! ([`check_mappings_match_host`]) and no mapping without permission. After a completed
//! INVALIDATE_IOMMU_ALL or INVALIDATE_IOMMU_PAGES (followed by a COMPLETION_WAIT whose store
//! landed) every host mapping in the invalidated range of a device in that domain is a
//! translation the guest's tables give right now, with no more permission (the invalidation
//! is a barrier). Emulated DMA answers are well formed and allow the access. Only host
//! out-of-resources may fail a call. Detaching removes every host mapping and returns every
//! host entry. Interrupt remapping: a route resolution ([`RemapMode::Route`]) records and
//! sends nothing and gives the same answer as the request that follows; a request's fault is
//! `recorded` only if an event was raised, a delivered interrupt reaches the sink as exactly
//! its resolution; after a completed INVALIDATE_INTERRUPT_TABLE every route of the devices
//! using that entry, re-resolved by a [`RouteTable`] from the notifications, equals a fresh
//! resolution (the notification is a barrier).

use crate::command::Command;
use crate::dte::Dte;
use crate::pagetable::{AmdV1Format, PTE_IR, PTE_IW, PTE_PR, perm_bits};
use crate::regs::{LEN_SHIFT, PTR_MASK, Ring, control, offset};
use crate::view::with_view;
use crate::{AmdVi, AmdViError, Config};
use arbitrary::{Arbitrary, Unstructured};
use std::sync::Arc;
use viommu_shared::dma::{DmaRequest, DmaTranslate};
use viommu_shared::fuzz_support::check_mappings_match_host;
use viommu_shared::host::{HostDma, HostFlavour, PinBudget, SharedSimHost, SimHostConfig};
use viommu_shared::irq::{InterruptRemapper, IrFault, RemapMode, Resolution, RouteTable};
use viommu_shared::pt::Leaf;
use viommu_shared::pt::WalkLimits;
use viommu_shared::regs::Msi;
use viommu_shared::regs::RecordingMsiSink;
use viommu_shared::shadow::{GuestView, IdentityView, ShadowConfig};
use viommu_shared::testing::guest_memory;
use viommu_shared::{AddrRange, Perm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: 16 MiB at 0.
pub const RAM: u64 = 16 << 20;
/// Device table (128 entries).
pub const DEV_TAB: u64 = 0x10_0000;
/// Command buffer (256 entries).
pub const CMD_BUF: u64 = 0x20_0000;
/// Event log (256 entries).
pub const EVT_LOG: u64 = 0x21_0000;
/// Completion-wait semaphore of the [`Op::Flush`] sequence.
pub const SEM: u64 = 0x22_0000;
/// Page-table area (16 pages); the root is the first page.
pub const TABLES: u64 = 0x30_0000;
/// Pages in the page-table area.
pub const TABLE_PAGES: u64 = 16;
/// The last-level table (4 KiB PTEs for IOVAs 0..2 MiB).
pub const LEAF_PT: u64 = TABLES + 0x8000;
/// Guest pages the [`Op::MapPages`] sequence maps.
pub const DATA: u64 = 0x40_0000;
/// Devices with entries.
pub const DEVICES: u16 = 4;
/// Interrupt remapping tables: 32 KiB (2048 128-bit entries) per device.
pub const IRT: u64 = 0xd0_0000;
/// The passthrough devices (the first one's host is type1, the second's iommufd).
pub const PASSTHROUGH: [u16; 2] = [1, 2];

/// How the world starts.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Table depth (DTE Mode): 3 + `levels % 4`.
    pub levels: u8,
    /// Flavour of the first host: type1 v2, type1 v1, iommufd (`% 3`).
    pub flavour: u8,
    /// Its entry limit: 1 + `limit % 32`. When `limit & 0x60 == 0x60`, both hosts also
    /// charge one pin budget (the process's locked memory) of `(1 + limit % 32) × 16` pages,
    /// so one device's mappings can make the other's run out ([`World::budget`]).
    pub limit: u8,
    /// Start from reset instead of the Linux-like init (device table, command buffer, event
    /// log, IOMMU enabled, every device translated through a table mapping 16 pages).
    pub blank: bool,
}

/// A command.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Any bits, opcode `opcode % 16`.
    Raw {
        /// Opcode.
        opcode: u8,
        /// Low quadword (its opcode nibble is replaced).
        lo: u64,
        /// High quadword.
        hi: u64,
    },
    /// INVALIDATE_IOMMU_PAGES of domain `domain % 4` at page `page`.
    Pages {
        /// Domain selector.
        domain: u8,
        /// Page number (bits 63:12 of the address).
        page: u32,
        /// S.
        size: bool,
        /// PDE.
        pde: bool,
    },
    /// INVALIDATE_DEVTAB_ENTRY of device `devid % 8`.
    Devtab {
        /// Device selector.
        devid: u8,
    },
    /// INVALIDATE_IOMMU_ALL.
    All,
    /// COMPLETION_WAIT at an address below 16 MiB.
    Wait {
        /// Store address (`% RAM`, 8-byte aligned).
        addr: u32,
        /// S.
        store: bool,
        /// I.
        interrupt: bool,
        /// Store data.
        data: u64,
    },
}

impl Cmd {
    /// The two quadwords.
    pub fn qwords(&self) -> [u64; 2] {
        match *self {
            Cmd::Raw { opcode, lo, hi } => {
                [(lo & !(0xf << 60)) | (u64::from(opcode % 16) << 60), hi]
            }
            Cmd::Pages {
                domain,
                page,
                size,
                pde,
            } => Command::InvalidateIommuPages {
                pasid: 0,
                domain_id: u16::from(domain % 4),
                size,
                pde,
                gn: false,
                address: u64::from(page) << 12,
            }
            .encode(),
            Cmd::Devtab { devid } => Command::InvalidateDevtabEntry {
                device_id: u16::from(devid % 8),
            }
            .encode(),
            Cmd::All => Command::InvalidateIommuAll.encode(),
            Cmd::Wait {
                addr,
                store,
                interrupt,
                data,
            } => Command::CompletionWait {
                store,
                interrupt,
                fence: false,
                address: (u64::from(addr) % RAM) & !7,
                data,
            }
            .encode(),
        }
    }
}

/// One step of the guest (or of the VMM: [`Op::Dma`], [`Op::Alias`], [`Op::Reattach`]).
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Register write, then a read at the same offset.
    Mmio {
        /// Offset in the register window.
        #[arbitrary(with = reg_offset)]
        offset: u64,
        /// Access size.
        #[arbitrary(with = access_len)]
        len: usize,
        /// Value.
        value: u64,
    },
    /// A command written at the tail (as the registers place it), the tail moved past it.
    Command {
        /// The command.
        cmd: Cmd,
    },
    /// A device-table entry: V, TV, root page `root_page % 16` of the table area, Mode
    /// `mode % 8`, IR/IW from `perm % 4`, DomainID; reserved bits from `noise` unless
    /// `clean`.
    Dte {
        /// Device (`% DEVICES`).
        devid: u8,
        /// Root page.
        root_page: u8,
        /// Mode.
        mode: u8,
        /// Permission selector.
        perm: u8,
        /// DomainID.
        domain: u16,
        /// Reserved-bit noise.
        noise: u64,
        /// No noise.
        clean: bool,
    },
    /// Any device-table entry.
    DteRaw {
        /// Device (`% DEVICES`).
        devid: u8,
        /// The four quadwords.
        q: [u64; 4],
    },
    /// A page-table entry anywhere in the table area.
    Pte {
        /// Slot (`% (16 × 512)`).
        slot: u16,
        /// Value.
        #[arbitrary(with = pte_value)]
        value: u64,
    },
    /// `pages % 64 + 1` 4 KiB PTEs of the last-level table from `index`, mapping guest pages
    /// from `frame` with `perm % 3 + 1` (R, W, RW); no invalidation.
    MapPages {
        /// First PTE index (`% 512`).
        index: u16,
        /// Page count.
        pages: u8,
        /// First guest frame after [`DATA`] (`% 2048`).
        frame: u16,
        /// Permission selector.
        perm: u8,
    },
    /// Clears `pages % 64 + 1` PTEs from `index`; no invalidation.
    UnmapPages {
        /// First PTE index (`% 512`).
        index: u16,
        /// Page count.
        pages: u8,
    },
    /// Linux's flush: INVALIDATE_IOMMU_PAGES of domain `domain % 3` over 2^(`order % 10`)
    /// pages at `index` (or INVALIDATE_IOMMU_ALL), then COMPLETION_WAIT storing to [`SEM`].
    Flush {
        /// Domain selector.
        domain: u8,
        /// Page number (`% 512`).
        index: u16,
        /// log2 of the page count.
        order: u8,
        /// INVALIDATE_IOMMU_ALL instead.
        all: bool,
    },
    /// Emulated DMA.
    Dma {
        /// Requester id.
        #[arbitrary(with = requester)]
        devid: u16,
        /// Address.
        #[arbitrary(with = dma_iova)]
        iova: u64,
        /// Write (else read).
        write: bool,
    },
    /// The VMM declares an alias (`% 8` each; equal removes it).
    Alias {
        /// Requester.
        dev: u8,
        /// Alias.
        alias: u8,
    },
    /// System reset.
    Reset,
    /// The VMM detaches a passthrough device's host and attaches a fresh one.
    Reattach {
        /// The second passthrough device instead of the first.
        second: bool,
        /// Host flavour selector.
        flavour: u8,
        /// Entry limit selector.
        limit: u8,
    },
    /// A device-table entry's interrupt quadword: IV, IntTabLen `len % 16`, IntCtl
    /// `ctl % 4`, pass bits `pass % 8` (INIT, ExtINT, NMI), IG, the device's table (or one
    /// outside RAM when `far`); reserved bits from `noise` unless `clean`.
    IrqDte {
        /// Device (`% DEVICES`).
        devid: u8,
        /// IntTabLen.
        len: u8,
        /// IntCtl.
        ctl: u8,
        /// Pass bits.
        pass: u8,
        /// IG.
        ignore: bool,
        /// Table outside RAM.
        far: bool,
        /// Reserved-bit noise.
        noise: u64,
        /// No noise.
        clean: bool,
    },
    /// An IRTE of device `devid % DEVICES` at index `index % 2048`, written both as a
    /// 32-bit entry (`lo`'s low half) and as a 128-bit one (`lo`, `hi`); `plausible` sets
    /// RemapEn and clears reserved bits, guest mode and reserved delivery modes.
    Irte {
        /// Device selector.
        devid: u8,
        /// Index.
        index: u16,
        /// Low quadword.
        lo: u64,
        /// High quadword.
        hi: u64,
        /// A well-formed entry.
        plausible: bool,
    },
    /// An MSI from requester `source % 8` (or any requester): resolved as a route first,
    /// then delivered as a request unless `route_only`.
    Msi {
        /// Requester selector.
        source: u8,
        /// Any 16-bit requester instead.
        any_source: bool,
        /// Address bits 19:0 inside the interrupt window, or the whole address outside it.
        address: u32,
        /// Outside the interrupt window.
        outside: bool,
        /// Data.
        data: u32,
        /// Resolve only.
        route_only: bool,
    },
    /// INVALIDATE_INTERRUPT_TABLE of device `devid % 8` (or INVALIDATE_DEVTAB_ENTRY), then
    /// COMPLETION_WAIT storing to [`SEM`].
    IrqInvalidate {
        /// Device selector.
        devid: u8,
        /// INVALIDATE_DEVTAB_ENTRY instead.
        dte: bool,
    },
}

const KNOWN_REGS: &[u64] = &[
    offset::DEV_TAB_BASE,
    offset::CMD_BUF_BASE,
    offset::EVT_LOG_BASE,
    offset::CONTROL,
    offset::EXCL_BASE,
    offset::EXCL_LIMIT,
    offset::EXT_FEATURES,
    offset::PPR_LOG_BASE,
    offset::CMD_HEAD,
    offset::CMD_TAIL,
    offset::EVT_HEAD,
    offset::EVT_TAIL,
    offset::STATUS,
    offset::PPR_HEAD,
    offset::PPR_TAIL,
    offset::CONTROL + 4,
    offset::CMD_BUF_BASE + 4,
    offset::DEV_TAB_BASE + 4,
];

fn reg_offset(u: &mut Unstructured) -> arbitrary::Result<u64> {
    Ok(match u.arbitrary::<u8>()? % 8 {
        0..=4 => *u.choose(KNOWN_REGS)?,
        5 | 6 => u64::from(u.arbitrary::<u16>()? % 0x4000),
        _ => u.arbitrary::<u64>()?,
    })
}

fn access_len(u: &mut Unstructured) -> arbitrary::Result<usize> {
    Ok(match u.arbitrary::<u8>()? {
        n if n % 8 < 7 => [1, 2, 4, 4, 8, 8, 8][usize::from(n % 8)],
        n => usize::from(n / 8),
    })
}

fn pte_value(u: &mut Unstructured) -> arbitrary::Result<u64> {
    let kind = u.arbitrary::<u8>()?;
    let v = u.arbitrary::<u64>()?;
    Ok(match kind % 4 {
        // A plausible entry: a table-area page, any NextLevel, random PR/IR/IW.
        0..=2 => {
            (TABLES + ((v % TABLE_PAGES) << 12))
                | (((v >> 8) & 7) << 9)
                | ((v >> 16) & PTE_PR)
                | (v & (PTE_IR | PTE_IW))
        }
        _ => v,
    })
}

fn requester(u: &mut Unstructured) -> arbitrary::Result<u16> {
    Ok(match u.arbitrary::<u8>()? {
        n if n % 8 < 6 => u16::from(n % 8 % 4),
        n if n % 8 == 6 => 0x80 + u16::from(n / 8),
        _ => u.arbitrary::<u16>()?,
    })
}

fn dma_iova(u: &mut Unstructured) -> arbitrary::Result<u64> {
    Ok(match u.arbitrary::<u8>()? % 4 {
        0 | 1 => u64::from(u.arbitrary::<u32>()? % 0x20_0000),
        2 => u64::from(u.arbitrary::<u32>()?),
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
pub const MAX_OPS: usize = 64;

impl Input {
    /// Decodes an input: the setup, then steps until the data runs out.
    pub fn decode(data: &[u8]) -> Option<Input> {
        let (setup, ops) = viommu_shared::fuzz_support::decode_steps(data, MAX_OPS)?;
        Some(Input { setup, ops })
    }
}

fn flavour(sel: u8) -> HostFlavour {
    [
        HostFlavour::Type1v2,
        HostFlavour::Type1v1,
        HostFlavour::Iommufd,
    ][usize::from(sel % 3)]
}

/// One passthrough device's host.
pub struct Host {
    /// The device.
    pub device: u16,
    /// The host.
    pub host: SharedSimHost,
    /// Its flavour.
    pub flavour: HostFlavour,
    /// Its entry limit.
    pub limit: u32,
}

impl Host {
    /// A fresh host for `device`, charging `budget` if given.
    pub fn new(device: u16, flavour: HostFlavour, limit: u32, budget: Option<&PinBudget>) -> Host {
        let mut config = SimHostConfig::amd_vi()
            .with_flavour(flavour)
            .with_entry_limit(limit);
        if let Some(b) = budget {
            config = config.with_pin_budget(b.clone());
        }
        Host {
            device,
            host: SharedSimHost::new(config),
            flavour,
            limit,
        }
    }
}

/// Results of calls that process commands: only host out-of-resources is acceptable.
fn expect_ok_or_oor(r: Result<(), AmdViError>, what: &str) -> Result<(), String> {
    match r {
        Ok(()) | Err(AmdViError::HostOutOfResources { .. }) => Ok(()),
        Err(e) => Err(format!("{what}: unexpected error {e:?}")),
    }
}

/// The IOMMU, its guest memory, the passthrough devices' hosts.
pub struct World {
    /// The IOMMU.
    pub iommu: AmdVi,
    /// Where its interrupts (own and delivered) go.
    pub msi: Arc<RecordingMsiSink>,
    /// The VMM's routes: route `d` is index 0 of requester `d` for `d < 8`.
    pub routes: Arc<RouteTable>,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The hosts of [`PASSTHROUGH`].
    pub hosts: Vec<Host>,
    /// The pin budget both hosts charge, if the setup asked for one.
    pub budget: Option<PinBudget>,
    identity: IdentityView,
    seq: u64,
}

impl World {
    /// The IOMMU with [`PASSTHROUGH`] attached to fresh hosts; unless `setup.blank`,
    /// initialised the way Linux does it.
    pub fn new(setup: Setup) -> Result<World, String> {
        let mem = guest_memory(&[(0, RAM as usize)]);
        let config = Config {
            shadow: ShadowConfig {
                walk_limits: WalkLimits {
                    max_entries: 1 << 12,
                },
                ..ShadowConfig::default()
            },
            event_history: 8,
            ..Config::default()
        };
        let msi = Arc::new(RecordingMsiSink::new());
        let iommu = AmdVi::new(config, mem.clone(), msi.clone());
        let routes = RouteTable::new(Arc::new(iommu.clone()), None);
        let budget = (setup.limit & 0x60 == 0x60)
            .then(|| PinBudget::new((u64::from(setup.limit % 32) + 1) * 16 * 0x1000));
        let hosts = vec![
            Host::new(
                PASSTHROUGH[0],
                flavour(setup.flavour),
                u32::from(setup.limit % 32) + 1,
                budget.as_ref(),
            ),
            Host::new(PASSTHROUGH[1], HostFlavour::Iommufd, 0, budget.as_ref()),
        ];
        for h in &hosts {
            expect_ok_or_oor(
                iommu.attach_host(h.device, Box::new(h.host.clone())),
                "attach",
            )?;
        }
        let mut w = World {
            iommu,
            msi,
            routes,
            mem,
            hosts,
            budget,
            identity: IdentityView::new(&[AddrRange::new(0, RAM)]),
            seq: 0,
        };
        if !setup.blank {
            w.boot(3 + setup.levels % 4)?;
        }
        for d in 0..8u32 {
            let _ = w.routes.set(d, d as u16, msi_of(0xfee0_0000, 0));
        }
        Ok(w)
    }

    fn write(&self, addr: u64, qwords: &[u64]) {
        for (i, q) in qwords.iter().enumerate() {
            // Every address written here lies in RAM.
            let _ = self
                .mem
                .write_obj(q.to_le(), GuestAddress(addr + 8 * i as u64));
        }
    }

    fn boot(&mut self, levels: u8) -> Result<(), String> {
        let Some(fmt) = AmdV1Format::new(levels) else {
            return Err(format!("no {levels}-level format"));
        };
        for d in 0..DEVICES {
            let dte = Dte::translated(1 + d % 2, TABLES, levels, Perm::RW);
            self.write(DEV_TAB + u64::from(d) * 32, &dte.0);
        }
        // The top level at TABLES, one page per level below, the last level at LEAF_PT.
        let mut table = TABLES;
        for l in (1..levels).rev() {
            let next = if l == 1 { LEAF_PT } else { table + 0x1000 };
            let e = fmt.encode_table_to(l, next, l - 1, Perm::RW).unwrap_or(0);
            self.write(table, &[e]);
            table = next;
        }
        let ptes: Vec<u64> = (0..16u64)
            .map(|i| (DATA + i * 0x1000) | PTE_PR | perm_bits(Perm::RW))
            .collect();
        self.write(LEAF_PT, &ptes);
        let i = &self.iommu;
        for (off, val) in [
            (offset::DEV_TAB_BASE, DEV_TAB),
            (offset::CMD_BUF_BASE, CMD_BUF | (8 << LEN_SHIFT)),
            (offset::EVT_LOG_BASE, EVT_LOG | (8 << LEN_SHIFT)),
            (
                offset::CONTROL,
                control::IOMMU_EN
                    | control::CMD_BUF_EN
                    | control::EVENT_LOG_EN
                    | control::EVENT_INT_EN,
            ),
        ] {
            expect_ok_or_oor(i.mmio_write(off, 8, val), "init")?;
        }
        self.flush(0, 0, 0, true)
    }

    /// Writes `cmds` at the tail (as the registers place it) and moves the tail past them.
    fn queue(&self, cmds: &[[u64; 2]]) -> Result<(), String> {
        let ring = Ring::from_base_register(self.iommu.mmio_read(offset::CMD_BUF_BASE, 8));
        let mut tail = ring.offset(self.iommu.mmio_read(offset::CMD_TAIL, 8));
        for c in cmds {
            let at = ring.base.wrapping_add(tail);
            let _ = self.mem.write_obj(c[0].to_le(), GuestAddress(at));
            let _ = self
                .mem
                .write_obj(c[1].to_le(), GuestAddress(at.wrapping_add(8)));
            tail = ring.next(tail);
        }
        expect_ok_or_oor(self.iommu.mmio_write(offset::CMD_TAIL, 8, tail), "tail")
    }

    /// Runs one step, then checks the invariants.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Mmio { offset, len, value } => {
                expect_ok_or_oor(self.iommu.mmio_write(offset, len, value), "mmio_write")?;
                let _ = self.iommu.mmio_read(offset, len);
            }
            Op::Command { cmd } => self.queue(&[cmd.qwords()])?,
            Op::Dte {
                devid,
                root_page,
                mode,
                perm,
                domain,
                noise,
                clean,
            } => {
                let mut q0 = (TABLES + (u64::from(root_page) % TABLE_PAGES) * 0x1000)
                    | (u64::from(mode % 8) << 9)
                    | 3
                    | (u64::from(perm % 4) << 61);
                if !clean {
                    q0 ^= noise & 0x8000_0000_0000_007c;
                }
                let dev = u64::from(u16::from(devid) % DEVICES);
                self.write(DEV_TAB + dev * 32, &[q0, u64::from(domain), 0, 0]);
            }
            Op::DteRaw { devid, q } => {
                let dev = u64::from(u16::from(devid) % DEVICES);
                self.write(DEV_TAB + dev * 32, &q);
            }
            Op::Pte { slot, value } => {
                let slot = u64::from(slot) % (TABLE_PAGES * 512);
                self.write(TABLES + slot * 8, &[value]);
            }
            Op::MapPages {
                index,
                pages,
                frame,
                perm,
            } => {
                let perm = [Perm::READ, Perm::WRITE, Perm::RW][usize::from(perm % 3)];
                for i in 0..u64::from(pages % 64) + 1 {
                    let slot = (u64::from(index) + i) % 512;
                    let gpa = DATA + ((u64::from(frame) + i) % 2048) * 0x1000;
                    self.write(LEAF_PT + slot * 8, &[gpa | PTE_PR | perm_bits(perm)]);
                }
            }
            Op::UnmapPages { index, pages } => {
                for i in 0..u64::from(pages % 64) + 1 {
                    let slot = (u64::from(index) + i) % 512;
                    self.write(LEAF_PT + slot * 8, &[0]);
                }
            }
            Op::Flush {
                domain,
                index,
                order,
                all,
            } => self.flush(domain, index, order, all)?,
            Op::Dma { devid, iova, write } => self.dma(devid, iova, write)?,
            Op::Alias { dev, alias } => {
                expect_ok_or_oor(
                    self.iommu
                        .set_alias(u16::from(dev % 8), u16::from(alias % 8)),
                    "set_alias",
                )?;
            }
            Op::Reset => expect_ok_or_oor(self.iommu.reset(), "reset")?,
            Op::IrqDte {
                devid,
                len,
                ctl,
                pass,
                ignore,
                far,
                noise,
                clean,
            } => {
                let dev = u64::from(u16::from(devid) % DEVICES);
                let root = if far { 0x4000_0000 } else { IRT + dev * 0x8000 };
                let mut q2 = 1
                    | (u64::from(len % 16) << 1)
                    | (u64::from(ignore) << 5)
                    | root
                    | (u64::from(pass % 8) << 56)
                    | (u64::from(ctl % 4) << 60);
                if !clean {
                    q2 ^= noise & crate::dte::DTE_RESERVED2;
                }
                self.write(DEV_TAB + dev * 32 + 16, &[q2]);
            }
            Op::Irte {
                devid,
                index,
                lo,
                hi,
                plausible,
            } => {
                let table = IRT + u64::from(u16::from(devid) % DEVICES) * 0x8000;
                let index = u64::from(index % 2048);
                let (mut lo, mut hi) = (lo, hi);
                if plausible {
                    // RemapEn; SupIOPF, RqEoi, DM kept; fixed or arbitrated; no guest mode;
                    // no reserved bits in either format (so destination 23:16 is 0).
                    lo = (lo & 0xffff_ffff_00ff_ff67) | 1;
                    hi &= !((0xf << 8) | (0xf << 52));
                }
                let _ = self
                    .mem
                    .write_obj((lo as u32).to_le(), GuestAddress(table + index * 4));
                self.write(table + index * 16, &[lo, hi]);
            }
            Op::Msi {
                source,
                any_source,
                address,
                outside,
                data,
                route_only,
            } => {
                let source = if any_source {
                    (u16::from(source) << 8) | (address as u16 >> 8)
                } else {
                    u16::from(source % 8)
                };
                let address = if outside {
                    u64::from(address)
                } else {
                    0xfee0_0000 | u64::from(address & 0xf_ffff)
                };
                self.msi_request(source, msi_of(address, data), route_only)?;
            }
            Op::IrqInvalidate { devid, dte } => self.irq_invalidate(u16::from(devid % 8), dte)?,
            Op::Reattach {
                second,
                flavour: f,
                limit,
            } => {
                let i = usize::from(second);
                self.detach(i)?;
                let (fl, lim) = if second {
                    (HostFlavour::Iommufd, 0)
                } else {
                    (flavour(f), u32::from(limit % 32) + 1)
                };
                self.hosts[i] = Host::new(PASSTHROUGH[i], fl, lim, self.budget.as_ref());
                let h = &self.hosts[i];
                expect_ok_or_oor(
                    self.iommu.attach_host(h.device, Box::new(h.host.clone())),
                    "attach",
                )?;
            }
        }
        self.check()
    }

    fn flush(&mut self, domain: u8, index: u16, order: u8, all: bool) -> Result<(), String> {
        let domain = u16::from(domain % 3);
        let pages = 1u64 << (order % 10);
        let start = (u64::from(index % 512) << 12) & !((pages << 12) - 1);
        let range = if all {
            AddrRange::new(0, u64::MAX)
        } else {
            AddrRange::from_len(start, pages << 12)
        };
        let inv = if all {
            Command::InvalidateIommuAll
        } else {
            Command::invalidate_pages(domain, range, true)
        };
        self.seq += 1;
        let wait = Command::CompletionWait {
            store: true,
            interrupt: false,
            fence: false,
            address: SEM,
            data: self.seq,
        };
        self.queue(&[inv.encode(), wait.encode()])?;
        let done: u64 = self.mem.read_obj(GuestAddress(SEM)).unwrap_or(0);
        if u64::from_le(done) != self.seq {
            return Ok(());
        }
        // Completed: each host now holds nothing the guest's tables do not give.
        for h in &self.hosts {
            match self.iommu.attached_mode(h.device) {
                Some(mode) if all || mode.domain_id().is_none_or(|d| d == domain) => {
                    self.check_barrier(h.device, &mode, range)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every host mapping of `device` overlapping `range` is, at its first and last page in
    /// the range, a translation the guest's tables give now in `mode`, with no more
    /// permission: the page's own walk gives it, or a NextLevel-7 page in another slot
    /// covers it (the spec requires such a page in every slot it covers; a guest that wrote
    /// it in fewer, or something else in one of them, still granted the whole page, and the
    /// shadow maps the page the enumeration met — see [`super::walker`]).
    pub fn check_barrier(
        &self,
        device: u16,
        mode: &crate::DeviceMode,
        range: AddrRange,
    ) -> Result<(), String> {
        let limits = self.iommu.config().shadow.walk_limits;
        let maps = self.iommu.host_mappings(device).unwrap_or_default();
        with_view(mode, &self.mem, &self.identity, limits, |view| {
            for m in &maps {
                let r = m.iova_range().intersect(&range);
                if r.is_empty() {
                    continue;
                }
                for p in [r.start & !0xfff, (r.end - 1) & !0xfff] {
                    let want = m.gpa + (p - m.iova);
                    let gives = |l: &Leaf| {
                        l.iova_range().contains(p)
                            && l.translate(p) == want
                            && l.perm.contains(m.perm)
                    };
                    match view.lookup(p) {
                        Some(l) if gives(&l) => {}
                        _ if sized_page_covers(view, p, &gives) => {}
                        other => {
                            return Err(format!(
                                "after the invalidation of {range} device {device}'s host \
                                 maps {p:#x} -> {want:#x} ({:?}) but the guest gives \
                                 {other:?} in {mode:?}",
                                m.perm
                            ));
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Events raised so far (logged, dropped or suppressed).
    fn events(&self) -> u64 {
        let s = self.iommu.stats();
        s.events_logged + s.events_dropped
    }

    fn msi_request(&self, source: u16, msi: Msi, route_only: bool) -> Result<(), String> {
        self.msi.take();
        let events = self.events();
        let route = self.iommu.remap(source, msi, RemapMode::Route);
        if self.events() != events || !self.msi.is_empty() {
            return Err(format!(
                "route resolution of {msi:?} from {source:#x} recorded"
            ));
        }
        if let Err(f) = route
            && f.recorded
        {
            return Err(format!("route fault {f:?} claims to be recorded"));
        }
        if let Ok(r) = route
            && let Some(i) = r.index
            && i != msi.data & 0x7ff
        {
            return Err(format!("resolution {r:?} of {msi:?} used another index"));
        }
        if route_only {
            return Ok(());
        }
        let request = self.iommu.deliver_msi(source, msi);
        let raised = self.events() - events;
        let sent = self.msi.take();
        let same = |a: &Result<Resolution, IrFault>, b: &Result<Resolution, IrFault>| match (a, b) {
            (Ok(x), Ok(y)) => x == y,
            (Err(x), Err(y)) => (x.kind, x.code, x.index) == (y.kind, y.code, y.index),
            _ => false,
        };
        if !same(&route, &request) {
            return Err(format!(
                "{msi:?} from {source:#x}: route {route:?} but request {request:?}"
            ));
        }
        match request {
            Ok(r) => {
                if raised != 0 || sent != [r.interrupt.to_msi()] {
                    return Err(format!("delivered {r:?} sent {sent:?}, {raised} events"));
                }
            }
            Err(f) => {
                let want = u64::from(f.code != 0);
                if raised != want || (f.recorded && f.code == 0) || sent.len() > 1 {
                    return Err(format!("fault {f:?} raised {raised} events, sent {sent:?}"));
                }
            }
        }
        Ok(())
    }

    fn irq_invalidate(&mut self, devid: u16, dte: bool) -> Result<(), String> {
        let cmd = if dte {
            Command::InvalidateDevtabEntry { device_id: devid }
        } else {
            Command::InvalidateInterruptTable { device_id: devid }
        };
        self.seq += 1;
        let wait = Command::CompletionWait {
            store: true,
            interrupt: false,
            fence: false,
            address: SEM,
            data: self.seq,
        };
        self.queue(&[cmd.encode(), wait.encode()])?;
        let done: u64 = self.mem.read_obj(GuestAddress(SEM)).unwrap_or(0);
        // The routes of everything in the updates are current; those of the requesters
        // using this entry must be among them (or already current).
        self.routes.take_updates();
        if u64::from_le(done) != self.seq {
            return Ok(());
        }
        for r in 0..8u16 {
            if self.iommu.alias_of(r) != devid {
                continue;
            }
            let have = self.routes.get(u32::from(r));
            let now = self
                .iommu
                .remap(r, msi_of(0xfee0_0000, 0), RemapMode::Route);
            if have != Some(now) {
                return Err(format!(
                    "after invalidating {devid:#x}, route of {r:#x} is {have:?}, now {now:?}"
                ));
            }
        }
        Ok(())
    }

    fn dma(&self, devid: u16, iova: u64, write: bool) -> Result<(), String> {
        let perm = if write { Perm::WRITE } else { Perm::READ };
        let req = DmaRequest {
            requester_id: u32::from(devid),
            pasid: None,
            iova,
            perm,
        };
        if let Ok(t) = self.iommu.translate(&req)
            && (!t.is_well_formed(iova) || !t.perm.allows(perm))
        {
            return Err(format!("translation {t:?} for {req:?}"));
        }
        Ok(())
    }

    /// The invariants that hold after every step.
    pub fn check(&self) -> Result<(), String> {
        let i = &self.iommu;
        let efr = i.mmio_read(offset::EXT_FEATURES, 8);
        if efr != i.efr() {
            return Err(format!("EFR reads {efr:#x}, configured {:#x}", i.efr()));
        }
        for off in [
            offset::CMD_HEAD,
            offset::CMD_TAIL,
            offset::EVT_HEAD,
            offset::EVT_TAIL,
        ] {
            let v = i.mmio_read(off, 8);
            if v & !PTR_MASK != 0 {
                return Err(format!("pointer register {off:#x} reads {v:#x}"));
            }
        }
        for h in &self.hosts {
            let maps = i.host_mappings(h.device).unwrap_or_default();
            if let Some(m) = maps.iter().find(|m| m.perm.is_empty()) {
                return Err(format!(
                    "device {}: mapping without permission {m:?}",
                    h.device
                ));
            }
            h.host
                .with(|x| check_mappings_match_host(&maps, x))
                .map_err(|e| format!("device {} host oracle: {e}", h.device))?;
        }
        if let Some(b) = &self.budget {
            let pinned: u64 = self
                .hosts
                .iter()
                .map(|h| {
                    h.host
                        .with(|x| x.iter_mappings().map(|m| m.size).sum::<u64>())
                })
                .sum();
            if b.used() != pinned {
                return Err(format!(
                    "pin budget charged {:#x}, hosts map {pinned:#x}",
                    b.used()
                ));
            }
        }
        Ok(())
    }

    /// Detaches host `index`: every mapping removed, every entry returned.
    pub fn detach(&self, index: usize) -> Result<(), String> {
        let h = &self.hosts[index];
        self.iommu
            .detach_host(h.device)
            .map_err(|e| format!("detach {}: {e:?}", h.device))?;
        let (count, remaining) = h.host.with(|x| (x.mapping_count(), x.remaining_entries()));
        if count != 0 {
            return Err(format!("detach {} left {count} host mappings", h.device));
        }
        if h.flavour != HostFlavour::Iommufd && remaining != Some(h.limit) {
            return Err(format!(
                "detach {} leaked host entries: {remaining:?} of {} free",
                h.device, h.limit
            ));
        }
        Ok(())
    }
}

/// Whether a NextLevel-7 page met in one of the slots around `p` that such a page could
/// span (the 256-slot aligned block holding `p`, at each level) covers `p` as `gives` wants.
fn sized_page_covers(view: &dyn GuestView, p: u64, gives: &dyn Fn(&Leaf) -> bool) -> bool {
    (0..5u32).any(|level| {
        let slot = 1u64 << (12 + 9 * level);
        let block = p & !((slot << 8) - 1);
        (0..256u64).any(|k| {
            view.lookup(block + k * slot)
                .is_some_and(|l| l.size > slot && gives(&l))
        })
    })
}

fn msi_of(address: u64, data: u32) -> Msi {
    Msi { address, data }
}

/// Runs `input` from setup to detach; the first oracle failure is returned.
pub fn run(input: &Input) -> Result<(), String> {
    let mut w = World::new(input.setup)?;
    for (i, op) in input.ops.iter().take(MAX_OPS).enumerate() {
        w.step(op).map_err(|e| format!("step {i} {op:?}: {e}"))?;
    }
    (0..w.hosts.len()).try_for_each(|i| w.detach(i))
}

/// The fuzz target: decodes `data` and runs it; panics when an oracle fails.
pub fn model(data: &[u8]) {
    let Some(input) = Input::decode(data) else {
        return;
    };
    if let Err(e) = run(&input) {
        panic!("amd_vi oracle: {e}\n{input:#?}");
    }
}

/// Encodes `input` so that [`Input::decode`] gives it back (for seed inputs). Biased fields
/// are written through their "any value" branch.
pub fn encode(input: &Input) -> Vec<u8> {
    let mut e = super::Encoder::new();
    let s = &input.setup;
    e.u8(s.levels).u8(s.flavour).u8(s.limit).bool(s.blank);
    const N: u32 = 16;
    for op in &input.ops {
        match *op {
            Op::Mmio { offset, len, value } => {
                e.variant(0, N).u8(7).u64(offset);
                let b = (0..32u8)
                    .map(|k| 7 + 8 * k)
                    .find(|b| usize::from(b / 8) == len);
                e.u8(b.unwrap_or(7)).u64(value);
            }
            Op::Command { cmd } => {
                e.variant(1, N);
                match cmd {
                    Cmd::Raw { opcode, lo, hi } => e.variant(0, 5).u8(opcode).u64(lo).u64(hi),
                    Cmd::Pages {
                        domain,
                        page,
                        size,
                        pde,
                    } => e.variant(1, 5).u8(domain).u32(page).bool(size).bool(pde),
                    Cmd::Devtab { devid } => e.variant(2, 5).u8(devid),
                    Cmd::All => e.variant(3, 5),
                    Cmd::Wait {
                        addr,
                        store,
                        interrupt,
                        data,
                    } => e
                        .variant(4, 5)
                        .u32(addr)
                        .bool(store)
                        .bool(interrupt)
                        .u64(data),
                };
            }
            Op::Dte {
                devid,
                root_page,
                mode,
                perm,
                domain,
                noise,
                clean,
            } => {
                e.variant(2, N)
                    .u8(devid)
                    .u8(root_page)
                    .u8(mode)
                    .u8(perm)
                    .u16(domain)
                    .u64(noise)
                    .bool(clean);
            }
            Op::DteRaw { devid, q } => {
                e.variant(3, N).u8(devid);
                for x in q {
                    e.u64(x);
                }
            }
            Op::Pte { slot, value } => {
                e.variant(4, N).u16(slot).u8(3).u64(value);
            }
            Op::MapPages {
                index,
                pages,
                frame,
                perm,
            } => {
                e.variant(5, N).u16(index).u8(pages).u16(frame).u8(perm);
            }
            Op::UnmapPages { index, pages } => {
                e.variant(6, N).u16(index).u8(pages);
            }
            Op::Flush {
                domain,
                index,
                order,
                all,
            } => {
                e.variant(7, N).u8(domain).u16(index).u8(order).bool(all);
            }
            Op::Dma { devid, iova, write } => {
                e.variant(8, N).u8(7).u16(devid).u8(3).u64(iova).bool(write);
            }
            Op::Alias { dev, alias } => {
                e.variant(9, N).u8(dev).u8(alias);
            }
            Op::Reset => {
                e.variant(10, N);
            }
            Op::Reattach {
                second,
                flavour,
                limit,
            } => {
                e.variant(11, N).bool(second).u8(flavour).u8(limit);
            }
            Op::IrqDte {
                devid,
                len,
                ctl,
                pass,
                ignore,
                far,
                noise,
                clean,
            } => {
                e.variant(12, N)
                    .u8(devid)
                    .u8(len)
                    .u8(ctl)
                    .u8(pass)
                    .bool(ignore)
                    .bool(far)
                    .u64(noise)
                    .bool(clean);
            }
            Op::Irte {
                devid,
                index,
                lo,
                hi,
                plausible,
            } => {
                e.variant(13, N)
                    .u8(devid)
                    .u16(index)
                    .u64(lo)
                    .u64(hi)
                    .bool(plausible);
            }
            Op::Msi {
                source,
                any_source,
                address,
                outside,
                data,
                route_only,
            } => {
                e.variant(14, N)
                    .u8(source)
                    .bool(any_source)
                    .u32(address)
                    .bool(outside)
                    .u32(data)
                    .bool(route_only);
            }
            Op::IrqInvalidate { devid, dte } => {
                e.variant(15, N).u8(devid).bool(dte);
            }
        }
    }
    e.into_bytes()
}
