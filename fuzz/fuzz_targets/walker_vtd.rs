//! Fuzz target: the shared walker over hostile VT-d second-stage tables.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| viommu_vtd::fuzz_support::walker(data));
