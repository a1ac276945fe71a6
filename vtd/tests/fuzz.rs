//! Property tests: random MMIO writes, random descriptor bytes in the queue, random bytes in
//! the guest's tables and random DMA never panic, and keep the unit's invariants (IQH inside
//! the queue, the host equal to the shadow's record, only defined status bits, no stale host
//! mapping after a completed invalidation, nothing left on the host after detach).
//!
//! The steps and oracles are those of the `vtd` fuzz target
//! ([`viommu_vtd::fuzz_support::model`]); these strategies weight the steps differently
//! (well-formed descriptors, known registers) and proptest shrinks failures.

use proptest::prelude::*;
use viommu_vtd::fuzz_support::model::{DEV, Desc, Input, Op, QUEUE, RAM, Setup, run};
use viommu_vtd::regs::*;
use viommu_vtd::testing::desc;

fn reg_offset() -> impl Strategy<Value = u64> {
    let known = vec![
        GCMD,
        RTADDR,
        CCMD,
        CCMD + 4,
        FSTS,
        FECTL,
        FEDATA,
        FEADDR,
        IQA,
        ICS,
        IECTL,
        IRTA,
        IVA,
        IOTLB,
        IOTLB + 4,
        FRCD_BASE + 12,
        FRCD_BASE + 8,
        FRCD_BASE + 16 + 12,
    ];
    prop_oneof![
        6 => prop::sample::select(known),
        2 => (0u64..0x140).prop_map(|o| o * 4),
        1 => any::<u64>(),
    ]
}

fn len() -> impl Strategy<Value = usize> {
    prop_oneof![8 => prop::sample::select(vec![4usize, 8]), 1 => 0usize..17]
}

fn valid_descriptor() -> impl Strategy<Value = [u64; 2]> {
    let did = 0u16..4;
    let sid = prop::sample::select(vec![DEV, 0x11, 0x17, 0x80]);
    let addr = prop_oneof![0u64..0x20_0000, any::<u64>()].prop_map(|a| a & !0xfff);
    (0u8..12, did, sid, addr, 0u8..20, any::<bool>(), 0u32..0x10).prop_map(
        |(kind, did, sid, addr, am, flag, pasid)| match kind {
            0 => desc::context_global(),
            1 => desc::context_domain(did),
            2 => desc::context_device(did, sid, am & 3),
            3 => desc::iotlb_global(),
            4 => desc::iotlb_domain(did),
            5 | 6 => desc::iotlb_page(did, addr, am, flag),
            7 => desc::wait(Some((QUEUE + 0xf00 + u64::from(am) * 4, 2)), flag),
            8 => desc::device_tlb(sid, addr, flag),
            9 => desc::pasid_iotlb(did, pasid, flag.then_some((addr, am))),
            10 => desc::pasid_cache(am & 3, did, pasid),
            _ => desc::iec_global(),
        },
    )
}

fn descriptor() -> impl Strategy<Value = (u64, u64)> {
    let ty = prop_oneof![Just(0u64), 1u64..9, 0u64..0x80].prop_map(|t| (t & 0xf) | ((t >> 4) << 9));
    let random = (ty, any::<u64>(), any::<u64>(), 0u64..4).prop_map(|(ty, noise, hi, mode)| {
        match mode {
            // Well-formed-ish: type plus granularity and a few fields.
            0 => (ty | (noise & 0xffff_0000_ffff_0030), hi & !0xfc0),
            1 => (ty | (noise & 0x30), QUEUE + 0x800),
            _ => ((noise & !0xe0f) | ty, hi),
        }
    });
    prop_oneof![3 => valid_descriptor().prop_map(|d| (d[0], d[1])), 1 => random]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (reg_offset(), len(), any::<u64>())
            .prop_map(|(offset, len, value)| Op::Write { offset, len, value }),
        1 => (reg_offset(), len()).prop_map(|(offset, len)| Op::Read { offset, len }),
        5 => (descriptor(), prop::bool::weighted(0.7))
            .prop_map(|((lo, hi), ring)| Op::Descriptor { desc: Desc::Raw { lo, hi }, ring }),
        3 => (0u64..0x2_0000, any::<u64>(), 0u8..3).prop_map(|(a, v, kind)| Op::Poke {
            addr: a & !7,
            value: match kind {
                // A plausible entry: a page of RAM with R/W.
                0 => ((v & 0xfff_f000) % RAM) | (v >> 62) | 1,
                1 => v & 0x00ff_ffff | 1,
                _ => v,
            },
        }),
        2 => Just(Op::Write { offset: FSTS, len: 4, value: FSTS_IQE | FSTS_PFO }),
        3 => (prop::sample::select(vec![DEV, 0x11, 0x80, 0x1234]), prop::option::weighted(0.2, 0u32..0x10_0000), prop_oneof![0u64..0x100_0000, any::<u64>()], any::<bool>())
            .prop_map(|(sid, pasid, iova, write)| Op::Dma { sid, pasid, iova, write }),
        1 => (0u8..0x20, 0u8..0x20).prop_map(|(rid, alias)| Op::Alias { rid, alias }),
        1 => Just(Op::Reset),
        2 => (0u16..512, 0u8..64, 0u16..2048, 0u8..3).prop_map(|(index, pages, frame, perm)| {
            Op::MapPages { index, pages, frame, perm }
        }),
        1 => (0u16..512, 0u8..64).prop_map(|(index, pages)| Op::UnmapPages { index, pages }),
        2 => (0u16..512, 0u8..10, prop::bool::weighted(0.3))
            .prop_map(|(index, am, global)| Op::Flush { index, am, global }),
        1 => Just(Op::SaveRestore),
        1 => (0u8..3, 0u8..64).prop_map(|(flavour, limit)| Op::Reattach { flavour, limit }),
        3 => (prop::sample::select(vec![0u16, 1, 2, 3, 5, 2047, 7]), irte(), 0u8..4, prop::bool::weighted(0.8))
            .prop_map(|(index, entry, im, flush)| Op::Irte { index, entry, im, flush }),
        3 => (prop::sample::select(vec![DEV, 0x11, 0xff00, 0x1234]), irq_address(), prop_oneof![Just(0u32), any::<u32>()], any::<bool>())
            .prop_map(|(source, address, data, route)| Op::Irq { source, address, data, route }),
    ]
}

/// A present IRTE with random fields (x2APIC destination), sometimes one bit flipped.
fn irte() -> impl Strategy<Value = [u64; 2]> {
    let valid = (
        any::<u8>(),
        any::<u32>(),
        0u64..8,
        0u64..3,
        any::<u16>(),
        0u64..4,
        any::<u8>(),
    )
        .prop_map(|(vector, dest, dlm, svt, sid, sq, flags)| {
            let dlm = if dlm == 3 || dlm == 6 { 0 } else { dlm };
            [
                1 | u64::from(flags & 0x1e)
                    | (dlm << 5)
                    | (u64::from(vector) << 16)
                    | (u64::from(dest) << 32),
                u64::from(sid) | (sq << 16) | (svt << 18),
            ]
        });
    prop_oneof![
        4 => valid.clone(),
        1 => (valid, 0u32..128).prop_map(|([lo, hi], b)| if b < 64 { [lo ^ (1 << b), hi] } else { [lo, hi ^ (1 << (b - 64))] }),
        1 => any::<[u64; 2]>(),
    ]
}

fn irq_address() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0u64..2050).prop_map(|i| 0xfee0_0018 | ((i & 0x7fff) << 5) | ((i >> 15) << 2)),
        1 => (0u64..0x10_0000).prop_map(|a| 0xfee0_0000 | (a & !0x10)),
        1 => any::<u64>(),
    ]
}

fn check(scalable: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let setup = Setup {
        scalable,
        levels: 1,
        flavour: 0,
        limit: 9,
        blank: false,
    };
    let input = Input { setup, ops };
    if let Err(e) = run(&input) {
        return Err(TestCaseError::fail(e));
    }
    Ok(())
}

proptest! {
    // 128 cases by default; PROPTEST_CASES raises it for longer fuzzing runs.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
    ))]

    #[test]
    fn random_mmio_and_descriptors_never_panic_legacy(ops in prop::collection::vec(op(), 1..48)) {
        check(false, ops)?;
    }

    #[test]
    fn random_mmio_and_descriptors_never_panic_scalable(ops in prop::collection::vec(op(), 1..48)) {
        check(true, ops)?;
    }
}
