//! [`RemappingMsiSink`]: how a VMM wires an emulated device's MSIs through interrupt
//! remapping.
//!
//! An emulated device behind an IOMMU signals an interrupt by a DWORD write to 0xFEEx_xxxx.
//! That write is an interrupt *request*, not DMA (VT-d spec 3.14, AMD-Vi "interrupt
//! requests"): the IOMMU remaps it, and records a fault if the guest's tables refuse it. A VMM
//! gives each emulated device a [`RemappingMsiSink`] (tagged with the device's requester id)
//! wherever it would hand the device its plain interrupt output: every MSI the device sends
//! is remapped in [`RemapMode::Request`] and, if allowed, delivered to the VMM's interrupt
//! controller as a compatibility-format MSI ([`Interrupt::to_msi`]).
//!
//! Models refuse DMA to the interrupt window through their `DmaTranslate` path, so a device
//! that writes its MSI through `IommuMemory` gets an error instead of a silent memory write:
//! send it through this sink.
//!
//! [`Interrupt::to_msi`]: super::Interrupt::to_msi

use super::remapper::{InterruptRemapper, IrFault, RemapMode, Resolution};
use crate::regs::{Msi, MsiSink};
use std::sync::Arc;

/// The interrupt output of one emulated device behind an interrupt remapper.
pub struct RemappingMsiSink {
    remapper: Arc<dyn InterruptRemapper>,
    source: u16,
    output: Arc<dyn MsiSink>,
}

impl RemappingMsiSink {
    /// Interrupts of requester `source` remapped by `remapper`, delivered to `output` (the
    /// VMM's interrupt controller).
    pub fn new(
        remapper: Arc<dyn InterruptRemapper>,
        source: u16,
        output: Arc<dyn MsiSink>,
    ) -> Self {
        RemappingMsiSink {
            remapper,
            source,
            output,
        }
    }

    /// The requester id the device's interrupts carry.
    pub fn source(&self) -> u16 {
        self.source
    }

    /// Remaps `msi` as an interrupt request and delivers the result; returns what happened
    /// (a fault has already been recorded by the model as its architecture says).
    pub fn deliver(&self, msi: Msi) -> Result<Resolution, IrFault> {
        let r = self.remapper.remap(self.source, msi, RemapMode::Request)?;
        self.output.send(r.interrupt.to_msi());
        Ok(r)
    }
}

impl MsiSink for RemappingMsiSink {
    /// Remaps and delivers; a refused interrupt is dropped (the model recorded its fault).
    fn send(&self, msi: Msi) {
        let _ = self.deliver(msi);
    }
}

#[cfg(test)]
mod tests {
    use super::super::interrupt::Interrupt;
    use super::super::remapper::{IrFaultKind, IrListener};
    use super::*;
    use crate::regs::RecordingMsiSink;
    use std::sync::Mutex;

    /// Vector = data + 0x20 for source 1; every other source is refused.
    #[derive(Default)]
    struct OnlyOne {
        modes: Mutex<Vec<RemapMode>>,
    }

    impl InterruptRemapper for OnlyOne {
        fn remap(&self, source: u16, msi: Msi, mode: RemapMode) -> Result<Resolution, IrFault> {
            self.modes.lock().unwrap().push(mode);
            if source != 1 {
                return Err(IrFault {
                    kind: IrFaultKind::SourceMismatch,
                    code: 0x26,
                    index: Some(0),
                    recorded: true,
                });
            }
            let mut i = Interrupt::from_compat_msi(msi).unwrap();
            i.vector += 0x20;
            Ok(Resolution {
                interrupt: i,
                index: Some(0),
            })
        }

        fn add_listener(&self, _listener: Arc<dyn IrListener>) {}
    }

    #[test]
    fn remaps_as_request_and_delivers_only_what_is_allowed() {
        let remapper = Arc::new(OnlyOne::default());
        let out = Arc::new(RecordingMsiSink::new());
        let good = RemappingMsiSink::new(remapper.clone(), 1, out.clone());
        let bad = RemappingMsiSink::new(remapper.clone(), 2, out.clone());
        let msi = Msi {
            address: 0xfee0_3000,
            data: 0x11,
        };
        good.send(msi);
        assert_eq!(
            out.take(),
            vec![Msi {
                address: 0xfee0_3000,
                data: 0x31
            }]
        );
        assert_eq!(bad.deliver(msi).unwrap_err().code, 0x26);
        assert!(out.take().is_empty());
        assert_eq!(good.source(), 1);
        assert_eq!(*remapper.modes.lock().unwrap(), [RemapMode::Request; 2]);
    }
}
