//! Fuzz target `restore`, zPCI part: a hostile snapshot stream restored into a model with a
//! passthrough function attached.
//!
//! The stream is derived from a valid one (a function enabled with tables registered and
//! mapping pages, measuring, with an error event pending) by [`hostile_stream`]. Oracles:
//! restoring never panics; a refused stream gives [`ModelError::Snapshot`] and leaves every
//! function in its initial state with no events; an accepted one (possibly with host
//! exhaustion) saves back to a state that restores to itself; in both cases the host holds
//! exactly the shadow's record, and the model keeps working (RPCIT, DMA, unplug returning
//! every host entry).

use super::model::{FID, Op, SDMA, Setup, World, plug};
use crate::{ModelError, Zpci};
use std::sync::Arc;
use viommu_shared::fuzz_support::hostile_stream;
use viommu_shared::regs::RecordingMsiSink;

fn setup(designation: u8, relaxed: bool) -> Setup {
    Setup {
        designation,
        limit: 1, // 24 entries
        reclaim: false,
        relaxed,
        blank: false,
    }
}

/// The valid stream inputs start from: a function enabled with tables (designation from bits
/// 7:6 of `sel`, relaxed translation offered if bit 5) registered and mapping pages, with an
/// error event pending.
pub fn valid_stream(sel: u8) -> Result<Vec<u8>, String> {
    let mut source = World::new(setup(sel >> 6, sel & 0x20 != 0))?;
    for op in [
        Op::Map {
            at: 3,
            pages: 20,
            gpa: 5,
            ro: false,
        },
        Op::Rpcit {
            at: 0,
            pages: 30,
            skew: 0,
        },
        Op::Dma {
            iova: SDMA + 0x80_0000,
            write: false,
        },
    ] {
        source.step(&op)?;
    }
    Ok(source.zpci.save_bytes())
}

/// Runs one input (`sel`, then [`hostile_stream`]'s input); the first oracle failure is
/// returned.
pub fn run(data: &[u8]) -> Result<(), String> {
    let sel = data.first().copied().unwrap_or(0);
    let setup = setup(sel >> 6, sel & 0x20 != 0);
    let stream = hostile_stream(&valid_stream(sel)?, data.get(1..).unwrap_or(&[]));
    let mut dst = World::new(setup)?;
    let fresh = Zpci::new(
        dst.zpci.config().clone(),
        dst.mem.clone(),
        Arc::new(RecordingMsiSink::new()),
    );
    plug(&fresh)?;
    let reset = fresh.save();
    match dst.zpci.restore_bytes(&stream) {
        Err(ModelError::Snapshot(_)) => {
            if dst.zpci.save() != reset {
                return Err(format!(
                    "a refused snapshot left the model out of its reset state:\n{:?}\n{reset:?}",
                    dst.zpci.save()
                ));
            }
        }
        Ok(())
        | Err(ModelError::HostOutOfResources { .. })
        | Err(ModelError::HostRefused { .. }) => {
            let saved = dst.zpci.save();
            match dst.zpci.restore_bytes(&saved.to_bytes()) {
                Ok(())
                | Err(ModelError::HostOutOfResources { .. })
                | Err(ModelError::HostRefused { .. }) => {}
                Err(e) => return Err(format!("an accepted state does not restore: {e:?}")),
            }
            if dst.zpci.save() != saved {
                return Err("save/restore of an accepted state is not the identity".into());
            }
        }
        Err(e) => return Err(format!("restore: unexpected error {e:?}")),
    }
    // The guest's tables are what the source's were, but the restored registration,
    // handle and state may be anything: the end-of-input truth no longer applies.
    dst.pristine = false;
    dst.check().map_err(|e| format!("after restore: {e}"))?;
    for op in [
        Op::Rpcit {
            at: 0,
            pages: 599,
            skew: 0,
        },
        Op::Dma {
            iova: SDMA + 0x4000,
            write: true,
        },
    ] {
        dst.step(&op)
            .map_err(|e| format!("{op:?} after restore: {e}"))?;
    }
    let _ = dst.zpci.function(FID);
    dst.finish()
}

/// The fuzz body: panics when an oracle fails.
pub fn restore(data: &[u8]) {
    if let Err(e) = run(data) {
        panic!("zpci restore oracle: {e}\ninput: {data:02x?}");
    }
}
