//! Fuzz target: hostile snapshot streams restored into VT-d, AMD-Vi and s390 zPCI models with passthrough hosts attached.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| viommu_conformance::fuzz_support::restore(data));
