//! viommu-vmm: a small KVM VMM that embeds viommu's VT-d or AMD-Vi model the way a real VMM
//! would, and boots an unmodified Linux behind it.
//!
//! The machine ([`vm`]): guest RAM, one vCPU, KVM's in-kernel irqchip and PIT or (split mode,
//! [`irq`]) KVM's local APIC with the VMM's own IO-APIC ([`ioapic`]) whose messages and the
//! devices' MSIs go through the IOMMU's interrupt remapper, a 16550 on
//! COM1 (vm-superio), ACPI tables ([`acpi`]: RSDP, XSDT, FADT, FACS, DSDT, MADT, and DMAR or
//! IVRS), PCI bus 0 through `0xCF8`/`0xCFC` ([`pci`]) with a host bridge, an edu-compatible
//! test device ([`edu`]) whose DMA goes through the model's per-device
//! `vm_memory::iommu::Iommu` and whose interrupts are MSIs into KVM, and (AMD-Vi) the IOMMU's
//! own PCI function ([`iommu`]). The edu device's address space is additionally shadowed into
//! a host backend ([`host`]), as a passthrough device's would be; the VMM prints the model's
//! and the host's counters at exit.
//!
//! The kernel is loaded with linux-loader through the 64-bit boot protocol ([`boot`]).

#![deny(missing_docs)]

pub mod acpi;
pub mod boot;
pub mod edu;
pub mod host;
pub mod ioapic;
pub mod iommu;
pub mod irq;
pub mod layout;
pub mod pci;
pub mod vm;
