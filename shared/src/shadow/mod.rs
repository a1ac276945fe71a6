//! Shadow engine (in progress).
