//! Numbers and integer expressions in scenarios.
//!
//! `0x1f`, `0b101`, `42`, `1_000`, sizes with a `K`/`M`/`G` suffix (`4K` = 4096), variables
//! bound by `let` or `repeat … as VAR`, and `+ - * / % << >> & |` with parentheses and the
//! usual precedence. Every operation is checked: overflow is an error, never a wrap.

use std::collections::HashMap;

/// Variables in scope.
pub type Vars = HashMap<String, u64>;

/// Evaluates `text`.
pub fn eval(text: &str, vars: &Vars) -> Result<u64, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        vars,
        text,
    };
    let v = p.expr(0)?;
    if p.i != p.s.len() {
        return Err(format!("malformed number or expression '{text}'"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    vars: &'a Vars,
    text: &'a str,
}

impl Parser<'_> {
    fn bad(&self) -> String {
        format!("malformed number or expression '{}'", self.text)
    }

    fn peek_op(&self) -> Option<(&'static str, u8)> {
        let rest = &self.s[self.i..];
        const OPS: [(&str, u8); 10] = [
            ("<<", 4),
            (">>", 4),
            ("|", 1),
            ("&", 2),
            ("+", 5),
            ("-", 5),
            ("*", 6),
            ("/", 6),
            ("%", 6),
            ("^", 1),
        ];
        OPS.iter()
            .find(|(op, _)| rest.starts_with(op.as_bytes()))
            .copied()
    }

    fn expr(&mut self, min_prec: u8) -> Result<u64, String> {
        let mut lhs = self.atom()?;
        // Precedence climbing; every operator is left-associative.
        while let Some((op, prec)) = self.peek_op() {
            if prec < min_prec {
                break;
            }
            self.i += op.len();
            let rhs = self.expr(prec + 1)?;
            let bad = || self.bad();
            lhs = match op {
                "+" => lhs.checked_add(rhs).ok_or_else(bad)?,
                "-" => lhs.checked_sub(rhs).ok_or_else(bad)?,
                "*" => lhs.checked_mul(rhs).ok_or_else(bad)?,
                "/" => lhs.checked_div(rhs).ok_or_else(bad)?,
                "%" => lhs.checked_rem(rhs).ok_or_else(bad)?,
                "<<" => {
                    let sh = u32::try_from(rhs)
                        .ok()
                        .filter(|s| *s < 64)
                        .ok_or_else(bad)?;
                    lhs.checked_shl(sh)
                        .filter(|v| v >> sh == lhs)
                        .ok_or_else(bad)?
                }
                ">>" => {
                    let sh = u32::try_from(rhs)
                        .ok()
                        .filter(|s| *s < 64)
                        .ok_or_else(bad)?;
                    lhs >> sh
                }
                "&" => lhs & rhs,
                "|" => lhs | rhs,
                _ => lhs ^ rhs,
            };
        }
        Ok(lhs)
    }

    fn atom(&mut self) -> Result<u64, String> {
        let Some(&c) = self.s.get(self.i) else {
            return Err(self.bad());
        };
        if c == b'(' {
            self.i += 1;
            let v = self.expr(0)?;
            if self.s.get(self.i) != Some(&b')') {
                return Err(self.bad());
            }
            self.i += 1;
            return Ok(v);
        }
        if c == b'~' {
            self.i += 1;
            return Ok(!self.atom()?);
        }
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.i += 1;
        }
        let word = &self.text[start..self.i];
        if word.is_empty() {
            return Err(self.bad());
        }
        if word.as_bytes()[0].is_ascii_digit() {
            number(word).ok_or_else(|| self.bad())
        } else {
            self.vars
                .get(word)
                .copied()
                .ok_or_else(|| format!("unknown variable '{word}' in '{}'", self.text))
        }
    }
}

/// Parses one literal: decimal, `0x` hex, `0b` binary, `_` separators, K/M/G suffix.
fn number(word: &str) -> Option<u64> {
    let w: String = word.chars().filter(|c| *c != '_').collect();
    let (digits, mult) = match w.as_bytes().last()? {
        b'K' | b'k' if !w.starts_with("0x") => (&w[..w.len() - 1], 1u64 << 10),
        b'M' if !w.starts_with("0x") => (&w[..w.len() - 1], 1 << 20),
        b'G' if !w.starts_with("0x") => (&w[..w.len() - 1], 1 << 30),
        _ => (&w[..], 1),
    };
    let v = if let Some(h) = digits.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()?
    } else if let Some(b) = digits.strip_prefix("0b") {
        u64::from_str_radix(b, 2).ok()?
    } else {
        digits.parse::<u64>().ok()?
    };
    v.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_expressions() {
        let mut v = Vars::new();
        v.insert("i".into(), 3);
        assert_eq!(eval("0x1f", &v), Ok(31));
        assert_eq!(eval("4K", &v), Ok(4096));
        assert_eq!(eval("64M", &v), Ok(64 << 20));
        assert_eq!(eval("1_000", &v), Ok(1000));
        assert_eq!(eval("0x1000+i*8", &v), Ok(0x1018));
        assert_eq!(eval("(1<<12)|3", &v), Ok(4099));
        assert_eq!(eval("10-2-3", &v), Ok(5));
        assert_eq!(eval("2*3+4*5", &v), Ok(26));
        assert_eq!(eval("~0&0xff", &v), Ok(0xff));
        assert!(eval("0xZZ", &v).unwrap_err().contains("malformed"));
        assert!(eval("1-2", &v).is_err());
        assert!(eval("0xffffffffffffffff+1", &v).is_err());
        assert!(eval("1<<64", &v).is_err());
        assert!(eval("j", &v).unwrap_err().contains("unknown variable"));
        assert!(eval("(1", &v).is_err());
        assert!(eval("", &v).is_err());
    }
}
