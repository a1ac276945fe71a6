//! Linux direct boot (x86 64-bit boot protocol, `Documentation/arch/x86/boot.rst`): the
//! kernel, command line, initrd and zero page in guest memory, and the vCPU state the 64-bit
//! entry point expects (long mode, identity-mapped first GiB, `rsi` = zero page).
//!
//! The kernel is a bzImage (entered at its 64-bit entry, 0x200 into the protected-mode part,
//! which decompresses the kernel) or an uncompressed ELF `vmlinux` (entered at `startup_64`,
//! its ELF entry, as Firecracker does): in a nested guest under TCG the decompression is the
//! slowest part of the boot.

use std::fs::File;
use std::io;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header};
use linux_loader::loader::{BzImage, Elf, KernelLoader, load_cmdline};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout;

/// E820 type of usable RAM.
const E820_RAM: u32 = 1;
/// Boot protocol magic ("HdrS").
const HDRS: u32 = 0x5372_6448;

/// What can go wrong loading the guest.
#[derive(Debug)]
pub enum BootError {
    /// The kernel or initrd file could not be read.
    Io(&'static str, io::Error),
    /// linux-loader rejected the kernel image.
    Kernel(linux_loader::loader::Error),
    /// The image is neither a bzImage nor an ELF.
    NoSetupHeader,
    /// The command line is invalid or too long.
    Cmdline(linux_loader::cmdline::Error),
    /// The command line could not be written.
    CmdlineLoad(linux_loader::loader::Error),
    /// The initrd does not fit between the kernel and the top of RAM.
    InitrdTooLarge {
        /// Its size.
        size: u64,
    },
    /// Writing to guest memory failed.
    Memory(vm_memory::GuestMemoryError),
    /// The zero page could not be written.
    BootParams(linux_loader::configurator::Error),
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootError::Io(what, e) => write!(f, "cannot read the {what}: {e}"),
            BootError::Kernel(e) => write!(f, "cannot load the kernel: {e}"),
            BootError::NoSetupHeader => write!(f, "the kernel is neither a bzImage nor an ELF"),
            BootError::Cmdline(e) => write!(f, "bad command line: {e}"),
            BootError::CmdlineLoad(e) => write!(f, "cannot write the command line: {e}"),
            BootError::InitrdTooLarge { size } => write!(f, "initrd of {size} bytes does not fit"),
            BootError::Memory(e) => write!(f, "guest memory: {e}"),
            BootError::BootParams(e) => write!(f, "cannot write the zero page: {e}"),
        }
    }
}

impl std::error::Error for BootError {}

/// Where the kernel was loaded.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    /// The 64-bit entry point (`startup_64`, 0x200 into the protected-mode kernel).
    pub entry: u64,
}

/// Boot protocol default for `initrd_addr_max` (protocol < 2.03; ELF kernels carry no header).
const INITRD_ADDR_MAX_DEFAULT: u32 = 0x37ff_ffff;

/// Loads `kernel` (bzImage or ELF vmlinux), `initrd` and `cmdline` into `mem` (RAM
/// `[0, ram_size)`) and writes the zero page with an e820 map and the RSDP address.
pub fn load(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    kernel: &str,
    initrd: Option<&str>,
    cmdline: &str,
    rsdp: u64,
) -> Result<Loaded, BootError> {
    let mut kf = File::open(kernel).map_err(|e| BootError::Io("kernel", e))?;
    let mut magic = [0u8; 4];
    io::Read::read_exact(&mut kf, &mut magic).map_err(|e| BootError::Io("kernel", e))?;
    let high = Some(GuestAddress(layout::KERNEL_START));
    let (res, mut hdr, entry) = if magic == *b"\x7fELF" {
        let res = Elf::load(mem, None, &mut kf, high).map_err(BootError::Kernel)?;
        let hdr = setup_header {
            initrd_addr_max: INITRD_ADDR_MAX_DEFAULT,
            ..Default::default()
        };
        let entry = res.kernel_load.0;
        (res, hdr, entry)
    } else {
        let res = BzImage::load(mem, None, &mut kf, high).map_err(BootError::Kernel)?;
        let hdr = res.setup_header.ok_or(BootError::NoSetupHeader)?;
        let entry = res.kernel_load.0 + 0x200;
        (res, hdr, entry)
    };

    let mut cl = Cmdline::new(layout::CMDLINE_MAX).map_err(BootError::Cmdline)?;
    cl.insert_str(cmdline).map_err(BootError::Cmdline)?;
    load_cmdline(mem, GuestAddress(layout::CMDLINE), &cl).map_err(BootError::CmdlineLoad)?;

    hdr.type_of_loader = 0xff;
    hdr.boot_flag = 0xaa55;
    hdr.header = HDRS;
    hdr.cmd_line_ptr = layout::CMDLINE as u32;
    hdr.cmdline_size = cmdline.len() as u32 + 1;
    hdr.kernel_alignment = 0x100_0000;

    if let Some(path) = initrd {
        let data = std::fs::read(path).map_err(|e| BootError::Io("initrd", e))?;
        let size = data.len() as u64;
        let max = u64::from(hdr.initrd_addr_max)
            .saturating_add(1)
            .min(ram_size);
        let at = max
            .checked_sub(size)
            .map(|a| a & !0xfff)
            .filter(|a| *a >= res.kernel_end)
            .ok_or(BootError::InitrdTooLarge { size })?;
        mem.write_slice(&data, GuestAddress(at))
            .map_err(BootError::Memory)?;
        hdr.ramdisk_image = at as u32;
        hdr.ramdisk_size = size as u32;
    }

    let mut params = boot_params {
        hdr,
        acpi_rsdp_addr: rsdp,
        ..Default::default()
    };
    let ram = [
        (0, layout::EBDA_START),
        (layout::KERNEL_START, ram_size - layout::KERNEL_START),
    ];
    for (i, (addr, size)) in ram.iter().enumerate() {
        params.e820_table[i].addr = *addr;
        params.e820_table[i].size = *size;
        params.e820_table[i].r#type = E820_RAM;
    }
    params.e820_entries = ram.len() as u8;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(layout::ZERO_PAGE)),
        mem,
    )
    .map_err(BootError::BootParams)?;
    write_page_tables(mem)?;
    write_gdt(mem)?;
    Ok(Loaded { entry })
}

/// GDT entries: null, 64-bit code, data, TSS.
const GDT_ENTRIES: [u64; 4] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008f_8b00_0000_ffff,
];

fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    for (i, e) in GDT_ENTRIES.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(layout::GDT + 8 * i as u64))
            .map_err(BootError::Memory)?;
    }
    mem.write_obj(0u64, GuestAddress(layout::IDT))
        .map_err(BootError::Memory)
}

/// Identity map of the first GiB with 2 MiB pages.
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let w = |v: u64, a: u64| mem.write_obj(v, GuestAddress(a)).map_err(BootError::Memory);
    w(layout::PDPT | 0x3, layout::PML4)?;
    w(layout::PD | 0x3, layout::PDPT)?;
    for i in 0..512u64 {
        w((i << 21) | 0x83, layout::PD + 8 * i)?;
    }
    Ok(())
}

/// A KVM segment from a GDT entry (Intel SDM vol. 3 §3.4.5).
pub fn segment(index: u16, entry: u64) -> kvm_segment {
    let limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Special registers for the 64-bit entry: long mode with paging, flat segments.
pub fn sregs(mut s: kvm_sregs) -> kvm_sregs {
    let code = segment(1, GDT_ENTRIES[1]);
    let data = segment(2, GDT_ENTRIES[2]);
    let tss = segment(3, GDT_ENTRIES[3]);
    s.gdt.base = layout::GDT;
    s.gdt.limit = (8 * GDT_ENTRIES.len() - 1) as u16;
    s.idt.base = layout::IDT;
    s.idt.limit = 7;
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = tss;
    s.cr3 = layout::PML4;
    s.cr4 |= 1 << 5; // PAE
    s.cr0 |= 1 | (1 << 31); // PE, PG
    s.efer |= (1 << 8) | (1 << 10); // LME, LMA
    s
}

/// General registers for the 64-bit entry.
pub fn regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 2,
        rip: entry,
        rsp: layout::BOOT_STACK,
        rbp: layout::BOOT_STACK,
        rsi: layout::ZERO_PAGE,
        ..Default::default()
    }
}

/// FPU state after reset (x87 control word 0x37f, MXCSR 0x1f80).
pub fn fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_flat_long_mode_segments() {
        let cs = segment(1, GDT_ENTRIES[1]);
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 8));
        assert_eq!((cs.type_, cs.present, cs.l, cs.db, cs.s), (0xb, 1, 1, 0, 1));
        let ds = segment(2, GDT_ENTRIES[2]);
        assert_eq!((ds.type_, ds.db, ds.l, ds.g), (3, 1, 0, 1));
        let tr = segment(3, GDT_ENTRIES[3]);
        assert_eq!((tr.type_, tr.s, tr.selector), (0xb, 0, 0x18));
    }

    #[test]
    fn page_tables_identity_map_the_first_gib() {
        let mem = viommu_shared::testing::guest_memory(&[(0, 1 << 20)]);
        write_page_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(layout::PML4)).unwrap();
        assert_eq!(pml4 & !0xfff, layout::PDPT);
        let pd5: u64 = mem.read_obj(GuestAddress(layout::PD + 5 * 8)).unwrap();
        assert_eq!(pd5, (5 << 21) | 0x83);
    }

    #[test]
    fn missing_kernel_is_a_typed_error() {
        let mem = viommu_shared::testing::guest_memory(&[(0, 4 << 20)]);
        let e = load(
            &mem,
            4 << 20,
            "/nonexistent/bzImage",
            None,
            "console=ttyS0",
            0,
        )
        .unwrap_err();
        assert!(matches!(e, BootError::Io("kernel", _)), "{e}");
    }
}
