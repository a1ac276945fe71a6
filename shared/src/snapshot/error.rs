//! [`SnapshotError`]: why a snapshot stream was refused.

use std::fmt;

/// What kind of decoding error a malformed stream produced (`serde_json`'s categories).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MalformedKind {
    /// Not well-formed JSON.
    Syntax,
    /// Well-formed JSON of the wrong shape (missing or unknown field, wrong type, number
    /// out of range).
    Data,
    /// The stream ended early.
    Eof,
    /// Reading the stream failed.
    Io,
}

/// A snapshot stream or state the model refused. The model is left in its reset state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SnapshotError {
    /// The stream is longer than [`MAX_STREAM_BYTES`](super::MAX_STREAM_BYTES).
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream does not decode.
    Malformed {
        /// The decoder's category.
        kind: MalformedKind,
        /// 1-based line of the error (0 if unknown).
        line: usize,
        /// 1-based column of the error (0 if unknown).
        column: usize,
    },
    /// The stream's format version is not one this build restores.
    UnsupportedVersion {
        /// The version in the stream.
        found: u64,
        /// The version this build writes and reads.
        supported: u32,
    },
    /// A field holds a value no source model could have produced (out of range,
    /// inconsistent with another field).
    Invalid {
        /// The field.
        field: &'static str,
    },
    /// A field does not fit the destination model's configuration (fault record count,
    /// capabilities, plugged functions, function groups).
    Mismatch {
        /// The field.
        field: &'static str,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::TooLarge { len, max } => {
                write!(f, "snapshot stream of {len} bytes exceeds {max}")
            }
            SnapshotError::Malformed { kind, line, column } => {
                write!(f, "malformed snapshot ({kind:?}) at {line}:{column}")
            }
            SnapshotError::UnsupportedVersion { found, supported } => write!(
                f,
                "snapshot format version {found} is not supported (this build: {supported})"
            ),
            SnapshotError::Invalid { field } => write!(f, "snapshot field {field} is invalid"),
            SnapshotError::Mismatch { field } => write!(
                f,
                "snapshot field {field} does not match this model's configuration"
            ),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl SnapshotError {
    /// A semantic error in `field`.
    pub const fn invalid(field: &'static str) -> Self {
        SnapshotError::Invalid { field }
    }

    /// A configuration mismatch in `field`.
    pub const fn mismatch(field: &'static str) -> Self {
        SnapshotError::Mismatch { field }
    }
}
