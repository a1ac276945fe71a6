//! IOTLB translation cache (filled by its owner).
