//! The guest-physical and I/O-port map of the machine this VMM builds.
//!
//! Low memory follows the Linux x86 boot protocol's conventions (zero page, command line,
//! kernel at 1 MiB); the ACPI tables sit in the BIOS area `0xE0000..0x100000`, where Linux
//! scans for the RSDP; device MMIO lives above RAM in the 32-bit hole.

/// Boot GDT.
pub const GDT: u64 = 0x500;
/// Boot IDT (empty).
pub const IDT: u64 = 0x520;
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Boot page tables: PML4, PDPT and one page directory identity-mapping the first GiB.
pub const PML4: u64 = 0x9000;
/// Page-directory-pointer table of the boot page tables.
pub const PDPT: u64 = 0xa000;
/// Page directory of the boot page tables (512 × 2 MiB).
pub const PD: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE: u64 = 0x2_0000;
/// Largest command line accepted (bytes, including the terminating NUL).
pub const CMDLINE_MAX: usize = 4096;
/// Start of the extended BIOS data area: usable RAM below 1 MiB ends here.
pub const EBDA_START: u64 = 0x9_fc00;
/// ACPI tables (RSDP first): the BIOS read-only area Linux scans for the RSDP.
pub const ACPI_START: u64 = 0xe_0000;
/// End of the ACPI area.
pub const ACPI_END: u64 = 0x10_0000;
/// Where the protected-mode kernel is loaded (1 MiB).
pub const KERNEL_START: u64 = 0x10_0000;
/// Guest RAM may not extend above this (the 32-bit MMIO hole starts here).
pub const RAM_MAX: u64 = 0xc000_0000;
/// Start of the window PCI BARs are assigned from.
pub const PCI_MMIO_START: u64 = 0xc000_0000;
/// End (exclusive) of the PCI BAR window.
pub const PCI_MMIO_END: u64 = 0xf000_0000;
/// The IO-APIC (KVM's in-kernel one).
pub const IOAPIC: u64 = 0xfec0_0000;
/// The local APICs.
pub const LAPIC: u64 = 0xfee0_0000;
/// The VT-d register window (the DRHD's register base; QEMU uses the same address).
pub const VTD_MMIO: u64 = 0xfed9_0000;
/// The AMD-Vi register window (its capability block and IVHD report it).
pub const AMDVI_MMIO: u64 = viommu_amd_vi::DEFAULT_MMIO_BASE;

/// COM1.
pub const SERIAL_PORT: u16 = 0x3f8;
/// COM1's ISA interrupt.
pub const SERIAL_IRQ: u32 = 4;
/// PCI configuration mechanism #1 address register.
pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
/// PCI configuration mechanism #1 data window (4 bytes).
pub const PCI_CONFIG_DATA: u16 = 0xcfc;
/// ACPI PM1a event block (status + enable, 2 bytes each).
pub const PM1A_EVT: u16 = 0x600;
/// ACPI PM1a control block (2 bytes).
pub const PM1A_CNT: u16 = 0x604;
/// ACPI SCI interrupt.
pub const SCI_IRQ: u16 = 9;
/// `SLP_TYP` value the DSDT's `\_S5` package reports (any value: the VMM powers off on
/// `SLP_EN` with this type).
pub const S5_SLP_TYP: u16 = 5;
