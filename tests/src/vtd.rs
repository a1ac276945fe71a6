//! The Intel VT-d model (`viommu_vtd::Vtd`) behind the scenario seam.
//!
//! `model vtd [key=value…]` options map onto [`viommu_vtd::Config`] fields; anything not
//! given keeps `Config::default()` (48-bit, caching mode on, legacy mode only, pass-through,
//! 2M/1G pages, 8 fault recording registers):
//!
//! | key | values | field |
//! |---|---|---|
//! | `aw` | `39`, `48`, `57` | `address_width` (CAP.MGAW/SAGAW) |
//! | `cm` | `0`, `1` | `caching_mode` (CAP.CM) |
//! | `sm` | `0`, `1` | `scalable_mode` (ECAP.SMTS/SLTS/PASID) |
//! | `pt` | `0`, `1` | `pass_through` (ECAP.PT) |
//! | `sc` | `0`, `1` | `snoop_control` (ECAP.SC) |
//! | `dt` | `0`, `1` | `device_tlb` (ECAP.DT) |
//! | `ir` | `0`, `1` | `interrupt_remapping` (ECAP.IR) |
//! | `eim` | `0`, `1` | `extended_interrupt_mode` (ECAP.EIM, with `ir=1`) |
//! | `lp` | `0` none, `1` 2M and 1G, `2m` 2M only | `large_pages` (CAP.SLLPS) |
//! | `frcd` | `1`..`256` | `fault_records` (CAP.NFR + 1) |
//! | `max-run` | a power of two ≥ 4K | `shadow.max_run` (largest host mapping) |
//!
//! Unknown keys and malformed values are errors.
//!
//! - `mmio read`/`mmio write` go to `Vtd::mmio_read`/`Vtd::mmio_write`; a write's
//!   `VtdError` becomes the error kind `host-out-of-resources`, `host-unmap`,
//!   `invalid-device-id`, `already-attached`, `not-attached`, `caching-mode-off` or
//!   `incompatible-snapshot`.
//! - `dma` translates page by page through the model's `DmaTranslate` implementation (no
//!   device IOTLB in between, so every page is walked). A fault is named by its VT-d fault
//!   reason code in lower-case hex (`0x5`, `0x87`) — the reason of the fault the unit
//!   detected, whether it was recorded, collapsed into a pending record, dropped on
//!   overflow or suppressed by FPD (check which with `mmio read` of FSTS and the fault
//!   recording registers). A request the unit refuses without a fault (a requester id above
//!   16 bits) is named `blocked`.
//! - `host dev=D` attaches a `SharedSimHost` with `Vtd::attach_host` (the model needs
//!   `cm=1` for that).
//! - `irq …` go to the unit's `InterruptRemapper` implementation (the runner delivers
//!   requests through a `RemappingMsiSink`, as a VMM wires an emulated device); faults are
//!   named by their reason code in lower-case hex (`0x21`, `0x26`).

use crate::expr::{Vars, eval};
use crate::target::{DmaReq, ScenarioTarget, TargetEnv, TargetError, translate_pieces};
use std::sync::Arc;
use viommu_shared::AddrRange;
use viommu_shared::host::SharedSimHost;
use viommu_shared::irq::InterruptRemapper;
use viommu_shared::memory::{DmaMapping, MemoryEvent, MemoryEvents};
use viommu_vtd::{AddressWidth, Config, LargePages, Vtd, VtdError, VtdStats};

/// The VT-d adapter. See the module documentation.
pub struct VtdTarget {
    vtd: Vtd,
}

/// Parses a `0|1` option.
fn flag(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("model vtd: option '{key}' takes 0 or 1, got '{v}'")),
    }
}

/// Parses a numeric option.
fn number(key: &str, v: &str) -> Result<u64, String> {
    eval(v, &Vars::new()).map_err(|e| format!("model vtd: option '{key}': {e}"))
}

/// The configuration named by the `model vtd` options.
pub fn config_from_options(opts: &[(String, String)]) -> Result<Config, String> {
    let mut c = Config::default();
    for (k, v) in opts {
        match k.as_str() {
            "aw" => {
                c.address_width = match v.as_str() {
                    "39" => AddressWidth::Aw39,
                    "48" => AddressWidth::Aw48,
                    "57" => AddressWidth::Aw57,
                    _ => return Err(format!("model vtd: aw takes 39, 48 or 57, got '{v}'")),
                }
            }
            "cm" => c.caching_mode = flag(k, v)?,
            "sm" => c.scalable_mode = flag(k, v)?,
            "pt" => c.pass_through = flag(k, v)?,
            "sc" => c.snoop_control = flag(k, v)?,
            "dt" => c.device_tlb = flag(k, v)?,
            "ir" => c.interrupt_remapping = flag(k, v)?,
            "eim" => c.extended_interrupt_mode = flag(k, v)?,
            "lp" => {
                c.large_pages = match v.as_str() {
                    "0" => LargePages {
                        two_mib: false,
                        one_gib: false,
                    },
                    "1" => LargePages::default(),
                    "2m" => LargePages {
                        two_mib: true,
                        one_gib: false,
                    },
                    _ => return Err(format!("model vtd: lp takes 0, 1 or 2m, got '{v}'")),
                }
            }
            "frcd" => {
                let n = number(k, v)?;
                if !(1..=256).contains(&n) {
                    return Err(format!("model vtd: frcd takes 1..256, got {n}"));
                }
                c.fault_records = n as u16;
            }
            "max-run" => {
                let n = number(k, v)?;
                if n < 4096 || !n.is_power_of_two() {
                    return Err(format!(
                        "model vtd: max-run takes a power of two of at least 4K, got {n:#x}"
                    ));
                }
                c.shadow = c.shadow.clone().with_max_run(n);
            }
            _ => return Err(format!("unknown option '{k}' for model vtd")),
        }
    }
    Ok(c)
}

/// Stable kind names of the model's errors.
fn target_error(e: VtdError) -> TargetError {
    let kind = match &e {
        VtdError::HostOutOfResources { .. } => "host-out-of-resources",
        VtdError::HostUnmap { .. } => "host-unmap",
        VtdError::InvalidDeviceId { .. } => "invalid-device-id",
        VtdError::AlreadyAttached { .. } => "already-attached",
        VtdError::NotAttached { .. } => "not-attached",
        VtdError::CachingModeOff => "caching-mode-off",
        VtdError::HostNotCoherent { .. } => "host-not-coherent",
        VtdError::Snapshot(_) => "snapshot",
    };
    TargetError::new(kind, e.to_string())
}

/// How many faults the unit has detected on DMA requests, whatever became of them.
fn faults_seen(s: &VtdStats) -> u64 {
    s.faults_recorded + s.faults_suppressed + s.faults_compressed + s.faults_overflowed
}

impl VtdTarget {
    /// Builds the unit from the `model vtd` options.
    pub fn new(opts: &[(String, String)], env: TargetEnv) -> Result<Self, String> {
        let config = config_from_options(opts)?;
        Ok(VtdTarget {
            vtd: Vtd::new(config, env.mem, env.msi),
        })
    }

    /// The unit (for tests of the adapter itself).
    pub fn vtd(&self) -> &Vtd {
        &self.vtd
    }
}

impl ScenarioTarget for VtdTarget {
    fn mmio_read(&mut self, offset: u64, len: usize) -> Result<u64, TargetError> {
        Ok(self.vtd.mmio_read(offset, len))
    }

    fn mmio_write(&mut self, offset: u64, len: usize, value: u64) -> Result<(), TargetError> {
        self.vtd
            .mmio_write(offset, len, value)
            .map_err(target_error)
    }

    fn dma(&mut self, req: &DmaReq) -> Result<Vec<(u64, u64)>, String> {
        // Successful pages record no fault, so the count before the request is the count
        // before the page that faulted.
        let before = faults_seen(&self.vtd.stats());
        translate_pieces(&self.vtd, req).map_err(|e| {
            e.describe(|_| {
                let detected = faults_seen(&self.vtd.stats()) > before;
                match self.vtd.last_fault() {
                    Some(f) if detected => format!("{:#x}", f.reason.code()),
                    _ => "blocked".into(),
                }
            })
        })
    }

    fn detach_host(&mut self, dev: u32) -> Result<(), TargetError> {
        self.vtd.detach_host(dev).map_err(target_error)
    }

    fn memory_event(&mut self, event: MemoryEvent) -> Result<(), TargetError> {
        self.vtd
            .memory_event(event)
            .map(|_| ())
            .map_err(target_error)
    }

    fn dma_mappings(&mut self, range: AddrRange) -> Result<Vec<DmaMapping>, TargetError> {
        Ok(self.vtd.dma_mappings(range))
    }

    fn attach_host(&mut self, dev: u32, host: SharedSimHost) -> Result<(), TargetError> {
        self.vtd
            .attach_host(dev, Box::new(host))
            .map_err(target_error)
    }

    fn interrupt_remapper(&self) -> Option<Arc<dyn InterruptRemapper>> {
        Some(Arc::new(self.vtd.clone()))
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, TargetError> {
        Ok(self.vtd.save_bytes())
    }

    fn restore(&mut self, stream: &[u8]) -> Result<(), TargetError> {
        self.vtd.restore_bytes(stream).map_err(target_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_map_onto_config() {
        let c = config_from_options(&opts(&[
            ("aw", "57"),
            ("cm", "0"),
            ("sm", "1"),
            ("pt", "0"),
            ("sc", "1"),
            ("lp", "2m"),
            ("frcd", "4"),
            ("max-run", "64K"),
        ]))
        .unwrap();
        assert_eq!(c.address_width, AddressWidth::Aw57);
        assert!(!c.caching_mode && c.scalable_mode && !c.pass_through && c.snoop_control);
        assert!(c.large_pages.two_mib && !c.large_pages.one_gib);
        assert_eq!(c.fault_records, 4);
        assert_eq!(c.shadow.max_run, 0x1_0000);
        assert_eq!(config_from_options(&[]).unwrap(), Config::default());
    }

    #[test]
    fn bad_options_are_rejected() {
        for (k, v) in [
            ("aw", "40"),
            ("cm", "2"),
            ("frcd", "0"),
            ("frcd", "257"),
            ("max-run", "3000"),
            ("lp", "1g"),
            ("colour", "1"),
        ] {
            assert!(config_from_options(&opts(&[(k, v)])).is_err(), "{k}={v}");
        }
    }
}
