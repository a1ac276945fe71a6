//! Property tests: random MMIO writes, random descriptor bytes in the queue, random bytes in
//! the guest's tables and random DMA never panic, and keep the unit's invariants (IQH inside
//! the queue, the host equal to the shadow's record, only defined status bits).

use proptest::prelude::*;
use std::sync::Arc;
use viommu_shared::Perm;
use viommu_shared::dma::{DmaRequest, DmaTranslate};
use viommu_shared::host::{SharedSimHost, SimHostConfig};
use viommu_shared::regs::RecordingMsiSink;
use viommu_shared::testing::guest_memory;
use viommu_vtd::regs::*;
use viommu_vtd::testing::{desc, entry};
use viommu_vtd::{Config, Vtd};
use vm_memory::{Bytes, GuestAddress};

const RAM: usize = 16 << 20;
const ROOT: u64 = 0x1000;
const CTX: u64 = 0x2000;
const QUEUE: u64 = 0x8000;
const PT: u64 = 0x10_000;
const DEV: u16 = 0x10;

#[derive(Clone, Debug)]
enum Op {
    Write {
        offset: u64,
        len: usize,
        value: u64,
    },
    Read {
        offset: u64,
        len: usize,
    },
    Descriptor {
        lo: u64,
        hi: u64,
        ring: bool,
    },
    Poke {
        addr: u64,
        value: u64,
    },
    Dma {
        sid: u16,
        pasid: Option<u32>,
        iova: u64,
        write: bool,
    },
    Alias {
        rid: u16,
        alias: u16,
    },
    Reset,
}

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
            .prop_map(|((lo, hi), ring)| Op::Descriptor { lo, hi, ring }),
        3 => (0u64..0x2_0000, any::<u64>(), 0u8..3).prop_map(|(a, v, kind)| Op::Poke {
            addr: a & !7,
            value: match kind {
                // A plausible entry: a page of RAM with R/W.
                0 => ((v & 0xfff_f000) % RAM as u64) | (v >> 62) | 1,
                1 => v & 0x00ff_ffff | 1,
                _ => v,
            },
        }),
        2 => Just(Op::Write { offset: FSTS, len: 4, value: FSTS_IQE | FSTS_PFO }),
        3 => (prop::sample::select(vec![DEV, 0x11, 0x80, 0x1234]), prop::option::weighted(0.2, 0u32..0x10_0000), prop_oneof![0u64..0x100_0000, any::<u64>()], any::<bool>())
            .prop_map(|(sid, pasid, iova, write)| Op::Dma { sid, pasid, iova, write }),
        1 => (0u16..0x20, 0u16..0x20).prop_map(|(rid, alias)| Op::Alias { rid, alias }),
        1 => Just(Op::Reset),
    ]
}

fn setup(scalable: bool) -> (Vtd, vm_memory::GuestMemoryMmap, SharedSimHost) {
    let mem = guest_memory(&[(0, RAM)]);
    let config = Config {
        scalable_mode: scalable,
        device_tlb: true,
        interrupt_remapping: true,
        fault_records: 4,
        ..Config::default()
    };
    let vtd = Vtd::new(config, mem.clone(), Arc::new(RecordingMsiSink::new()));
    let host = SharedSimHost::new(SimHostConfig::vtd().with_entry_limit(10));
    let _ = vtd.attach_host(u32::from(DEV), Box::new(host.clone()));
    // A valid starting point: a context for DEV over a table with a few pages.
    let w = |addr: u64, qs: &[u64]| {
        for (i, q) in qs.iter().enumerate() {
            mem.write_obj(q.to_le(), GuestAddress(addr + 8 * i as u64))
                .unwrap();
        }
    };
    if scalable {
        w(ROOT, &entry::sm_root(Some(CTX), None));
        w(
            CTX + 32 * u64::from(DEV),
            &entry::sm_context(0x4000, 0, 0, true, false),
        );
        w(0x4000, &[entry::pasid_dir(0x5000, false)]);
        w(0x5000, &entry::pasid_second_stage(PT, 2, 1, false));
    } else {
        w(ROOT, &entry::root(CTX));
        w(
            CTX + 16 * u64::from(DEV),
            &entry::context(PT, 2, 1, 0, false),
        );
    }
    // PML4 → PDPT → PD → PT mapping 16 pages at 0.
    w(PT, &[(PT + 0x1000) | 3]);
    w(PT + 0x1000, &[(PT + 0x2000) | 3]);
    w(PT + 0x2000, &[(PT + 0x3000) | 3]);
    let ptes: Vec<u64> = (0..16u64).map(|i| (0x40_0000 + i * 0x1000) | 3).collect();
    w(PT + 0x3000, &ptes);
    let ttm = if scalable { RTADDR_TTM_SCALABLE } else { 0 };
    let _ = vtd.mmio_write(RTADDR, 8, ROOT | ttm);
    let _ = vtd.mmio_write(IQA, 8, QUEUE | if scalable { IQA_DW } else { 0 });
    let _ = vtd.mmio_write(GCMD, 4, GCMD_SRTP);
    let _ = vtd.mmio_write(GCMD, 4, GCMD_QIE);
    let _ = vtd.mmio_write(GCMD, 4, GCMD_QIE | GCMD_TE);
    (vtd, mem, host)
}

fn check_invariants(vtd: &Vtd, host: &SharedSimHost, scalable: bool) {
    let gsts = vtd.mmio_read(GSTS, 4);
    assert_eq!(gsts & !0xff80_0000, 0);
    assert_eq!(gsts & (GCMD_WBF | GCMD_SFL | GCMD_EAFL), 0);
    let fsts = vtd.mmio_read(FSTS, 4);
    assert_eq!(fsts & !(0xff7f), 0);
    let iqh = vtd.mmio_read(IQH, 8);
    // IQH stays inside the queue as latched by QIE (IQA may have been rewritten since), and
    // aligned to its descriptor size.
    let q = vtd.save().queue;
    if q.enabled {
        let shift = if q.wide { 5 } else { 4 };
        assert!(scalable || !q.wide);
        assert!(iqh < u64::from(q.entries) << shift);
        assert_eq!(iqh & ((1 << shift) - 1), 0);
    } else {
        assert_eq!(iqh, 0);
    }
    // The host holds exactly what the shadow recorded.
    let recorded: Vec<(u64, u64, u64)> = vtd
        .host_mappings(u32::from(DEV))
        .unwrap_or_default()
        .iter()
        .map(|m| (m.iova, m.gpa, m.size))
        .collect();
    let held: Vec<(u64, u64, u64)> = host.with(|h| {
        h.mappings()
            .iter()
            .map(|m| (m.iova, m.gpa, m.size))
            .collect()
    });
    assert_eq!(recorded, held);
}

fn run(scalable: bool, ops: Vec<Op>) {
    let (vtd, mem, host) = setup(scalable);
    let mut tail = 0u64;
    for op in ops {
        match op {
            Op::Write { offset, len, value } => {
                let _ = vtd.mmio_write(offset, len, value);
            }
            Op::Read { offset, len } => {
                let _ = vtd.mmio_read(offset, len);
            }
            Op::Descriptor { lo, hi, ring } => {
                let iqa = vtd.mmio_read(IQA, 8);
                let wide = scalable && iqa & IQA_DW != 0;
                let shift = if wide { 5 } else { 4 };
                let base = iqa & !0xfff;
                let slot = base.wrapping_add(tail << shift);
                let _ = mem.write_obj(lo.to_le(), GuestAddress(slot));
                let _ = mem.write_obj(hi.to_le(), GuestAddress(slot.wrapping_add(8)));
                tail = (tail + 1) % if wide { 128 } else { 256 };
                if ring {
                    let _ = vtd.mmio_write(IQT, 8, tail << shift);
                }
            }
            Op::Poke { addr, value } => {
                let _ = mem.write_obj(value.to_le(), GuestAddress(addr));
            }
            Op::Dma {
                sid,
                pasid,
                iova,
                write,
            } => {
                let perm = if write { Perm::WRITE } else { Perm::READ };
                if let Ok(t) = vtd.translate(&DmaRequest {
                    requester_id: u32::from(sid),
                    pasid,
                    iova,
                    perm,
                }) {
                    assert!(t.is_well_formed(iova));
                    assert!(t.perm.allows(perm));
                    let out = t.addr + (iova - t.iova);
                    assert!(
                        !(0xfee0_0000..0xfef0_0000).contains(&out) || !vtd.translation_enabled()
                    );
                }
            }
            Op::Alias { rid, alias } => {
                let _ = vtd.set_alias(u32::from(rid), u32::from(alias));
            }
            Op::Reset => {
                let _ = vtd.reset();
                tail = 0;
            }
        }
        check_invariants(&vtd, &host, scalable);
    }
    let _ = vtd.detach_host(u32::from(DEV));
    assert!(host.with(|h| h.mappings().is_empty()));
}

proptest! {
    // 128 cases by default; PROPTEST_CASES raises it for longer fuzzing runs.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
    ))]

    #[test]
    fn random_mmio_and_descriptors_never_panic_legacy(ops in prop::collection::vec(op(), 1..48)) {
        run(false, ops);
    }

    #[test]
    fn random_mmio_and_descriptors_never_panic_scalable(ops in prop::collection::vec(op(), 1..48)) {
        run(true, ops);
    }
}
