//! A run's data: the dataset (fetched when missing), the data regime
//! (`data.per_class`, `data.label_noise`, `data.holdout_per_class`) and the two loaders.

use super::RunOptions;
use crate::config::TrainConfig;
use crate::method::Info;
use anyhow::{anyhow, bail, Result};
use kd_data::fetch::{fetch, fetch_hint, FetchOptions};
use kd_data::{
    load, Augment, DatasetName, ImageSet, LoadOptions, Loader, LoaderConfig, Normalize, Sampler,
    Split, Transform,
};
use std::sync::Arc;

/// The training and evaluation loaders of a run, and what the data is.
pub(crate) struct RunData {
    pub train: Loader,
    pub test: Loader,
    pub classes: usize,
    pub channels: usize,
    pub size: usize,
    /// Log lines: the data regime (if any) and the sets' sizes.
    pub notes: Vec<String>,
}

/// The dataset's folder: `data.dir`, or `<datasets>/<name>` (fetched when missing).
fn dataset_dir(cfg: &TrainConfig, opts: &RunOptions) -> Result<std::path::PathBuf> {
    let name: DatasetName = cfg.dataset.parse()?;
    if let Some(d) = &cfg.data.dir {
        return Ok(d.clone());
    }
    let dir = opts.datasets_dir.join(name.as_str());
    if !dir.is_dir() {
        log::info!("{name} is not in {}: fetching it", dir.display());
        let fo = FetchOptions {
            root: opts.datasets_dir.clone(),
            ..Default::default()
        };
        fetch(name, &fo).map_err(|e| {
            anyhow!(
                "fetching {name} failed: {e}\nto get it: {}",
                fetch_hint(name)
            )
        })?;
    }
    Ok(dir)
}

/// The training and evaluation sets, after the data regime, and a line saying what the
/// regime did.
pub(crate) fn load_sets(
    cfg: &TrainConfig,
    opts: &RunOptions,
) -> Result<(ImageSet, ImageSet, Option<String>)> {
    let name: DatasetName = cfg.dataset.parse()?;
    let dir = dataset_dir(cfg, opts)?;
    let lo = LoadOptions::default();
    let mut train =
        load(name, &dir, Split::Train, &lo).map_err(|e| anyhow!("{e} ({})", fetch_hint(name)))?;
    let mut test = load(name, &dir, Split::Test, &lo)?;
    let regime = cfg.data.regime();
    let mut note = None;
    if regime.is_active() {
        let applied = regime.apply(&mut train)?;
        let mut parts = Vec::new();
        if regime.label_noise.is_some() {
            parts.push(format!(
                "{} training labels replaced by another class ({:.2}%)",
                applied.flipped,
                100.0 * applied.noise_rate
            ));
        }
        if let Some(k) = regime.per_class {
            parts.push(format!("{k} training images per class"));
        }
        if let Some(held) = applied.holdout {
            parts.push(format!(
                "{} held-out training images evaluated instead of the test set",
                held.len()
            ));
            test = held;
        }
        note = Some(format!(
            "data regime (data.seed {}): {}",
            regime.seed,
            parts.join("; ")
        ));
    }
    if let Some(n) = cfg.data.limit_train {
        train.truncate(n);
    }
    if let Some(n) = cfg.data.limit_test {
        test.truncate(n);
    }
    Ok((train, test, note))
}

/// A loader over `set` with the run's loader settings.
fn loader(cfg: &TrainConfig, set: ImageSet, t: Transform, sampler: Sampler, train: bool) -> Loader {
    Loader::new(
        Arc::new(set),
        t,
        LoaderConfig {
            batch_size: if train {
                cfg.batch_size
            } else {
                cfg.eval_batch_size
            },
            sampler,
            drop_last: train,
            threads: cfg.data.threads,
            prefetch: cfg.data.prefetch,
            seed: cfg.seed,
        },
    )
}

impl RunData {
    /// Loads the sets and builds the loaders: training batches drawn by the method's sampler
    /// with `data.augment`, evaluation batches in order without augmentation.
    pub fn new(cfg: &TrainConfig, info: &Info, opts: &RunOptions) -> Result<Self> {
        let (train_set, test_set, regime) = load_sets(cfg, opts)?;
        let mut notes: Vec<String> = regime.into_iter().collect();
        notes.push(format!(
            "{}: {} training, {} test images of {}x{}x{}, {} classes",
            cfg.dataset,
            train_set.len(),
            test_set.len(),
            train_set.channels,
            train_set.height,
            train_set.width,
            train_set.classes.len()
        ));
        let info_ds: DatasetName = cfg.dataset.parse()?;
        let norm = Normalize::of(&info_ds.info());
        let (c, h, w) = (train_set.channels, train_set.height, train_set.width);
        let classes = train_set.classes.len();
        let train_t = Transform::new(cfg.data.augment.clone(), &norm, c, h, w);
        let test_t = Transform::new(Augment::none(), &norm, c, h, w);
        let sampler = info.sampler(cfg.student_count());
        let train = loader(cfg, train_set, train_t, sampler, true);
        if train.batches_per_epoch() == 0 {
            bail!(
                "{} training images make no full batch of {}",
                train.set().len(),
                cfg.batch_size
            );
        }
        let test = loader(cfg, test_set, test_t, Sampler::Sequential, false);
        Ok(Self {
            train,
            test,
            classes,
            channels: c,
            size: h,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real Fashion-MNIST (Debian's dataset-fashion-mnist; CI installs it): label noise
    /// changes 40% ± 1% of the training labels and no test label; the class-balanced subset
    /// and the held-out part have their sizes; the same data seed gives the same labels.
    #[test]
    fn data_regime_changes_training_labels_only() {
        let dir = kd_data::require_fashion_mnist!();
        let raw = |split| {
            kd_data::load(
                DatasetName::FashionMnist,
                &dir,
                split,
                &LoadOptions::default(),
            )
            .unwrap()
        };
        let (raw_train, raw_test) = (raw(kd_data::Split::Train), raw(kd_data::Split::Test));
        let with = |sets: &[&str]| {
            let mut all = vec![
                "dataset=fashion-mnist".to_string(),
                format!("data.dir=\"{}\"", dir.display()),
            ];
            all.extend(sets.iter().map(|s| s.to_string()));
            let cfg = TrainConfig::default()
                .with_overrides(&all)
                .unwrap()
                .resolve()
                .unwrap();
            load_sets(&cfg, &RunOptions::default()).unwrap()
        };
        let (noisy, test, note) = with(&["data.label_noise=0.4", "data.seed=3"]);
        assert_eq!(
            test.labels, raw_test.labels,
            "the test set keeps its labels"
        );
        let changed = kd_data::regime::changed_labels(&noisy.labels, &raw_train.labels);
        let rate = changed as f64 / raw_train.len() as f64;
        assert!((rate - 0.4).abs() < 0.01, "noise rate {rate}");
        assert!(note.unwrap().contains("training labels replaced"));
        let (again, _, _) = with(&["data.label_noise=0.4", "data.seed=3"]);
        assert_eq!(again.labels, noisy.labels, "same seed, same labels");
        let (small, held, _) = with(&["data.per_class=1000", "data.holdout_per_class=100"]);
        assert_eq!(small.class_counts(), vec![1000; 10]);
        assert_eq!(
            held.class_counts(),
            vec![100; 10],
            "the held-out part replaces the test set"
        );
    }
}
