//! Data: readers, downloads, augmentation, samplers, loader.
