//! Fuzz target `vtd`: a hostile guest driving one unit — random register writes, descriptors
//! (well-formed and raw) in the invalidation queue, writes into the root/context/PASID and
//! page tables, Linux-like map/unmap/flush sequences, emulated DMA, aliases, resets,
//! save/restore, interrupt-remapping table entries (written with or without an index-selective
//! IEC) and interrupt requests / VMM route resolutions — with a passthrough device shadowed
//! into a [`SharedSimHost`], in legacy or scalable mode, with 3-, 4- or 5-level tables, and
//! a VMM [`RouteTable`] of interrupt routes kept current by the unit's notifications.
//!
//! Oracles, after every step ([`World::check`]): only defined GSTS/FSTS bits are set; IQH
//! stays inside the queue latched by QIE and aligned to its descriptor size; the host holds
//! exactly the shadow's record ([`check_mappings_match_host`]) and never guest-physical
//! 0xFEEx_xxxx. After a completed global (or, in legacy mode, page-selective) IOTLB
//! invalidation every host mapping in the invalidated range is a translation the guest's
//! tables give right now, with no more permission (the invalidation is a barrier). Emulated
//! DMA answers are well formed and allow the access. Only host out-of-resources may fail a
//! call. Save then restore round-trips. Detaching removes every host mapping and returns
//! every host entry. Interrupt remapping: a route-mode resolution changes nothing
//! guest-visible and agrees with the request-mode one (which delivers exactly the remapped
//! interrupt, or records at most one fault, with an architected reason 0x20–0x26); after an
//! index-selective IEC completes, every route using an invalidated entry equals a fresh
//! resolution, and after reset or restore every route does.

use crate::format::SecondStage;
use crate::irte::{self, Irte, SourceValidation};
use crate::regs::*;
use crate::space::{SpaceView, format_of};
use crate::testing::{desc, entry};
use crate::{Config, Vtd, VtdError};
use arbitrary::{Arbitrary, Unstructured};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use viommu_shared::dma::{DmaRequest, DmaTranslate};
use viommu_shared::fuzz_support::check_mappings_match_host;
use viommu_shared::host::{HostDma, HostFlavour, SharedSimHost, SimHostConfig};
use viommu_shared::irq::{
    DeliveryMode, DestinationMode, Interrupt, InterruptRemapper, RemapMode, RouteTable, TriggerMode,
};
use viommu_shared::pt::WalkLimits;
use viommu_shared::regs::{Msi, RecordingMsiSink};
use viommu_shared::shadow::{GuestView, ShadowConfig};
use viommu_shared::testing::guest_memory;
use viommu_shared::{AddrRange, Perm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: 16 MiB at 0.
pub const RAM: u64 = 16 << 20;
/// Root table.
pub const ROOT: u64 = 0x1000;
/// Context table of bus 0.
pub const CTX: u64 = 0x2000;
/// PASID directory (scalable mode).
pub const PASID_DIR: u64 = 0x4000;
/// PASID table (scalable mode).
pub const PASID_TABLE: u64 = 0x5000;
/// Invalidation queue (one page).
pub const QUEUE: u64 = 0x8000;
/// Status word of the wait descriptors the [`Op::Flush`] sequence queues.
pub const STATUS: u64 = QUEUE + 0xff0;
/// Top-level second-stage table; the levels below follow page by page.
pub const PT: u64 = 0x1_0000;
/// The last-level table (4 KiB PTEs for IOVAs 0..2 MiB).
pub const LEAF_PT: u64 = PT + 0x4000;
/// Guest pages the [`Op::MapPages`] sequence maps.
pub const DATA: u64 = 0x40_0000;
/// Requester id of the passthrough device.
pub const DEV: u16 = 0x10;
/// Domain id of the device's context (legacy) or PASID entry (scalable).
pub const DID: u16 = 1;
/// Interrupt remapping table (2^(IRT_S + 1) = 2048 entries, inside the structures that
/// [`Op::Poke`] reaches).
pub const IRT: u64 = 0x1_8000;
/// IRTA.S of the booted unit.
pub const IRT_S: u64 = 10;
/// Source id of the IOAPIC (the VMM's DMAR device scope).
pub const IOAPIC: u16 = 0xff00;
/// The VMM's interrupt routes: source and IRTE index (remappable format, SHV, subhandle 0).
pub const ROUTES: &[(u16, u16)] = &[
    (DEV, 0),
    (DEV, 1),
    (DEV, 5),
    (0x11, 2),
    (IOAPIC, 3),
    (DEV, 2047),
];
/// Guest-physical interrupt range no shadow may map.
const INTERRUPT_RANGE: AddrRange = AddrRange::new(0xfee0_0000, 0xfef0_0000);

/// How the world starts.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Scalable-mode root/context/PASID tables and 256-bit descriptors.
    pub scalable: bool,
    /// Second-stage depth: 3 + `levels % 3`.
    pub levels: u8,
    /// Host flavour: type1 v2, type1 v1, iommufd (`% 3`).
    pub flavour: u8,
    /// Host entry limit: 1 + `limit % 64`.
    pub limit: u8,
    /// Start from reset instead of the Linux-like boot (root table, queue, context, tables
    /// mapping 16 pages, translation on).
    pub blank: bool,
}

/// An invalidation descriptor.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desc {
    /// A well-formed descriptor of kind `kind % 12` built by [`crate::testing::desc`].
    Valid {
        /// Which descriptor.
        kind: u8,
        /// Domain id (`% 4`).
        did: u8,
        /// Source id selector.
        sid: u8,
        /// Page number of the address operand.
        page: u32,
        /// Address mask (also the wait status slot and context function mask).
        am: u8,
        /// IH, interrupt flag, size bit.
        flag: bool,
        /// PASID (`% 16`).
        pasid: u8,
    },
    /// Any low and high quadword.
    Raw {
        /// Low quadword.
        lo: u64,
        /// High quadword.
        hi: u64,
    },
}

impl Desc {
    /// The two quadwords.
    pub fn qwords(&self) -> [u64; 2] {
        match *self {
            Desc::Raw { lo, hi } => [lo, hi],
            Desc::Valid {
                kind,
                did,
                sid,
                page,
                am,
                flag,
                pasid,
            } => {
                let did = u16::from(did % 4);
                let sid = [DEV, 0x11, 0x17, 0x80][usize::from(sid % 4)];
                let addr = u64::from(page) << 12;
                let pasid = u32::from(pasid % 16);
                match kind % 12 {
                    0 => desc::context_global(),
                    1 => desc::context_domain(did),
                    2 => desc::context_device(did, sid, am & 3),
                    3 => desc::iotlb_global(),
                    4 => desc::iotlb_domain(did),
                    5 | 6 => desc::iotlb_page(did, addr, am % 20, flag),
                    7 => desc::wait(Some((QUEUE + 0xf00 + u64::from(am % 32) * 4, 2)), flag),
                    8 => desc::device_tlb(sid, addr, flag),
                    9 => desc::pasid_iotlb(did, pasid, flag.then_some((addr, am % 20))),
                    10 => desc::pasid_cache(am & 3, did, pasid),
                    _ => desc::iec_global(),
                }
            }
        }
    }
}

/// One step of the guest (or of the VMM: [`Op::Dma`], [`Op::Alias`], [`Op::Reattach`]).
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Register write.
    Write {
        /// Offset in the register window.
        #[arbitrary(with = reg_offset)]
        offset: u64,
        /// Access size.
        #[arbitrary(with = access_len)]
        len: usize,
        /// Value.
        value: u64,
    },
    /// Register read.
    Read {
        /// Offset in the register window.
        #[arbitrary(with = reg_offset)]
        offset: u64,
        /// Access size.
        #[arbitrary(with = access_len)]
        len: usize,
    },
    /// A descriptor written at the queue tail, IQT moved past it if `ring`.
    Descriptor {
        /// The descriptor.
        desc: Desc,
        /// Write IQT.
        ring: bool,
    },
    /// A little-endian quadword written into the structures (root, context, PASID, queue,
    /// page tables: the first 128 KiB).
    Poke {
        /// Guest-physical address (8-byte aligned).
        #[arbitrary(with = structure_addr)]
        addr: u64,
        /// Value.
        #[arbitrary(with = entry_value)]
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
    /// Linux's `qi_submit_sync` of one IOTLB invalidation (page-selective of 2^(`am % 10`)
    /// pages at `index`, or global) plus a wait descriptor.
    Flush {
        /// Page number (`% 512`).
        index: u16,
        /// Address mask.
        am: u8,
        /// Global instead of page-selective.
        global: bool,
    },
    /// Emulated DMA.
    Dma {
        /// Requester id.
        #[arbitrary(with = requester)]
        sid: u16,
        /// PASID of the request.
        pasid: Option<u32>,
        /// Address.
        #[arbitrary(with = dma_iova)]
        iova: u64,
        /// Write (else read).
        write: bool,
    },
    /// The VMM declares an alias (`% 32` each).
    Alias {
        /// Requester.
        rid: u8,
        /// Alias.
        alias: u8,
    },
    /// System reset.
    Reset,
    /// The VMM detaches the passthrough device's host and attaches a fresh one.
    Reattach {
        /// Host flavour selector.
        flavour: u8,
        /// Entry limit selector.
        limit: u8,
    },
    /// Migration round trip: save, then restore the same state.
    SaveRestore,
    /// The guest writes IRTE `index % 2048` of the table at [`IRT`]; with `flush`, like
    /// Linux's `modify_irte`, an index-selective IEC of 2^(`im % 4`) entries around it and a
    /// wait follow.
    Irte {
        /// Entry index (`% 2048`).
        index: u16,
        /// The 128-bit entry.
        #[arbitrary(with = irte_value)]
        entry: [u64; 2],
        /// Index mask of the IEC.
        im: u8,
        /// Invalidate (else lazy: the guest forgot).
        flush: bool,
    },
    /// An interrupt request from `source` (an emulated device's MSI through
    /// `Vtd::deliver_msi`), or only the VMM resolving it for a route (`route`).
    Irq {
        /// Source id.
        #[arbitrary(with = irq_source)]
        source: u16,
        /// MSI address.
        #[arbitrary(with = irq_address)]
        address: u64,
        /// MSI data.
        data: u32,
        /// Route mode only.
        route: bool,
    },
}

fn irte_value(u: &mut Unstructured) -> arbitrary::Result<[u64; 2]> {
    let kind = u.arbitrary::<u8>()?;
    if kind % 3 == 2 {
        return Ok([u.arbitrary()?, u.arbitrary()?]);
    }
    let x2apic = u.arbitrary::<bool>()?;
    let dest = u.arbitrary::<u32>()?;
    let validation = match u.arbitrary::<u8>()? % 4 {
        0 => SourceValidation::None,
        1 => SourceValidation::Requester {
            sid: *u.choose(&[DEV, 0x11, IOAPIC, 0x17])?,
            sq: u.arbitrary::<u8>()? % 4,
        },
        2 => SourceValidation::BusRange {
            start: u.arbitrary()?,
            end: u.arbitrary()?,
        },
        _ => SourceValidation::Requester {
            sid: u.arbitrary()?,
            sq: u.arbitrary::<u8>()? % 4,
        },
    };
    let e = Irte {
        fpd: u.arbitrary()?,
        interrupt: Interrupt {
            destination: if x2apic { dest } else { dest & 0xff },
            vector: u.arbitrary()?,
            delivery: DeliveryMode::from_bits(u.arbitrary::<u8>()?).unwrap_or(DeliveryMode::Fixed),
            destination_mode: if u.arbitrary()? {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            trigger: if u.arbitrary()? {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
            redirection_hint: u.arbitrary()?,
        },
        validation,
    };
    let [lo, hi] = irte::encode(&e, x2apic);
    if kind % 3 == 1 {
        // One flipped bit: reserved bits, P, FPD, SVT = 11b, reserved delivery modes.
        let bit = u.arbitrary::<u8>()? % 128;
        return Ok(if bit < 64 {
            [lo ^ (1 << bit), hi]
        } else {
            [lo, hi ^ (1 << (bit - 64))]
        });
    }
    Ok([lo, hi])
}

fn irq_source(u: &mut Unstructured) -> arbitrary::Result<u16> {
    Ok(match u.arbitrary::<u8>()? % 5 {
        0 | 1 => DEV,
        2 => IOAPIC,
        3 => 0x11,
        _ => u.arbitrary::<u16>()?,
    })
}

fn irq_address(u: &mut Unstructured) -> arbitrary::Result<u64> {
    Ok(match u.arbitrary::<u8>()? % 5 {
        // Linux's message for an entry of the table (or just beyond it).
        0 | 1 => irte::remappable_msi(u.arbitrary::<u16>()? % 2050).address,
        // Remappable format, any handle, SHV or not.
        2 => 0xfee0_0010 | (u64::from(u.arbitrary::<u16>()?) & 0xffef),
        // Compatibility format.
        3 => 0xfee0_0000 | (u64::from(u.arbitrary::<u32>()?) & 0xf_ffef),
        _ => u.arbitrary::<u64>()?,
    })
}

const KNOWN_REGS: &[u64] = &[
    GCMD,
    RTADDR,
    CCMD,
    CCMD + 4,
    FSTS,
    FECTL,
    FEDATA,
    FEADDR,
    FEUADDR,
    IQH,
    IQT,
    IQA,
    ICS,
    IECTL,
    IEDATA,
    IEADDR,
    IRTA,
    IVA,
    IOTLB,
    IOTLB + 4,
    FRCD_BASE + 12,
    FRCD_BASE + 8,
    FRCD_BASE + 16 + 12,
];

fn reg_offset(u: &mut Unstructured) -> arbitrary::Result<u64> {
    Ok(match u.arbitrary::<u8>()? % 8 {
        0..=4 => *u.choose(KNOWN_REGS)?,
        5 => FRCD_BASE + u64::from(u.arbitrary::<u8>()? % 0x40) * 4,
        6 => u64::from(u.arbitrary::<u16>()? % 0x90) * 4,
        _ => u.arbitrary::<u64>()?,
    })
}

fn access_len(u: &mut Unstructured) -> arbitrary::Result<usize> {
    Ok(match u.arbitrary::<u8>()? {
        n if n % 8 < 4 => 4,
        n if n % 8 < 7 => 8,
        n => usize::from(n % 17),
    })
}

fn structure_addr(u: &mut Unstructured) -> arbitrary::Result<u64> {
    Ok(u64::from(u.arbitrary::<u32>()? % 0x2_0000) & !7)
}

fn entry_value(u: &mut Unstructured) -> arbitrary::Result<u64> {
    let kind = u.arbitrary::<u8>()?;
    let v = u.arbitrary::<u64>()?;
    Ok(match kind % 4 {
        // A plausible entry: a page of RAM with R/W.
        0 => ((v & 0xfff_f000) % RAM) | (v >> 62) | 1,
        // A pointer into the structure area.
        1 => (v & 0x1_f000) | 3,
        2 => v & 0x00ff_ffff | 1,
        _ => v,
    })
}

fn requester(u: &mut Unstructured) -> arbitrary::Result<u16> {
    Ok(match u.arbitrary::<u8>()? % 6 {
        0..=2 => DEV,
        3 => 0x11,
        4 => 0x80,
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

/// The unit, its guest memory, the passthrough device's host, and the guest driver's queue
/// tail.
pub struct World {
    /// The unit.
    pub vtd: Vtd,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The passthrough device's host.
    pub host: SharedSimHost,
    /// Its flavour and entry limit.
    pub(crate) host_config: (HostFlavour, u32),
    scalable: bool,
    tail: u64,
    /// The unit's interrupt output (fault events, remapped interrupts).
    msi: Arc<RecordingMsiSink>,
    /// The VMM's interrupt routes ([`ROUTES`] and one compatibility-format MSI).
    routes: Arc<RouteTable>,
}

/// The route table's entries: (route id, source, MSI).
fn route_list() -> Vec<(u32, u16, Msi)> {
    let mut out: Vec<(u32, u16, Msi)> = ROUTES
        .iter()
        .enumerate()
        .map(|(i, &(src, idx))| (i as u32, src, irte::remappable_msi(idx)))
        .collect();
    out.push((
        ROUTES.len() as u32,
        DEV,
        Msi {
            address: 0xfee0_1000,
            data: 0x30,
        },
    ));
    out
}

/// Results of calls that process invalidations: only host out-of-resources is acceptable.
fn expect_ok_or_oor(r: Result<(), VtdError>, what: &str) -> Result<(), String> {
    match r {
        Ok(()) | Err(VtdError::HostOutOfResources { .. }) => Ok(()),
        Err(e) => Err(format!("{what}: unexpected error {e:?}")),
    }
}

impl World {
    /// The unit's interrupt output, for a destination unit after migration.
    pub(crate) fn msi_sink(&self) -> Arc<RecordingMsiSink> {
        self.msi.clone()
    }

    /// A route table over the current unit with every route resolved again, as a
    /// destination VMM rebuilds its routes (derived state) after a restore.
    pub(crate) fn rebuild_routes(&mut self) {
        let routes = RouteTable::new(Arc::new(self.vtd.clone()), None);
        for (id, src, m) in route_list() {
            let _ = routes.set(id, src, m);
        }
        self.routes = routes;
    }

    /// A unit with one passthrough device ([`DEV`]) attached to a fresh host; unless
    /// `setup.blank`, booted the way Linux boots: root table, queued invalidation, a context
    /// (legacy, or scalable with a PASID table) for [`DEV`] over a table mapping 16 pages at
    /// IOVA 0 to [`DATA`], translation enabled.
    pub fn new(setup: Setup) -> Result<World, String> {
        let mem = guest_memory(&[(0, RAM as usize)]);
        let config = Config {
            address_width: crate::AddressWidth::Aw57,
            scalable_mode: setup.scalable,
            device_tlb: true,
            interrupt_remapping: true,
            fault_records: 4,
            shadow: ShadowConfig {
                walk_limits: WalkLimits {
                    max_entries: 1 << 14,
                },
                ..ShadowConfig::default()
            },
            ..Config::default()
        };
        let msi = Arc::new(RecordingMsiSink::new());
        let vtd = Vtd::new(config, mem.clone(), msi.clone());
        let routes = RouteTable::new(Arc::new(vtd.clone()), None);
        for (id, src, m) in route_list() {
            let _ = routes.set(id, src, m);
        }
        let host_config = (flavour(setup.flavour), u32::from(setup.limit % 64) + 1);
        let host = SharedSimHost::new(
            SimHostConfig::vtd()
                .with_flavour(host_config.0)
                .with_entry_limit(host_config.1),
        );
        expect_ok_or_oor(
            vtd.attach_host(u32::from(DEV), Box::new(host.clone())),
            "attach",
        )?;
        let w = World {
            vtd,
            mem,
            host,
            host_config,
            scalable: setup.scalable,
            tail: 0,
            msi,
            routes,
        };
        if !setup.blank {
            w.boot(3 + setup.levels % 3)?;
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

    fn boot(&self, levels: u8) -> Result<(), String> {
        let aw = u64::from(levels - 2);
        if self.scalable {
            self.write(ROOT, &entry::sm_root(Some(CTX), None));
            self.write(
                CTX + 32 * u64::from(DEV),
                &entry::sm_context(PASID_DIR, 0, 0, true, false),
            );
            self.write(PASID_DIR, &[entry::pasid_dir(PASID_TABLE, false)]);
            self.write(PASID_TABLE, &entry::pasid_second_stage(PT, aw, DID, false));
        } else {
            self.write(ROOT, &entry::root(CTX));
            self.write(
                CTX + 16 * u64::from(DEV),
                &entry::context(PT, aw, DID, 0, false),
            );
        }
        // Top level at PT, one page per level below, the last level at LEAF_PT.
        let mut table = PT;
        for l in (1..levels).rev() {
            let next = if l == 1 { LEAF_PT } else { table + 0x1000 };
            self.write(table, &[next | 3]);
            table = next;
        }
        let ptes: Vec<u64> = (0..16u64).map(|i| (DATA + i * 0x1000) | 3).collect();
        self.write(LEAF_PT, &ptes);
        let ttm = if self.scalable {
            RTADDR_TTM_SCALABLE
        } else {
            0
        };
        let v = &self.vtd;
        for (off, val) in [
            (RTADDR, ROOT | ttm),
            (IQA, QUEUE | if self.scalable { IQA_DW } else { 0 }),
            (IRTA, IRT | irte::IRTA_EIME | IRT_S),
        ] {
            expect_ok_or_oor(v.mmio_write(off, 8, val), "boot")?;
        }
        // Interrupt remapping comes up with queued invalidation, before translation
        // (anchors-x86.md §3.1).
        for cmd in [
            GCMD_SRTP,
            GCMD_QIE,
            GCMD_QIE | GCMD_SIRTP,
            GCMD_QIE | GCMD_IRE,
            GCMD_QIE | GCMD_IRE | GCMD_TE,
        ] {
            expect_ok_or_oor(v.mmio_write(GCMD, 4, cmd), "boot")?;
        }
        Ok(())
    }

    /// Writes `descs` at the queue tail (as IQA places it now); rings if asked.
    fn queue(&mut self, descs: &[[u64; 2]], ring: bool) -> Result<(), String> {
        let iqa = self.vtd.mmio_read(IQA, 8);
        let wide = self.scalable && iqa & IQA_DW != 0;
        let shift = if wide { 5 } else { 4 };
        let base = iqa & IQA_ADDR_MASK;
        for d in descs {
            let slot = base.wrapping_add(self.tail << shift);
            let _ = self.mem.write_obj(d[0].to_le(), GuestAddress(slot));
            let _ = self
                .mem
                .write_obj(d[1].to_le(), GuestAddress(slot.wrapping_add(8)));
            self.tail = (self.tail + 1) % if wide { 128 } else { 256 };
        }
        if ring {
            expect_ok_or_oor(self.vtd.mmio_write(IQT, 8, self.tail << shift), "IQT")?;
        }
        Ok(())
    }

    /// Runs one step, then checks the invariants.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Write { offset, len, value } => {
                expect_ok_or_oor(self.vtd.mmio_write(offset, len, value), "mmio_write")?;
            }
            Op::Read { offset, len } => {
                let _ = self.vtd.mmio_read(offset, len);
            }
            Op::Descriptor { desc, ring } => self.queue(&[desc.qwords()], ring)?,
            Op::Poke { addr, value } => self.write(addr, &[value]),
            Op::MapPages {
                index,
                pages,
                frame,
                perm,
            } => {
                for i in 0..u64::from(pages % 64) + 1 {
                    let slot = (u64::from(index) + i) % 512;
                    let gpa = DATA + ((u64::from(frame) + i) % 2048) * 0x1000;
                    self.write(LEAF_PT + slot * 8, &[gpa | u64::from(perm % 3 + 1)]);
                }
            }
            Op::UnmapPages { index, pages } => {
                for i in 0..u64::from(pages % 64) + 1 {
                    let slot = (u64::from(index) + i) % 512;
                    self.write(LEAF_PT + slot * 8, &[0]);
                }
            }
            Op::Flush { index, am, global } => self.flush(index, am, global)?,
            Op::Dma {
                sid,
                pasid,
                iova,
                write,
            } => self.dma(sid, pasid, iova, write)?,
            Op::Alias { rid, alias } => {
                expect_ok_or_oor(
                    self.vtd
                        .set_alias(u32::from(rid % 32), u32::from(alias % 32)),
                    "set_alias",
                )?;
            }
            Op::Reset => {
                expect_ok_or_oor(self.vtd.reset(), "reset")?;
                self.tail = 0;
                self.check_routes(|_| true, "reset")?;
            }
            Op::Reattach { flavour: f, limit } => {
                self.detach()?;
                self.host_config = (flavour(f), u32::from(limit % 64) + 1);
                self.host = SharedSimHost::new(
                    SimHostConfig::vtd()
                        .with_flavour(self.host_config.0)
                        .with_entry_limit(self.host_config.1),
                );
                expect_ok_or_oor(
                    self.vtd
                        .attach_host(u32::from(DEV), Box::new(self.host.clone())),
                    "attach",
                )?;
            }
            Op::SaveRestore => {
                let saved = self.vtd.save();
                expect_ok_or_oor(self.vtd.restore(&saved), "restore")?;
                if self.vtd.save() != saved {
                    return Err("save after restore differs from the restored state".into());
                }
                self.check_routes(|_| true, "restore")?;
            }
            Op::Irte {
                index,
                entry,
                im,
                flush,
            } => self.irte(index % 2048, entry, im % 4, flush)?,
            Op::Irq {
                source,
                address,
                data,
                route,
            } => self.irq(source, Msi { address, data }, route)?,
        }
        self.check()
    }

    /// Writes an IRTE; with `flush`, `qi_flush_iec(index, im)` and a wait, after which every
    /// route using an invalidated entry must equal a fresh resolution.
    fn irte(&mut self, index: u16, entry: [u64; 2], im: u8, flush: bool) -> Result<(), String> {
        self.write(IRT + u64::from(index) * 16, &entry);
        if !flush {
            return Ok(());
        }
        let _ = self
            .mem
            .store(0u32, GuestAddress(STATUS), Ordering::Release);
        self.queue(
            &[
                desc::iec_index(index, im),
                desc::wait(Some((STATUS, 2)), false),
            ],
            true,
        )?;
        let done: u32 = self
            .mem
            .load(GuestAddress(STATUS), Ordering::Acquire)
            .unwrap_or(0);
        if done != 2 {
            return Ok(());
        }
        let count = 1u32 << im;
        let first = u32::from(index) & !(count - 1);
        self.check_routes(
            |i| i.is_some_and(|i| i >= first && i < first + count),
            "index-selective IEC",
        )
    }

    /// Takes the route table's pending updates, then requires every route whose remappable
    /// index satisfies `covered` to equal a fresh route-mode resolution.
    pub fn check_routes(
        &self,
        covered: impl Fn(Option<u32>) -> bool,
        after: &str,
    ) -> Result<(), String> {
        self.routes.take_updates();
        for (id, src, m) in route_list() {
            let index = match irte::classify(m) {
                Ok(irte::RequestFormat::Remappable { index }) => Some(index),
                _ => None,
            };
            if !covered(index) {
                continue;
            }
            let fresh = self.vtd.remap(src, m, RemapMode::Route);
            let cached = self.routes.get(id);
            if cached != Some(fresh) {
                return Err(format!(
                    "after {after}: route {id} ({src:#x}, {m:x?}) is {cached:?}, a fresh \
                     resolution gives {fresh:?}"
                ));
            }
        }
        Ok(())
    }

    /// One interrupt: resolved for a route (nothing guest-visible may change), then, unless
    /// `route_only`, delivered as a request (the same answer; exactly the remapped interrupt
    /// sent, or at most one fault handled).
    fn irq(&mut self, source: u16, msi: Msi, route_only: bool) -> Result<(), String> {
        let v = &self.vtd;
        self.msi.take();
        let before = (v.stats(), v.fault_records(), v.mmio_read(FSTS, 4));
        let routed = v.remap(source, msi, RemapMode::Route);
        let after = (v.stats(), v.fault_records(), v.mmio_read(FSTS, 4));
        if before != after || !self.msi.is_empty() {
            return Err(format!(
                "route-mode resolution of {msi:x?} changed the unit"
            ));
        }
        if let Err(f) = routed
            && (f.recorded || !(f.code == 0 || (0x20..=0x26).contains(&f.code)))
        {
            return Err(format!("route-mode fault {f:?}"));
        }
        if route_only {
            return Ok(());
        }
        let handled = |s: &crate::VtdStats| {
            s.faults_recorded + s.faults_compressed + s.faults_overflowed + s.faults_suppressed
        };
        let delivered = v.deliver_msi(source, msi);
        let sent = self.msi.take();
        let stats = v.stats();
        match (routed, delivered) {
            (Ok(a), Ok(b)) => {
                if a != b || sent != [b.interrupt.to_msi()] {
                    return Err(format!(
                        "request {msi:x?} from {source:#x}: route {a:?}, request {b:?}, sent {sent:x?}"
                    ));
                }
                if let Some(i) = b.index {
                    let ir = v.interrupt_remapping();
                    if !ir.enabled || i >= ir.entries {
                        return Err(format!("remapped through entry {i} of {ir:?}"));
                    }
                }
            }
            (Err(a), Err(b)) => {
                if (a.kind, a.code, a.index) != (b.kind, b.code, b.index) {
                    return Err(format!("route fault {a:?}, request fault {b:?}"));
                }
                let n = handled(&stats) - handled(&before.0);
                if n > 1 || (b.recorded && n != 1) || (b.code == 0 && n != 0) {
                    return Err(format!("fault {b:?} handled {n} times"));
                }
            }
            (a, b) => return Err(format!("route {a:?} but request {b:?}")),
        }
        Ok(())
    }

    fn flush(&mut self, index: u16, am: u8, global: bool) -> Result<(), String> {
        let am = am % 10;
        let page = u64::from(index % 512) << 12;
        let inv = if global {
            desc::iotlb_global()
        } else {
            desc::iotlb_page(DID, page, am, false)
        };
        let _ = self
            .mem
            .store(0u32, GuestAddress(STATUS), Ordering::Release);
        self.queue(&[inv, desc::wait(Some((STATUS, 2)), false)], true)?;
        let done: u32 = self
            .mem
            .load(GuestAddress(STATUS), Ordering::Acquire)
            .unwrap_or(0);
        if done != 2 {
            return Ok(());
        }
        // Completed: the host now holds nothing the tables do not give.
        let space = self.vtd.shadow_space(u32::from(DEV));
        let range = if global {
            AddrRange::new(0, u64::MAX)
        } else {
            let block = 1u64 << (12 + am);
            AddrRange::from_len(page & !(block - 1), block)
        };
        match space {
            Some(s) if global || (!self.scalable && s.did() == Some(DID)) => {
                self.check_barrier(&s, range)
            }
            _ => Ok(()),
        }
    }

    /// Every host mapping overlapping `range` is, at its first and last page in the range,
    /// a translation the guest's tables give now for `space`, with no more permission.
    pub fn check_barrier(&self, space: &crate::Space, range: AddrRange) -> Result<(), String> {
        let format: SecondStage = format_of(space);
        let limits = self.vtd.config().shadow.walk_limits;
        let view = SpaceView::new(space, &format, &self.mem, limits);
        for m in self.vtd.host_mappings(u32::from(DEV)).unwrap_or_default() {
            let r = m.iova_range().intersect(&range);
            if r.is_empty() {
                continue;
            }
            for p in [r.start & !0xfff, (r.end - 1) & !0xfff] {
                let want = m.gpa + (p - m.iova);
                match view.lookup(p) {
                    Some(l) if l.translate(p) == want && l.perm.contains(m.perm) => {}
                    other => {
                        return Err(format!(
                            "after the invalidation of {range} the host maps {p:#x} -> \
                             {want:#x} ({:?}) but the guest gives {other:?} in {space:?}",
                            m.perm
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn dma(&self, sid: u16, pasid: Option<u32>, iova: u64, write: bool) -> Result<(), String> {
        let perm = if write { Perm::WRITE } else { Perm::READ };
        let req = DmaRequest {
            requester_id: u32::from(sid),
            pasid,
            iova,
            perm,
        };
        if let Ok(t) = self.vtd.translate(&req) {
            if !t.is_well_formed(iova) || !t.perm.allows(perm) {
                return Err(format!("translation {t:?} for {req:?}"));
            }
            let out = t.addr.wrapping_add(iova - t.iova);
            if INTERRUPT_RANGE.contains(out) && self.vtd.translation_enabled() {
                return Err(format!(
                    "{req:?} translated into the interrupt range: {t:?}"
                ));
            }
        }
        Ok(())
    }

    /// The invariants that hold after every step.
    pub fn check(&self) -> Result<(), String> {
        let v = &self.vtd;
        let gsts = v.mmio_read(GSTS, 4);
        if gsts & !0xff80_0000 != 0 || gsts & (GCMD_WBF | GCMD_SFL | GCMD_EAFL) != 0 {
            return Err(format!("GSTS {gsts:#x} has undefined or one-shot bits"));
        }
        let fsts = v.mmio_read(FSTS, 4);
        if fsts & !0xff7f != 0 {
            return Err(format!("FSTS {fsts:#x} has undefined bits"));
        }
        // IQH stays inside the queue as latched by QIE (IQA may have been rewritten since),
        // aligned to its descriptor size.
        let iqh = v.mmio_read(IQH, 8);
        let q = v.save().queue;
        if q.enabled {
            let shift = if q.wide { 5 } else { 4 };
            if (!self.scalable && q.wide)
                || iqh >= u64::from(q.entries) << shift
                || iqh & ((1 << shift) - 1) != 0
            {
                return Err(format!("IQH {iqh:#x} outside or misaligned in {q:?}"));
            }
        } else if iqh != 0 {
            return Err(format!("IQH {iqh:#x} with queued invalidation off"));
        }
        // The host holds exactly what the shadow recorded, and never the interrupt range.
        let maps = v.host_mappings(u32::from(DEV)).unwrap_or_default();
        self.host
            .with(|h| check_mappings_match_host(&maps, h))
            .map_err(|e| format!("host oracle: {e}"))?;
        if let Some(m) = maps
            .iter()
            .find(|m| m.gpa_range().overlaps(&INTERRUPT_RANGE))
        {
            return Err(format!("host maps the interrupt range: {m:?}"));
        }
        Ok(())
    }

    /// Detaches the host: every mapping removed, every entry returned.
    pub fn detach(&self) -> Result<(), String> {
        self.vtd
            .detach_host(u32::from(DEV))
            .map_err(|e| format!("detach: {e:?}"))?;
        let (count, remaining) = self
            .host
            .with(|h| (h.mapping_count(), h.remaining_entries()));
        if count != 0 {
            return Err(format!("detach left {count} host mappings"));
        }
        if self.host_config.0 != HostFlavour::Iommufd && remaining != Some(self.host_config.1) {
            return Err(format!(
                "detach leaked host entries: {remaining:?} of {} free",
                self.host_config.1
            ));
        }
        Ok(())
    }
}

/// Runs `input` from setup to detach; the first oracle failure is returned.
pub fn run(input: &Input) -> Result<(), String> {
    let mut w = World::new(input.setup)?;
    for (i, op) in input.ops.iter().take(MAX_OPS).enumerate() {
        w.step(op).map_err(|e| format!("step {i} {op:?}: {e}"))?;
    }
    w.detach()
}

/// The fuzz target: decodes `data` and runs it; panics when an oracle fails.
pub fn model(data: &[u8]) {
    let Some(input) = Input::decode(data) else {
        return;
    };
    if let Err(e) = run(&input) {
        panic!("vtd oracle: {e}\n{input:#?}");
    }
}

/// Encodes `input` so that [`Input::decode`] gives it back (for seed inputs). Biased fields
/// are written through their "any value" branch.
pub fn encode(input: &Input) -> Vec<u8> {
    let mut e = super::Encoder::new();
    let s = &input.setup;
    e.bool(s.scalable)
        .u8(s.levels)
        .u8(s.flavour)
        .u8(s.limit)
        .bool(s.blank);
    const N: u32 = 14;
    for op in &input.ops {
        match *op {
            Op::Write { offset, len, value } => {
                e.variant(0, N).u8(7).u64(offset);
                encode_len(&mut e, len).u64(value);
            }
            Op::Read { offset, len } => {
                e.variant(1, N).u8(7).u64(offset);
                encode_len(&mut e, len);
            }
            Op::Descriptor { desc, ring } => {
                e.variant(2, N);
                match desc {
                    Desc::Valid {
                        kind,
                        did,
                        sid,
                        page,
                        am,
                        flag,
                        pasid,
                    } => e
                        .variant(0, 2)
                        .u8(kind)
                        .u8(did)
                        .u8(sid)
                        .u32(page)
                        .u8(am)
                        .bool(flag)
                        .u8(pasid),
                    Desc::Raw { lo, hi } => e.variant(1, 2).u64(lo).u64(hi),
                };
                e.bool(ring);
            }
            Op::Poke { addr, value } => {
                e.variant(3, N).u32(addr as u32).u8(3).u64(value);
            }
            Op::MapPages {
                index,
                pages,
                frame,
                perm,
            } => {
                e.variant(4, N).u16(index).u8(pages).u16(frame).u8(perm);
            }
            Op::UnmapPages { index, pages } => {
                e.variant(5, N).u16(index).u8(pages);
            }
            Op::Flush { index, am, global } => {
                e.variant(6, N).u16(index).u8(am).bool(global);
            }
            Op::Dma {
                sid,
                pasid,
                iova,
                write,
            } => {
                e.variant(7, N).u8(5).u16(sid).bool(pasid.is_some());
                if let Some(p) = pasid {
                    e.u32(p);
                }
                e.u8(3).u64(iova).bool(write);
            }
            Op::Alias { rid, alias } => {
                e.variant(8, N).u8(rid).u8(alias);
            }
            Op::Reset => {
                e.variant(9, N);
            }
            Op::Reattach { flavour, limit } => {
                e.variant(10, N).u8(flavour).u8(limit);
            }
            Op::SaveRestore => {
                e.variant(11, N);
            }
            Op::Irte {
                index,
                entry,
                im,
                flush,
            } => {
                e.variant(12, N)
                    .u16(index)
                    .u8(2)
                    .u64(entry[0])
                    .u64(entry[1])
                    .u8(im)
                    .bool(flush);
            }
            Op::Irq {
                source,
                address,
                data,
                route,
            } => {
                e.variant(13, N)
                    .u8(4)
                    .u16(source)
                    .u8(4)
                    .u64(address)
                    .u32(data)
                    .bool(route);
            }
        }
    }
    e.into_bytes()
}

fn encode_len(e: &mut super::Encoder, len: usize) -> &mut super::Encoder {
    match len {
        4 => e.u8(0),
        8 => e.u8(4),
        n => {
            // A byte b with b % 8 == 7 (the "any length" branch) and b % 17 == n % 17.
            let b = (0..32u8)
                .map(|k| 7 + 8 * k)
                .find(|b| usize::from(b % 17) == n % 17);
            e.u8(b.unwrap_or(7))
        }
    }
}
