//! The seam between the runner and a model: [`ScenarioTarget`], and [`make_target`] which
//! builds one by name.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use viommu_shared::Perm;
use viommu_shared::host::SharedSimHost;
use viommu_shared::irq::{InterruptRemapper, IrFault, Resolution};
use viommu_shared::regs::{Msi, RecordingMsiSink};
use vm_memory::GuestMemoryMmap;

/// A model error the scenario can expect (`expect-error=KIND`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetError {
    /// Stable kind name, e.g. `host-out-of-resources`, `unsupported`, `bad-option`.
    pub kind: String,
    /// Details for the message.
    pub detail: String,
}

impl TargetError {
    /// An error of `kind`.
    pub fn new(kind: &str, detail: impl Into<String>) -> Self {
        TargetError {
            kind: kind.into(),
            detail: detail.into(),
        }
    }

    /// The operation does not exist for this model.
    pub fn unsupported(what: &str) -> Self {
        Self::new(
            "unsupported",
            format!("{what} is not supported by this model"),
        )
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// A DMA request from a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaReq {
    /// Requester id (PCI) or function id (s390).
    pub dev: u32,
    /// PASID, if any.
    pub pasid: Option<u32>,
    /// First IOVA.
    pub iova: u64,
    /// Bytes.
    pub len: u64,
    /// What the access needs.
    pub perm: Perm,
}

/// What an intercepted instruction produced: named fields such as `cc`, `status`, `value`.
pub type InsnOutcome = BTreeMap<String, u64>;

/// What the runner needs from a model. Adapters in this crate implement it over each model's
/// public API; models themselves do not depend on this crate.
pub trait ScenarioTarget {
    /// A guest MMIO read of `len` bytes at register `offset`.
    fn mmio_read(&mut self, offset: u64, len: usize) -> Result<u64, TargetError>;

    /// A guest MMIO write. `Err` is a typed error the model returns to the VMM (for example
    /// the host ran out of DMA entries while processing an invalidation).
    fn mmio_write(&mut self, offset: u64, len: usize, value: u64) -> Result<(), TargetError>;

    /// Translates a DMA range: the guest-physical pieces in order, or the fault reason (the
    /// model also records its architected fault, which scenarios check through registers,
    /// event logs or MSIs).
    fn dma(&mut self, req: &DmaReq) -> Result<Vec<(u64, u64)>, String>;

    /// Makes `dev` a passthrough device whose address space is shadowed into `host`.
    fn attach_host(&mut self, dev: u32, host: SharedSimHost) -> Result<(), TargetError>;

    /// The model's interrupt remapper (x86 models that remap interrupts); the runner resolves
    /// `irq remap` / `irq route` through it and listens to its invalidations.
    fn irq_remapper(&self) -> Option<Arc<dyn InterruptRemapper>> {
        None
    }

    /// An emulated device's MSI delivered through the model (remapped as an interrupt
    /// request, the result sent to the model's interrupt sink).
    fn irq_deliver(
        &mut self,
        _source: u16,
        _msi: Msi,
    ) -> Result<Result<Resolution, IrFault>, TargetError> {
        Err(TargetError::unsupported("irq deliver"))
    }

    /// An intercepted instruction (s390). Models without instructions keep the default.
    fn instruction(
        &mut self,
        name: &str,
        _args: &BTreeMap<String, u64>,
    ) -> Result<InsnOutcome, TargetError> {
        Err(TargetError::unsupported(name))
    }
}

/// What a model is built with.
pub struct TargetEnv {
    /// Guest RAM.
    pub mem: GuestMemoryMmap,
    /// Where the model's interrupts go.
    pub msi: Arc<RecordingMsiSink>,
}

/// Builds the model `name` with `opts` (`key=value` from the `model` line).
pub fn make_target(
    name: &str,
    opts: &[(String, String)],
    env: TargetEnv,
) -> Result<Box<dyn ScenarioTarget>, String> {
    match name {
        "vtd" => Ok(Box::new(crate::vtd::VtdTarget::new(opts, env)?)),
        "amd-vi" => Ok(Box::new(crate::amd_vi::AmdViTarget::new(opts, env)?)),
        "zpci" => Ok(Box::new(crate::zpci::ZpciTarget::new(opts, env)?)),
        _ => Err(format!("unknown model '{name}'")),
    }
}

/// Why [`translate_pieces`] stopped.
#[derive(Clone, Debug)]
pub enum PiecesError {
    /// `iova + len` passes the top of the 64-bit space.
    Wraps,
    /// The model answered with a translation that does not cover the address or grant the
    /// access (a model bug the scenario should see).
    Malformed(String),
    /// The model refused the page at this IOVA; the adapter names the architected fault
    /// from what the model recorded.
    Fault(u64),
}

impl PiecesError {
    /// The runner's text for a non-fault stop; `Fault` is named by `fault_name`.
    pub fn describe(self, fault_name: impl FnOnce(u64) -> String) -> String {
        match self {
            PiecesError::Wraps => "dma range wraps around".into(),
            PiecesError::Malformed(m) => m,
            PiecesError::Fault(iova) => fault_name(iova),
        }
    }
}

/// Translates a DMA request page by page through a model's `DmaTranslate`, merging
/// contiguous guest-physical pieces: what every adapter's [`ScenarioTarget::dma`] does
/// before naming a fault its own way.
pub fn translate_pieces(
    model: &dyn viommu_shared::dma::DmaTranslate,
    req: &DmaReq,
) -> Result<Vec<(u64, u64)>, PiecesError> {
    let end = req.iova.checked_add(req.len).ok_or(PiecesError::Wraps)?;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut at = req.iova;
    while at < end {
        let t = model
            .translate(&viommu_shared::dma::DmaRequest {
                requester_id: req.dev,
                pasid: req.pasid,
                iova: at,
                perm: req.perm,
            })
            .map_err(|_| PiecesError::Fault(at))?;
        if !t.is_well_formed(at) || !t.perm.allows(req.perm) {
            return Err(PiecesError::Malformed(format!(
                "malformed translation {t:?} for {at:#x}"
            )));
        }
        let gpa = t.addr + (at - t.iova);
        let n = t.iova.saturating_add(t.size).min(end) - at;
        match out.last_mut() {
            Some((g, l)) if *g + *l == gpa => *l += n,
            _ => out.push((gpa, n)),
        }
        at += n;
    }
    Ok(out)
}
