//! Hostile guests: random MMIO writes, random command bytes, random device table and
//! page-table entries and emulated DMA, with passthrough devices attached. Nothing panics,
//! every answer is well formed, and the host always holds exactly what the model recorded.

use proptest::prelude::*;
use std::sync::Arc;
use viommu_amd_vi::pagetable::{PTE_IR, PTE_IW, PTE_PR};
use viommu_amd_vi::regs::{LEN_SHIFT, control, offset};
use viommu_amd_vi::{AmdVi, Command, Config, Dte};
use viommu_shared::Perm;
use viommu_shared::dma::{DmaRequest, DmaTranslate};
use viommu_shared::host::{HostFlavour, SharedSimHost, SimHostConfig};
use viommu_shared::pt::WalkLimits;
use viommu_shared::regs::RecordingMsiSink;
use viommu_shared::shadow::ShadowConfig;
use viommu_shared::testing::guest_memory;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const RAM: u64 = 16 << 20;
const DEV_TAB: u64 = 0x10_0000;
const CMD_BUF: u64 = 0x20_0000;
const EVT_LOG: u64 = 0x21_0000;
const TABLES: u64 = 0x30_0000;
const TABLE_PAGES: u64 = 16;
const DEVICES: u16 = 4;

#[derive(Clone, Debug)]
enum Op {
    Mmio { offset: u64, len: usize, value: u64 },
    Cmd { raw: [u64; 2] },
    Dte { devid: u16, q: [u64; 4] },
    Pte { slot: u64, value: u64 },
    Dma { devid: u16, iova: u64, write: bool },
}

fn plausible_entry() -> impl Strategy<Value = u64> {
    (
        0..TABLE_PAGES,
        0u64..8,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(page, nl, r, w, pr)| {
            (TABLES + (page << 12))
                | (nl << 9)
                | if pr { PTE_PR } else { 0 }
                | if r { PTE_IR } else { 0 }
                | if w { PTE_IW } else { 0 }
        })
}

fn offsets() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => prop::sample::select(vec![
            offset::DEV_TAB_BASE, offset::CMD_BUF_BASE, offset::EVT_LOG_BASE, offset::CONTROL,
            offset::EXCL_BASE, offset::EXCL_LIMIT, offset::EXT_FEATURES, offset::PPR_LOG_BASE,
            offset::CMD_HEAD, offset::CMD_TAIL, offset::EVT_HEAD, offset::EVT_TAIL,
            offset::STATUS, offset::PPR_HEAD, offset::PPR_TAIL,
            offset::CONTROL + 4, offset::CMD_BUF_BASE + 4, offset::DEV_TAB_BASE + 4,
        ]),
        2 => 0u64..0x4000,
        1 => any::<u64>(),
    ]
}

fn commands() -> impl Strategy<Value = [u64; 2]> {
    prop_oneof![
        2 => (0u8..16, any::<u64>(), any::<u64>())
            .prop_map(|(op, a, b)| [(a & !(0xf << 60)) | (u64::from(op) << 60), b]),
        3 => (any::<u16>(), 0u64..(1 << 40), any::<bool>(), any::<bool>())
            .prop_map(|(dom, addr, s, pde)| Command::InvalidateIommuPages {
                pasid: 0,
                domain_id: dom % 4,
                size: s,
                pde,
                gn: false,
                address: addr << 12,
            }.encode()),
        2 => (0..DEVICES).prop_map(|d| Command::InvalidateDevtabEntry { device_id: d }.encode()),
        1 => Just(Command::InvalidateIommuAll.encode()),
        2 => (0u64..RAM, any::<bool>(), any::<bool>(), any::<u64>()).prop_map(|(a, s, i, d)| {
            Command::CompletionWait { store: s, interrupt: i, fence: false, address: a & !7, data: d }
                .encode()
        }),
    ]
}

fn ops() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (offsets(), prop_oneof![4 => prop::sample::select(vec![1usize, 2, 4, 8]), 1 => any::<usize>()], any::<u64>())
            .prop_map(|(offset, len, value)| Op::Mmio { offset, len, value }),
        4 => commands().prop_map(|raw| Op::Cmd { raw }),
        2 => (0..DEVICES, plausible_entry(), 0u64..8, any::<u64>(), any::<bool>()).prop_map(
            |(devid, e, mode, junk, clean)| {
                let q0 = (e & !(7 << 9)) | (mode << 9) | 0x3;
                let q0 = if clean { q0 } else { q0 ^ (junk & 0x8000_0000_0000_007c) };
                Op::Dte { devid, q: [q0, u64::from(devid % 3), 0, 0] }
            }
        ),
        3 => (0..TABLE_PAGES * 512, prop_oneof![3 => plausible_entry(), 1 => any::<u64>()])
            .prop_map(|(slot, value)| Op::Pte { slot, value }),
        3 => (0..DEVICES, prop_oneof![3 => 0u64..(1 << 32), 1 => any::<u64>()], any::<bool>())
            .prop_map(|(devid, iova, write)| Op::Dma { devid, iova, write }),
    ]
}

struct World {
    mem: GuestMemoryMmap,
    iommu: AmdVi,
    hosts: Vec<(u16, SharedSimHost)>,
    tail: u64,
}

fn world() -> World {
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
    let iommu = AmdVi::new(config, mem.clone(), Arc::new(RecordingMsiSink::new()));
    let hosts = vec![
        (
            1,
            SharedSimHost::new(SimHostConfig::amd_vi().with_entry_limit(8)),
        ),
        (
            2,
            SharedSimHost::new(SimHostConfig::amd_vi().with_flavour(HostFlavour::Iommufd)),
        ),
    ];
    for (dev, h) in &hosts {
        let _ = iommu.attach_host(*dev, Box::new(h.clone()));
    }
    for d in 0..DEVICES {
        Dte::translated(d, TABLES, 3, Perm::RW)
            .write(&mem, DEV_TAB + u64::from(d) * 32)
            .unwrap();
    }
    let _ = iommu.mmio_write(offset::DEV_TAB_BASE, 8, DEV_TAB);
    let _ = iommu.mmio_write(offset::CMD_BUF_BASE, 8, CMD_BUF | (8 << LEN_SHIFT));
    let _ = iommu.mmio_write(offset::EVT_LOG_BASE, 8, EVT_LOG | (8 << LEN_SHIFT));
    let _ = iommu.mmio_write(
        offset::CONTROL,
        8,
        control::IOMMU_EN | control::CMD_BUF_EN | control::EVENT_LOG_EN | control::EVENT_INT_EN,
    );
    World {
        mem,
        iommu,
        hosts,
        tail: 0,
    }
}

fn check(w: &World) -> Result<(), TestCaseError> {
    prop_assert_eq!(w.iommu.mmio_read(offset::EXT_FEATURES, 8), w.iommu.efr());
    for off in [
        offset::CMD_HEAD,
        offset::CMD_TAIL,
        offset::EVT_HEAD,
        offset::EVT_TAIL,
    ] {
        prop_assert_eq!(w.iommu.mmio_read(off, 8) & !0x7_fff0, 0);
    }
    for (dev, h) in &w.hosts {
        let model = w.iommu.host_mappings(*dev).unwrap_or_default();
        let host = h.with(|h| h.mappings());
        prop_assert_eq!(model.len(), host.len());
        for (m, x) in model.iter().zip(&host) {
            prop_assert_eq!(
                (m.iova, m.gpa, m.size, m.perm),
                (x.iova, x.gpa, x.size, x.perm)
            );
            prop_assert!(!x.perm.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hostile_guest_never_panics(ops in prop::collection::vec(ops(), 1..48)) {
        let mut w = world();
        for op in ops {
            match op {
                Op::Mmio { offset, len, value } => {
                    let _ = w.iommu.mmio_write(offset, len, value);
                    let _ = w.iommu.mmio_read(offset, len);
                }
                Op::Cmd { raw } => {
                    let at = CMD_BUF + w.tail;
                    w.mem.write_obj(raw[0].to_le(), GuestAddress(at)).unwrap();
                    w.mem.write_obj(raw[1].to_le(), GuestAddress(at + 8)).unwrap();
                    w.tail = (w.tail + 16) % 4096;
                    let _ = w.iommu.mmio_write(offset::CMD_TAIL, 4, w.tail);
                }
                Op::Dte { devid, q } => {
                    Dte(q).write(&w.mem, DEV_TAB + u64::from(devid) * 32).unwrap();
                }
                Op::Pte { slot, value } => {
                    w.mem.write_obj(value.to_le(), GuestAddress(TABLES + slot * 8)).unwrap();
                }
                Op::Dma { devid, iova, write } => {
                    let perm = if write { Perm::WRITE } else { Perm::READ };
                    let req = DmaRequest { requester_id: u32::from(devid), pasid: None, iova, perm };
                    if let Ok(t) = w.iommu.translate(&req) {
                        prop_assert!(t.is_well_formed(iova), "{:?} for {:#x}", t, iova);
                        prop_assert!(t.perm.allows(perm));
                    }
                }
            }
            check(&w)?;
        }
        for (dev, h) in &w.hosts {
            prop_assert!(w.iommu.detach_host(*dev).is_ok());
            prop_assert_eq!(h.with(|h| h.mapping_count()), 0);
        }
    }
}
