//! Fuzz target: a hostile guest and VMM driving a VT-d unit (legacy and scalable mode).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| viommu_vtd::fuzz_support::model(data));
