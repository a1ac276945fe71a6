//! Fuzz target: a hostile guest and VMM driving an AMD-Vi IOMMU (MMIO, command buffer, device table, page tables, DMA, interrupt remapping tables and MSI requests).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| viommu_amd_vi::fuzz_support::model(data));
