//! SimHost reproduces each errno case measured on real kernels
//! (`shared/reference/real-kernel.md` §5, `anchors-s390-vfio.md` B.3, B.4, B.7, B.9).

use viommu_shared::host::{HostCall, HostDma, HostError, HostFlavour, SimHost, SimHostConfig};
use viommu_shared::{AddrRange, Perm};

const K4: u64 = 4096;
const A: u64 = 0x100_0000;

fn host(flavour: HostFlavour) -> SimHost {
    SimHost::new(SimHostConfig::vtd().with_flavour(flavour))
}

#[test]
fn type1v2_map_errors_as_measured() {
    let mut h = host(HostFlavour::Type1v2);
    let b = 0x10_0000;
    assert_eq!(h.map(b, 0x1000_0000, 2 * K4, Perm::RW), Ok(()));
    // "[v2] map overlapping 1 page @B+4K: EEXIST", "map same range again @B: EEXIST"
    assert_eq!(
        h.map(b + K4, 0x2000_0000, K4, Perm::RW),
        Err(HostError::Overlap)
    );
    assert_eq!(
        h.map(b, 0x1000_0000, 2 * K4, Perm::RW),
        Err(HostError::Overlap)
    );
    // "map adjacent @B+8K (same vaddr as first): OK"
    assert_eq!(h.map(b + 2 * K4, 0x1000_0000, K4, Perm::RW), Ok(()));
    // "unmap [B, B+12K) spanning 2 mappings: OK size=12288"
    assert_eq!(h.unmap(b, 3 * K4), Ok(12288));
    // "map unaligned iova B+1: EINVAL", "unaligned size 4095: EINVAL", "size 0: EINVAL"
    assert_eq!(h.map(b + 1, 0, K4, Perm::RW), Err(HostError::Invalid));
    assert_eq!(h.map(b, 0, 4095, Perm::RW), Err(HostError::Invalid));
    assert_eq!(h.map(b, 0, 0, Perm::RW), Err(HostError::Invalid));
    // "map iova in MSI window 0xfee00000: EINVAL"
    assert_eq!(h.map(0xfee0_0000, 0, K4, Perm::RW), Err(HostError::Invalid));
    // "map iova 1<<39 (beyond 39-bit aw): EINVAL", "1<<48: EINVAL"
    assert_eq!(h.map(1 << 39, 0, K4, Perm::RW), Err(HostError::Invalid));
    assert_eq!(h.map(1 << 48, 0, K4, Perm::RW), Err(HostError::Invalid));
    // "map iova wrap (2^64-4K, 8K): EINVAL"
    assert_eq!(
        h.map(u64::MAX - K4 + 1, 0, 2 * K4, Perm::RW),
        Err(HostError::Invalid)
    );
    // Neither READ nor WRITE: EINVAL (B.3).
    assert_eq!(h.map(b, 0, K4, Perm::empty()), Err(HostError::Invalid));
    // "unmap unaligned size: EINVAL"
    assert_eq!(h.unmap(b, 100), Err(HostError::Invalid));
    assert_eq!(h.mapping_count(), 0);
}

#[test]
fn type1v2_unmap_semantics_as_measured() {
    let mut h = host(HostFlavour::Type1v2);
    // "unmap first half [A, A+4K) -> EINVAL ... then unmap [A,A+8K) -> OK size=8192"
    h.map(A, 0, 2 * K4, Perm::RW).unwrap();
    assert_eq!(h.unmap(A, K4), Err(HostError::Invalid));
    assert_eq!(h.unmap(A, 2 * K4), Ok(8192));
    // "unmap second half [A+4K, A+8K) -> EINVAL"
    h.map(A, 0, 2 * K4, Perm::RW).unwrap();
    assert_eq!(h.unmap(A + K4, K4), Err(HostError::Invalid));
    assert_eq!(h.unmap(A, 2 * K4), Ok(8192));
    // "unmap whole -> OK size 8192; then unmap [A,A+8K) -> OK size=0"
    h.map(A, 0, 2 * K4, Perm::RW).unwrap();
    assert_eq!(h.unmap(A, 2 * K4), Ok(8192));
    assert_eq!(h.unmap(A, 2 * K4), Ok(0));
    // "unmap superset [A-4K, A+12K) -> OK size 8192"
    h.map(A, 0, 2 * K4, Perm::RW).unwrap();
    assert_eq!(h.unmap(A - K4, 4 * K4), Ok(8192));
    // "unmap with nothing mapped -> OK, size out=0"
    assert_eq!(h.unmap(A, 2 * K4), Ok(0));
}

#[test]
fn type1v1_unmap_semantics_as_measured() {
    let mut h = host(HostFlavour::Type1v1);
    // "[v1] unmap first half -> OK size out=8192; then unmap [A,A+8K) -> OK size=0"
    h.map(A, 0, 2 * K4, Perm::RW).unwrap();
    assert_eq!(h.unmap(A, K4), Ok(8192));
    assert_eq!(h.unmap(A, 2 * K4), Ok(0));
    // "[v1] unmap second half -> OK size out=0; then unmap [A,A+8K) -> OK size=8192"
    h.map(A, 0, 2 * K4, Perm::RW).unwrap();
    assert_eq!(h.unmap(A + K4, K4), Ok(0));
    assert_eq!(h.unmap(A, 2 * K4), Ok(8192));
    // whole and superset
    h.map(A, 0, 2 * K4, Perm::RW).unwrap();
    assert_eq!(h.unmap(A, 2 * K4), Ok(8192));
    h.map(A, 0, 2 * K4, Perm::RW).unwrap();
    assert_eq!(h.unmap(A - K4, 4 * K4), Ok(8192));
    assert_eq!(h.unmap(A, 2 * K4), Ok(0));
}

#[test]
fn iommufd_semantics_as_measured() {
    let mut h = host(HostFlavour::Iommufd);
    h.map(A, 0, 2 * K4, Perm::RW).unwrap();
    // "IOMMUFD: unmap first half: ENOENT", "unmap second half: ENOENT", "unmap whole: OK"
    assert_eq!(h.unmap(A, K4), Err(HostError::NotFound));
    assert_eq!(h.unmap(A + K4, K4), Err(HostError::NotFound));
    assert_eq!(h.unmap(A, 2 * K4), Ok(8192));
    // Empty range: ENOENT (B.9), length 0: EINVAL, overflow: EOVERFLOW (B.7).
    assert_eq!(h.unmap(A, 2 * K4), Err(HostError::NotFound));
    assert_eq!(h.unmap(A, 0), Err(HostError::Invalid));
    assert_eq!(h.unmap(u64::MAX - K4 + 1, 2 * K4), Err(HostError::Overflow));
    assert_eq!(
        h.map(u64::MAX - K4 + 1, 0, 2 * K4, Perm::RW),
        Err(HostError::Overflow)
    );
    // "page-by-page map: 1010 maps, stopped with OK": no entry limit.
    let mut h = SimHost::new(
        SimHostConfig::vtd()
            .with_flavour(HostFlavour::Iommufd)
            .with_entry_limit(1000),
    );
    for i in 0..1010 {
        assert_eq!(h.map(A + i * K4, i * K4, K4, Perm::RW), Ok(()));
    }
    assert_eq!(h.remaining_entries(), None);
    // Overlap is EEXIST here too.
    assert_eq!(h.map(A, 0, K4, Perm::READ), Err(HostError::Overlap));
    // "unmap all (0, U64_MAX): OK, length out=4136960"
    assert_eq!(h.unmap_all(), Ok(4136960));
}

#[test]
fn entry_limit_enospc_and_unmap_all_as_measured() {
    // "LIMIT: MAP_DMA #1001 failed: ENOSPC after 1000 successful page maps"
    let mut h = SimHost::new(SimHostConfig::vtd().with_entry_limit(1000));
    for i in 0..1000 {
        assert_eq!(h.map(A + i * K4, i * K4, K4, Perm::RW), Ok(()));
    }
    assert_eq!(
        h.map(A + 1000 * K4, 0, K4, Perm::RW),
        Err(HostError::OutOfResources)
    );
    // "DMA_AVAIL after filling: 0"
    assert_eq!(h.remaining_entries(), Some(0));
    // Overlap is checked before the count (B.3 order).
    assert_eq!(h.map(A, 0, K4, Perm::RW), Err(HostError::Overlap));
    // "UNMAP_FLAG_ALL: OK, unmapped size=4096000", "DMA_AVAIL after unmap-all: 1000"
    assert_eq!(h.unmap_all(), Ok(4_096_000));
    assert_eq!(h.remaining_entries(), Some(1000));
    // Default limit 65535.
    assert_eq!(
        SimHost::new(SimHostConfig::vtd()).remaining_entries(),
        Some(65535)
    );
}

#[test]
fn amd_and_s390_ranges_as_measured() {
    // AMD-Vi: "[v2] map iova 1<<39: OK", "1<<48: OK"; HyperTransport hole reserved.
    let mut h = SimHost::new(SimHostConfig::amd_vi());
    assert_eq!(h.map(1 << 39, 0, K4, Perm::RW), Ok(()));
    assert_eq!(h.map(1 << 48, 0, K4, Perm::RW), Ok(()));
    assert_eq!(
        h.map(0xfd_0000_0000, 0, K4, Perm::RW),
        Err(HostError::Invalid)
    );
    assert_eq!(h.map(0xfee0_0000, 0, K4, Perm::RW), Err(HostError::Invalid));
    // s390: aperture [4 GiB, 5 GiB); "fixed IOVAs below 4 GiB got EINVAL everywhere".
    let mut h = SimHost::new(SimHostConfig::s390(AddrRange::new(
        0x1_0000_0000,
        0x1_4000_0000,
    )));
    assert_eq!(h.map(0x100_0000, 0, K4, Perm::RW), Err(HostError::Invalid));
    assert_eq!(h.map(0x1_0100_0000, 0, 2 * K4, Perm::RW), Ok(()));
    assert_eq!(h.unmap(0x1_0100_0000, K4), Err(HostError::Invalid));
    assert_eq!(
        h.map(0x1_3fff_f000, 0, 2 * K4, Perm::RW),
        Err(HostError::Invalid)
    );
}

#[test]
fn unbacked_guest_memory_is_efault_and_calls_are_recorded() {
    // "map unbacked vaddr 0x1000: EFAULT"
    let mut h = SimHost::new(SimHostConfig {
        backed: Some(vec![AddrRange::new(0, 0x1000_0000)]),
        ..SimHostConfig::vtd()
    });
    assert_eq!(
        h.map(A, 0x2000_0000, K4, Perm::RW),
        Err(HostError::BadAddress)
    );
    assert_eq!(
        h.map(A, 0x0fff_f000, 2 * K4, Perm::RW),
        Err(HostError::BadAddress)
    );
    assert_eq!(h.map(A, 0x1000, K4, Perm::READ), Ok(()));
    assert_eq!(h.mappings()[0].perm, Perm::READ);
    let calls = h.take_calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        calls[2],
        HostCall::Map {
            iova: A,
            gpa: 0x1000,
            size: K4,
            perm: Perm::READ,
            result: Ok(())
        }
    );
    assert!(h.calls().is_empty());
}

// Regressions from the real-kernel oracle (tests/real-kernel: VfioContainerBackend on Linux
// 6.1.0-57 vfio_iommu_type1 with QEMU's intel-iommu and amd-iommu, dma_entry_limit=64).

#[test]
fn type1v1_unmap_starting_inside_a_mapping_unmaps_nothing_as_measured() {
    let mut h = SimHost::new(
        SimHostConfig::vtd()
            .with_flavour(HostFlavour::Type1v1)
            .with_entry_limit(64),
    );
    // "[v1] 2-page mapping X at A: OK", "1-page Y right after X: OK",
    // "from inside X, covering Y: unmap A+4K+0x2000 -> OK size=0 avail=62"
    h.map(A, 0, 2 * K4, Perm::RW).unwrap();
    h.map(A + 2 * K4, 0, K4, Perm::RW).unwrap();
    assert_eq!(h.unmap(A + K4, 2 * K4), Ok(0));
    assert_eq!(h.mapping_count(), 2);
    assert_eq!(h.remaining_entries(), Some(62));
    // "X and Y exactly: unmap A+0x3000 -> OK size=12288 avail=64"
    assert_eq!(h.unmap(A, 3 * K4), Ok(12288));
    assert_eq!(h.remaining_entries(), Some(64));
    // "2-page Z right after X", "covers X, cuts Z: unmap A+0x3000 -> OK size=16384"
    h.map(A, 0, 2 * K4, Perm::RW).unwrap();
    h.map(A + 2 * K4, 0, 2 * K4, Perm::RW).unwrap();
    assert_eq!(h.unmap(A, 3 * K4), Ok(16384));
    assert_eq!(h.mapping_count(), 0);
}

#[test]
fn unbacked_gpa_is_efault_before_the_kernel_checks_as_measured() {
    // VfioContainerBackend translates guest-physical to host-virtual before MAP_DMA, so an
    // unbacked range never reaches the kernel's overlap, count or alignment checks.
    for flavour in [HostFlavour::Type1v2, HostFlavour::Type1v1] {
        let mut h = SimHost::new(SimHostConfig {
            backed: Some(vec![AddrRange::new(0, 0x200_0000)]),
            ..SimHostConfig::vtd()
                .with_flavour(flavour)
                .with_entry_limit(2)
        });
        let unbacked = 0x1000_0000;
        h.map(A, 0, K4, Perm::READ).unwrap();
        // "overlap with unbacked gpa: map A+0x1000 -> gpa 0x10000000 RW: EFAULT"
        assert_eq!(h.map(A, unbacked, K4, Perm::RW), Err(HostError::BadAddress));
        assert_eq!(
            h.map(A + 1, unbacked, K4, Perm::RW),
            Err(HostError::BadAddress)
        );
        h.map(A + K4, 0, K4, Perm::RW).unwrap();
        assert_eq!(h.remaining_entries(), Some(0));
        // "unbacked gpa at full: EFAULT avail=0"; a backed one is ENOSPC.
        assert_eq!(
            h.map(A + 4 * K4, unbacked, K4, Perm::RW),
            Err(HostError::BadAddress)
        );
        assert_eq!(
            h.map(A + 4 * K4, 0, K4, Perm::RW),
            Err(HostError::OutOfResources)
        );
        // Neither READ nor WRITE, size 0 and a wrapping range are still EINVAL first.
        assert_eq!(
            h.map(A, unbacked, K4, Perm::empty()),
            Err(HostError::Invalid)
        );
        assert_eq!(h.map(A, unbacked, 0, Perm::RW), Err(HostError::Invalid));
        assert_eq!(
            h.map(A, u64::MAX - K4 + 1, 2 * K4, Perm::RW),
            Err(HostError::Invalid)
        );
    }
}

#[test]
fn unmap_ending_at_the_top_of_the_space_unmaps_nothing_as_measured() {
    // type1 compares against `iova + size`, which wraps to 0: "unmap from X to 2^64 (iova +
    // size wraps to 0) -> OK size=0", X stays mapped (VT-d and AMD-Vi, v1 and v2).
    let top = u64::MAX - K4 + 1;
    for flavour in [HostFlavour::Type1v2, HostFlavour::Type1v1] {
        let mut h = SimHost::new(
            SimHostConfig::amd_vi()
                .with_flavour(flavour)
                .with_entry_limit(64),
        );
        h.map(A, 0, 2 * K4, Perm::RW).unwrap();
        assert_eq!(h.unmap(A, 0u64.wrapping_sub(A)), Ok(0));
        assert_eq!(h.remaining_entries(), Some(63));
        assert_eq!(h.unmap(A, 2 * K4), Ok(8192));
        // AMD-Vi: "page below the top page: map 0xffffffffffffe000+0x1000 -> OK",
        // "unmap [it, 2^64) -> OK size=0", "unmap it exactly -> OK size=4096".
        assert_eq!(h.map(top - K4, 0, K4, Perm::RW), Ok(()));
        assert_eq!(h.unmap(top - K4, 2 * K4), Ok(0));
        assert_eq!(h.unmap(top - K4, K4), Ok(4096));
        // The top page itself: the kernel maps it (and then cannot unmap it: "map
        // 0xfffffffffffff000+0x1000 -> OK", "unmap it -> OK size=0", and unmap_all with only
        // it mapped -> OK size=0); VfioContainerBackend refuses it, and so does SimHost.
        assert_eq!(h.map(top, 0, K4, Perm::RW), Err(HostError::Invalid));
        assert_eq!(h.remaining_entries(), Some(64));
    }
    // On VT-d the page is outside the 39-bit range in the first place.
    let mut h = host(HostFlavour::Type1v2);
    assert_eq!(h.map(top, 0, K4, Perm::RW), Err(HostError::Invalid));
}
