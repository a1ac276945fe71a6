//! Register files as data (filled by its owner).
