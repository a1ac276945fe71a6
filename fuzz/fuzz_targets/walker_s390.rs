//! Fuzz target: the shared walker over hostile s390 DMA translation tables (3-5 levels, big-endian).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| viommu_s390_zpci::fuzz_support::walker(data));
