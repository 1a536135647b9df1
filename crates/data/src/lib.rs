//! Data for kd: the six datasets of `../shared/spec/DATASETS.md` (verified downloads and
//! readers), augmentation, samplers (shuffled, CS-KD class pairs, multi-view) and a
//! prefetching batch loader that produces f32 NCHW batches on background threads.

pub mod augment;
pub mod dataset;
pub mod error;
pub mod fetch;
pub mod loader;
pub mod readers;
pub mod regime;
pub mod registry;
pub mod sampler;
pub mod testing;

pub use augment::{Augment, Normalize, Transform};
pub use dataset::{default_root, load, ImageSet, LoadOptions, Split};
pub use error::{DataError, Result};
pub use loader::{Batch, Loader, LoaderConfig};
pub use regime::Regime;
pub use registry::{DatasetInfo, DatasetName};
pub use sampler::Sampler;
