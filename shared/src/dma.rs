//! Emulated-device DMA through a model (filled by its owner).
