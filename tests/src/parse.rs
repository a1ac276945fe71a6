//! Parses `.scn` text into statements. Every error names its line.

use crate::ast::{CallSpec, DevRef, DmaExpect, Expr, Op, Stmt};

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
pub fn dev_ref(line: usize, s: &str) -> Result<DevRef, ParseError> {
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
            "irq" => Op::Irq(crate::irq::parse_irq(line, args)?),
            "expect" => Op::ExpectIrq(crate::irq::parse_expect(line, args)?),
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
