//! Harder training regimes, drawn reproducibly from a seed: symmetric label noise on the
//! training labels, a held-out part of the training set (to choose hyper-parameters without the
//! test set), and a class-balanced subset. The test set is never touched.
//!
//! [`Regime::apply`] runs them in that order on the training set: the noise first, so that a
//! held-out part is as noisy as what is trained on (what a practitioner would have), then the
//! held-out part, then the subset of what remains.

use crate::dataset::ImageSet;
use crate::error::{DataError, Result};
use crate::sampler::rng_for;
use rand::seq::SliceRandom;
use rand::Rng;

/// What to draw from a training set. All off by default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Regime {
    /// Keep this many training images of each class (a class-balanced subset).
    pub per_class: Option<usize>,
    /// Replace this fraction of the training labels, exactly `round(rate·n)` images chosen at
    /// random, each by a uniformly drawn *other* class (symmetric noise).
    pub label_noise: Option<f64>,
    /// Hold out this many training images of each class (by their possibly noisy label).
    pub holdout_per_class: Option<usize>,
    /// The seed of every draw (independent of the training seed, so that every method and
    /// training seed sees the same subset and the same noisy labels).
    pub seed: u64,
}

/// What [`Regime::apply`] did, for the run's log.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Training labels changed by the noise.
    pub flipped: usize,
    /// Fraction of the training set's labels changed (before the subset).
    pub noise_rate: f64,
    /// The held-out part, if any.
    pub holdout: Option<ImageSet>,
}

// Streams of `rng_for(seed, stream, 0)`, one per draw.
const NOISE: u64 = 0x6e6f697365;
const HOLDOUT: u64 = 0x686f6c64;
const SUBSET: u64 = 0x73756273;

impl Regime {
    /// Whether any option is set.
    pub fn is_active(&self) -> bool {
        self.per_class.is_some() || self.label_noise.is_some() || self.holdout_per_class.is_some()
    }

    /// Applies the regime to `train` (see the module docs); errors name the option and value.
    pub fn apply(&self, train: &mut ImageSet) -> Result<Applied> {
        let mut applied = Applied {
            flipped: 0,
            noise_rate: 0.0,
            holdout: None,
        };
        if let Some(rate) = self.label_noise {
            applied.flipped = symmetric_noise(train, rate, self.seed)?;
            applied.noise_rate = applied.flipped as f64 / train.len().max(1) as f64;
        }
        if let Some(k) = self.holdout_per_class {
            let (held, rest) = split_per_class(train, k, self.seed, HOLDOUT, "holdout_per_class")?;
            applied.holdout = Some(train.subset(&held));
            *train = train.subset(&rest);
        }
        if let Some(k) = self.per_class {
            let (kept, _) = split_per_class(train, k, self.seed, SUBSET, "per_class")?;
            *train = train.subset(&kept);
        }
        Ok(applied)
    }
}

/// How many of `a` differ from `b` (the labels a regime changed).
pub fn changed_labels(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// Changes exactly `round(rate·n)` labels, chosen at random, each to a uniformly drawn other
/// class; returns how many changed.
fn symmetric_noise(set: &mut ImageSet, rate: f64, seed: u64) -> Result<usize> {
    let k = set.classes.len();
    if !(0.0..=1.0).contains(&rate) || rate.is_nan() {
        return Err(DataError::Invalid(format!(
            "data.label_noise = {rate}: a fraction of the labels, from 0 to 1"
        )));
    }
    if k < 2 {
        return Err(DataError::Invalid(format!(
            "data.label_noise: the set has {k} class; noise needs two or more"
        )));
    }
    let n = set.len();
    let count = (rate * n as f64).round() as usize;
    let mut rng = rng_for(seed, NOISE, 0);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    for &i in &order[..count] {
        let old = set.labels[i];
        // One of the k − 1 other classes, uniformly.
        let mut new = rng.gen_range(0..k as u32 - 1);
        if new >= old {
            new += 1;
        }
        set.labels[i] = new;
    }
    Ok(count)
}

/// `k` images of each class drawn at random (in their original order), and the rest.
fn split_per_class(
    set: &ImageSet,
    k: usize,
    seed: u64,
    stream: u64,
    option: &str,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let counts = set.class_counts();
    if let Some((c, &have)) = counts.iter().enumerate().find(|(_, &n)| n < k) {
        return Err(DataError::Invalid(format!(
            "data.{option} = {k}: class {c} ({}) has only {have} training images here",
            set.classes[c]
        )));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); counts.len()];
    for (i, &l) in set.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut take = vec![false; set.len()];
    for (c, idx) in by_class.iter_mut().enumerate() {
        let mut rng = rng_for(seed, stream, c as u64);
        idx.shuffle(&mut rng);
        for &i in &idx[..k] {
            take[i] = true;
        }
    }
    let (mut kept, mut rest) = (Vec::new(), Vec::new());
    for (i, &t) in take.iter().enumerate() {
        if t {
            kept.push(i)
        } else {
            rest.push(i)
        }
    }
    Ok((kept, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per_class` images of each of `k` classes, labels in round-robin order; pixel = index
    /// (mod 256).
    fn set(k: usize, per_class: usize) -> ImageSet {
        let n = k * per_class;
        ImageSet {
            images: (0..n).map(|i| i as u8).collect(),
            labels: (0..n).map(|i| (i % k) as u32).collect(),
            channels: 1,
            height: 1,
            width: 1,
            classes: (0..k).map(|c| format!("c{c}")).collect(),
        }
    }

    #[test]
    fn subset_keeps_per_class_images_of_every_class() {
        let mut s = set(10, 25);
        let r = Regime {
            per_class: Some(7),
            seed: 3,
            ..Default::default()
        };
        r.apply(&mut s).unwrap();
        assert_eq!(s.class_counts(), vec![7; 10]);
        assert_eq!(s.images.len(), 70);
        // Images travel with their labels.
        for (i, &l) in s.labels.iter().enumerate() {
            assert_eq!(s.images[i] as u32 % 10, l);
        }
    }

    #[test]
    fn noise_changes_the_target_fraction_to_other_classes_reproducibly() {
        let clean = set(10, 1000);
        let r = Regime {
            label_noise: Some(0.4),
            seed: 9,
            ..Default::default()
        };
        let mut a = clean.clone();
        let applied = r.apply(&mut a).unwrap();
        let changed = changed_labels(&a.labels, &clean.labels);
        assert_eq!(changed, applied.flipped);
        assert!((changed as f64 / 10_000.0 - 0.4).abs() < 0.01, "{changed}");
        assert_eq!(a.images, clean.images, "only labels change");
        // Symmetric: the noisy labels of class 0 spread over the other nine about evenly.
        let mut to = [0usize; 10];
        for (x, y) in a.labels.iter().zip(&clean.labels) {
            if *y == 0 && x != y {
                to[*x as usize] += 1;
            }
        }
        assert_eq!(to[0], 0);
        assert!(to[1..].iter().all(|&c| (20..=70).contains(&c)), "{to:?}");
        let mut b = clean.clone();
        r.apply(&mut b).unwrap();
        assert_eq!(a.labels, b.labels, "same seed, same labels");
        let mut c = clean.clone();
        Regime { seed: 10, ..r }.apply(&mut c).unwrap();
        assert_ne!(a.labels, c.labels, "another seed, other labels");
    }

    #[test]
    fn holdout_is_disjoint_and_balanced_and_the_subset_comes_from_the_rest() {
        let mut s = set(4, 30);
        let r = Regime {
            holdout_per_class: Some(5),
            per_class: Some(20),
            seed: 1,
            ..Default::default()
        };
        let held = r.apply(&mut s).unwrap().holdout.unwrap();
        assert_eq!(held.class_counts(), vec![5; 4]);
        assert_eq!(s.class_counts(), vec![20; 4]);
        let mut all: Vec<u8> = held.images.iter().chain(&s.images).copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100, "no image is in both parts");
    }

    #[test]
    fn bad_values_name_the_option() {
        let mut s = set(3, 4);
        let few = Regime {
            per_class: Some(5),
            ..Default::default()
        };
        let noisy = Regime {
            label_noise: Some(1.5),
            ..Default::default()
        };
        for (r, want) in [
            (few, "data.per_class = 5"),
            (noisy, "data.label_noise = 1.5"),
        ] {
            let e = r.apply(&mut s).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
