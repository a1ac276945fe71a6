//! Real DMA through mappings the shadow engine made: the `edu` device reads and writes guest
//! memory through IOVAs that a guest page table maps and `ShadowEngine` shadowed into the real
//! container; memory contents tell whether each transfer landed.

use crate::edu::{self, Edu};
use crate::layout;
use crate::verdict::Verdicts;
use std::sync::Arc;
use vfio_ioctls::VfioContainer;
use viommu_shared::host::{HostDma, VfioContainerBackend};
use viommu_shared::pt::{ByteOrder, Walker};
use viommu_shared::shadow::{ShadowConfig, ShadowEngine};
use viommu_shared::testing::{Edit, GuestTables, RadixFormat};
use viommu_shared::{AddrRange, Perm};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const PAGE: u64 = 0x1000;
/// Guest pages (guest-physical addresses).
const SRC: u64 = 0x20_0000;
const DST: u64 = 0x20_1000;
const RO: u64 = 0x20_2000;
const RUN: u64 = 0x21_0000; // 16 pages
const NEW: u64 = 0x22_0000;
/// IOVA page indices.
const I_SRC: u64 = 0x100;
const I_DST: u64 = 0x200;
const I_RO: u64 = 0x300;
const I_RUN: u64 = 0x400;

fn pattern(seed: u8) -> Vec<u8> {
    (0..edu::XFER as usize)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

fn read(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    mem.read_slice(&mut v, GuestAddress(gpa))
        .expect("layout constants lie in guest memory");
    v
}

fn fill(mem: &GuestMemoryMmap, gpa: u64, data: &[u8]) {
    mem.write_slice(data, GuestAddress(gpa))
        .expect("layout constants lie in guest memory");
}

fn zero(mem: &GuestMemoryMmap, gpa: u64, len: u64) {
    fill(mem, gpa, &vec![0u8; len as usize]);
}

fn is_zero(v: &[u8]) -> bool {
    v.iter().all(|&b| b == 0)
}

/// Runs the device checks on `container` (type1 v2, edu attached, no mappings).
pub fn run(
    v: &mut Verdicts,
    tag: &str,
    dev: &Edu,
    container: Arc<VfioContainer>,
    mem: &Arc<GuestMemoryMmap>,
    limit: u32,
) {
    let ident = dev.ident();
    let live = dev.liveness(0x1234_5678);
    v.check(
        tag,
        "edu responds through vfio-pci",
        ident == edu::IDENT && live == !0x1234_5678,
        format!("ident={ident:#010x} liveness(0x12345678)={live:#010x}"),
    );

    let fmt = RadixFormat::x86_like(4, ByteOrder::Little);
    let mut guest = match GuestTables::new(&fmt, &**mem, layout::TABLES, 1 << 36) {
        Ok(g) => g,
        Err(e) => {
            v.check(tag, "guest table", false, format!("{e:?}"));
            return;
        }
    };
    let backend = VfioContainerBackend::new(container, mem.clone());
    let mut engine = ShadowEngine::new(backend, ShadowConfig::default());
    let sync = |guest: &mut GuestTables<'_, RadixFormat, GuestMemoryMmap>,
                engine: &mut ShadowEngine<_>,
                edits: &[Edit]|
     -> Result<(), String> {
        let mut inv = AddrRange::default();
        for e in edits {
            inv = inv.union_hull(&guest.apply(e).map_err(|e| format!("{e:?}"))?);
        }
        let view = Walker::new(&fmt, &**mem, guest.root());
        let rep = engine
            .sync_or_reclaim(&view, inv)
            .map_err(|e| e.to_string())?;
        if rep.refused.is_empty() && rep.unmappable.is_empty() {
            Ok(())
        } else {
            Err(format!("sync refused {:?}", rep.refused))
        }
    };
    let edit = |at, pages, gpa: u64, perm| Edit::Map {
        at,
        pages,
        gpa: gpa / PAGE,
        perm,
    };
    let p1 = pattern(3);
    let p_ro = pattern(0x5a);
    zero(mem, SRC, 0x30000);
    fill(mem, SRC, &p1);
    fill(mem, RO, &p_ro);

    let r = sync(
        &mut guest,
        &mut engine,
        &[
            edit(I_SRC, 1, SRC, Perm::READ),
            edit(I_DST, 1, DST, Perm::RW),
            edit(I_RO, 1, RO, Perm::READ),
            edit(I_RUN, 16, RUN, Perm::RW),
        ],
    );
    let run_mapping = engine.record().starting_at(I_RUN * PAGE);
    v.check(
        tag,
        "shadow engine maps the guest table (16-page run coalesced into one host mapping)",
        r.is_ok() && run_mapping.is_some_and(|m| m.size == 16 * PAGE),
        format!(
            "sync {r:?}, {} host mappings, run mapping {run_mapping:?}",
            engine.record().len()
        ),
    );

    // 1. RAM -> device -> RAM through shadow-mapped IOVAs.
    let r = dev
        .load(I_SRC * PAGE)
        .and_then(|()| dev.store(I_DST * PAGE));
    let got = read(mem, DST, PAGE);
    v.check(
        tag,
        "DMA read via IOVA 0x100000 (R) and write via IOVA 0x200000 (RW) land",
        r.is_ok() && got[..edu::XFER as usize] == p1[..] && is_zero(&got[edu::XFER as usize..]),
        format!(
            "{r:?}; dst[0..2048] {}",
            if got[..edu::XFER as usize] == p1[..] {
                "matches"
            } else {
                "DIFFERS"
            }
        ),
    );

    // 2. A device write through a read-only mapping is blocked.
    let r = dev.store(I_RO * PAGE);
    let got = read(mem, RO, edu::XFER);
    v.check(
        tag,
        "device write to a read-only mapping is blocked",
        r.is_ok() && got == p_ro,
        format!(
            "{r:?}; read-only page {}",
            if got == p_ro { "untouched" } else { "WRITTEN" }
        ),
    );

    // 3. A device read through the read-only mapping works.
    zero(mem, DST, PAGE);
    let r = dev.load(I_RO * PAGE).and_then(|()| dev.store(I_DST * PAGE));
    let got = read(mem, DST, edu::XFER);
    v.check(
        tag,
        "device read through a read-only mapping works",
        r.is_ok() && got == p_ro,
        format!(
            "{r:?}; dst {}",
            if got == p_ro { "matches" } else { "DIFFERS" }
        ),
    );

    // 4. A transfer crossing a page boundary inside the coalesced mapping.
    let r = dev.load(I_SRC * PAGE);
    let at = I_RUN * PAGE + 7 * PAGE + 0xc00;
    let r = r.and_then(|()| dev.store(at));
    let got = read(mem, RUN, 16 * PAGE);
    let off = (7 * PAGE + 0xc00) as usize;
    let ok = got[off..off + edu::XFER as usize] == p1[..]
        && is_zero(&got[..off])
        && is_zero(&got[off + edu::XFER as usize..]);
    v.check(
        tag,
        "DMA across a page boundary inside a coalesced mapping",
        r.is_ok() && ok,
        format!(
            "{r:?}; write at IOVA {at:#x} {}",
            if ok { "landed exactly" } else { "WRONG" }
        ),
    );

    // 5. After the guest remaps one page of the run, DMA follows the new translation.
    zero(mem, RUN, 16 * PAGE);
    zero(mem, NEW, PAGE);
    let r = sync(
        &mut guest,
        &mut engine,
        &[edit(I_RUN + 8, 1, NEW, Perm::RW)],
    );
    let r = r.and_then(|()| dev.store((I_RUN + 8) * PAGE));
    let new = read(mem, NEW, PAGE);
    let old = read(mem, RUN, 16 * PAGE);
    let ok = new[..edu::XFER as usize] == p1[..] && is_zero(&old);
    v.check(
        tag,
        "after a guest remap inside the run, DMA lands in the new page only",
        r.is_ok() && ok,
        format!(
            "{r:?}; new page {}, old run {}; {} host mappings",
            if new[..edu::XFER as usize] == p1[..] {
                "written"
            } else {
                "NOT written"
            },
            if is_zero(&old) {
                "untouched"
            } else {
                "WRITTEN"
            },
            engine.record().len()
        ),
    );

    // 6. After a guest unmap and sync, DMA to that IOVA no longer lands.
    zero(mem, DST, PAGE);
    let r = sync(
        &mut guest,
        &mut engine,
        &[Edit::Unmap {
            at: I_DST,
            pages: 1,
        }],
    );
    let r = r.and_then(|()| dev.store(I_DST * PAGE));
    let got = read(mem, DST, PAGE);
    v.check(
        tag,
        "after guest unmap + sync, DMA to the IOVA is blocked",
        r.is_ok() && is_zero(&got),
        format!(
            "{r:?}; dst {}",
            if is_zero(&got) {
                "untouched"
            } else {
                "WRITTEN"
            }
        ),
    );

    // 7. Teardown removes every mapping: DMA_AVAIL back to the limit, DMA blocked.
    let torn = engine.teardown();
    let remaining = engine.host().remaining_entries();
    zero(mem, RUN, 16 * PAGE);
    let r = dev.store(I_RUN * PAGE);
    let got = read(mem, RUN, 16 * PAGE);
    v.check(
        tag,
        "teardown: DMA_AVAIL back to dma_entry_limit and DMA blocked",
        torn.is_ok() && remaining == Some(limit) && r.is_ok() && is_zero(&got),
        format!(
            "teardown {torn:?}; DMA_AVAIL {remaining:?} (limit {limit}); run {}",
            if is_zero(&got) {
                "untouched"
            } else {
                "WRITTEN"
            }
        ),
    );
}
