//! The runner's side of the interrupt-remapping operations (`irq …`,
//! `expect-irq-invalidation`, `expect-route-updates`, `expect-irq-route`; grammar in
//! `tests/SCENARIOS.md`, "Interrupt remapping", parsed in [`crate::parse`]): the model's
//! remapper with a recording listener and the scenario's [`RouteTable`], and how a
//! remapping result is compared with an expected `OUTCOME` and shown in messages.

use crate::ast::IrqExpect;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use viommu_shared::irq::{
    DeliveryMode, DestinationMode, InterruptRemapper, IrFault, IrFaultKind, IrInvalidation,
    IrListener, Resolution, RouteTable, TriggerMode,
};

/// Records the model's interrupt-remapping invalidation notifications.
#[derive(Default)]
struct IrqLog(Mutex<Vec<IrInvalidation>>);

impl IrqLog {
    fn lock(&self) -> MutexGuard<'_, Vec<IrInvalidation>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl IrListener for IrqLog {
    fn invalidated(&self, what: IrInvalidation) {
        self.lock().push(what);
    }
}

/// The interrupt-remapping side of a model under test: its remapper, the scenario's route
/// table (registered at `model`, as a VMM registers its KVM routing table) and the
/// notifications not yet matched by `expect-irq-invalidation`.
pub(crate) struct IrqState {
    /// The model's remapper.
    pub remapper: Arc<dyn InterruptRemapper>,
    /// The scenario's route table (`irq route-set`, `expect-route-updates`).
    pub routes: Arc<RouteTable>,
    log: Arc<IrqLog>,
    /// Notifications received since the last checkpoint and not yet matched, oldest first.
    pub unmatched: Vec<IrInvalidation>,
}

impl IrqState {
    /// Registers a recording listener and a route table on `remapper`.
    pub fn new(remapper: Arc<dyn InterruptRemapper>) -> IrqState {
        let log = Arc::new(IrqLog::default());
        remapper.add_listener(log.clone());
        IrqState {
            routes: RouteTable::new(remapper.clone(), None),
            remapper,
            log,
            unmatched: Vec::new(),
        }
    }

    /// Moves the notifications received so far into [`unmatched`](Self::unmatched).
    pub fn collect(&mut self) {
        self.unmatched.append(&mut self.log.lock());
    }
}

/// Scenario text of a notification (`expect-irq-invalidation` notation).
pub(crate) fn show_invalidation(i: &IrInvalidation) -> String {
    match i {
        IrInvalidation::All => "all".into(),
        IrInvalidation::Indices { first, count } => {
            format!("indices first={first:#x} count={count:#x}")
        }
        IrInvalidation::Source(s) => format!("source dev={s:#x}"),
    }
}

fn delivery_name(d: DeliveryMode) -> &'static str {
    match d {
        DeliveryMode::Fixed => "fixed",
        DeliveryMode::LowestPriority => "lowest",
        DeliveryMode::Smi => "smi",
        DeliveryMode::Nmi => "nmi",
        DeliveryMode::Init => "init",
        DeliveryMode::ExtInt => "extint",
    }
}

fn dm_name(d: DestinationMode) -> &'static str {
    match d {
        DestinationMode::Physical => "physical",
        DestinationMode::Logical => "logical",
    }
}

fn trigger_name(t: TriggerMode) -> &'static str {
    match t {
        TriggerMode::Edge => "edge",
        TriggerMode::Level => "level",
    }
}

/// Scenario name of a fault kind (`kind=`).
pub fn kind_name(k: IrFaultKind) -> &'static str {
    match k {
        IrFaultKind::Malformed => "malformed",
        IrFaultKind::IndexOutOfRange => "index-out-of-range",
        IrFaultKind::NotPresent => "not-present",
        IrFaultKind::Reserved => "reserved",
        IrFaultKind::SourceMismatch => "source-mismatch",
        IrFaultKind::TableReadError => "table-read-error",
        IrFaultKind::Blocked => "blocked",
        IrFaultKind::Unsupported => "unsupported",
    }
}

fn index_text(i: Option<u32>) -> String {
    i.map_or("none".into(), |x| format!("{x:#x}"))
}

/// A remapping result in `OUTCOME` notation, every field written (`fault_name` names a
/// fault as the model's adapter does).
pub(crate) fn show(
    r: &Result<Resolution, IrFault>,
    fault_name: &dyn Fn(&IrFault) -> String,
) -> String {
    match r {
        Ok(r) => {
            let i = &r.interrupt;
            format!(
                "ok dest={:#x} vector={:#x} delivery={} dm={} trigger={} rh={} index={}",
                i.destination,
                i.vector,
                delivery_name(i.delivery),
                dm_name(i.destination_mode),
                trigger_name(i.trigger),
                u8::from(i.redirection_hint),
                index_text(r.index)
            )
        }
        Err(f) => format!(
            "fault={} kind={} index={} recorded={}",
            fault_name(f),
            kind_name(f.kind),
            index_text(f.index),
            u8::from(f.recorded)
        ),
    }
}

/// Checks `got` against the expected `OUTCOME`: every field written must match, fields
/// not written are not checked. `eval` evaluates numbers and expressions, `fault_name`
/// names a fault as the model's adapter does.
pub(crate) fn check(
    got: &Result<Resolution, IrFault>,
    want: &IrqExpect,
    eval: &dyn Fn(&str) -> Result<u64, String>,
    fault_name: &dyn Fn(&IrFault) -> String,
) -> Result<(), String> {
    let num = |v: &str| -> Result<Option<u64>, String> {
        if v == "none" {
            Ok(None)
        } else {
            eval(v).map(Some)
        }
    };
    let index_of = |i: Option<u32>| i.map(u64::from);
    let mismatch = |what: String| Err(format!("expected {what}, got {}", show(got, fault_name)));
    match (want, got) {
        (IrqExpect::Ok(fields), Ok(r)) => {
            let i = &r.interrupt;
            for (k, v) in fields {
                let ok = match k.as_str() {
                    "dest" => num(v)? == Some(u64::from(i.destination)),
                    "vector" => num(v)? == Some(u64::from(i.vector)),
                    "rh" => num(v)? == Some(u64::from(i.redirection_hint)),
                    "index" => num(v)? == index_of(r.index),
                    "delivery" => v == delivery_name(i.delivery),
                    "dm" => v == dm_name(i.destination_mode),
                    "trigger" => v == trigger_name(i.trigger),
                    _ => return Err(format!("unknown field '{k}'")),
                };
                if !ok {
                    return mismatch(format!("{k}={v}"));
                }
            }
            Ok(())
        }
        (IrqExpect::Fault { name, fields }, Err(f)) => {
            if let Some(n) = name
                && *n != fault_name(f)
            {
                return mismatch(format!("fault={n}"));
            }
            for (k, v) in fields {
                let ok = match k.as_str() {
                    "kind" => v == kind_name(f.kind),
                    "index" => num(v)? == index_of(f.index),
                    "recorded" => num(v)? == Some(u64::from(f.recorded)),
                    _ => return Err(format!("unknown field '{k}'")),
                };
                if !ok {
                    return mismatch(format!("{k}={v}"));
                }
            }
            Ok(())
        }
        (IrqExpect::Ok(_), Err(_)) => mismatch("ok".into()),
        (IrqExpect::Fault { .. }, Ok(_)) => mismatch("a fault".into()),
    }
}

#[cfg(test)]
mod tests {
    use crate::run_str;

    /// AMD-Vi, IOMMU and event log (at 0x30_2000) on, device table at 0x10_0000: 00:02.0
    /// (DomainID 3) remaps through a 4-entry table at 0x20_0000 whose entry 0 sends vector
    /// 0x41 to APIC 3.
    const AMD: &str = "model amd-vi\nwrite64 0x100200 3\nwrite64 0x100208 3\nwrite64 0x100210 2<<60|0x200000|2<<1|1\nwrite32 0x200000 0x41<<16|3<<8|1\nmmio write 0 8 0x100000\nmmio write 0x10 8 0x302000|9<<56\nmmio write 0x18 8 5\n";

    fn fails(setup: &str, line: &str) -> String {
        run_str(&format!("{setup}{line}\n")).unwrap_err().msg
    }

    #[test]
    fn every_written_field_is_compared() {
        run_str(&format!(
            "{AMD}irq remap dev=00:02.0 addr=0xfee00000 data=0 expect ok dest=3 vector=0x41 delivery=fixed dm=physical trigger=edge rh=0 index=0\n\
             irq remap dev=00:02.0 addr=0xfee00000 data=4 expect fault=io-page-fault kind=index-out-of-range index=4 recorded=1\n\
             irq route dev=00:02.0 addr=0xfee00000 data=4 expect fault=io-page-fault kind=index-out-of-range index=4 recorded=0\n"
        ))
        .unwrap();
        for (line, want) in [
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=0 expect ok vector=0x42",
                "expected vector=0x42, got ok dest=0x3 vector=0x41 delivery=fixed dm=physical trigger=edge rh=0 index=0x0",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=0 expect ok dest=4",
                "dest=4",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=0 expect ok delivery=lowest",
                "delivery=lowest",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=0 expect ok dm=logical",
                "dm=logical",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=0 expect ok trigger=level",
                "trigger=level",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=0 expect ok rh=1",
                "rh=1",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=0 expect ok index=none",
                "index=none",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=0 expect fault",
                "expected a fault, got ok",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=4 expect ok",
                "expected ok, got fault=io-page-fault kind=index-out-of-range index=0x4 recorded=1",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=4 expect fault=illegal-dev-table-entry",
                "expected fault=illegal-dev-table-entry",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=4 expect fault kind=reserved",
                "kind=reserved",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=4 expect fault index=5",
                "index=5",
            ),
            (
                "irq remap dev=00:02.0 addr=0xfee00000 data=4 expect fault recorded=0",
                "recorded=0",
            ),
            (
                "irq route dev=00:02.0 addr=0xfee00000 data=4 expect fault recorded=1",
                "recorded=1",
            ),
            // Outside the interrupt range: no event, so no architected name.
            (
                "irq remap dev=00:02.0 addr=0xfed00000 data=0 expect fault=io-page-fault",
                "got fault=no-event kind=malformed",
            ),
        ] {
            let msg = fails(AMD, line);
            assert!(msg.contains(want), "{line:?}: {msg}");
        }
    }

    #[test]
    fn remap_records_but_does_not_deliver_and_request_delivers() {
        // Both raise the event of a fault; only `request` hands the interrupt to the VMM.
        run_str(&format!(
            "{AMD}irq remap dev=00:02.0 addr=0xfee00000 data=0 expect ok vector=0x41\n\
             expect-no-msi\n\
             irq remap dev=00:02.0 addr=0xfee00000 data=4 expect fault recorded=1\n\
             mmio read 0x2018 4 expect 0x10\n\
             irq request dev=00:02.0 addr=0xfee00000 data=4 expect fault recorded=1\n\
             mmio read 0x2018 4 expect 0x20\n\
             expect-no-msi\n\
             irq request dev=00:02.0 addr=0xfee00000 data=0 expect ok vector=0x41\n\
             expect-msi addr=0xfee03000 data=0x41\n\
             expect-no-msi\n"
        ))
        .unwrap();
        let msg = fails(
            AMD,
            "irq remap dev=00:02.0 addr=0xfee00000 data=0 expect ok\nexpect-msi addr=0xfee03000 data=0x41",
        );
        assert!(msg.contains("got none"), "{msg}");
    }

    #[test]
    fn routes_and_invalidations() {
        // INVALIDATE_INTERRUPT_TABLE for 00:02.0 in a command buffer at 0x30_0000.
        let setup = format!(
            "{AMD}mmio write 8 8 0x300000|9<<56\nmmio write 0x18 8 0x1005\n\
             irq route-set id=7 dev=00:02.0 addr=0xfee00000 data=0\n\
             checkpoint routes\n"
        );
        let invalidate = "write32 0x200000 0x42<<16|3<<8|1\nwrite64 0x300000 5<<60|0x10\nmmio write 0x2008 4 0x10\n";
        run_str(&format!(
            "{setup}expect-irq-route id=7 ok vector=0x41\n{invalidate}\
             expect-irq-invalidation source dev=00:02.0\nexpect-no-irq-invalidation\n\
             expect-irq-route id=7 ok vector=0x41\n\
             expect-route-updates {{\n  7 changed ok vector=0x42\n}}\n\
             expect-irq-route id=7 ok vector=0x42\n\
             expect-route-updates {{\n}}\n"
        ))
        .unwrap();
        for (line, want) in [
            ("expect-irq-route id=8 ok", "no route 8"),
            ("expect-irq-route id=7 fault", "route 7: expected a fault"),
            (
                "expect-irq-invalidation all",
                "expected invalidation all, got none",
            ),
            (
                &format!("{invalidate}expect-no-irq-invalidation"),
                "expected no interrupt-remapping invalidation, got source dev=0x10",
            ),
            (
                &format!("{invalidate}expect-route-updates {{\n}}"),
                "expected route updates [], got [7]",
            ),
            (
                &format!("{invalidate}expect-route-updates {{\n  7 unchanged\n}}"),
                "route 7: expected unchanged, got changed",
            ),
        ] {
            let msg = fails(&setup, line);
            assert!(msg.contains(want), "{line:?}: {msg}");
        }
    }

    #[test]
    fn models_without_remapping_and_bad_values() {
        let msg = fails(
            "model zpci\n",
            "irq remap dev=1 addr=0xfee00000 data=0 expect ok",
        );
        assert!(msg.contains("unsupported"), "{msg}");
        let msg = fails(
            AMD,
            "irq remap dev=0x10000 addr=0xfee00000 data=0 expect ok",
        );
        assert!(msg.contains("16 bits"), "{msg}");
        let msg = fails(
            AMD,
            "irq request dev=00:02.0 addr=0xfee00000 data=0x1_0000_0000 expect ok",
        );
        assert!(msg.contains("32 bits"), "{msg}");
        let msg = fails(
            AMD,
            "irq route-set id=0x1_0000_0000 dev=00:02.0 addr=0xfee00000 data=0",
        );
        assert!(msg.contains("32 bits"), "{msg}");
    }
}
