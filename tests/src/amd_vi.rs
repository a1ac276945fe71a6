//! The AMD-Vi model (`viommu-amd-vi`) behind the scenario runner: `model amd-vi [key=value…]`.
//!
//! MMIO offsets are the model's register window (spec 48882 §3.4; the command head/tail at
//! 0x2000/0x2008, Status at 0x2020). Model options (values are numbers or expressions without
//! variables; unknown keys are errors):
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `levels=4\|5\|6` | host page-table levels supported (`Config::host_levels`, EFR.HATS) | 6 |
//! | `npcache=0\|1` | capability-header NpCache (`Config::np_cache`) | 1 |
//! | `prefetch=0\|1` | EFR.PreFSup (`Config::prefetch`) | 1 |
//! | `ia=0\|1` | EFR.IASup, INVALIDATE_IOMMU_ALL (`Config::invalidate_all`) | 1 |
//! | `ppr=0\|1` | EFR.PPRSup (`Config::ppr`) | 0 |
//! | `max-run=SIZE` | largest host mapping (`Config::shadow.max_run`) | 2M |
//! | `msi=ADDR:DATA` | the MSI message the guest programmed in the IOMMU function's PCI MSI capability ([`AmdVi::set_msi`]); without it MSI is disabled there and interrupt conditions only set Status bits | none |
//! | `alias=RID:DEVID` | IVRS alias: DMA from requester RID uses DEVID's entry ([`AmdVi::set_alias`]); may repeat | none |
//! | `ir=0\|1` | interrupt remapping (`Config::interrupt_remapping`) | 1 |
//! | `ga=0\|1` | EFR.GASup, 128-bit IRTEs with Control.GAEn (`Config::ga`) | 1 |
//! | `xt=0\|1` | EFR.XTSup, x2APIC destinations and IntCapXT (`Config::x2apic`) | 1 |
//! | `ioapic=ID:DEVID`, `hpet=N:DEVID` | IVRS special devices (`Config::special_devices`); any of them replaces the default (IOAPIC 0 at 00:14.0); may repeat | `ioapic=0:0xa0` |
//!
//! DMA faults are named after the event the model raised for them, in kebab-case:
//! `illegal-dev-table-entry`, `io-page-fault`, `dev-tab-hardware-error`,
//! `page-tab-hardware-error` — also when the entry's SA bit suppressed the event, so scenarios
//! check the event log to tell the two apart. A fault for which no event was raised at all
//! (a requester id that does not fit 16 bits) is `no-event`.
//!
//! `irq …` go to the model's `InterruptRemapper` implementation (the runner delivers
//! `irq request` through a `RemappingMsiSink`, as a VMM wires an emulated device; the model's
//! own [`AmdVi::deliver_msi`] does the same). Interrupt-remapping faults are named after the
//! event the request raised (`IrFault::code`): `io-page-fault`, `invalid-device-request`,
//! `illegal-dev-table-entry`, `dev-tab-hardware-error`, `page-tab-hardware-error` (also when
//! IG or SupIOPF suppressed it: `recorded=0`), and `no-event` when the architecture defines
//! none (NMI/INIT/ExtINT without their pass bit, reserved delivery modes, an address outside
//! the interrupt range).
//!
//! Error kinds: MMIO writes (`expect-error=KIND`) fail with `host-out-of-resources` or
//! `host-unmap` when shadowing a passthrough device failed on the host; `host` fails with
//! `host-out-of-resources`, `already-attached` or `bad-device` (not a 16-bit DeviceID).

use crate::expr::{Vars, eval};
use crate::target::{DmaReq, ScenarioTarget, TargetEnv, TargetError, translate_pieces};
use std::sync::Arc;
use viommu_amd_vi::{AmdVi, AmdViError, Config, EventCode, SpecialDevice, SpecialKind};
use viommu_shared::AddrRange;
use viommu_shared::host::SharedSimHost;
use viommu_shared::irq::{InterruptRemapper, IrFault};
use viommu_shared::memory::{DmaMapping, MemoryEvent, MemoryEvents};
use viommu_shared::regs::Msi;

/// The AMD-Vi model as a scenario target.
pub struct AmdViTarget {
    model: AmdVi,
}

fn number(key: &str, v: &str) -> Result<u64, String> {
    eval(v, &Vars::new()).map_err(|e| format!("model amd-vi option {key}: {e}"))
}

fn flag(key: &str, v: &str) -> Result<bool, String> {
    match number(key, v)? {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(format!("model amd-vi option {key}={n}: want 0 or 1")),
    }
}

/// Splits `A:B` into two numbers.
fn pair(key: &str, v: &str) -> Result<(u64, u64), String> {
    let (a, b) = v
        .split_once(':')
        .ok_or_else(|| format!("model amd-vi option {key}={v}: want A:B"))?;
    Ok((number(key, a)?, number(key, b)?))
}

fn device_id(key: &str, v: u64) -> Result<u16, String> {
    u16::try_from(v).map_err(|_| format!("model amd-vi option {key}: device {v:#x} is not 16-bit"))
}

impl AmdViTarget {
    /// Builds the model from the `model amd-vi` options (see the module documentation).
    pub fn new(opts: &[(String, String)], env: TargetEnv) -> Result<Self, String> {
        let mut config = Config::default();
        let mut msi = None;
        let mut aliases = Vec::new();
        let mut special_given = false;
        for (k, v) in opts {
            match k.as_str() {
                "levels" => {
                    config.host_levels = match number(k, v)? {
                        n @ 4..=6 => n as u8,
                        n => return Err(format!("model amd-vi option levels={n}: want 4, 5 or 6")),
                    }
                }
                "npcache" => config.np_cache = flag(k, v)?,
                "prefetch" => config.prefetch = flag(k, v)?,
                "ia" => config.invalidate_all = flag(k, v)?,
                "ppr" => config.ppr = flag(k, v)?,
                "max-run" => {
                    let n = number(k, v)?;
                    if n < 4096 || !n.is_power_of_two() {
                        return Err(format!(
                            "model amd-vi option max-run={n:#x}: want a power of two >= 4K"
                        ));
                    }
                    config.shadow.max_run = n;
                }
                "msi" => {
                    let (address, data) = pair(k, v)?;
                    let data = u32::try_from(data)
                        .map_err(|_| format!("model amd-vi option msi: data {data:#x} too wide"))?;
                    msi = Some(Msi { address, data });
                }
                "alias" => {
                    let (rid, devid) = pair(k, v)?;
                    aliases.push((device_id(k, rid)?, device_id(k, devid)?));
                }
                "ir" => config.interrupt_remapping = flag(k, v)?,
                "ga" => config.ga = flag(k, v)?,
                "xt" => config.x2apic = flag(k, v)?,
                "ioapic" | "hpet" => {
                    let (handle, devid) = pair(k, v)?;
                    if !special_given {
                        config.special_devices.clear();
                        special_given = true;
                    }
                    config.special_devices.push(SpecialDevice {
                        kind: if k == "ioapic" {
                            SpecialKind::IoApic
                        } else {
                            SpecialKind::Hpet
                        },
                        handle: u8::try_from(handle)
                            .map_err(|_| format!("model amd-vi option {k}: handle too wide"))?,
                        device_id: device_id(k, devid)?,
                    });
                }
                _ => return Err(format!("unknown option '{k}' for model amd-vi")),
            }
        }
        let model = AmdVi::new(config, env.mem, env.msi);
        model.set_msi(msi);
        for (rid, devid) in aliases {
            // Nothing is attached yet, so no host can fail here.
            model
                .set_alias(rid, devid)
                .map_err(|e| format!("model amd-vi option alias: {e}"))?;
        }
        Ok(AmdViTarget { model })
    }

    /// Events raised so far (written to the log or not).
    fn events_raised(&self) -> u64 {
        let s = self.model.stats();
        s.events_logged + s.events_dropped
    }
}

/// The stable kind of a model error.
fn error_kind(e: &AmdViError) -> &'static str {
    match e {
        AmdViError::HostOutOfResources { .. } => "host-out-of-resources",
        AmdViError::HostUnmap { .. } => "host-unmap",
        AmdViError::AlreadyAttached { .. } => "already-attached",
        AmdViError::NotAttached { .. } => "not-attached",
        AmdViError::Snapshot(_) => "snapshot",
    }
}

fn target_error(e: AmdViError) -> TargetError {
    TargetError::new(error_kind(&e), e.to_string())
}

/// The event name scenarios use for a fault reason.
fn event_name(code: EventCode) -> &'static str {
    match code {
        EventCode::IllegalDevTableEntry => "illegal-dev-table-entry",
        EventCode::IoPageFault => "io-page-fault",
        EventCode::DevTabHardwareError => "dev-tab-hardware-error",
        EventCode::PageTabHardwareError => "page-tab-hardware-error",
        EventCode::IllegalCommand => "illegal-command",
        EventCode::CommandHardwareError => "command-hardware-error",
        EventCode::InvalidDeviceRequest => "invalid-device-request",
    }
}

/// The scenario name of an interrupt-remapping fault code: the event's name, `no-event` for
/// 0 (no event defined: target aborts, addresses outside the interrupt range), the code in
/// hex for anything else.
fn irq_fault_name(code: u16) -> String {
    match u8::try_from(code) {
        Ok(0) => "no-event".into(),
        Ok(c) => {
            EventCode::from_raw(c).map_or_else(|| format!("{code:#x}"), |e| event_name(e).into())
        }
        Err(_) => format!("{code:#x}"),
    }
}

impl ScenarioTarget for AmdViTarget {
    fn mmio_read(&mut self, offset: u64, len: usize) -> Result<u64, TargetError> {
        Ok(self.model.mmio_read(offset, len))
    }

    fn mmio_write(&mut self, offset: u64, len: usize, value: u64) -> Result<(), TargetError> {
        self.model
            .mmio_write(offset, len, value)
            .map_err(target_error)
    }

    fn dma(&mut self, req: &DmaReq) -> Result<Vec<(u64, u64)>, String> {
        let before = self.events_raised();
        translate_pieces(&self.model, req).map_err(|e| {
            e.describe(|_| {
                if self.events_raised() == before {
                    return "no-event".into();
                }
                // The model records the event it raised (logged, dropped or suppressed).
                let last = self.model.recent_events().last().copied();
                last.map_or("no-event", |r| event_name(r.event.code)).into()
            })
        })
    }

    fn detach_host(&mut self, dev: u32) -> Result<(), TargetError> {
        let id = u16::try_from(dev).map_err(|_| {
            TargetError::new(
                "bad-device",
                format!("device {dev:#x} is not a 16-bit DeviceID"),
            )
        })?;
        self.model.detach_host(id).map_err(target_error)
    }

    fn memory_event(&mut self, event: MemoryEvent) -> Result<(), TargetError> {
        self.model
            .memory_event(event)
            .map(|_| ())
            .map_err(target_error)
    }

    fn dma_mappings(&mut self, range: AddrRange) -> Result<Vec<DmaMapping>, TargetError> {
        Ok(self.model.dma_mappings(range))
    }

    fn interrupt_remapper(&self) -> Option<Arc<dyn InterruptRemapper>> {
        Some(Arc::new(self.model.clone()))
    }

    /// The event the model raised for the refused request (`IrFault::code` is the event
    /// code), or `no-event` when the architecture defines none (code 0).
    fn irq_fault_name(&self, fault: &IrFault) -> String {
        irq_fault_name(fault.code)
    }

    fn attach_host(&mut self, dev: u32, host: SharedSimHost) -> Result<(), TargetError> {
        let id = u16::try_from(dev).map_err(|_| {
            TargetError::new(
                "bad-device",
                format!("device {dev:#x} is not a 16-bit DeviceID"),
            )
        })?;
        self.model
            .attach_host(id, Box::new(host))
            .map_err(target_error)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, TargetError> {
        Ok(self.model.save_bytes())
    }

    fn restore(&mut self, stream: &[u8]) -> Result<(), TargetError> {
        self.model.restore_bytes(stream).map_err(target_error)
    }
}

#[cfg(test)]
mod tests {
    use crate::run_str;

    #[test]
    fn options_are_checked() {
        for (line, want) in [
            (
                "model amd-vi frob=1\n",
                "unknown option 'frob' for model amd-vi",
            ),
            ("model amd-vi levels=3\n", "levels=3: want 4, 5 or 6"),
            ("model amd-vi npcache=2\n", "npcache=2: want 0 or 1"),
            ("model amd-vi max-run=0x3000\n", "want a power of two >= 4K"),
            ("model amd-vi msi=0xfee00000\n", "want A:B"),
            ("model amd-vi msi=0:0x1_0000_0000\n", "too wide"),
            ("model amd-vi alias=0x10000:1\n", "is not 16-bit"),
        ] {
            let e = run_str(line).unwrap_err();
            assert!(e.msg.contains(want), "{line:?}: {}", e.msg);
        }
        run_str("model amd-vi levels=4 npcache=0 prefetch=0 ia=0 ppr=1 max-run=1G msi=0xfee00000:0x41 alias=8:0x10\nmmio read 0x30 8 expect 0x86\n").unwrap();
        run_str(
            "model amd-vi ppr=1 ga=0 xt=1 prefetch=0 ia=0 levels=4\nmmio read 0x30 8 expect 0x6\n",
        )
        .unwrap();
        // The IOAPIC's DTE remaps through a one-entry table, which index 0x30 is beyond;
        // without interrupt remapping (ir=0) its MSIs pass unremapped.
        let ioapic = "write64 0x1001410 2<<60|1\nmmio write 0 8 0x1000000|0x1ff\nmmio write 0x18 8 1\nirq remap dev=00:14.0 addr=0xfee01000 data=0x30 expect";
        run_str(&format!(
            "model amd-vi ir=0\n{ioapic} ok dest=1 vector=0x30 index=none\n"
        ))
        .unwrap();
        run_str(&format!(
            "model amd-vi\n{ioapic} fault=io-page-fault kind=index-out-of-range index=0x30\n"
        ))
        .unwrap();
        let e = run_str("model amd-vi ioapic=0x100:1\n").unwrap_err();
        assert!(e.msg.contains("handle too wide"), "{}", e.msg);
    }

    #[test]
    fn faults_are_named_after_events() {
        // IOMMU on, device table of 128 entries at 0x10_0000: 00:02.0 blocked (V|TV),
        // DeviceID 0x100 beyond the table, requester ids above 16 bits raise nothing.
        let base =
            "model amd-vi\nwrite64 0x100200 3\nmmio write 0 8 0x100000\nmmio write 0x18 8 1\n";
        for (dma, want) in [
            ("dev=00:02.0", "io-page-fault"),
            ("dev=01:00.0", "illegal-dev-table-entry"),
            ("dev=0x10000", "no-event"),
        ] {
            let text = format!("{base}dma {dma} iova=0x1000 read expect fault=bogus\n");
            let e = run_str(&text).unwrap_err();
            assert!(e.msg.ends_with(&format!("got fault {want}")), "{}", e.msg);
        }
        let e = run_str(&format!("{base}host dev=0x10000\n")).unwrap_err();
        assert!(e.msg.contains("bad-device"), "{}", e.msg);
    }
}
