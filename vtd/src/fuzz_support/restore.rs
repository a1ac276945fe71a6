//! Fuzz target `restore`, VT-d part: a hostile snapshot stream restored into a unit with a
//! passthrough device attached.
//!
//! The stream is derived from a valid one (a booted unit with a fault recorded) by
//! [`hostile_stream`]. Oracles: restoring never panics; a refused stream gives
//! [`VtdError::Snapshot`] and leaves the unit exactly in its reset state; an accepted one
//! (possibly with host out-of-resources) saves back to a state that restores to itself; in
//! both cases the host holds exactly the shadow's record, and the unit keeps working
//! (DMA, invalidations, detach returning every host entry).

use super::model::{DEV, Op, Setup, World};
use crate::{Vtd, VtdError};
use std::sync::Arc;
use viommu_shared::fuzz_support::hostile_stream;
use viommu_shared::regs::RecordingMsiSink;

fn setup(scalable: bool) -> Setup {
    Setup {
        scalable,
        levels: 1,
        flavour: 0,
        limit: 63,
        blank: false,
    }
}

/// The valid stream inputs start from: a booted unit (scalable mode if bit 7 of `sel`) with a
/// fault recorded.
pub fn valid_stream(sel: u8) -> Result<Vec<u8>, String> {
    let mut source = World::new(setup(sel & 0x80 != 0))?;
    source.step(&Op::Dma {
        sid: DEV,
        pasid: None,
        iova: 0x4_0000,
        write: true,
    })?;
    Ok(source.vtd.save_bytes())
}

/// Runs one input (`sel`, then [`hostile_stream`]'s input); the first oracle failure is
/// returned.
pub fn run(data: &[u8]) -> Result<(), String> {
    let sel = data.first().copied().unwrap_or(0);
    let scalable = sel & 0x80 != 0;
    let stream = hostile_stream(&valid_stream(sel)?, data.get(1..).unwrap_or(&[]));
    let mut dst = World::new(setup(scalable))?;
    let reset = Vtd::new(
        dst.vtd.config().clone(),
        dst.mem.clone(),
        Arc::new(RecordingMsiSink::new()),
    )
    .save();
    match dst.vtd.restore_bytes(&stream) {
        Err(VtdError::Snapshot(_)) => {
            if dst.vtd.save() != reset {
                return Err("a refused snapshot left the unit out of its reset state".into());
            }
        }
        Ok(()) | Err(VtdError::HostOutOfResources { .. }) => {
            let saved = dst.vtd.save();
            match dst.vtd.restore_bytes(&saved.to_bytes()) {
                Ok(()) | Err(VtdError::HostOutOfResources { .. }) => {}
                Err(e) => return Err(format!("an accepted state does not restore: {e:?}")),
            }
            if dst.vtd.save() != saved {
                return Err("save/restore of an accepted state is not the identity".into());
            }
        }
        Err(e) => return Err(format!("restore: unexpected error {e:?}")),
    }
    dst.check().map_err(|e| format!("after restore: {e}"))?;
    for op in [
        Op::Dma {
            sid: DEV,
            pasid: None,
            iova: 0x5000,
            write: false,
        },
        Op::Flush {
            index: 0,
            am: 0,
            global: true,
        },
        Op::Dma {
            sid: DEV,
            pasid: None,
            iova: 0x1_0000,
            write: true,
        },
    ] {
        dst.step(&op)
            .map_err(|e| format!("{op:?} after restore: {e}"))?;
    }
    dst.detach()
}

/// The fuzz body: panics when an oracle fails.
pub fn restore(data: &[u8]) {
    if let Err(e) = run(data) {
        panic!("vtd restore oracle: {e}\ninput: {data:02x?}");
    }
}
