//! Fuzz target: the shadow engine against SimHost with guest edits, syncs and reclaims.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| viommu_shared::fuzz_support::shadow(data));
