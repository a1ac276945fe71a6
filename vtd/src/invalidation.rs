//! Invalidation requests, decoded from queued-invalidation descriptors (VT-d spec 6.5.2) or
//! the register interface (CCMD, IOTLB/IVA), and the reasons a descriptor is rejected
//! (`anchors-x86.md` §1.7).

use crate::caps::MAMV;
use crate::config::Config;
use viommu_shared::AddrRange;

/// Scope of a PASID-cache invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PasidCacheScope {
    /// Every PASID entry tagged with the domain id.
    Domain {
        /// Domain id.
        did: u16,
    },
    /// One PASID of one domain.
    Pasid {
        /// Domain id.
        did: u16,
        /// PASID.
        pasid: u32,
    },
    /// Everything.
    Global,
}

/// Scope of an interrupt-entry-cache invalidation (spec 6.5.2.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IecScope {
    /// G = 0: every entry.
    Global,
    /// G = 1: the 2^IM entries from IIDX with its low IM bits cleared.
    Index {
        /// First index.
        first: u32,
        /// Number of entries (2^IM).
        count: u32,
    },
}

/// One invalidation request, whichever interface it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// Every context-cache entry.
    ContextGlobal,
    /// Context-cache entries of one domain.
    ContextDomain {
        /// Domain id.
        did: u16,
    },
    /// Context-cache entries of the source ids matching `sid` under the function mask.
    ContextDevice {
        /// Domain id given by software (Linux uses 0 under caching mode; it is not needed to
        /// find the device, so it is not used).
        did: u16,
        /// Source id.
        sid: u16,
        /// Function mask: 0 none, 1 ignores SID bit 2, 2 bits 2:1, 3 bits 2:0.
        fm: u8,
    },
    /// Every IOTLB entry.
    IotlbGlobal,
    /// IOTLB entries of one domain.
    IotlbDomain {
        /// Domain id.
        did: u16,
    },
    /// IOTLB entries of one domain in a naturally aligned range.
    IotlbPage {
        /// Domain id.
        did: u16,
        /// The range: ADDR with its low AM page-number bits masked, 2^AM pages long.
        range: AddrRange,
        /// Invalidation hint (only leaves changed).
        ih: bool,
    },
    /// PASID-based IOTLB: entries of one (domain, PASID), all or a range.
    PasidIotlb {
        /// Domain id.
        did: u16,
        /// PASID.
        pasid: u32,
        /// `None` for all entries of the PASID.
        range: Option<AddrRange>,
    },
    /// PASID-cache invalidation.
    PasidCache(PasidCacheScope),
    /// Device-TLB (ATS) invalidation for a source id (with or without PASID).
    DeviceTlb {
        /// Source id of the device.
        sid: u16,
    },
    /// Interrupt entry cache invalidation. Nothing is cached (every interrupt request reads its
    /// IRTE), so it only notifies the VMM's interrupt routes.
    InterruptEntryCache(IecScope),
    /// Invalidation wait.
    Wait {
        /// SW: write `data` (32 bits) to `addr`.
        status: Option<(u64, u32)>,
        /// IF: raise the invalidation completion event.
        interrupt: bool,
        /// FN: fence (processing is in order anyway).
        fence: bool,
    },
}

/// Why a descriptor was rejected (FSTS.IQE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DescriptorError {
    /// The type (bits 11:9 and 3:0) is unknown or not supported by this unit.
    UnsupportedType(u8),
    /// A 256-bit-only type in a 128-bit queue.
    NeedsWideQueue(u8),
    /// Reserved bits set.
    Reserved,
    /// Reserved granularity value (or an address mask above MAMV).
    Granularity,
}

/// A naturally aligned range of 2^`am` pages containing `addr` (spec 6.5.2.3: the low AM
/// bits of the page number are ignored).
pub fn page_range(addr: u64, am: u32) -> AddrRange {
    let size = 1u64 << (12 + am.min(52));
    let start = addr & !(size - 1);
    AddrRange::from_len(start, size)
}

/// Descriptor type: bits 3:0 plus bits 11:9 as bits 6:4.
pub fn descriptor_type(lo: u64) -> u8 {
    ((lo & 0xf) | ((lo >> 5) & 0x70)) as u8
}

/// Decodes one descriptor. `q` holds its quadwords (the upper two are zero in a 128-bit
/// queue and ignored: software may keep private data there).
pub fn decode(q: [u64; 2], wide: bool, config: &Config) -> Result<Invalidation, DescriptorError> {
    let [lo, hi] = q;
    let ty = descriptor_type(lo);
    let g = (lo >> 4) & 3;
    let did = ((lo >> 16) & 0xffff) as u16;
    let check = |lo_rsvd: u64, hi_rsvd: u64| {
        if lo & lo_rsvd != 0 || hi & hi_rsvd != 0 {
            Err(DescriptorError::Reserved)
        } else {
            Ok(())
        }
    };
    let wide_only = |ty: u8| {
        if !wide || !config.scalable_mode {
            Err(DescriptorError::NeedsWideQueue(ty))
        } else {
            Ok(())
        }
    };
    match ty {
        1 => {
            check(0xfffc_0000_0000_f1c0, u64::MAX)?;
            match g {
                1 => Ok(Invalidation::ContextGlobal),
                2 => Ok(Invalidation::ContextDomain { did }),
                3 => Ok(Invalidation::ContextDevice {
                    did,
                    sid: (lo >> 32) as u16,
                    fm: ((lo >> 48) & 3) as u8,
                }),
                _ => Err(DescriptorError::Granularity),
            }
        }
        2 => {
            // DR (7) and DW (6) are accepted: draining is implied by synchronous processing.
            check(0xffff_ffff_0000_f100, 0xf80)?;
            match g {
                1 => Ok(Invalidation::IotlbGlobal),
                2 => Ok(Invalidation::IotlbDomain { did }),
                3 => {
                    let am = (hi & 0x3f) as u32;
                    if u64::from(am) > MAMV {
                        return Err(DescriptorError::Granularity);
                    }
                    Ok(Invalidation::IotlbPage {
                        did,
                        range: page_range(hi, am),
                        ih: hi & (1 << 6) != 0,
                    })
                }
                _ => Err(DescriptorError::Granularity),
            }
        }
        3 => {
            if !config.device_tlb {
                return Err(DescriptorError::UnsupportedType(ty));
            }
            // PFSID (15:12, 63:52) and MIP (20:16) are defined (QEMU treats PFSID as
            // reserved); S (hi bit 0) and ADDR only size the device's own flush.
            check(0x000f_0000_ffe0_01f0, 0xffe)?;
            Ok(Invalidation::DeviceTlb {
                sid: (lo >> 32) as u16,
            })
        }
        4 => {
            check(0xffff_0000_07ff_f1e0, u64::MAX)?;
            if lo & (1 << 4) == 0 {
                return Ok(Invalidation::InterruptEntryCache(IecScope::Global));
            }
            // IM (31:27) up to 31: the low IM bits of IIDX (47:32) are ignored.
            let count = 1u32 << ((lo >> 27) & 0x1f);
            let first = ((lo >> 32) & 0xffff) as u32 & !(count - 1);
            Ok(Invalidation::InterruptEntryCache(IecScope::Index {
                first,
                count,
            }))
        }
        5 => {
            // PD (7) is reserved: page-request draining is not supported (no ECAP.PDS).
            check(0xffff_f180, 0x3)?;
            let sw = lo & (1 << 5) != 0;
            Ok(Invalidation::Wait {
                status: sw.then_some((hi & !3, (lo >> 32) as u32)),
                interrupt: lo & (1 << 4) != 0,
                fence: lo & (1 << 6) != 0,
            })
        }
        6 => {
            wide_only(ty)?;
            check(0xfff0_0000_0000_f1c0, 0xf80)?;
            let pasid = ((lo >> 32) & 0xf_ffff) as u32;
            match g {
                2 => Ok(Invalidation::PasidIotlb {
                    did,
                    pasid,
                    range: None,
                }),
                3 => {
                    let am = (hi & 0x3f) as u32;
                    if u64::from(am) > MAMV {
                        return Err(DescriptorError::Granularity);
                    }
                    Ok(Invalidation::PasidIotlb {
                        did,
                        pasid,
                        range: Some(page_range(hi, am)),
                    })
                }
                _ => Err(DescriptorError::Granularity),
            }
        }
        7 => {
            wide_only(ty)?;
            check(0xfff0_0000_0000_f1c0, u64::MAX)?;
            let pasid = ((lo >> 32) & 0xf_ffff) as u32;
            match g {
                0 => Ok(Invalidation::PasidCache(PasidCacheScope::Domain { did })),
                1 => Ok(Invalidation::PasidCache(PasidCacheScope::Pasid {
                    did,
                    pasid,
                })),
                3 => Ok(Invalidation::PasidCache(PasidCacheScope::Global)),
                _ => Err(DescriptorError::Granularity),
            }
        }
        8 => {
            wide_only(ty)?;
            if !config.device_tlb {
                return Err(DescriptorError::UnsupportedType(ty));
            }
            check(0xfff0_0000_0000_f000, 0x7fe)?;
            Ok(Invalidation::DeviceTlb {
                sid: (lo >> 16) as u16,
            })
        }
        _ => Err(DescriptorError::UnsupportedType(ty)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_linux_descriptors() {
        let c = Config::default();
        // qi_flush_context device-selective, DID 0, SID 0x0010, FM 0.
        let cc = 1 | (3 << 4) | (0x10 << 32);
        assert_eq!(
            decode([cc, 0], false, &c),
            Ok(Invalidation::ContextDevice {
                did: 0,
                sid: 0x10,
                fm: 0
            })
        );
        // qi_flush_iotlb PSI with DR|DW, DID 5, addr 0x1234_5000, AM 2, IH.
        let io = 2 | (3 << 4) | (1 << 6) | (1 << 7) | (5 << 16);
        assert_eq!(
            decode([io, 0x1234_5000 | (1 << 6) | 2], false, &c),
            Ok(Invalidation::IotlbPage {
                did: 5,
                range: AddrRange::new(0x1234_4000, 0x1234_8000),
                ih: true
            })
        );
        // Wait with SW, status 2 at 0x9000.
        assert_eq!(
            decode([5 | (1 << 5) | (2 << 32), 0x9000], false, &c),
            Ok(Invalidation::Wait {
                status: Some((0x9000, 2)),
                interrupt: false,
                fence: false
            })
        );
    }

    #[test]
    fn rejects_bad_descriptors() {
        let c = Config::default();
        assert_eq!(
            decode([2 | (1 << 4) | (1 << 8), 0], false, &c),
            Err(DescriptorError::Reserved)
        );
        assert_eq!(decode([1, 0], false, &c), Err(DescriptorError::Granularity));
        assert_eq!(
            decode([2 | (3 << 4), 19], false, &c),
            Err(DescriptorError::Granularity)
        );
        assert_eq!(
            decode([6 | (2 << 4), 0], false, &c),
            Err(DescriptorError::NeedsWideQueue(6))
        );
        assert_eq!(
            decode([3, 0], false, &c),
            Err(DescriptorError::UnsupportedType(3))
        );
        // Type bits 11:9 make it type 0x11.
        assert_eq!(
            decode([1 | (1 << 9) | (1 << 4), 0], false, &c),
            Err(DescriptorError::UnsupportedType(0x11))
        );
        assert_eq!(
            decode([0, 0], false, &c),
            Err(DescriptorError::UnsupportedType(0))
        );
        // IEC: global; index-selective with IM = 2 (IIDX low bits ignored); reserved bit 5.
        assert_eq!(
            decode([4, 0], false, &c),
            Ok(Invalidation::InterruptEntryCache(IecScope::Global))
        );
        assert_eq!(
            decode([4 | (1 << 4) | (2 << 27) | (0x0107 << 32), 0], false, &c),
            Ok(Invalidation::InterruptEntryCache(IecScope::Index {
                first: 0x104,
                count: 4
            }))
        );
        assert_eq!(
            decode([4 | (1 << 5), 0], false, &c),
            Err(DescriptorError::Reserved)
        );
        let sm = Config {
            scalable_mode: true,
            ..Config::default()
        };
        assert_eq!(
            decode([6 | (2 << 4) | (7 << 16) | (3 << 32), 0], true, &sm),
            Ok(Invalidation::PasidIotlb {
                did: 7,
                pasid: 3,
                range: None
            })
        );
    }
}
