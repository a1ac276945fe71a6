//! The stream encoding: JSON (`serde_json`), version first.
//!
//! JSON is what Cloud Hypervisor's snapshots use, is self-describing (a field added in a
//! later version is an explicit decision, not a silent shift) and readable in the checked-in
//! compatibility snapshots. 64-bit register values are JSON integers, decoded exactly.

use super::error::{MalformedKind, SnapshotError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Longest stream [`decode`] accepts. Decoding allocates at most a small multiple of the
/// stream's length, so this also bounds the memory a hostile stream can make a restore use.
pub const MAX_STREAM_BYTES: usize = 16 << 20;

/// A model's state struct: its current format version.
pub trait Versioned {
    /// The version this build writes into `version` and accepts from a stream.
    const VERSION: u32;
}

/// The version field alone, read before the body so an unknown version is reported as such
/// whatever shape its body has.
#[derive(serde::Deserialize)]
struct Probe {
    version: u64,
}

fn malformed(e: &serde_json::Error) -> SnapshotError {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Syntax => MalformedKind::Syntax,
        Category::Data => MalformedKind::Data,
        Category::Eof => MalformedKind::Eof,
        Category::Io => MalformedKind::Io,
    };
    SnapshotError::Malformed {
        kind,
        line: e.line(),
        column: e.column(),
    }
}

/// The stream of `state`.
pub fn encode<T: Serialize>(state: &T) -> Vec<u8> {
    // Serializing plain structs of integers, booleans, options and vectors into memory
    // cannot fail (no maps with non-string keys, no I/O); an empty stream would be refused
    // by `decode` rather than misread.
    serde_json::to_vec_pretty(state).unwrap_or_default()
}

/// Decodes a stream produced by [`encode`] of a `T` of the current [`Versioned::VERSION`].
///
/// Checks, in order: length ([`SnapshotError::TooLarge`]), the `version` field
/// ([`SnapshotError::UnsupportedVersion`]), then the body ([`SnapshotError::Malformed`]).
/// Never panics; nesting is bounded by `serde_json`'s recursion limit.
pub fn decode<T: DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, SnapshotError> {
    if bytes.len() > MAX_STREAM_BYTES {
        return Err(SnapshotError::TooLarge {
            len: bytes.len(),
            max: MAX_STREAM_BYTES,
        });
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| malformed(&e))?;
    if probe.version != u64::from(T::VERSION) {
        return Err(SnapshotError::UnsupportedVersion {
            found: probe.version,
            supported: T::VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| malformed(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct State {
        version: u32,
        regs: Vec<u64>,
    }

    impl Versioned for State {
        const VERSION: u32 = 3;
    }

    #[test]
    fn round_trip_and_typed_errors() {
        let s = State {
            version: 3,
            regs: vec![u64::MAX, 0, 1 << 63],
        };
        let bytes = encode(&s);
        assert_eq!(decode::<State>(&bytes), Ok(s));
        assert_eq!(
            decode::<State>(br#"{"version": 4, "other": true}"#),
            Err(SnapshotError::UnsupportedVersion {
                found: 4,
                supported: 3
            })
        );
        assert!(matches!(
            decode::<State>(br#"{"version": 3, "regs": [1], "x": 0}"#),
            Err(SnapshotError::Malformed {
                kind: MalformedKind::Data,
                ..
            })
        ));
        assert!(matches!(
            decode::<State>(br#"{"version": 3, "regs": [1"#),
            Err(SnapshotError::Malformed {
                kind: MalformedKind::Eof,
                ..
            })
        ));
        assert!(matches!(
            decode::<State>(b"\xff"),
            Err(SnapshotError::Malformed {
                kind: MalformedKind::Syntax,
                ..
            })
        ));
        let big = vec![b' '; MAX_STREAM_BYTES + 1];
        assert_eq!(
            decode::<State>(&big),
            Err(SnapshotError::TooLarge {
                len: MAX_STREAM_BYTES + 1,
                max: MAX_STREAM_BYTES
            })
        );
        // Deep nesting is refused, not a stack overflow.
        let deep = format!("{{\"version\":3,\"regs\":{}", "[".repeat(100_000));
        assert!(decode::<State>(deep.as_bytes()).is_err());
    }
}
