//! Fuzz target: a hostile guest issuing s390 zPCI instructions (CLP, MPCIFC, RPCIT, loads/stores) over its DMA tables.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| viommu_s390_zpci::fuzz_support::model(data));
