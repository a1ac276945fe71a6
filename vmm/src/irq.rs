//! Interrupt delivery: which irqchip the VM uses ([`IrqMode`]) and the remapped interrupt
//! sources of split mode ([`RemappedSource`]: a device or the IO-APIC whose messages go
//! through the IOMMU's interrupt remapper before `KVM_SIGNAL_MSI`), with their counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use viommu_shared::irq::{InterruptRemapper, RemappingMsiSink};
use viommu_shared::regs::{Msi, MsiSink};

/// Where the IO-APIC lives and how interrupts reach the local APIC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IrqMode {
    /// KVM's in-kernel PIC, IO-APIC and PIT (`KVM_CREATE_IRQCHIP`); device MSIs go to KVM
    /// unremapped and the IOMMU does not claim interrupt remapping (guests need
    /// `intremap=off`).
    #[default]
    Kernel,
    /// Split irqchip (`KVM_CAP_SPLIT_IRQCHIP`, as QEMU's `kernel-irqchip=split` and Cloud
    /// Hypervisor): only the local APIC in KVM, with the x2APIC API (32-bit destinations);
    /// the VMM's own IO-APIC ([`crate::ioapic`]); no PIC or PIT. Every IO-APIC and device
    /// message goes through the IOMMU's interrupt remapper, which the ACPI table claims.
    Split,
}

impl std::str::FromStr for IrqMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kernel" => Ok(IrqMode::Kernel),
            "split" => Ok(IrqMode::Split),
            _ => Err(format!("unknown irqchip mode '{s}' (kernel, split)")),
        }
    }
}

/// What happened to one source's interrupt requests.
#[derive(Debug, Default)]
pub struct IrCounters {
    /// Remapped through a remapping-table entry.
    pub remapped: AtomicU64,
    /// Passed through unremapped (remapping off, or a compatibility-format message
    /// allowed).
    pub passed: AtomicU64,
    /// Refused by the remapper (its fault is recorded as the architecture says).
    pub refused: AtomicU64,
}

/// An interrupt source behind the IOMMU: its messages are interrupt requests with its
/// requester id, remapped by the model and then delivered to the VMM's interrupt
/// controller; every outcome is counted.
pub struct RemappedSource {
    sink: RemappingMsiSink,
    counters: Arc<IrCounters>,
}

impl RemappedSource {
    /// Requests of `source` remapped by `remapper`, delivered to `output`.
    pub fn new(
        remapper: Arc<dyn InterruptRemapper>,
        source: u16,
        output: Arc<dyn MsiSink>,
    ) -> RemappedSource {
        RemappedSource {
            sink: RemappingMsiSink::new(remapper, source, output),
            counters: Arc::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> Arc<IrCounters> {
        self.counters.clone()
    }
}

impl MsiSink for RemappedSource {
    fn send(&self, msi: Msi) {
        let c = &self.counters;
        match self.sink.deliver(msi) {
            Ok(r) if r.index.is_some() => c.remapped.fetch_add(1, Ordering::Relaxed),
            Ok(_) => c.passed.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.refused.fetch_add(1, Ordering::Relaxed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::irq::{Interrupt, IrFault, IrFaultKind, IrListener, RemapMode, Resolution};
    use viommu_shared::regs::RecordingMsiSink;

    /// Data 0 passes, data 1 is remapped to vector 0x40, anything else is refused.
    struct Table;

    impl InterruptRemapper for Table {
        fn remap(&self, _: u16, msi: Msi, _: RemapMode) -> Result<Resolution, IrFault> {
            let vector = match msi.data {
                0 => 0x20,
                1 => 0x40,
                _ => {
                    return Err(IrFault {
                        kind: IrFaultKind::NotPresent,
                        code: 0x22,
                        index: None,
                        recorded: true,
                    });
                }
            };
            Ok(Resolution {
                interrupt: Interrupt::from_compat_msi(Msi {
                    address: 0xfee0_0000,
                    data: vector,
                })
                .expect("a compatibility-format MSI"),
                index: (msi.data == 1).then_some(1),
            })
        }
        fn add_listener(&self, _: Arc<dyn IrListener>) {}
    }

    #[test]
    fn counts_each_outcome_and_delivers_the_remapped_interrupt() {
        let out = Arc::new(RecordingMsiSink::new());
        let s = RemappedSource::new(Arc::new(Table), 8, out.clone());
        for data in [1, 0, 7, 1] {
            s.send(Msi {
                address: 0xfee0_0000,
                data,
            });
        }
        let c = s.counters();
        assert_eq!(c.remapped.load(Ordering::Relaxed), 2);
        assert_eq!(c.passed.load(Ordering::Relaxed), 1);
        assert_eq!(c.refused.load(Ordering::Relaxed), 1);
        let vectors: Vec<u32> = out.take().iter().map(|m| m.data & 0xff).collect();
        assert_eq!(vectors, [0x40, 0x20, 0x40]);
    }
}
