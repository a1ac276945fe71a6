//! Fuzz target: the shared page-table walker over hostile tables.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| viommu_shared::fuzz_support::walker(data));
