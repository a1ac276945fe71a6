//! One Linux-like IOMMU driver per model, each an [`IommuDomain`](crate::dma_api::IommuDomain)
//! for the DMA API, with the passthrough device shadowed by the model ([`Strategy::Viommu`])
//! or by QEMU's strategy ([`Strategy::PerLeaf`]).
//!
//! [`Strategy::Viommu`]: crate::run::Strategy::Viommu
//! [`Strategy::PerLeaf`]: crate::run::Strategy::PerLeaf

pub mod amd_vi;
pub mod vtd;
pub mod zpci;
