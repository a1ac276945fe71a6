//! Command buffer entries (16 bytes, spec §2.4): decoding with reserved-bit checks, and
//! encoding for tests, scenarios and guest-driver models.
//!
//! The opcode is in bits 31:28 of the second doubleword. Field layouts are the spec's (and
//! what Linux builds: `build_completion_wait`, `build_inv_dte`, `build_inv_iommu_pages`,
//! `build_inv_iotlb_pages`, `build_inv_irt`, `build_complete_ppr`, `build_inv_all`).
//! A reserved bit set, an unknown opcode, or an opcode whose feature is not advertised in
//! the EFR makes the command illegal: the IOMMU logs ILLEGAL_COMMAND_ERROR and stops (QEMU
//! executes several such commands anyway, anchors-x86 §2.5; the spec's stop is followed).

use crate::regs::efr;
use viommu_shared::AddrRange;

/// Opcode numbers.
pub mod opcode {
    /// COMPLETION_WAIT.
    pub const COMPLETION_WAIT: u8 = 0x1;
    /// INVALIDATE_DEVTAB_ENTRY.
    pub const INVALIDATE_DEVTAB_ENTRY: u8 = 0x2;
    /// INVALIDATE_IOMMU_PAGES.
    pub const INVALIDATE_IOMMU_PAGES: u8 = 0x3;
    /// INVALIDATE_IOTLB_PAGES.
    pub const INVALIDATE_IOTLB_PAGES: u8 = 0x4;
    /// INVALIDATE_INTERRUPT_TABLE.
    pub const INVALIDATE_INTERRUPT_TABLE: u8 = 0x5;
    /// PREFETCH_IOMMU_PAGES.
    pub const PREFETCH_IOMMU_PAGES: u8 = 0x6;
    /// COMPLETE_PPR_REQUEST.
    pub const COMPLETE_PPR_REQUEST: u8 = 0x7;
    /// INVALIDATE_IOMMU_ALL.
    pub const INVALIDATE_IOMMU_ALL: u8 = 0x8;
}

/// Address meaning "everything" in INVALIDATE_*_PAGES with S = 1 (Linux
/// `CMD_INV_IOMMU_ALL_PAGES_ADDRESS` with the page offset cleared).
pub const ALL_PAGES_ADDRESS: u64 = 0x7fff_ffff_ffff_f000;

/// A decoded command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Wait for every earlier command, then optionally store `data` at `address` and/or
    /// raise the completion interrupt.
    CompletionWait {
        /// S: store `data` (8 bytes) at `address`.
        store: bool,
        /// I: set Status.ComWaitInt (and interrupt if ComWaitIntEn).
        interrupt: bool,
        /// F: fence (always satisfied: commands complete in order).
        fence: bool,
        /// Store address (8-byte aligned, 52 bits).
        address: u64,
        /// Store data.
        data: u64,
    },
    /// Drop cached copies of a device table entry.
    InvalidateDevtabEntry {
        /// DeviceID.
        device_id: u16,
    },
    /// Drop cached translations of a domain over a range.
    InvalidateIommuPages {
        /// PASID (meaningful with GN).
        pasid: u32,
        /// DomainID.
        domain_id: u16,
        /// S: the address encodes a power-of-two range.
        size: bool,
        /// PDE: page-directory entries too.
        pde: bool,
        /// GN: guest (PASID) translations.
        gn: bool,
        /// Address (bits 63:12).
        address: u64,
    },
    /// Drop a device's remote IOTLB (ATS) entries over a range.
    InvalidateIotlbPages {
        /// DeviceID.
        device_id: u16,
        /// MaxPend.
        max_pending: u8,
        /// PASID (meaningful with GN).
        pasid: u32,
        /// QueueID.
        queue_id: u16,
        /// S.
        size: bool,
        /// GN.
        gn: bool,
        /// Address (bits 63:12).
        address: u64,
    },
    /// Drop cached interrupt remapping entries of a device.
    InvalidateInterruptTable {
        /// DeviceID.
        device_id: u16,
    },
    /// Prefetch translations (a hint; no effect here).
    PrefetchIommuPages {
        /// DeviceID.
        device_id: u16,
        /// PFCount.
        count: u8,
        /// PASID.
        pasid: u32,
        /// S.
        size: bool,
        /// GN.
        gn: bool,
        /// Inval.
        invalidate: bool,
        /// Address.
        address: u64,
    },
    /// Answer a peripheral page request.
    CompletePprRequest {
        /// DeviceID.
        device_id: u16,
        /// PASID.
        pasid: u32,
        /// GN.
        gn: bool,
        /// Completion tag.
        tag: u16,
        /// Completion status.
        status: u8,
    },
    /// Drop every cached structure.
    InvalidateIommuAll,
}

/// Why a command is illegal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IllegalCommand {
    /// The opcode is not defined (or not supported).
    UnknownOpcode(u8),
    /// The opcode's feature is not advertised in the EFR.
    NotSupported(u8),
    /// Reserved bits are set: the doubleword index and the offending bits.
    Reserved {
        /// Opcode.
        opcode: u8,
        /// Doubleword (0–3).
        dword: usize,
        /// Reserved bits found set.
        bits: u32,
    },
}

/// Reserved bits per doubleword for each opcode (index 0 unused), after removing the opcode
/// field 31:28 of doubleword 1.
const fn reserved_mask(op: u8) -> [u32; 4] {
    match op {
        opcode::COMPLETION_WAIT => [0, 0x0ff0_0000, 0, 0],
        opcode::INVALIDATE_DEVTAB_ENTRY | opcode::INVALIDATE_INTERRUPT_TABLE => {
            [0xffff_0000, 0x0fff_ffff, 0xffff_ffff, 0xffff_ffff]
        }
        opcode::INVALIDATE_IOMMU_PAGES => [0xfff0_0000, 0x0fff_0000, 0x0000_0ff8, 0],
        opcode::INVALIDATE_IOTLB_PAGES => [0, 0x0f00_0000, 0x0000_0ffa, 0],
        opcode::PREFETCH_IOMMU_PAGES => [0x00ff_0000, 0x0ff0_0000, 0x0000_0fea, 0],
        opcode::COMPLETE_PPR_REQUEST => [0xffff_0000, 0x0ff0_0000, 0xffff_fffb, 0xffff_0e00],
        opcode::INVALIDATE_IOMMU_ALL => [0xffff_ffff, 0x0fff_ffff, 0xffff_ffff, 0xffff_ffff],
        _ => [0; 4],
    }
}

fn dwords(raw: [u64; 2]) -> [u32; 4] {
    [
        raw[0] as u32,
        (raw[0] >> 32) as u32,
        raw[1] as u32,
        (raw[1] >> 32) as u32,
    ]
}

impl Command {
    /// Opcode of a raw command (bits 63:60 of the first quadword).
    pub fn opcode_of(raw: [u64; 2]) -> u8 {
        (raw[0] >> 60) as u8
    }

    /// Decodes a raw command (two little-endian quadwords, already converted) against the
    /// advertised `efr`.
    pub fn decode(raw: [u64; 2], efr: u64) -> Result<Command, IllegalCommand> {
        let op = Self::opcode_of(raw);
        let needs = match op {
            opcode::PREFETCH_IOMMU_PAGES => efr::PREF_SUP,
            opcode::COMPLETE_PPR_REQUEST => efr::PPR_SUP,
            opcode::INVALIDATE_IOMMU_ALL => efr::IA_SUP,
            opcode::COMPLETION_WAIT..=opcode::INVALIDATE_INTERRUPT_TABLE => 0,
            _ => return Err(IllegalCommand::UnknownOpcode(op)),
        };
        if efr & needs != needs {
            return Err(IllegalCommand::NotSupported(op));
        }
        let d = dwords(raw);
        for (dword, (&v, &m)) in d.iter().zip(reserved_mask(op).iter()).enumerate() {
            if v & m != 0 {
                return Err(IllegalCommand::Reserved {
                    opcode: op,
                    dword,
                    bits: v & m,
                });
            }
        }
        let addr = |lo: u32, hi: u32| (u64::from(hi) << 32) | u64::from(lo & 0xffff_f000);
        let bit = |v: u32, n: u32| v & (1 << n) != 0;
        Ok(match op {
            opcode::COMPLETION_WAIT => Command::CompletionWait {
                store: bit(d[0], 0),
                interrupt: bit(d[0], 1),
                fence: bit(d[0], 2),
                address: (u64::from(d[1] & 0xf_ffff) << 32) | u64::from(d[0] & !7),
                data: raw[1],
            },
            opcode::INVALIDATE_DEVTAB_ENTRY => Command::InvalidateDevtabEntry {
                device_id: d[0] as u16,
            },
            opcode::INVALIDATE_IOMMU_PAGES => Command::InvalidateIommuPages {
                pasid: d[0] & 0xf_ffff,
                domain_id: d[1] as u16,
                size: bit(d[2], 0),
                pde: bit(d[2], 1),
                gn: bit(d[2], 2),
                address: addr(d[2], d[3]),
            },
            opcode::INVALIDATE_IOTLB_PAGES => Command::InvalidateIotlbPages {
                device_id: d[0] as u16,
                max_pending: (d[0] >> 24) as u8,
                pasid: ((d[0] >> 8) & 0xff00) | ((d[1] >> 16) & 0xff),
                queue_id: d[1] as u16,
                size: bit(d[2], 0),
                gn: bit(d[2], 2),
                address: addr(d[2], d[3]),
            },
            opcode::INVALIDATE_INTERRUPT_TABLE => Command::InvalidateInterruptTable {
                device_id: d[0] as u16,
            },
            opcode::PREFETCH_IOMMU_PAGES => Command::PrefetchIommuPages {
                device_id: d[0] as u16,
                count: (d[0] >> 24) as u8,
                pasid: d[1] & 0xf_ffff,
                size: bit(d[2], 0),
                gn: bit(d[2], 2),
                invalidate: bit(d[2], 4),
                address: addr(d[2], d[3]),
            },
            opcode::COMPLETE_PPR_REQUEST => Command::CompletePprRequest {
                device_id: d[0] as u16,
                pasid: d[1] & 0xf_ffff,
                gn: bit(d[2], 2),
                tag: (d[3] & 0x1ff) as u16,
                status: ((d[3] >> 12) & 0xf) as u8,
            },
            _ => Command::InvalidateIommuAll,
        })
    }

    /// The raw command (two quadwords), as a guest driver builds it.
    pub fn encode(&self) -> [u64; 2] {
        let op = |o: u8| u64::from(o) << 60;
        let b = |v: bool, n: u32| u64::from(v) << n;
        match *self {
            Command::CompletionWait {
                store,
                interrupt,
                fence,
                address,
                data,
            } => [
                (address & 0x000f_ffff_ffff_fff8)
                    | b(store, 0)
                    | b(interrupt, 1)
                    | b(fence, 2)
                    | op(opcode::COMPLETION_WAIT),
                data,
            ],
            Command::InvalidateDevtabEntry { device_id } => [
                u64::from(device_id) | op(opcode::INVALIDATE_DEVTAB_ENTRY),
                0,
            ],
            Command::InvalidateIommuPages {
                pasid,
                domain_id,
                size,
                pde,
                gn,
                address,
            } => [
                u64::from(pasid & 0xf_ffff)
                    | (u64::from(domain_id) << 32)
                    | op(opcode::INVALIDATE_IOMMU_PAGES),
                (address & !0xfff) | b(size, 0) | b(pde, 1) | b(gn, 2),
            ],
            Command::InvalidateIotlbPages {
                device_id,
                max_pending,
                pasid,
                queue_id,
                size,
                gn,
                address,
            } => [
                u64::from(device_id)
                    | (u64::from((pasid >> 8) & 0xff) << 16)
                    | (u64::from(max_pending) << 24)
                    | (u64::from(queue_id) << 32)
                    | (u64::from(pasid & 0xff) << 48)
                    | op(opcode::INVALIDATE_IOTLB_PAGES),
                (address & !0xfff) | b(size, 0) | b(gn, 2),
            ],
            Command::InvalidateInterruptTable { device_id } => [
                u64::from(device_id) | op(opcode::INVALIDATE_INTERRUPT_TABLE),
                0,
            ],
            Command::PrefetchIommuPages {
                device_id,
                count,
                pasid,
                size,
                gn,
                invalidate,
                address,
            } => [
                u64::from(device_id)
                    | (u64::from(count) << 24)
                    | (u64::from(pasid & 0xf_ffff) << 32)
                    | op(opcode::PREFETCH_IOMMU_PAGES),
                (address & !0xfff) | b(size, 0) | b(gn, 2) | b(invalidate, 4),
            ],
            Command::CompletePprRequest {
                device_id,
                pasid,
                gn,
                tag,
                status,
            } => [
                u64::from(device_id)
                    | (u64::from(pasid & 0xf_ffff) << 32)
                    | op(opcode::COMPLETE_PPR_REQUEST),
                b(gn, 2) | (u64::from(tag & 0x1ff) << 32) | (u64::from(status & 0xf) << 44),
            ],
            Command::InvalidateIommuAll => [op(opcode::INVALIDATE_IOMMU_ALL), 0],
        }
    }

    /// INVALIDATE_IOMMU_PAGES covering `range` the way Linux builds it
    /// (`build_inv_address`): one page with S = 0, else the smallest naturally aligned
    /// power-of-two range containing it (everything when that reaches past bit 51).
    pub fn invalidate_pages(domain_id: u16, range: AddrRange, pde: bool) -> Command {
        let start = range.start & !0xfff;
        let last = range.end.saturating_sub(1).max(start);
        let (address, size) = if last >> 12 == start >> 12 {
            (start, false)
        } else {
            let msb = 63 - (last ^ start).leading_zeros();
            if msb > 51 {
                (ALL_PAGES_ADDRESS, true)
            } else {
                ((start | ((1u64 << msb) - 1)) & !0xfff, true)
            }
        };
        Command::InvalidateIommuPages {
            pasid: 0,
            domain_id,
            size,
            pde,
            gn: false,
            address,
        }
    }
}

/// The IOVA range an INVALIDATE_*_PAGES address with size bit `size` covers (spec §2.4.3):
/// S = 0 one 4 KiB page; S = 1 a naturally aligned 2^(z+1)-byte range where z is the first
/// zero bit of the address at or above bit 12, and everything when no bit below 63 is zero.
pub fn invalidation_range(address: u64, size: bool) -> AddrRange {
    let address = address & !0xfff;
    if !size {
        return AddrRange::from_len(address, 0x1000);
    }
    let z = (!(address | 0xfff)).trailing_zeros();
    if z >= 63 {
        return AddrRange::new(0, u64::MAX);
    }
    let len = 1u64 << (z + 1);
    let start = address & !(len - 1);
    AddrRange::new(start, start.saturating_add(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = efr::PREF_SUP | efr::PPR_SUP | efr::IA_SUP;

    #[test]
    fn round_trips() {
        let cmds = [
            Command::CompletionWait {
                store: true,
                interrupt: true,
                fence: false,
                address: 0x1234_5678_9ab8,
                data: 0xdead_beef_0bad_f00d,
            },
            Command::InvalidateDevtabEntry { device_id: 0xfffe },
            Command::InvalidateIommuPages {
                pasid: 0x12345,
                domain_id: 0xabcd,
                size: true,
                pde: true,
                gn: true,
                address: 0xffff_ffff_ffff_f000,
            },
            Command::InvalidateIotlbPages {
                device_id: 0x10,
                max_pending: 0x20,
                pasid: 0xabcd,
                queue_id: 0x10,
                size: true,
                gn: true,
                address: 0x4000,
            },
            Command::InvalidateInterruptTable { device_id: 7 },
            Command::PrefetchIommuPages {
                device_id: 1,
                count: 3,
                pasid: 0xfffff,
                size: false,
                gn: false,
                invalidate: true,
                address: 0x1000,
            },
            Command::CompletePprRequest {
                device_id: 2,
                pasid: 5,
                gn: true,
                tag: 0x1ff,
                status: 0xf,
            },
            Command::InvalidateIommuAll,
        ];
        for c in cmds {
            assert_eq!(Command::decode(c.encode(), ALL), Ok(c), "{c:?}");
        }
    }

    #[test]
    fn illegal_commands() {
        assert_eq!(
            Command::decode([0, 0], ALL),
            Err(IllegalCommand::UnknownOpcode(0))
        );
        assert_eq!(
            Command::decode([0xf << 60, 0], ALL),
            Err(IllegalCommand::UnknownOpcode(0xf))
        );
        let all = Command::InvalidateIommuAll.encode();
        assert_eq!(
            Command::decode(all, 0),
            Err(IllegalCommand::NotSupported(8))
        );
        let mut bad = all;
        bad[1] = 1;
        assert_eq!(
            Command::decode(bad, ALL),
            Err(IllegalCommand::Reserved {
                opcode: 8,
                dword: 2,
                bits: 1
            })
        );
        // INVALIDATE_IOMMU_PAGES with dword 0 bits 31:20 set (anchors-x86 AMD-10).
        let mut inv = Command::invalidate_pages(1, AddrRange::from_len(0, 0x1000), false).encode();
        inv[0] |= 0xfff0_0000;
        assert!(matches!(
            Command::decode(inv, ALL),
            Err(IllegalCommand::Reserved {
                opcode: 3,
                dword: 0,
                ..
            })
        ));
        // COMPLETION_WAIT reserved 59:52.
        let cw = [(1u64 << 60) | (1 << 52), 0];
        assert!(matches!(
            Command::decode(cw, ALL),
            Err(IllegalCommand::Reserved {
                opcode: 1,
                dword: 1,
                ..
            })
        ));
        let dte = [(2u64 << 60) | (1 << 16), 0];
        assert!(Command::decode(dte, ALL).is_err());
    }

    #[test]
    fn size_encoding() {
        assert_eq!(
            invalidation_range(0x1234_5000, false),
            AddrRange::new(0x1234_5000, 0x1234_6000)
        );
        // 8K at 0x2000: bit 12 clear.
        assert_eq!(
            invalidation_range(0x2000, true),
            AddrRange::new(0x2000, 0x4000)
        );
        // 32K at 0x8000: bits 13:12 set.
        assert_eq!(
            invalidation_range(0xb000, true),
            AddrRange::new(0x8000, 0x1_0000)
        );
        assert_eq!(
            invalidation_range(ALL_PAGES_ADDRESS, true),
            AddrRange::new(0, u64::MAX)
        );
        assert_eq!(
            invalidation_range(u64::MAX, true),
            AddrRange::new(0, u64::MAX)
        );
        // Bit 52 is the first zero: 2^53 bytes (QEMU treats anything past bit 51 as all).
        assert_eq!(
            invalidation_range(0x000f_ffff_ffff_f000, true),
            AddrRange::new(0, 1 << 53)
        );
        // Linux's encoder produces what the decoder expects.
        for (start, len) in [
            (0x1000u64, 0x1000u64),
            (0x2000, 0x2000),
            (0x4000_0000, 0x20_0000),
            (0, 1 << 40),
        ] {
            let Command::InvalidateIommuPages { address, size, .. } =
                Command::invalidate_pages(1, AddrRange::from_len(start, len), false)
            else {
                unreachable!()
            };
            assert_eq!(
                invalidation_range(address, size),
                AddrRange::from_len(start, len)
            );
        }
        let Command::InvalidateIommuPages { address, size, .. } =
            Command::invalidate_pages(1, AddrRange::new(0, u64::MAX), true)
        else {
            unreachable!()
        };
        assert_eq!((address, size), (ALL_PAGES_ADDRESS, true));
    }
}
