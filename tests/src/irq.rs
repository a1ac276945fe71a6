//! Interrupt-remapping operations of the scenario language (model-neutral; see
//! `tests/SCENARIOS.md`, "Interrupt remapping"):
//!
//! - `irq remap SRC ADDR DATA [-> OUTCOME]`: an interrupt request from SRC arrives
//!   ([`RemapMode::Request`]: faults are recorded as the architecture says);
//! - `irq deliver SRC ADDR DATA [-> OUTCOME]`: an emulated device's MSI delivered through the
//!   model (remapped as a request, and the result sent to the interrupt sink, `expect-msi`);
//! - `irq route ID SRC ADDR DATA [-> OUTCOME]`: the VMM sets route ID in its
//!   [`RouteTable`](viommu_shared::irq::RouteTable) ([`RemapMode::Route`]: nothing recorded);
//! - `expect irq-invalidations none|all|source=D|indices=FIRST:COUNT …`: the exact
//!   notifications the model sent since the last checkpoint;
//! - `expect irq-updates none|ID …`: the routes the route table re-resolved after those
//!   notifications, in order (`RouteTable::take_updates`);
//! - `expect irq-route ID -> OUTCOME`: the route's current resolution.
//!
//! OUTCOME is `DEST VECTOR [delivery=fixed|lowest|smi|nmi|init|extint] [dm=physical|logical]
//! [trigger=edge|level] [rh=0|1] [index=N|none]` or `fault CODE [kind=KIND] [index=N|none]
//! [recorded=0|1]`; fields not written are not checked.

use crate::ast::{DevRef, Expr};
use crate::parse::{ParseError, dev_ref};
use viommu_shared::irq::{
    DeliveryMode, DestinationMode, IrFault, IrFaultKind, IrInvalidation, RemapMode, Resolution,
    TriggerMode,
};

/// What an `irq` line does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqAction {
    /// `irq remap`: an interrupt request.
    Remap,
    /// `irq deliver`: an emulated device's MSI delivered through the model.
    Deliver,
    /// `irq route ID`: a route table entry.
    Route(Expr),
}

impl IrqAction {
    /// The remapping mode the action uses.
    pub fn mode(&self) -> RemapMode {
        match self {
            IrqAction::Route(_) => RemapMode::Route,
            _ => RemapMode::Request,
        }
    }
}

/// An expected remapping result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `DEST VECTOR [key=value…]`.
    Delivered {
        /// Destination APIC ID.
        dest: Expr,
        /// Vector.
        vector: Expr,
        /// `delivery=`, `dm=`, `trigger=`, `rh=`, `index=`.
        fields: Vec<(String, String)>,
    },
    /// `fault CODE [key=value…]`.
    Fault {
        /// The architected code (VT-d fault reason, AMD-Vi event code; 0 when none).
        code: Expr,
        /// `kind=`, `index=`, `recorded=`.
        fields: Vec<(String, String)>,
    },
}

/// `irq …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrqOp {
    /// Remap, deliver or route.
    pub action: IrqAction,
    /// Requester (PCI function, IOAPIC/HPET source id).
    pub source: DevRef,
    /// MSI address.
    pub addr: Expr,
    /// MSI data.
    pub data: Expr,
    /// Expected result, if any.
    pub expect: Option<Outcome>,
}

/// One expected notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvSpec {
    /// `all`.
    All,
    /// `source=D`.
    Source(DevRef),
    /// `indices=FIRST:COUNT`.
    Indices(Expr, Expr),
}

/// `expect irq-…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqExpect {
    /// `expect irq-invalidations …`.
    Invalidations(Vec<InvSpec>),
    /// `expect irq-updates …`.
    Updates(Vec<Expr>),
    /// `expect irq-route ID -> OUTCOME`.
    Route {
        /// Route id.
        id: Expr,
        /// Expected resolution.
        outcome: Outcome,
    },
}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        msg: msg.into(),
    })
}

fn fields(
    line: usize,
    toks: &[String],
    allowed: &[&str],
) -> Result<Vec<(String, String)>, ParseError> {
    toks.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if allowed.contains(&k) && !v.is_empty() => Ok((k.into(), v.into())),
            _ => err(
                line,
                format!("unexpected '{t}' (want one of {})", allowed.join("= ")),
            ),
        })
        .collect()
}

/// Parses the words after `->`.
fn outcome(line: usize, toks: &[String]) -> Result<Outcome, ParseError> {
    match toks {
        [f, code, rest @ ..] if f == "fault" => Ok(Outcome::Fault {
            code: Expr(code.clone()),
            fields: fields(line, rest, &["kind", "index", "recorded"])?,
        }),
        [dest, vector, rest @ ..] => Ok(Outcome::Delivered {
            dest: Expr(dest.clone()),
            vector: Expr(vector.clone()),
            fields: fields(line, rest, &["delivery", "dm", "trigger", "rh", "index"])?,
        }),
        _ => err(
            line,
            "'->' takes DEST VECTOR [key=value…] or fault CODE [key=value…]",
        ),
    }
}

/// Parses `irq remap|deliver|route …` (`args` after `irq`).
pub fn parse_irq(line: usize, args: &[String]) -> Result<IrqOp, ParseError> {
    let (action, rest) = match args {
        [a, rest @ ..] if a == "remap" => (IrqAction::Remap, rest),
        [a, rest @ ..] if a == "deliver" => (IrqAction::Deliver, rest),
        [a, id, rest @ ..] if a == "route" => (IrqAction::Route(Expr(id.clone())), rest),
        _ => return err(line, "'irq' takes remap, deliver or route ID"),
    };
    let arrow = rest.iter().position(|t| t == "->");
    let (head, tail) = match arrow {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let [src, addr, data] = head else {
        return err(line, "'irq' takes SOURCE ADDRESS DATA [-> OUTCOME]");
    };
    Ok(IrqOp {
        action,
        source: dev_ref(line, src)?,
        addr: Expr(addr.clone()),
        data: Expr(data.clone()),
        expect: tail.map(|t| outcome(line, t)).transpose()?,
    })
}

/// Parses `expect irq-…` (`args` after `expect`).
pub fn parse_expect(line: usize, args: &[String]) -> Result<IrqExpect, ParseError> {
    match args {
        [w, rest @ ..] if w == "irq-invalidations" => {
            if rest.is_empty() {
                return err(line, "'expect irq-invalidations' takes none or a list");
            }
            if rest == ["none"] {
                return Ok(IrqExpect::Invalidations(Vec::new()));
            }
            let list = rest
                .iter()
                .map(|t| match t.split_once('=') {
                    None if t == "all" => Ok(InvSpec::All),
                    Some(("source", d)) => Ok(InvSpec::Source(dev_ref(line, d)?)),
                    Some(("indices", r)) => match r.split_once(':') {
                        Some((a, b)) => Ok(InvSpec::Indices(Expr(a.into()), Expr(b.into()))),
                        None => err(line, "indices= takes FIRST:COUNT"),
                    },
                    _ => err(line, format!("unexpected '{t}'")),
                })
                .collect::<Result<_, _>>()?;
            Ok(IrqExpect::Invalidations(list))
        }
        [w, rest @ ..] if w == "irq-updates" => match rest {
            [] => err(line, "'expect irq-updates' takes none or route ids"),
            [n] if n == "none" => Ok(IrqExpect::Updates(Vec::new())),
            ids => Ok(IrqExpect::Updates(
                ids.iter().map(|t| Expr(t.clone())).collect(),
            )),
        },
        [w, id, arrow, rest @ ..] if w == "irq-route" && arrow == "->" => Ok(IrqExpect::Route {
            id: Expr(id.clone()),
            outcome: outcome(line, rest)?,
        }),
        _ => err(
            line,
            "'expect' takes irq-invalidations …, irq-updates … or irq-route ID -> OUTCOME",
        ),
    }
}

/// Scenario name of a fault kind.
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

/// Text of a result, for messages.
pub fn show(r: &Result<Resolution, IrFault>) -> String {
    match r {
        Ok(r) => {
            let i = r.interrupt;
            format!(
                "{:#x} {:#x} delivery={} dm={} trigger={} rh={} index={}",
                i.destination,
                i.vector,
                delivery_name(i.delivery),
                if i.destination_mode == DestinationMode::Logical {
                    "logical"
                } else {
                    "physical"
                },
                if i.trigger == TriggerMode::Level {
                    "level"
                } else {
                    "edge"
                },
                u8::from(i.redirection_hint),
                r.index.map_or("none".into(), |x| format!("{x:#x}"))
            )
        }
        Err(f) => format!(
            "fault {:#x} kind={} index={} recorded={}",
            f.code,
            kind_name(f.kind),
            f.index.map_or("none".into(), |x| format!("{x:#x}")),
            u8::from(f.recorded)
        ),
    }
}

fn index_text(v: &str, eval: &dyn Fn(&str) -> Result<u64, String>) -> Result<String, String> {
    if v == "none" {
        Ok("none".into())
    } else {
        Ok(format!("{:#x}", eval(v)?))
    }
}

/// Checks `got` against `want`; `eval` evaluates expressions.
pub fn check(
    got: &Result<Resolution, IrFault>,
    want: &Outcome,
    eval: &dyn Fn(&str) -> Result<u64, String>,
) -> Result<(), String> {
    let text = show(got);
    let fail = |what: String| Err(format!("expected {what}, got {text}"));
    // Field name -> the value in `text`'s notation.
    let field = |k: &str| -> Option<String> {
        text.split(' ')
            .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    let (head, fields) = match (want, got) {
        (
            Outcome::Delivered {
                dest,
                vector,
                fields,
            },
            Ok(r),
        ) => {
            let (d, v) = (eval(&dest.0)?, eval(&vector.0)?);
            if (
                u64::from(r.interrupt.destination),
                u64::from(r.interrupt.vector),
            ) != (d, v)
            {
                return fail(format!("{d:#x} {v:#x}"));
            }
            (format!("{d:#x} {v:#x}"), fields)
        }
        (Outcome::Fault { code, fields }, Err(f)) => {
            let c = eval(&code.0)?;
            if u64::from(f.code) != c {
                return fail(format!("fault {c:#x}"));
            }
            (format!("fault {c:#x}"), fields)
        }
        (Outcome::Delivered { dest, vector, .. }, Err(_)) => {
            return fail(format!("{} {}", dest.0, vector.0));
        }
        (Outcome::Fault { code, .. }, Ok(_)) => return fail(format!("fault {}", code.0)),
    };
    for (k, v) in fields {
        let want_v = match k.as_str() {
            "index" => index_text(v, eval)?,
            "rh" | "recorded" => eval(v)?.to_string(),
            _ => v.clone(),
        };
        if field(k).as_deref() != Some(want_v.as_str()) {
            return fail(format!("{head} {k}={want_v}"));
        }
    }
    Ok(())
}

/// Whether `got` is the notification `want` describes (`dev` resolves device references).
pub fn matches(
    got: &IrInvalidation,
    want: &InvSpec,
    eval: &dyn Fn(&str) -> Result<u64, String>,
    dev: &dyn Fn(&DevRef) -> Result<u32, String>,
) -> Result<bool, String> {
    Ok(match (want, got) {
        (InvSpec::All, IrInvalidation::All) => true,
        (InvSpec::Source(d), IrInvalidation::Source(s)) => dev(d)? == u32::from(*s),
        (InvSpec::Indices(a, b), IrInvalidation::Indices { first, count }) => {
            (eval(&a.0)?, eval(&b.0)?) == (u64::from(*first), u64::from(*count))
        }
        _ => false,
    })
}

/// Scenario text of a notification.
pub fn show_invalidation(i: &IrInvalidation) -> String {
    match i {
        IrInvalidation::All => "all".into(),
        IrInvalidation::Source(s) => format!("source={s:#x}"),
        IrInvalidation::Indices { first, count } => format!("indices={first:#x}:{count:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use crate::run_str;

    const SETUP: &str = "model amd-vi\nwrite64 0x100200 3\nwrite64 0x100210 2<<60|0x200000|2<<1|1\nwrite32 0x200000 0x41<<16|3<<8|1\nmmio write 0 8 0x100000\nmmio write 0x18 8 1\n";

    #[test]
    fn syntax_errors_name_the_line() {
        for (line, want) in [
            ("irq frob 1 2 3\n", "'irq' takes remap, deliver or route ID"),
            ("irq remap 1 2\n", "SOURCE ADDRESS DATA"),
            ("irq remap 1 2 3 -> 4\n", "'->' takes DEST VECTOR"),
            (
                "irq remap 1 2 3 -> 4 5 colour=red\n",
                "unexpected 'colour=red'",
            ),
            (
                "irq remap 1 2 3 -> fault 2 dm=logical\n",
                "unexpected 'dm=logical'",
            ),
            ("expect irq-invalidations\n", "takes none or a list"),
            ("expect irq-invalidations indices=4\n", "FIRST:COUNT"),
            ("expect irq-updates\n", "takes none or route ids"),
            ("expect irq-route 1 2\n", "'expect' takes"),
        ] {
            let e = run_str(&format!("model amd-vi\n{line}")).unwrap_err();
            assert_eq!(e.line, 2, "{line:?}");
            assert!(e.msg.contains(want), "{line:?}: {}", e.msg);
        }
    }

    #[test]
    fn expectations_compare_every_written_field() {
        // 00:02.0 remaps index 0 to vector 0x41 at APIC 3 (table of 4 entries).
        run_str(&format!(
            "{SETUP}irq remap 00:02.0 0xfee00000 0 -> 3 0x41 delivery=fixed dm=physical trigger=edge rh=0 index=0\n"
        ))
        .unwrap();
        for (line, want) in [
            (
                "irq remap 00:02.0 0xfee00000 0 -> 3 0x42",
                "expected 0x3 0x42, got 0x3 0x41",
            ),
            (
                "irq remap 00:02.0 0xfee00000 0 -> 3 0x41 dm=logical",
                "dm=logical",
            ),
            (
                "irq remap 00:02.0 0xfee00000 0 -> 3 0x41 index=none",
                "index=none",
            ),
            (
                "irq remap 00:02.0 0xfee00000 0 -> fault 2",
                "expected fault 2, got 0x3",
            ),
            (
                "irq remap 00:02.0 0xfee00000 4 -> 3 0x41",
                "got fault 0x2 kind=index-out-of-range",
            ),
            (
                "irq remap 00:02.0 0xfee00000 4 -> fault 2 recorded=0",
                "recorded=0",
            ),
            (
                "irq route 1 00:02.0 0xfee00000 4 -> fault 2 recorded=1",
                "recorded=1",
            ),
            ("expect irq-invalidations none", "got [all all]"),
            ("expect irq-updates none", "no route set yet"),
            (
                "irq route 1 00:02.0 0xfee00000 0\nexpect irq-route 2 -> 3 0x41",
                "no route 2",
            ),
            (
                "irq route 0x1_0000_0000 00:02.0 0xfee00000 0",
                "route id wider",
            ),
            (
                "irq remap 0x10000 0xfee00000 0",
                "not a 16-bit requester id",
            ),
            (
                "irq deliver 00:02.0 0xfee00000 0x1_0000_0000",
                "MSI data wider",
            ),
        ] {
            let e = run_str(&format!("{SETUP}{line}\n")).unwrap_err();
            assert!(e.msg.contains(want), "{line:?}: {}", e.msg);
        }
        // Models without interrupt remapping say so.
        let e = run_str("model zpci\nirq remap 1 0xfee00000 0\n").unwrap_err();
        assert!(e.msg.contains("does not remap"), "{}", e.msg);
    }
}
