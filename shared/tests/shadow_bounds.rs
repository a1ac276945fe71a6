//! A guest view that would need more host mappings than the engine may hold is laid out only
//! up to `max_mappings`; the rest is reported as out of resources, never planned in memory.

use viommu_shared::AddrRange;
use viommu_shared::host::{SharedSimHost, SimHostConfig};
use viommu_shared::shadow::{IdentityView, ShadowConfig, ShadowEngine, ShadowError};

#[test]
fn huge_view_is_bounded_by_max_mappings() {
    let host = SharedSimHost::new(SimHostConfig::amd_vi());
    let config = ShadowConfig {
        max_mappings: 1000,
        ..ShadowConfig::default()
    };
    let mut eng = ShadowEngine::new(host.clone(), config);
    // 1 TiB identity-mapped: 524288 pieces of 2 MiB.
    let view = IdentityView::new(&[AddrRange::new(0, 1 << 40)]);
    match eng.reclaim(&view) {
        Err(ShadowError::OutOfResources { report, not_mapped }) => {
            assert_eq!(report.map_calls, 1000);
            assert_eq!(not_mapped.first().map(|r| r.iova), Some(1000 * (2 << 20)));
            // Everything is accounted for: mapped, reserved on this host (the MSI window and
            // AMD's HyperTransport hole), or reported as not mapped.
            let left: u64 = not_mapped.iter().map(|r| r.size).sum();
            let reserved: u64 = report.unmappable.iter().map(|r| r.size).sum();
            assert_eq!(left + reserved, (1 << 40) - 1000 * (2 << 20));
            assert_eq!(reserved, (1 << 20) + (12 << 30));
        }
        other => panic!("expected out of resources, got {other:?}"),
    }
    assert_eq!(host.with(|h| h.mapping_count()), 1000);
    eng.teardown().unwrap();
    assert_eq!(host.with(|h| h.mapping_count()), 0);
}
