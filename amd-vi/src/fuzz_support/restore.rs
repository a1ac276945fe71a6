//! Fuzz target `restore`, AMD-Vi part: a hostile snapshot stream restored into an IOMMU with
//! passthrough devices attached.
//!
//! The stream is derived from a valid one (an initialised IOMMU with an event logged) by
//! [`hostile_stream`]. Oracles: restoring never panics; a refused stream gives
//! [`AmdViError::Snapshot`] and leaves the IOMMU exactly in its reset state; an accepted one
//! (possibly with host out-of-resources) saves back to a state that restores to itself; in
//! both cases every host holds exactly its shadow's record, and the IOMMU keeps working
//! (DMA, commands, detach returning every host entry).

use super::model::{Op, Setup, World};
use crate::{AmdVi, AmdViError};
use std::sync::Arc;
use viommu_shared::fuzz_support::hostile_stream;
use viommu_shared::regs::RecordingMsiSink;

fn setup(levels: u8) -> Setup {
    Setup {
        levels,
        flavour: 0,
        limit: 31,
        blank: false,
    }
}

/// The valid stream inputs start from: an initialised IOMMU (table depth from bits 7:6 of
/// `sel`) with an IO_PAGE_FAULT logged.
pub fn valid_stream(sel: u8) -> Result<Vec<u8>, String> {
    let mut source = World::new(setup(sel >> 6))?;
    source.step(&Op::Dma {
        devid: 1,
        iova: 0x4_0000,
        write: true,
    })?;
    Ok(source.iommu.save_bytes())
}

/// Runs one input (`sel`, then [`hostile_stream`]'s input); the first oracle failure is
/// returned.
pub fn run(data: &[u8]) -> Result<(), String> {
    let sel = data.first().copied().unwrap_or(0);
    let levels = sel >> 6;
    let stream = hostile_stream(&valid_stream(sel)?, data.get(1..).unwrap_or(&[]));
    let mut dst = World::new(setup(levels))?;
    let reset = AmdVi::new(
        dst.iommu.config().clone(),
        dst.mem.clone(),
        Arc::new(RecordingMsiSink::new()),
    )
    .save();
    match dst.iommu.restore_bytes(&stream) {
        Err(AmdViError::Snapshot(_)) => {
            if dst.iommu.save() != reset {
                return Err("a refused snapshot left the IOMMU out of its reset state".into());
            }
        }
        Ok(()) | Err(AmdViError::HostOutOfResources { .. }) => {
            let saved = dst.iommu.save();
            match dst.iommu.restore_bytes(&saved.to_bytes()) {
                Ok(()) | Err(AmdViError::HostOutOfResources { .. }) => {}
                Err(e) => return Err(format!("an accepted state does not restore: {e:?}")),
            }
            if dst.iommu.save() != saved {
                return Err("save/restore of an accepted state is not the identity".into());
            }
        }
        Err(e) => return Err(format!("restore: unexpected error {e:?}")),
    }
    dst.check().map_err(|e| format!("after restore: {e}"))?;
    for op in [
        Op::Dma {
            devid: 1,
            iova: 0x5000,
            write: false,
        },
        Op::Flush {
            domain: 1,
            index: 0,
            order: 9,
            all: true,
        },
        Op::Dma {
            devid: 2,
            iova: 0x1_0000,
            write: true,
        },
    ] {
        dst.step(&op)
            .map_err(|e| format!("{op:?} after restore: {e}"))?;
    }
    for i in 0..dst.hosts.len() {
        dst.detach(i)?;
    }
    Ok(())
}

/// The fuzz body: panics when an oracle fails.
pub fn restore(data: &[u8]) {
    if let Err(e) = run(data) {
        panic!("amd-vi restore oracle: {e}\ninput: {data:02x?}");
    }
}
