//! Parses `.scn` text into statements. Every error names its line.

use crate::ast::{
    CallSpec, DevRef, DmaExpect, Expr, IrqCall, IrqExpect, IrqInvalidationSpec, MemoryEventKind,
    Op, RouteUpdateSpec, Stmt,
};

/// A syntax error at a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

/// Instructions accepted by the `Instruction` statement (s390 intercepts).
pub const INSTRUCTIONS: &[&str] = &[
    "clp", "mpcifc", "stpcifc", "rpcit", "pcilg", "pcistg", "pcistb",
];

/// Splits a line into tokens: whitespace-separated words, `"…"` strings as one token, `#`
/// starting a comment outside strings.
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_str = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_str = !in_str;
                if !in_str {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ if in_str => cur.push(c),
            '#' => break,
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if in_str {
        return Err("unterminated string".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Parses a whole scenario.
pub fn parse(text: &str) -> Result<Vec<Stmt>, ParseError> {
    let lines: Vec<(usize, Vec<String>)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            tokenize(l)
                .map(|t| (i + 1, t))
                .map_err(|msg| ParseError { line: i + 1, msg })
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|(_, t)| !t.is_empty())
        .collect();
    let mut p = Parser { lines, pos: 0 };
    let body = p.block(None)?;
    Ok(body)
}

struct Parser {
    lines: Vec<(usize, Vec<String>)>,
    pos: usize,
}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        msg: msg.into(),
    })
}

/// Splits `key=value`.
fn kv(tok: &str) -> Option<(&str, &str)> {
    tok.split_once('=')
}

/// Parses `bb:dd.f` into a requester id, or keeps an expression.
fn dev_ref(line: usize, s: &str) -> Result<DevRef, ParseError> {
    if let Some((bus, rest)) = s.split_once(':') {
        let (dev, func) = rest.split_once('.').ok_or(ParseError {
            line,
            msg: format!("malformed device '{s}' (want bus:dev.fn)"),
        })?;
        let p = |x: &str, max: u32| u32::from_str_radix(x, 16).ok().filter(|v| *v <= max);
        match (p(bus, 0xff), p(dev, 0x1f), p(func, 7)) {
            (Some(b), Some(d), Some(f)) => Ok(DevRef::Bdf(b << 8 | d << 3 | f)),
            _ => err(line, format!("malformed device '{s}' (want bus:dev.fn)")),
        }
    } else {
        Ok(DevRef::Expr(Expr(s.into())))
    }
}

/// Decodes `de ad be ef`-style or `deadbeef` hex into bytes.
fn hex_bytes(line: usize, s: &str) -> Result<Vec<u8>, ParseError> {
    let h: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !h.len().is_multiple_of(2) || !h.chars().all(|c| c.is_ascii_hexdigit()) {
        return err(line, format!("malformed hex bytes '{s}'"));
    }
    Ok((0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap_or(0))
        .collect())
}

/// Options `key=value` after the positional words; rejects anything else.
fn options(line: usize, toks: &[String]) -> Result<Vec<(String, String)>, ParseError> {
    toks.iter()
        .map(|t| match kv(t) {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => err(line, format!("expected key=value, got '{t}'")),
        })
        .collect()
}

/// Takes the mandatory `dev=` option out of `opts`.
fn take_dev(line: usize, opts: &mut Vec<(String, String)>) -> Result<DevRef, ParseError> {
    let i = opts
        .iter()
        .position(|(k, _)| k == "dev")
        .ok_or(ParseError {
            line,
            msg: "missing dev=".into(),
        })?;
    let (_, v) = opts.remove(i);
    dev_ref(line, &v)
}

/// Takes an optional `key=` option out of `opts`.
fn take(opts: &mut Vec<(String, String)>, key: &str) -> Option<String> {
    let i = opts.iter().position(|(k, _)| k == key)?;
    Some(opts.remove(i).1)
}

fn no_more(line: usize, opts: &[(String, String)]) -> Result<(), ParseError> {
    match opts.first() {
        Some((k, _)) => err(line, format!("unknown option '{k}'")),
        None => Ok(()),
    }
}

fn width_of(op: &str, prefix: &str) -> Option<usize> {
    match op.strip_prefix(prefix)? {
        "8" => Some(1),
        "16" => Some(2),
        "32" => Some(4),
        "64" => Some(8),
        _ => None,
    }
}

impl Parser {
    /// Statements until `}` (when `open` is the line of the `{`) or the end.
    fn block(&mut self, open: Option<usize>) -> Result<Vec<Stmt>, ParseError> {
        let mut out = Vec::new();
        while self.pos < self.lines.len() {
            let (line, toks) = self.lines[self.pos].clone();
            self.pos += 1;
            if toks == ["}"] {
                return match open {
                    Some(_) => Ok(out),
                    None => err(line, "'}' without an open block"),
                };
            }
            out.push(Stmt {
                line,
                op: self.stmt(line, &toks)?,
            });
        }
        match open {
            Some(l) => err(l, "block opened here is never closed"),
            None => Ok(out),
        }
    }

    /// Raw item lines of a `{ … }` block.
    fn items(&mut self, open: usize) -> Result<Vec<(usize, Vec<String>)>, ParseError> {
        let mut out = Vec::new();
        while self.pos < self.lines.len() {
            let (line, toks) = self.lines[self.pos].clone();
            self.pos += 1;
            if toks == ["}"] {
                return Ok(out);
            }
            out.push((line, toks));
        }
        err(open, "block opened here is never closed")
    }

    fn stmt(&mut self, line: usize, toks: &[String]) -> Result<Op, ParseError> {
        let op = toks[0].as_str();
        let args = &toks[1..];
        let want = |n: usize| -> Result<(), ParseError> {
            if args.len() < n {
                err(line, format!("'{op}' needs {n} argument(s)"))
            } else {
                Ok(())
            }
        };
        let e = |s: &String| Expr(s.clone());
        Ok(match op {
            "model" => {
                want(1)?;
                Op::Model {
                    name: args[0].clone(),
                    opts: options(line, &args[1..])?,
                }
            }
            "memory" => match args.len() {
                1 => Op::Memory {
                    start: Expr("0".into()),
                    size: e(&args[0]),
                },
                2 => Op::Memory {
                    start: e(&args[0]),
                    size: e(&args[1]),
                },
                _ => return err(line, "'memory' takes SIZE or START SIZE"),
            },
            "let" => {
                if args.len() != 3 || args[1] != "=" {
                    return err(line, "'let' takes NAME = EXPR");
                }
                Op::Let {
                    name: args[0].clone(),
                    value: e(&args[2]),
                }
            }
            "write-bytes" | "expect-bytes" => {
                want(2)?;
                let bytes = hex_bytes(line, &args[1..].join(""))?;
                if op == "write-bytes" {
                    Op::WriteBytes {
                        addr: e(&args[0]),
                        bytes,
                    }
                } else {
                    Op::ExpectBytes {
                        addr: e(&args[0]),
                        bytes,
                    }
                }
            }
            _ if width_of(op, "write").is_some() => {
                want(2)?;
                let big_endian = match args.get(2).map(String::as_str) {
                    None => false,
                    Some("be") => true,
                    Some(t) => return err(line, format!("unexpected '{t}'")),
                };
                Op::Write {
                    width: width_of(op, "write").unwrap_or(8),
                    addr: e(&args[0]),
                    value: e(&args[1]),
                    big_endian,
                }
            }
            _ if width_of(op, "expect-mem").is_some() => {
                want(2)?;
                let mut mask = None;
                let mut big_endian = false;
                for t in &args[2..] {
                    match kv(t) {
                        Some(("mask", m)) => mask = Some(Expr(m.into())),
                        None if t == "be" => big_endian = true,
                        _ => return err(line, format!("unexpected '{t}'")),
                    }
                }
                Op::ExpectMem {
                    width: width_of(op, "expect-mem").unwrap_or(8),
                    addr: e(&args[0]),
                    value: e(&args[1]),
                    mask,
                    big_endian,
                }
            }
            "mmio" => self.mmio(line, args)?,
            "dma" => self.dma(line, args)?,
            "host" => {
                let mut opts = options(line, args)?;
                let dev = take_dev(line, &mut opts)?;
                Op::Host { dev, opts }
            }
            "host-remaining" | "expect-host-count" | "expect-host-remaining" => {
                want(2)?;
                let mut opts = options(line, &args[..1])?;
                let dev = take_dev(line, &mut opts)?;
                no_more(line, &opts)?;
                if args.len() != 2 {
                    return err(line, format!("'{op}' takes dev=D VALUE"));
                }
                match op {
                    "host-remaining" => Op::HostRemaining {
                        dev,
                        value: e(&args[1]),
                    },
                    "expect-host-count" => Op::ExpectHostCount {
                        dev,
                        count: e(&args[1]),
                    },
                    _ => Op::ExpectHostRemaining {
                        dev,
                        value: (args[1] != "none").then(|| e(&args[1])),
                    },
                }
            }
            "expect-host-mappings" | "expect-host-calls" => {
                if args.len() != 2 || args[1] != "{" {
                    return err(line, format!("'{op}' takes dev=D {{ and a block"));
                }
                let mut opts = options(line, &args[..1])?;
                let dev = take_dev(line, &mut opts)?;
                no_more(line, &opts)?;
                let items = self.items(line)?;
                if op == "expect-host-mappings" {
                    let mut list = Vec::new();
                    for (l, t) in items {
                        if t.len() != 4 || !matches!(t[3].as_str(), "r" | "w" | "rw") {
                            return err(l, "mapping line takes IOVA GPA SIZE r|w|rw");
                        }
                        list.push((e(&t[0]), e(&t[1]), e(&t[2]), t[3].clone()));
                    }
                    Op::ExpectHostMappings { dev, list }
                } else {
                    let mut calls = Vec::new();
                    for (l, t) in items {
                        calls.push(call_spec(l, &t)?);
                    }
                    Op::ExpectHostCalls { dev, calls }
                }
            }
            "expect-msi" => {
                let mut opts = options(line, args)?;
                let addr = take(&mut opts, "addr").ok_or(ParseError {
                    line,
                    msg: "missing addr=".into(),
                })?;
                let data = take(&mut opts, "data").ok_or(ParseError {
                    line,
                    msg: "missing data=".into(),
                })?;
                no_more(line, &opts)?;
                Op::ExpectMsi {
                    addr: Expr(addr),
                    data: Expr(data),
                }
            }
            "expect-no-msi" => {
                if !args.is_empty() {
                    return err(line, "'expect-no-msi' takes no argument");
                }
                Op::ExpectNoMsi
            }
            "irq" => irq(line, args)?,
            "expect-irq-invalidation" => {
                let spec = match args {
                    [a] if a == "all" => IrqInvalidationSpec::All,
                    [a, rest @ ..] if a == "indices" => {
                        let mut opts = options(line, rest)?;
                        let first = take(&mut opts, "first").map(Expr);
                        let count = take(&mut opts, "count").map(Expr);
                        no_more(line, &opts)?;
                        match (first, count) {
                            (Some(first), Some(count)) => {
                                IrqInvalidationSpec::Indices { first, count }
                            }
                            _ => return err(line, "'indices' takes first=N count=N"),
                        }
                    }
                    [a, rest @ ..] if a == "source" => {
                        let mut opts = options(line, rest)?;
                        let dev = take_dev(line, &mut opts)?;
                        no_more(line, &opts)?;
                        IrqInvalidationSpec::Source(dev)
                    }
                    _ => {
                        return err(
                            line,
                            "'expect-irq-invalidation' takes all | indices first=N count=N | source dev=D",
                        );
                    }
                };
                Op::ExpectIrqInvalidation(Some(spec))
            }
            "expect-irq-route" => match args.split_first() {
                Some((id, outcome)) if !outcome.is_empty() => match kv(id) {
                    Some(("id", n)) if !n.is_empty() => Op::ExpectIrqRoute {
                        id: Expr(n.into()),
                        expect: irq_expect(line, outcome)?,
                    },
                    _ => return err(line, "'expect-irq-route' takes id=N OUTCOME"),
                },
                _ => return err(line, "'expect-irq-route' takes id=N OUTCOME"),
            },
            "expect-no-irq-invalidation" => {
                if !args.is_empty() {
                    return err(line, "'expect-no-irq-invalidation' takes no argument");
                }
                Op::ExpectIrqInvalidation(None)
            }
            "expect-route-updates" => {
                if args != ["{"] {
                    return err(line, "'expect-route-updates' takes { and a block");
                }
                let mut list = Vec::new();
                for (l, t) in self.items(line)? {
                    let mut rest = &t[1..];
                    let changed = match rest.first().map(String::as_str) {
                        Some("changed") => Some(true),
                        Some("unchanged") => Some(false),
                        _ => None,
                    };
                    if changed.is_some() {
                        rest = &rest[1..];
                    }
                    let expect = if rest.is_empty() {
                        None
                    } else {
                        Some(irq_expect(l, rest)?)
                    };
                    list.push(RouteUpdateSpec {
                        id: Expr(t[0].clone()),
                        changed,
                        expect,
                    });
                }
                Op::ExpectRouteUpdates(list)
            }
            "discard" | "populate" | "convert" | "expect-conversions" => {
                let (kind, rest) = match (op, args.first().map(String::as_str)) {
                    ("discard", _) => (MemoryEventKind::Discard, args),
                    ("populate", _) => (MemoryEventKind::Populate, args),
                    ("expect-conversions", _) => (MemoryEventKind::ExpectConversions, args),
                    ("convert", Some("private")) => (MemoryEventKind::ToPrivate, &args[1..]),
                    ("convert", Some("shared")) => (MemoryEventKind::ToShared, &args[1..]),
                    _ => return err(line, "'convert' takes private|shared START SIZE"),
                };
                let expect_error = match rest {
                    [_, _] => None,
                    [_, _, x] => match kv(x) {
                        Some(("expect-error", k)) => Some(k.to_string()),
                        _ => return err(line, format!("unexpected '{x}'")),
                    },
                    _ => return err(line, format!("'{op}' takes START SIZE [expect-error=KIND]")),
                };
                Op::MemoryEvent {
                    kind,
                    start: e(&rest[0]),
                    size: e(&rest[1]),
                    expect_error,
                }
            }
            "expect-dma-mapped" => {
                if args.len() != 3 {
                    return err(line, "'expect-dma-mapped' takes START SIZE N");
                }
                Op::ExpectDmaMapped {
                    start: e(&args[0]),
                    size: e(&args[1]),
                    count: e(&args[2]),
                }
            }
            "snapshot" => {
                if args.len() != 1 {
                    return err(line, "'snapshot' takes NAME");
                }
                Op::Snapshot {
                    name: args[0].clone(),
                }
            }
            "restore" => {
                let Some((name, rest)) = args.split_first() else {
                    return err(line, "'restore' takes NAME [key=value…]");
                };
                let mut opts = options(line, rest)?;
                let attach_before = match take(&mut opts, "attach").as_deref() {
                    None | Some("after") => false,
                    Some("before") => true,
                    Some(v) => {
                        return err(line, format!("attach takes after or before, got '{v}'"));
                    }
                };
                let limit = take(&mut opts, "limit").map(Expr);
                let truncate = take(&mut opts, "truncate").map(Expr);
                let expect_error = take(&mut opts, "expect-error");
                no_more(line, &opts)?;
                Op::Restore {
                    name: name.clone(),
                    attach_before,
                    limit,
                    truncate,
                    expect_error,
                }
            }
            "checkpoint" => {
                want(1)?;
                Op::Checkpoint {
                    name: args.join(" "),
                }
            }
            "repeat" => {
                let (count, var) = match args {
                    [n, b] if b == "{" => (n, None),
                    [n, a, v, b] if a == "as" && b == "{" => (n, Some(v.clone())),
                    _ => return err(line, "'repeat' takes N [as VAR] {"),
                };
                let body = self.block(Some(line))?;
                Op::Repeat {
                    count: e(count),
                    var,
                    body,
                }
            }
            _ if INSTRUCTIONS.contains(&op) => {
                let split = args
                    .iter()
                    .position(|t| t == "expect")
                    .unwrap_or(args.len());
                let parse_kv = |ts: &[String]| -> Result<Vec<(String, Expr)>, ParseError> {
                    Ok(options(line, ts)?
                        .into_iter()
                        .map(|(k, v)| (k, Expr(v)))
                        .collect())
                };
                let expect = if split < args.len() {
                    parse_kv(&args[split + 1..])?
                } else {
                    Vec::new()
                };
                if split == args.len() || expect.is_empty() {
                    return err(line, format!("'{op}' needs expect cc=N …"));
                }
                Op::Instruction {
                    name: op.into(),
                    args: parse_kv(&args[..split])?,
                    expect,
                }
            }
            _ => return err(line, format!("unknown operation '{op}'")),
        })
    }

    fn mmio(&mut self, line: usize, args: &[String]) -> Result<Op, ParseError> {
        let e = |s: &String| Expr(s.clone());
        match args.first().map(String::as_str) {
            Some("write") => {
                let expect_error = match args.len() {
                    4 => None,
                    5 => match kv(&args[4]) {
                        Some(("expect-error", k)) => Some(k.to_string()),
                        _ => return err(line, format!("unexpected '{}'", args[4])),
                    },
                    _ => {
                        return err(
                            line,
                            "'mmio write' takes OFFSET SIZE VALUE [expect-error=KIND]",
                        );
                    }
                };
                Ok(Op::MmioWrite {
                    offset: e(&args[1]),
                    size: e(&args[2]),
                    value: e(&args[3]),
                    expect_error,
                })
            }
            Some("read") => {
                let expect = match &args[1..] {
                    [_, _] => None,
                    [_, _, x, v] if x == "expect" => Some((e(v), None)),
                    [_, _, x, v, m, mv] if x == "expect" && m == "mask" => {
                        Some((e(v), Some(e(mv))))
                    }
                    _ => {
                        return err(
                            line,
                            "'mmio read' takes OFFSET SIZE [expect VALUE [mask MASK]]",
                        );
                    }
                };
                Ok(Op::MmioRead {
                    offset: e(&args[1]),
                    size: e(&args[2]),
                    expect,
                })
            }
            _ => err(line, "'mmio' takes read or write"),
        }
    }

    fn dma(&mut self, line: usize, args: &[String]) -> Result<Op, ParseError> {
        let x = args.iter().position(|t| t == "expect").ok_or(ParseError {
            line,
            msg: "'dma' needs expect ok|fault".into(),
        })?;
        let mut write = None;
        let mut opts = Vec::new();
        for t in &args[..x] {
            match t.as_str() {
                "read" => write = Some(false),
                "write" => write = Some(true),
                _ => opts.push(t.clone()),
            }
        }
        let write = write.ok_or(ParseError {
            line,
            msg: "'dma' needs read or write".into(),
        })?;
        let mut opts = options(line, &opts)?;
        let dev = take_dev(line, &mut opts)?;
        let pasid = take(&mut opts, "pasid").map(Expr);
        let iova = take(&mut opts, "iova").map(Expr).ok_or(ParseError {
            line,
            msg: "missing iova=".into(),
        })?;
        let len = take(&mut opts, "len").map(Expr).unwrap_or(Expr("4".into()));
        no_more(line, &opts)?;
        let expect = match &args[x + 1..] {
            [ok] if ok == "ok" => DmaExpect::Ok(None),
            [ok, g] if ok == "ok" => match kv(g) {
                Some(("gpa", v)) => DmaExpect::Ok(Some(Expr(v.into()))),
                _ => return err(line, format!("unexpected '{g}'")),
            },
            [f] if f == "fault" => DmaExpect::Fault(None),
            [f] if f.starts_with("fault=") => {
                DmaExpect::Fault(Some(f["fault=".len()..].to_string()))
            }
            _ => return err(line, "'dma … expect' takes ok [gpa=X] or fault[=REASON]"),
        };
        Ok(Op::Dma {
            dev,
            pasid,
            iova,
            len,
            write,
            expect,
        })
    }
}

/// `irq request|remap|route|route-set …`.
fn irq(line: usize, args: &[String]) -> Result<Op, ParseError> {
    let x = args
        .iter()
        .position(|t| t == "expect")
        .unwrap_or(args.len());
    let (head, tail) = args.split_at(x);
    let Some((verb, rest)) = head.split_first() else {
        return err(line, "'irq' takes request, remap, route or route-set");
    };
    let mut opts = options(line, rest)?;
    let call = match verb.as_str() {
        "request" => IrqCall::Request,
        "remap" => IrqCall::Remap,
        "route" => IrqCall::Route,
        "route-set" => IrqCall::RouteSet(take(&mut opts, "id").map(Expr).ok_or(ParseError {
            line,
            msg: "missing id=".into(),
        })?),
        v => {
            return err(
                line,
                format!("'irq' takes request, remap, route or route-set, got '{v}'"),
            );
        }
    };
    let dev = take_dev(line, &mut opts)?;
    let mut field = |k: &str| {
        take(&mut opts, k).map(Expr).ok_or(ParseError {
            line,
            msg: format!("missing {k}="),
        })
    };
    let addr = field("addr")?;
    let data = field("data")?;
    no_more(line, &opts)?;
    let expect = match tail.split_first() {
        None => None,
        Some((_, outcome)) => Some(irq_expect(line, outcome)?),
    };
    if expect.is_none() && !matches!(call, IrqCall::RouteSet(_)) {
        return err(line, format!("'irq {verb}' needs expect OUTCOME"));
    }
    Ok(Op::Irq {
        call,
        dev,
        addr,
        data,
        expect,
    })
}

/// Fields an `ok` outcome may name.
const IRQ_OK_FIELDS: &[&str] = &["dest", "vector", "delivery", "dm", "trigger", "rh", "index"];
/// Fields a `fault` outcome may name.
const IRQ_FAULT_FIELDS: &[&str] = &["kind", "index", "recorded"];

/// `ok [field=…]…` or `fault[=NAME] [field=…]…`.
fn irq_expect(line: usize, toks: &[String]) -> Result<IrqExpect, ParseError> {
    let Some((first, rest)) = toks.split_first() else {
        return err(line, "expect takes ok … or fault[=NAME] …");
    };
    let fields = options(line, rest)?;
    let (allowed, out) = match first.as_str() {
        "ok" => (IRQ_OK_FIELDS, IrqExpect::Ok(fields.clone())),
        "fault" => (
            IRQ_FAULT_FIELDS,
            IrqExpect::Fault {
                name: None,
                fields: fields.clone(),
            },
        ),
        f if f.starts_with("fault=") => (
            IRQ_FAULT_FIELDS,
            IrqExpect::Fault {
                name: Some(f["fault=".len()..].to_string()),
                fields: fields.clone(),
            },
        ),
        f => {
            return err(
                line,
                format!("expect takes ok … or fault[=NAME] …, got '{f}'"),
            );
        }
    };
    if let Some((k, _)) = fields.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return err(
            line,
            format!("unknown field '{k}' (want one of {allowed:?})"),
        );
    }
    Ok(out)
}

fn call_spec(line: usize, t: &[String]) -> Result<CallSpec, ParseError> {
    let e = |s: &String| Expr(s.clone());
    match t.first().map(String::as_str) {
        Some("map") if t.len() == 5 || t.len() == 6 => Ok(CallSpec::Map {
            iova: e(&t[1]),
            gpa: e(&t[2]),
            size: e(&t[3]),
            perm: t[4].clone(),
            result: t.get(5).cloned().unwrap_or_else(|| "ok".into()),
        }),
        Some("unmap") if t.len() == 3 || t.len() == 4 => Ok(CallSpec::Unmap {
            iova: e(&t[1]),
            size: e(&t[2]),
            result: t.get(3).cloned(),
        }),
        Some("unmap-all") if t.len() <= 2 => Ok(CallSpec::UnmapAll {
            bytes: t.get(1).map(e),
        }),
        _ => err(
            line,
            "call line takes: map IOVA GPA SIZE PERM [ok|ERROR] | unmap IOVA SIZE [BYTES|ERROR] | unmap-all [BYTES]",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_and_options() {
        let s = parse(
            "model vtd\n# c\nrepeat 3 as i {\n  write64 0x1000+i*8 i   # trailing\n}\nexpect-host-calls dev=00:01.0 {\n map 0 0 4K rw\n unmap 0 4K\n}\n",
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        match &s[1].op {
            Op::Repeat { var, body, .. } => {
                assert_eq!(var.as_deref(), Some("i"));
                assert_eq!(body.len(), 1);
                assert_eq!(body[0].line, 4);
            }
            o => panic!("{o:?}"),
        }
        match &s[2].op {
            Op::ExpectHostCalls { dev, calls } => {
                assert_eq!(dev, &DevRef::Bdf(0x08));
                assert_eq!(calls.len(), 2);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn parses_irq_operations() {
        let s = parse(
            "irq request dev=00:03.0 addr=0xfee00010 data=0 expect fault=0x22 index=0 recorded=1\n\
             irq route-set id=4 dev=0x100 addr=0xfee00010 data=1\n\
             expect-irq-invalidation indices first=4 count=2\n\
             expect-no-irq-invalidation\n\
             expect-route-updates {\n 4 changed ok vector=0x41\n 5\n}\n\
             irq remap dev=0xa0 addr=0xfee00000 data=4 expect fault=io-page-fault kind=index-out-of-range\n\
             expect-irq-route id=4 ok dest=3 index=none\n",
        )
        .unwrap();
        assert_eq!(s.len(), 7);
        match &s[0].op {
            Op::Irq {
                call: IrqCall::Request,
                dev: DevRef::Bdf(0x18),
                expect: Some(IrqExpect::Fault { name, fields }),
                ..
            } => {
                assert_eq!(name.as_deref(), Some("0x22"));
                assert_eq!(fields.len(), 2);
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            &s[1].op,
            Op::Irq {
                call: IrqCall::RouteSet(_),
                expect: None,
                ..
            }
        ));
        match &s[4].op {
            Op::ExpectRouteUpdates(list) => {
                assert_eq!(list.len(), 2);
                assert_eq!(list[0].changed, Some(true));
                assert!(matches!(list[0].expect, Some(IrqExpect::Ok(_))));
                assert_eq!((list[1].changed, &list[1].expect), (None, &None));
            }
            o => panic!("{o:?}"),
        }
        match &s[5].op {
            Op::Irq {
                call: IrqCall::Remap,
                dev: DevRef::Expr(Expr(d)),
                expect: Some(IrqExpect::Fault { name, fields }),
                ..
            } => {
                assert_eq!(d, "0xa0");
                assert_eq!(name.as_deref(), Some("io-page-fault"));
                assert_eq!(
                    fields,
                    &[("kind".to_string(), "index-out-of-range".to_string())]
                );
            }
            o => panic!("{o:?}"),
        }
        match &s[6].op {
            Op::ExpectIrqRoute {
                id: Expr(id),
                expect: IrqExpect::Ok(fields),
            } => {
                assert_eq!(id, "4");
                assert_eq!(fields.len(), 2);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("model vtd\n\nfrobnicate 1\n").unwrap_err();
        assert_eq!(
            e,
            ParseError {
                line: 3,
                msg: "unknown operation 'frobnicate'".into()
            }
        );
        assert_eq!(parse("repeat 2 {\nwrite8 0 0\n").unwrap_err().line, 1);
        assert_eq!(parse("}\n").unwrap_err().line, 1);
        assert_eq!(parse("dma dev=0:1.0 iova=0 read\n").unwrap_err().line, 1);
        assert!(
            parse("dma dev=zz:1.0 iova=0 read expect ok\n")
                .unwrap_err()
                .msg
                .contains("malformed device")
        );
        assert!(
            parse("write-bytes 0 abc\n")
                .unwrap_err()
                .msg
                .contains("hex")
        );
        assert!(parse("mmio poke 0 4 1\n").is_err());
        assert!(
            parse("irq route dev=1 addr=0 data=0\n")
                .unwrap_err()
                .msg
                .contains("expect")
        );
        assert!(
            parse("irq request dev=1 addr=0 data=0 expect ok colour=1\n")
                .unwrap_err()
                .msg
                .contains("unknown field")
        );
        assert!(parse("expect-irq-invalidation indices first=1\n").is_err());
        assert!(
            parse("irq remap dev=1 addr=0 data=0\n")
                .unwrap_err()
                .msg
                .contains("needs expect OUTCOME")
        );
        assert!(
            parse("irq deliver dev=1 addr=0 data=0 expect ok\n")
                .unwrap_err()
                .msg
                .contains("'irq' takes request, remap, route or route-set")
        );
        assert!(
            parse("irq request dev=1 addr=0 data=0 expect ok kind=reserved\n")
                .unwrap_err()
                .msg
                .contains("unknown field 'kind'")
        );
        for bad in [
            "expect-irq-route ok\n",
            "expect-irq-route id=4\n",
            "expect-irq-route 4 ok\n",
        ] {
            assert!(
                parse(bad).unwrap_err().msg.contains("takes id=N OUTCOME"),
                "{bad:?}"
            );
        }
        assert!(parse("rpcit fh=1\n").unwrap_err().msg.contains("expect"));
        assert!(
            parse("host dev=1 junk\n")
                .unwrap_err()
                .msg
                .contains("key=value")
        );
        assert!(
            parse("write8 0 \"unterminated\n")
                .unwrap_err()
                .msg
                .contains("unterminated")
        );
    }
}
