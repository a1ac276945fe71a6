//! Oracles: checks that return what is wrong instead of panicking, so a test can show that
//! they do reject inconsistent states.

use crate::addr::AddrRange;
use crate::host::SimHost;
use crate::pt::{Leaf, WalkFault};
use crate::shadow::{Record, ShadowMapping};

/// Leaves from one enumeration of `range` must be in IOVA order, non-overlapping,
/// power-of-two sized (at least 4 KiB), aligned to their size, and intersect `range`.
pub fn check_enumeration(leaves: &[Leaf], range: AddrRange) -> Result<(), String> {
    let mut prev_end: Option<u64> = None;
    for l in leaves {
        if !l.size.is_power_of_two() || l.size < 4096 || !l.iova.is_multiple_of(l.size) {
            return Err(format!("leaf {l:?}: bad size or alignment"));
        }
        if !l.iova_range().overlaps(&range) {
            return Err(format!("leaf {l:?} outside {range}"));
        }
        if let Some(end) = prev_end
            && l.iova < end
        {
            return Err(format!(
                "leaf {l:?} overlaps or precedes the previous one (ends {end:#x})"
            ));
        }
        prev_end = Some(l.iova.saturating_add(l.size));
    }
    Ok(())
}

/// The engine's record must equal what the host holds, mapping for mapping.
pub fn check_record_matches_host(record: &Record, host: &SimHost) -> Result<(), String> {
    check_mappings_match_host(record.iter(), host)
}

/// `mappings`, in IOVA order (as a [`Record`] lists them, or a model's `host_mappings`), must
/// equal what the host holds, mapping for mapping, permissions included. Compares in one pass
/// without copying either side (the model targets check this after every step).
pub fn check_mappings_match_host<'a, I>(mappings: I, host: &SimHost) -> Result<(), String>
where
    I: IntoIterator<Item = &'a ShadowMapping> + Clone,
{
    let mut ours = mappings.clone().into_iter();
    let mut theirs = host.iter_mappings();
    let mut perms_equal = true;
    loop {
        match (ours.next(), theirs.next()) {
            (None, None) => break,
            (Some(a), Some(b)) if (a.iova, a.gpa, a.size) == (b.iova, b.gpa, b.size) => {
                perms_equal &= a.perm == b.perm;
            }
            _ => {
                let rec: Vec<(u64, u64, u64)> = mappings
                    .into_iter()
                    .map(|m| (m.iova, m.gpa, m.size))
                    .collect();
                let got: Vec<(u64, u64, u64)> = host
                    .iter_mappings()
                    .map(|m| (m.iova, m.gpa, m.size))
                    .collect();
                return Err(format!("record {rec:x?} != host {got:x?}"));
            }
        }
    }
    if !perms_equal {
        return Err("record and host disagree on permissions".into());
    }
    Ok(())
}

/// Lookups must agree with one enumeration `leaves` of `range` (`complete` when it did not
/// stop at the work limit), for formats whose leaves never exceed their slot: a lookup of the
/// first in-range address of each leaf (up to 64) finds that leaf, and every successful
/// lookup of `probes` contains its address and, in a complete range, was enumerated.
pub fn check_lookups(
    lookup: &dyn Fn(u64) -> Result<Leaf, WalkFault>,
    range: AddrRange,
    leaves: &[Leaf],
    complete: bool,
    probes: &[u64],
) -> Result<(), String> {
    for l in leaves.iter().take(64) {
        let at = l.iova.max(range.start);
        match lookup(at) {
            Ok(found) if found == *l => {}
            other => {
                return Err(format!(
                    "lookup({at:#x}) = {other:?}, enumeration said {l:?}"
                ));
            }
        }
    }
    for &a in probes {
        if let Ok(found) = lookup(a) {
            if !found.iova_range().contains(a) {
                return Err(format!("lookup({a:#x}) = {found:?} does not contain it"));
            }
            if complete && range.contains(a) && !leaves.contains(&found) {
                return Err(format!(
                    "lookup({a:#x}) = {found:?} but the complete enumeration missed it"
                ));
            }
        }
    }
    Ok(())
}
