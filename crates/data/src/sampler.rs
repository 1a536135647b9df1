//! Which images form each batch of an epoch, and in which row order.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// Every image once per epoch in a fresh random order.
    Shuffled,
    /// Every image once, in dataset order (evaluation).
    Sequential,
    /// CS-KD: `b` shuffled anchors, then for each anchor one random image of the same class (it
    /// may be the anchor itself): `2b` rows.
    ClassPairs,
    /// DDGSD, KDCL: `k` independently augmented views of the same `b` images, stacked view
    /// after view: `k·b` rows.
    Views(usize),
}

/// The rows of one batch: dataset indices in output order; the first `anchors` are the batch's
/// own images, the rest are partners or further views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    pub indices: Vec<usize>,
    pub anchors: usize,
}

/// SplitMix64 finaliser: decorrelates seeds derived from (seed, epoch, batch).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A reproducible stream for `(seed, a, b)`.
pub fn rng_for(seed: u64, a: u64, b: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(mix(seed) ^ a) ^ b))
}

impl Sampler {
    /// Rows per anchor.
    pub fn rows_per_anchor(self) -> usize {
        match self {
            Sampler::ClassPairs => 2,
            Sampler::Views(k) => k,
            _ => 1,
        }
    }

    /// The batches of `epoch`: a pure function of the labels, sizes, seed and epoch.
    /// `drop_last` drops a final batch with fewer than `batch_size` anchors.
    pub fn plan(
        self,
        labels: &[u32],
        batch_size: usize,
        drop_last: bool,
        seed: u64,
        epoch: usize,
    ) -> Vec<BatchPlan> {
        assert!(batch_size > 0, "batch size must be > 0");
        let n = labels.len();
        let mut rng = rng_for(seed, 0x5a5a_0000 + epoch as u64, 0);
        let mut order: Vec<usize> = (0..n).collect();
        if self != Sampler::Sequential {
            order.shuffle(&mut rng);
        }
        let by_class = if self == Sampler::ClassPairs {
            let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
            let mut v = vec![Vec::new(); classes];
            for (i, &l) in labels.iter().enumerate() {
                v[l as usize].push(i);
            }
            v
        } else {
            Vec::new()
        };
        order
            .chunks(batch_size)
            .filter(|c| !drop_last || c.len() == batch_size)
            .map(|anchors| {
                let mut indices = anchors.to_vec();
                match self {
                    Sampler::ClassPairs => {
                        for &a in anchors {
                            let same = &by_class[labels[a] as usize];
                            indices.push(same[rng.gen_range(0..same.len())]);
                        }
                    }
                    Sampler::Views(k) => {
                        for _ in 1..k {
                            indices.extend_from_slice(anchors);
                        }
                    }
                    _ => {}
                }
                BatchPlan {
                    indices,
                    anchors: anchors.len(),
                }
            })
            .collect()
    }
}
