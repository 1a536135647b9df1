//! Images kept as u8 in memory, with their labels and class names, and the loading entry point.

use crate::error::{DataError, Result};
use crate::readers;
use crate::registry::DatasetName;
use std::path::{Path, PathBuf};

/// A split of a dataset: `len` images of `channels × height × width` u8 pixels stored CHW,
/// image after image, and one label per image.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Class names in label order.
    pub classes: Vec<String>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of image `i` (CHW).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Number of images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let n = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        ImageSet {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            classes: self.classes.clone(),
        }
    }

    /// The first `n` images (all when `n` ≥ len): for quick runs on a subset.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.images.truncate(n * self.image_len());
            self.labels.truncate(n);
        }
    }

    /// Checks internal consistency: buffer size and label range; `path` names the source.
    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        if self.images.len() != self.len() * self.image_len() {
            return Err(crate::error::format_err(
                path,
                format!(
                    "{} pixel bytes for {} labels of {}x{}x{} images",
                    self.images.len(),
                    self.len(),
                    self.channels,
                    self.height,
                    self.width
                ),
            ));
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= self.classes.len())
        {
            return Err(crate::error::format_err(
                path,
                format!(
                    "label {l} of image {i} is out of range for {} classes",
                    self.classes.len()
                ),
            ));
        }
        Ok(())
    }
}

/// Which split to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    /// CINIC-10's validation split (other datasets have none).
    Valid,
    Test,
}

/// Options for reading a dataset.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Resize images to this square side on load (CS-KD trains Tiny ImageNet at 32×32).
    pub resize: Option<usize>,
    /// SVHN: append the `extra` split to train (it must have been fetched with `--extra`).
    pub svhn_extra: bool,
}

/// Reads one split of a fetched dataset from `root` (normally `datasets/<name>`).
pub fn load(name: DatasetName, root: &Path, split: Split, opts: &LoadOptions) -> Result<ImageSet> {
    if !root.is_dir() {
        return Err(DataError::Missing {
            name: name.to_string(),
            dir: root.to_path_buf(),
            hint: crate::fetch::fetch_hint(name),
        });
    }
    let set = match name {
        DatasetName::Cifar10 => readers::cifar::read_cifar10(root, split)?,
        DatasetName::Cifar100 => readers::cifar::read_cifar100(root, split)?,
        DatasetName::FashionMnist => readers::idx::read_fashion_mnist(root, split)?,
        DatasetName::TinyImagenet => readers::tiny_imagenet::read(root, split)?,
        DatasetName::Cinic10 => readers::cinic::read(root, split)?,
        DatasetName::Svhn => readers::svhn::read(root, split, opts.svhn_extra)?,
    };
    let set = match opts.resize {
        Some(s) if s != set.height || s != set.width => readers::resize_set(set, s),
        _ => set,
    };
    set.validate(root)?;
    Ok(set)
}

/// `datasets/` at the workspace root, or `$KD_DATASETS` when set.
pub fn default_root() -> PathBuf {
    std::env::var_os("KD_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("datasets"))
}
