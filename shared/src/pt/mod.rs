//! Generic I/O page tables: a small per-architecture [`PageTableFormat`] and one shared walker.
//!
//! Modelled on Linux's `drivers/iommu/generic_pt`: a format only decodes one entry at a level
//! and states its geometry; [`walker`] does lookups and range enumeration for every format, and
//! [`runs`] merges leaves into the maximal contiguous runs the shadow engine maps on the host.

pub mod builder;
pub mod fault;
pub mod format;
pub mod runs;
pub mod walker;

pub use builder::{BuildError, TableBuilder};
pub use fault::WalkFault;
pub use format::{ByteOrder, Decoded, EncodeFormat, PageTableFormat};
pub use runs::{Run, RunMerger};
pub use walker::{Leaf, WalkLimits, WalkStats, Walker};
