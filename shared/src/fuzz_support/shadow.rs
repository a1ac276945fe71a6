//! Fuzz target: the shadow engine against SimHost, all flavours, small entry limits.

use super::oracle::check_record_matches_host;
use crate::addr::AddrRange;
use crate::host::{HostDma, HostFlavour, SharedSimHost, SimHostConfig};
use crate::perm::Perm;
use crate::pt::{ByteOrder, Walker};
use crate::shadow::{ShadowConfig, ShadowEngine, ShadowError};
use crate::testing::guest::{Edit, GuestTables, PAGE, canonical};
use crate::testing::{RadixFormat, guest_memory};
use arbitrary::{Arbitrary, Unstructured};
use std::collections::BTreeSet;

/// IOVA space exercised: 4 MiB.
const SPACE_PAGES: u64 = 1024;
const TABLES: AddrRange = AddrRange::new(0x100_0000, 0x120_0000);

#[derive(Arbitrary, Debug)]
enum Step {
    Map {
        at: u16,
        pages: u8,
        gpa: u8,
        perm: u8,
        invalidate: bool,
    },
    MapBig {
        slot: u8,
        frame: u8,
        perm: u8,
        invalidate: bool,
    },
    Unmap {
        at: u16,
        pages: u8,
        invalidate: bool,
    },
    Sync {
        at: u16,
        pages: u16,
    },
    Reclaim,
}

#[derive(Arbitrary, Debug)]
struct Input {
    flavour: u8,
    limit: u8,
    max_run_shift: u8,
    steps: Vec<Step>,
}

fn perm(p: u8) -> Perm {
    [Perm::RW, Perm::READ, Perm::WRITE][usize::from(p % 3)]
}

/// Runs one input: guest edits, syncs and reclaims; panics if an oracle fails.
pub fn shadow(data: &[u8]) {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let flavour = [
        HostFlavour::Type1v2,
        HostFlavour::Type1v1,
        HostFlavour::Iommufd,
    ][usize::from(input.flavour % 3)];
    let limit = u32::from(input.limit % 64) + 1;
    let max_run = 4096u64 << (input.max_run_shift % 12);
    let mem = guest_memory(&[(TABLES.start, TABLES.len() as usize)]);
    let fmt = RadixFormat::x86_like(4, ByteOrder::Little);
    let Ok(mut g) = GuestTables::new(&fmt, &mem, TABLES, SPACE_PAGES) else {
        return;
    };
    let host = SharedSimHost::new(
        SimHostConfig::vtd()
            .with_flavour(flavour)
            .with_entry_limit(limit),
    );
    let mut eng = ShadowEngine::new(host.clone(), ShadowConfig::default().with_max_run(max_run));
    let root = g.root();
    for step in input.steps.iter().take(64) {
        let (edit, sync) = match *step {
            Step::Map {
                at,
                pages,
                gpa,
                perm: p,
                invalidate,
            } => (
                Some(Edit::Map {
                    at: u64::from(at),
                    pages: u64::from(pages % 64) + 1,
                    gpa: u64::from(gpa),
                    perm: perm(p),
                }),
                invalidate,
            ),
            Step::MapBig {
                slot,
                frame,
                perm: p,
                invalidate,
            } => (
                Some(Edit::MapBig {
                    slot: u64::from(slot),
                    frame: u64::from(frame % 8),
                    perm: perm(p),
                }),
                invalidate,
            ),
            Step::Unmap {
                at,
                pages,
                invalidate,
            } => (
                Some(Edit::Unmap {
                    at: u64::from(at),
                    pages: u64::from(pages) + 1,
                }),
                invalidate,
            ),
            Step::Sync { at, pages } => {
                let r = AddrRange::from_len(u64::from(at) * PAGE, u64::from(pages) * PAGE);
                let view = Walker::new(&fmt, &mem, root);
                check(eng.sync(&view, r));
                (None, false)
            }
            Step::Reclaim => {
                let view = Walker::new(&fmt, &mem, root);
                let ok = check(eng.reclaim(&view));
                if ok {
                    let want = canonical(g.truth(), max_run, &[]);
                    let got: BTreeSet<_> = host
                        .with(|h| h.mappings())
                        .iter()
                        .map(|m| (m.iova, m.gpa, m.size, m.perm))
                        .collect();
                    assert_eq!(got, want, "host != guest truth after a complete reclaim");
                }
                (None, false)
            }
        };
        if let Some(e) = edit {
            let Ok(inv) = g.apply(&e) else { return };
            if sync {
                let view = Walker::new(&fmt, &mem, root);
                check(eng.sync_or_reclaim(&view, inv));
            }
        }
        if let Err(e) = host.with(|h| check_record_matches_host(eng.record(), h)) {
            panic!("record oracle: {e}");
        }
    }
    if let Err(e) = eng.teardown() {
        panic!("teardown: {e}");
    }
    let (count, remaining) = host.with(|h| (h.mapping_count(), h.remaining_entries()));
    assert_eq!(count, 0, "teardown left host mappings");
    if flavour != HostFlavour::Iommufd {
        assert_eq!(remaining, Some(limit), "host entries leaked");
    }
}

/// Out-of-resources is an expected outcome; anything else is a bug. Returns whether the
/// sync completed.
fn check<T>(r: Result<T, ShadowError>) -> bool {
    match r {
        Ok(_) => true,
        Err(ShadowError::OutOfResources { .. }) => false,
        Err(e) => panic!("unexpected shadow error: {e}"),
    }
}
