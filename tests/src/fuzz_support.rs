//! Body of the `restore` fuzz target, which covers the three models' restore paths: the
//! first byte picks the model (`% 3`: VT-d, AMD-Vi, zPCI), the rest goes to that model's
//! `fuzz_support::restore` (a configuration selector, then a hostile stream derived from a
//! valid snapshot; see `viommu_shared::fuzz_support::hostile_stream`). It lives here, in the
//! one crate that depends on every model, so that `cargo test` replays
//! `fuzz/corpus/restore/` (`tests/fuzz_replay.rs`).

/// The fuzz body: panics when an oracle fails.
pub fn restore(data: &[u8]) {
    let Some((&model, rest)) = data.split_first() else {
        return;
    };
    match model % 3 {
        0 => viommu_vtd::fuzz_support::restore(rest),
        1 => viommu_amd_vi::fuzz_support::restore(rest),
        _ => viommu_s390_zpci::fuzz_support::restore(rest),
    }
}

/// Seed inputs: for each model and two configurations, the valid stream itself (raw) and
/// one input of each mutation kind.
pub fn seeds() -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for model in 0u8..3 {
        for sel in [0x00u8, 0xa0] {
            let valid = match model {
                0 => viommu_vtd::fuzz_support::restore::valid_stream(sel)?,
                1 => viommu_amd_vi::fuzz_support::restore::valid_stream(sel)?,
                _ => viommu_s390_zpci::fuzz_support::restore::valid_stream(sel)?,
            };
            let mut raw = vec![model, sel, 0];
            raw.extend_from_slice(&valid);
            out.push(raw);
            out.push(vec![model, sel, 1, 10, 0, b'9', 40, 0, b'"']);
            out.push(vec![
                model, sel, 2, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0x45, 0xff, 0, 0, 0,
            ]);
            out.push(vec![model, sel, 3, 2, 0, 7, 1, 30, 2]);
        }
    }
    Ok(out)
}
