//! Hostile snapshot streams for the `restore` fuzz target: a fuzz input turned into a stream
//! derived from a valid one, so that most inputs reach the models' semantic validation
//! instead of stopping at the JSON parser.

use serde_json::Value;

/// How [`hostile_stream`] uses the input's first byte (`% 4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamMutation {
    /// The rest of the input is the stream.
    Raw,
    /// The valid stream with bytes overwritten: triples of (position: u16, byte).
    Bytes,
    /// The valid stream's scalars replaced by numbers: groups of (which scalar, u64).
    Numbers,
    /// The valid stream's shape changed: pairs of (which node, how): arrays truncated,
    /// emptied or grown by repeating their first element, booleans flipped, numbers made
    /// `null` and `null`s made numbers, object fields removed.
    Shapes,
}

/// Nodes of `v` in depth-first order (containers before their children).
fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// Applies `f` to node number `*n` of `v` (depth-first, as [`count`] counts); true once done.
fn visit(v: &mut Value, n: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
    if *n == 0 {
        f(v);
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| visit(x, n, f)),
        Value::Object(o) => o.values_mut().any(|x| visit(x, n, f)),
        _ => false,
    }
}

/// A stream from fuzz `data` and a `valid` stream (see [`StreamMutation`]); at most a few
/// thousand elements are added, so a mutated stream stays small.
pub fn hostile_stream(valid: &[u8], data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return valid.to_vec();
    };
    let mode = [
        StreamMutation::Raw,
        StreamMutation::Bytes,
        StreamMutation::Numbers,
        StreamMutation::Shapes,
    ][usize::from(mode % 4)];
    if mode == StreamMutation::Raw {
        return rest.to_vec();
    }
    if mode == StreamMutation::Bytes {
        let mut s = valid.to_vec();
        for p in rest.chunks_exact(3) {
            if s.is_empty() {
                break;
            }
            let at = usize::from(u16::from_le_bytes([p[0], p[1]])) % s.len();
            s[at] = p[2];
        }
        return s;
    }
    let Ok(mut root) = serde_json::from_slice::<Value>(valid) else {
        return valid.to_vec();
    };
    let step = if mode == StreamMutation::Numbers {
        9
    } else {
        2
    };
    for p in rest.chunks_exact(step).take(64) {
        let total = count(&root);
        let mut n = usize::from(u16::from(p[0]) * 7) % total;
        if mode == StreamMutation::Numbers {
            let mut v = [0u8; 8];
            v.copy_from_slice(&p[1..9]);
            let v = u64::from_le_bytes(v);
            // Small values, flipped bits and extremes are the interesting ones.
            visit(&mut root, &mut n, &mut |node| {
                let n = match p[0] >> 6 {
                    0 => v % 64,
                    1 => node.as_u64().unwrap_or(0) ^ (1 << (v % 64)),
                    2 => u64::MAX - v % 4,
                    _ => v,
                };
                if !node.is_array() && !node.is_object() {
                    *node = Value::from(n);
                }
            });
        } else {
            let how = p[1];
            visit(&mut root, &mut n, &mut |node| match node {
                Value::Array(a) => match how % 3 {
                    0 => a.truncate(usize::from(how >> 2)),
                    1 => {
                        if let Some(x) = a.first().cloned() {
                            a.extend(std::iter::repeat_n(x, usize::from(how)));
                        }
                    }
                    _ => a.clear(),
                },
                Value::Bool(b) => *b = !*b,
                Value::Null => *node = Value::from(u64::from(how) << 12),
                Value::Number(_) => *node = Value::Null,
                Value::Object(o) => {
                    if let Some(k) = o.keys().nth(usize::from(how) % o.len().max(1)).cloned() {
                        o.remove(&k);
                    }
                }
                Value::String(_) => {}
            });
        }
    }
    serde_json::to_vec(&root).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_json_and_change_it() {
        let valid = br#"{"version":1,"regs":[{"offset":0,"value":5}],"on":true,"irta":null}"#;
        assert_eq!(hostile_stream(valid, &[]), valid.to_vec());
        assert_eq!(hostile_stream(valid, &[0, b'x']), b"x".to_vec());
        let bytes = hostile_stream(valid, &[1, 0, 0, b'[']);
        assert_eq!(bytes[0], b'[');
        for mode in [2u8, 3] {
            let mut changed = 0;
            for k in 0..=255u8 {
                let data = [mode, k, 1, 2, 3, 4, 5, 6, 7, 8];
                let s = hostile_stream(valid, &data);
                assert!(serde_json::from_slice::<Value>(&s).is_ok());
                if s != serde_json::to_vec(&serde_json::from_slice::<Value>(valid).unwrap())
                    .unwrap()
                {
                    changed += 1;
                }
            }
            assert!(changed > 100, "mode {mode}: {changed}");
        }
    }
}
