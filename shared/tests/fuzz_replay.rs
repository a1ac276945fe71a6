//! Replays the fuzz targets on the stable toolchain: every checked-in corpus entry under
//! `fuzz/corpus/<target>/` and a few thousand deterministic pseudo-random inputs. Also shows
//! that the oracles do reject inconsistent states.

use viommu_shared::fuzz_support::{
    self, check_enumeration, check_mappings_match_host, check_record_matches_host,
};
use viommu_shared::host::{HostDma, SimHost, SimHostConfig};
use viommu_shared::pt::Leaf;
use viommu_shared::shadow::{Record, ShadowMapping};
use viommu_shared::{AddrRange, Perm};

fn replay(target: &str, body: fn(&[u8]), random: u64, max_len: usize) {
    fuzz_support::replay::replay(env!("CARGO_MANIFEST_DIR"), target, body, random, max_len);
}

#[test]
fn walker_corpus_and_random_inputs() {
    replay("walker", fuzz_support::walker, 3000, 2048);
}

#[test]
fn shadow_corpus_and_random_inputs() {
    replay("shadow", fuzz_support::shadow, 2000, 512);
}

#[test]
fn enumeration_oracle_rejects_overlap_and_misalignment() {
    let leaf = |iova, size| Leaf {
        iova,
        addr: 0,
        size,
        perm: Perm::RW,
        level: 0,
    };
    let r = AddrRange::new(0, 1 << 30);
    assert!(check_enumeration(&[leaf(0, 4096), leaf(4096, 4096)], r).is_ok());
    assert!(check_enumeration(&[leaf(0, 8192), leaf(4096, 4096)], r).is_err());
    assert!(check_enumeration(&[leaf(4096, 4096), leaf(0, 4096)], r).is_err());
    assert!(check_enumeration(&[leaf(4096, 8192)], r).is_err());
    assert!(check_enumeration(&[leaf(2 << 30, 4096)], r).is_err());
}

#[test]
fn record_oracle_rejects_a_record_that_differs_from_the_host() {
    let mut host = SimHost::new(SimHostConfig::vtd());
    let mut rec = Record::default();
    host.map(0x1000, 0x5000, 0x2000, Perm::RW).unwrap();
    rec.insert(ShadowMapping {
        iova: 0x1000,
        gpa: 0x5000,
        size: 0x2000,
        perm: Perm::RW,
    });
    assert!(check_record_matches_host(&rec, &host).is_ok());
    // A hand-made inconsistent state: the record says read-only.
    let mut bad = Record::default();
    bad.insert(ShadowMapping {
        iova: 0x1000,
        gpa: 0x5000,
        size: 0x2000,
        perm: Perm::READ,
    });
    assert!(check_record_matches_host(&bad, &host).is_err());
    // Or misses a mapping the host holds.
    host.map(0x8000, 0x9000, 0x1000, Perm::RW).unwrap();
    assert!(check_record_matches_host(&rec, &host).is_err());
    // The same oracle over a model's mapping list: equal, one short, one too many.
    let mut maps: Vec<ShadowMapping> = rec.iter().copied().collect();
    assert!(check_mappings_match_host(&maps, &host).is_err());
    maps.push(ShadowMapping {
        iova: 0x8000,
        gpa: 0x9000,
        size: 0x1000,
        perm: Perm::RW,
    });
    assert!(check_mappings_match_host(&maps, &host).is_ok());
    maps.push(ShadowMapping {
        iova: 0xa000,
        gpa: 0x9000,
        size: 0x1000,
        perm: Perm::RW,
    });
    assert!(check_mappings_match_host(&maps, &host).is_err());
}
