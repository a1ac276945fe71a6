//! PCILG, PCISTG, PCISTB (A.5, A.6) through the VMM's PCI backend.

mod common;

use common::*;
use viommu_s390_zpci::{Cc, Config, Fh, ProgramCheck, status};

#[test]
fn config_space_loads_and_stores_in_storage_order() {
    let env = env_with(Config::default(), None);
    let fh = env.enable();
    let mut cpu = env.cpu();
    // Vendor 0x1014, device 0x04ed at offset 0 (little-endian in config space): the
    // register holds the bytes in storage order.
    let c = cpu.pcilg(fh, 15, 0, 4).unwrap();
    assert_eq!(c.cc, Cc::Ok);
    assert_eq!(cpu.regs[1], 0x1410_ed04);
    assert_eq!(u32::from(u16::from_be(0x1410)), 0x1014);
    cpu.pcilg(fh, 15, 2, 2).unwrap();
    assert_eq!(cpu.regs[1], 0xed04);
    // Store the command register: bytes 0x06 0x00 at offset 4.
    assert_eq!(cpu.pcistg(fh, 15, 4, 2, 0x0600).unwrap().cc, Cc::Ok);
    assert_eq!(env.dev.with(|s| (s.config[4], s.config[5])), (0x06, 0x00));
    // Crossing a word, length 3 or 8, beyond config space: operand exceptions.
    assert_eq!(cpu.pcilg(fh, 15, 3, 2), Err(ProgramCheck::Operand));
    assert_eq!(cpu.pcilg(fh, 15, 0, 3), Err(ProgramCheck::Operand));
    assert_eq!(cpu.pcilg(fh, 15, 0, 8), Err(ProgramCheck::Operand));
    assert_eq!(cpu.pcistg(fh, 15, 4096, 1, 0), Err(ProgramCheck::Operand));
    let info = env.zpci.function(FID).unwrap();
    // Counted (only successful operations), even before measurement starts.
    assert_eq!((info.counters.loads, info.counters.stores), (2, 1));
    assert_eq!(info.fmb_addr, None);
}

#[test]
fn bar_loads_and_stores() {
    let env = env_with(Config::default(), None);
    let fh = env.enable();
    let mut cpu = env.cpu();
    assert_eq!(
        cpu.pcistg(fh, 0, 0x10, 8, 0x0102_0304_0506_0708)
            .unwrap()
            .cc,
        Cc::Ok
    );
    assert_eq!(
        env.dev.with(|s| s.bars[0][0x10..0x18].to_vec()),
        vec![1, 2, 3, 4, 5, 6, 7, 8]
    );
    cpu.pcilg(fh, 0, 0x14, 4).unwrap();
    assert_eq!(cpu.regs[1], 0x0506_0708);
    cpu.pcilg(fh, 0, 0x11, 1).unwrap();
    assert_eq!(cpu.regs[1], 0x02);
    // Crossing a doubleword; length 0; beyond the BAR; a BAR that does not exist.
    assert_eq!(cpu.pcilg(fh, 0, 0x14, 8), Err(ProgramCheck::Operand));
    assert_eq!(cpu.pcilg(fh, 0, 0x10, 0), Err(ProgramCheck::Operand));
    assert_eq!(cpu.pcilg(fh, 0, 4096, 4), Err(ProgramCheck::Operand));
    assert_eq!(cpu.pcilg(fh, 1, 0, 4), Err(ProgramCheck::Operand));
    // PCIAS 6..14: invalid address space, status in R2.
    let c = cpu.pcilg(fh, 7, 0, 4).unwrap();
    assert_eq!(
        (c.cc, c.status),
        (Cc::Error, Some(status::INVALID_ADDRESS_SPACE))
    );
    assert_eq!(cpu.status(2), status::INVALID_ADDRESS_SPACE);
    assert_eq!(cpu.regs[2] >> 32, u64::from(fh.0), "handle kept");
}

#[test]
fn handle_checks() {
    let env = env_with(Config::default(), None);
    let mut cpu = env.cpu();
    // Disabled (no enable bit), unknown, odd register pair.
    assert_eq!(cpu.pcilg(env.fh0, 15, 0, 4).unwrap().cc, Cc::InvalidHandle);
    assert_eq!(
        cpu.pcilg(Fh(0x8000_0777), 15, 0, 4).unwrap().cc,
        Cc::InvalidHandle
    );
    let fh = env.enable();
    assert_eq!(
        cpu.pcistg(Fh(fh.0 | 0x0200_0000), 15, 0, 4, 0).unwrap().cc,
        Cc::InvalidHandle
    );
    let regs = [0u64; 16];
    assert_eq!(
        env.zpci.pcilg(1, 5, &regs),
        Err(ProgramCheck::Specification)
    );
    assert_eq!(
        env.zpci.pcistg(1, 7, &regs),
        Err(ProgramCheck::Specification)
    );
}

#[test]
fn store_block() {
    let env = env_with(Config::default(), None);
    let fh = env.enable();
    let mut cpu = env.cpu();
    let data: Vec<u8> = (0..64u8).collect();
    assert_eq!(cpu.pcistb(fh, 0, 0x200, &data).unwrap().cc, Cc::Ok);
    assert_eq!(env.dev.with(|s| s.bars[0][0x200..0x240].to_vec()), data);
    assert_eq!(env.dev.with(|s| s.blocks.clone()), vec![(0, 0x200, 64)]);
    // Length 8 (too short), not a multiple of 8, over maxstbl (128), crossing 4 KiB,
    // misaligned offset: specification exceptions.
    for (off, len) in [
        (0x200u64, 8usize),
        (0x200, 20),
        (0x200, 136),
        (0xfc0, 128),
        (0x204, 16),
    ] {
        assert_eq!(
            cpu.pcistb(fh, 0, off, &vec![0u8; len]),
            Err(ProgramCheck::Specification),
            "{off:#x}+{len}"
        );
    }
    // Misaligned source.
    cpu.regs[1] = (u64::from(fh.0) << 32) | 16;
    cpu.regs[3] = 0;
    assert_eq!(
        env.zpci.pcistb(&env.mem, 1, 3, SCRATCH + 4, &cpu.regs),
        Err(ProgramCheck::Specification)
    );
    // Source outside memory: the operand access's exception.
    assert_eq!(
        env.zpci.pcistb(&env.mem, 1, 3, RAM - 8, &cpu.regs),
        Err(ProgramCheck::Addressing)
    );
    // Config space is not a BAR: invalid address space, status in R1.
    let c = cpu.pcistb(fh, 15, 0, &[0u8; 16]).unwrap();
    assert_eq!(c.status, Some(status::INVALID_ADDRESS_SPACE));
    assert_eq!(cpu.status(1), status::INVALID_ADDRESS_SPACE);
    // Beyond the BAR: operand exception.
    env.dev.with(|s| s.bars[0].truncate(0x100));
    assert_eq!(
        cpu.pcistb(fh, 0, 0x100, &[0u8; 16]),
        Err(ProgramCheck::Operand)
    );
}
