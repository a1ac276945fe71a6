//! Hostile guests: random MMIO writes, random command bytes, random device table and
//! page-table entries and emulated DMA, with passthrough devices attached. Nothing panics,
//! every answer is well formed, and the host always holds exactly what the model recorded.
//!
//! The steps and oracles are those of the `amd_vi` fuzz target
//! ([`viommu_amd_vi::fuzz_support::model`]); these strategies weight the steps differently
//! (well-formed commands, known registers, plausible entries) and proptest shrinks failures.

use proptest::prelude::*;
use viommu_amd_vi::Command;
use viommu_amd_vi::fuzz_support::model::{
    Cmd, DEVICES, Input, Op, RAM, Setup, TABLE_PAGES, TABLES, run,
};
use viommu_amd_vi::pagetable::{PTE_IR, PTE_IW, PTE_PR};
use viommu_amd_vi::regs::offset;

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
        4 => commands().prop_map(|raw| Op::Command {
            cmd: Cmd::Raw { opcode: (raw[0] >> 60) as u8, lo: raw[0], hi: raw[1] },
        }),
        2 => (0..DEVICES, plausible_entry(), 0u64..8, any::<u64>(), any::<bool>()).prop_map(
            |(devid, e, mode, junk, clean)| {
                let q0 = (e & !(7 << 9)) | (mode << 9) | 0x3;
                let q0 = if clean { q0 } else { q0 ^ (junk & 0x8000_0000_0000_007c) };
                Op::DteRaw { devid: devid as u8, q: [q0, u64::from(devid % 3), 0, 0] }
            }
        ),
        3 => (0..TABLE_PAGES * 512, prop_oneof![3 => plausible_entry(), 1 => any::<u64>()])
            .prop_map(|(slot, value)| Op::Pte { slot: slot as u16, value }),
        3 => (0..DEVICES, prop_oneof![3 => 0u64..(1 << 32), 1 => any::<u64>()], any::<bool>())
            .prop_map(|(devid, iova, write)| Op::Dma { devid, iova, write }),
        2 => (0u16..512, 0u8..64, 0u16..2048, 0u8..3).prop_map(|(index, pages, frame, perm)| {
            Op::MapPages { index, pages, frame, perm }
        }),
        1 => (0u16..512, 0u8..64).prop_map(|(index, pages)| Op::UnmapPages { index, pages }),
        2 => (0u8..3, 0u16..512, 0u8..10, prop::bool::weighted(0.3))
            .prop_map(|(domain, index, order, all)| Op::Flush { domain, index, order, all }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hostile_guest_never_panics(ops in prop::collection::vec(ops(), 1..48)) {
        let setup = Setup { levels: 0, flavour: 0, limit: 7, blank: false };
        if let Err(e) = run(&Input { setup, ops }) {
            return Err(TestCaseError::fail(e));
        }
    }
}
