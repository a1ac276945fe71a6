//! CAP and ECAP as computed from a [`Config`] (VT-d spec 11.4.2/11.4.3; QEMU's choices in
//! `anchors-x86.md` §1.3).

use crate::config::Config;
use crate::regs::{FRCD_BASE, IVA};

/// CAP.ND: 6 = 16-bit domain ids.
pub const CAP_ND: u64 = 6;
/// CAP.CM: caching mode.
pub const CAP_CM: u64 = 1 << 7;
/// CAP.SAGAW shift (bits 12:8).
pub const CAP_SAGAW_SHIFT: u32 = 8;
/// CAP.MGAW shift (bits 21:16).
pub const CAP_MGAW_SHIFT: u32 = 16;
/// CAP.FRO shift (bits 33:24): fault recording offset / 16.
pub const CAP_FRO_SHIFT: u32 = 24;
/// CAP.SLLPS: 2 MiB second-stage pages.
pub const CAP_SLLPS_2M: u64 = 1 << 34;
/// CAP.SLLPS: 1 GiB second-stage pages.
pub const CAP_SLLPS_1G: u64 = 1 << 35;
/// CAP.PSI: page-selective invalidation.
pub const CAP_PSI: u64 = 1 << 39;
/// CAP.NFR shift (bits 47:40): number of fault recording registers − 1.
pub const CAP_NFR_SHIFT: u32 = 40;
/// CAP.MAMV shift (bits 53:48).
pub const CAP_MAMV_SHIFT: u32 = 48;
/// CAP.DWD: write draining.
pub const CAP_DWD: u64 = 1 << 54;
/// CAP.DRD: read draining.
pub const CAP_DRD: u64 = 1 << 55;
/// CAP.ESIRTPS: SIRTP invalidates the interrupt entry cache.
pub const CAP_ESIRTPS: u64 = 1 << 62;
/// CAP.ESRTPS: SRTP invalidates every translation cache.
pub const CAP_ESRTPS: u64 = 1 << 63;

/// Maximum address mask value of page-selective invalidations: 2^18 pages (1 GiB).
pub const MAMV: u64 = 18;

/// ECAP.QI: queued invalidation.
pub const ECAP_QI: u64 = 1 << 1;
/// ECAP.DT: device-TLB.
pub const ECAP_DT: u64 = 1 << 2;
/// ECAP.IR: interrupt remapping.
pub const ECAP_IR: u64 = 1 << 3;
/// ECAP.EIM: extended interrupt mode.
pub const ECAP_EIM: u64 = 1 << 4;
/// ECAP.PT: pass-through.
pub const ECAP_PT: u64 = 1 << 6;
/// ECAP.SC: snoop control.
pub const ECAP_SC: u64 = 1 << 7;
/// ECAP.IRO shift (bits 17:8): IOTLB register offset / 16.
pub const ECAP_IRO_SHIFT: u32 = 8;
/// ECAP.MHMV shift (bits 23:20).
pub const ECAP_MHMV_SHIFT: u32 = 20;
/// ECAP.PSS shift (bits 39:35): PASID size − 1.
pub const ECAP_PSS_SHIFT: u32 = 35;
/// ECAP.PASID: requests with PASID.
pub const ECAP_PASID: u64 = 1 << 40;
/// ECAP.SMTS: scalable-mode translation.
pub const ECAP_SMTS: u64 = 1 << 43;
/// ECAP.SLTS: second-stage translation in scalable mode.
pub const ECAP_SLTS: u64 = 1 << 46;

/// PASIDs are 20 bits wide when scalable mode is on (ECAP.PSS = 19).
pub const PASID_BITS: u32 = 20;

/// The CAP value of a unit with `config`.
///
/// Never advertised: RWBF (no write buffer), PLMR/PHMR (no protected memory regions), AFL,
/// ZLR, first-stage features (FL1GP, FL5LP; Linux would prefer first stage and stop flushing
/// on map, `anchors-x86.md` §3.4), PI.
pub fn cap(config: &Config) -> u64 {
    let aw = config.address_width;
    let mut cap = CAP_ND
        | (aw.sagaw() << CAP_SAGAW_SHIFT)
        | (u64::from(aw.bits() - 1) << CAP_MGAW_SHIFT)
        | ((FRCD_BASE / 16) << CAP_FRO_SHIFT)
        | CAP_PSI
        | ((config.fault_record_count() as u64 - 1) << CAP_NFR_SHIFT)
        | (MAMV << CAP_MAMV_SHIFT)
        | CAP_DWD
        | CAP_DRD
        // SRTP drops every cache here, so the guest need not flush after it.
        | CAP_ESRTPS;
    if config.caching_mode {
        cap |= CAP_CM;
    }
    if config.large_pages.two_mib {
        cap |= CAP_SLLPS_2M;
    }
    if config.large_pages.one_gib {
        cap |= CAP_SLLPS_1G;
    }
    if config.interrupt_remapping {
        // No interrupt entry is cached, so SIRTP trivially invalidates the cache.
        cap |= CAP_ESIRTPS;
    }
    cap
}

/// The ECAP value of a unit with `config`. Queued invalidation is always supported.
pub fn ecap(config: &Config) -> u64 {
    let mut ecap = ECAP_QI | ((IVA / 16) << ECAP_IRO_SHIFT);
    if config.device_tlb {
        ecap |= ECAP_DT;
    }
    if config.interrupt_remapping {
        ecap |= ECAP_IR | (0xf << ECAP_MHMV_SHIFT);
        if config.eim() {
            ecap |= ECAP_EIM;
        }
    }
    if config.pass_through {
        ecap |= ECAP_PT;
    }
    if config.snoop_control {
        ecap |= ECAP_SC;
    }
    if config.scalable_mode {
        ecap |= ECAP_SMTS | ECAP_SLTS | ECAP_PASID | (u64::from(PASID_BITS - 1) << ECAP_PSS_SHIFT);
    }
    ecap
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AddressWidth;

    #[test]
    fn qemu_compatible_fields() {
        // QEMU aw=48, caching-mode=on, one FRCD: 0x80d2_008c_222f_0686 (anchors §1.3).
        let c = Config {
            fault_records: 1,
            ..Config::default()
        };
        assert_eq!(cap(&c), 0x80d2_008c_222f_0686);
        let c39 = Config {
            address_width: AddressWidth::Aw39,
            caching_mode: false,
            fault_records: 1,
            ..Config::default()
        };
        assert_eq!(cap(&c39), 0x80d2_008c_2226_0206);
        // Eight records: NFR = 7.
        assert_eq!((cap(&Config::default()) >> CAP_NFR_SHIFT) & 0xff, 7);
        // Legacy defaults: QI, IRO=0xf, PT.
        assert_eq!(ecap(&Config::default()), 0xf42);
    }
}
