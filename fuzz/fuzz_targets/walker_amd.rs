//! Fuzz target: the shared walker over hostile AMD-Vi v1 page tables (1-6 levels, level skips, NextLevel 7).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| viommu_amd_vi::fuzz_support::walker(data));
