//! Augmentation, samplers and the background loader.

use kd_data::augment::{Augment, Normalize, RandomResizedCrop, Transform};
use kd_data::{Batch, ImageSet, Loader, LoaderConfig, Sampler};
use rand::SeedableRng;
use std::sync::Arc;

/// `n` 3×8×8 images: pixel (c, y, x) of image i = (i + 10c + 3y + x) % 256; label i % 4.
fn toy(n: usize) -> ImageSet {
    let mut images = Vec::new();
    for i in 0..n {
        for c in 0..3 {
            for y in 0..8 {
                for x in 0..8 {
                    images.push(((i + 10 * c + 3 * y + x) % 256) as u8);
                }
            }
        }
    }
    ImageSet {
        images,
        labels: (0..n as u32).map(|i| i % 4).collect(),
        channels: 3,
        height: 8,
        width: 8,
        classes: (0..4).map(|c| c.to_string()).collect(),
    }
}

fn unit_norm() -> Normalize {
    Normalize {
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
    } // output = pixel / 255, exactly
}

#[test]
fn normalisation_uses_the_dataset_constants() {
    let info = kd_data::DatasetName::Cifar10.info();
    let t = Transform::new(Augment::none(), &Normalize::of(&info), 3, 1, 1);
    let mut out = [0f32; 3];
    t.apply(
        &[255, 0, 128],
        &mut rand::rngs::StdRng::seed_from_u64(0),
        &mut out,
    );
    let want = [
        (1.0 - 0.4914) / 0.2470,
        -0.4822 / 0.2435,
        (128.0 / 255.0 - 0.4465) / 0.2616,
    ];
    for (o, w) in out.iter().zip(want) {
        assert!((o - w).abs() < 1e-6, "{o} vs {w}");
    }
}

/// Reference pad-crop-flip by direct indexing.
fn reference(src: &[u8], dy: isize, dx: isize, flip: bool) -> Vec<f32> {
    let mut out = vec![0f32; 3 * 64];
    for c in 0..3 {
        for y in 0..8isize {
            for x in 0..8isize {
                let xc = if flip { 7 - x } else { x };
                let (sy, sx) = (y + dy, xc + dx);
                let v = if (0..8).contains(&sy) && (0..8).contains(&sx) {
                    src[c * 64 + (sy * 8 + sx) as usize]
                } else {
                    0
                };
                out[c * 64 + (y * 8 + x) as usize] = v as f32 / 255.0;
            }
        }
    }
    out
}

#[test]
fn pad_crop_and_flip_match_a_direct_reference_for_every_offset() {
    let set = toy(1);
    let t = Transform::new(Augment::default(), &unit_norm(), 3, 8, 8);
    let mut seen = std::collections::HashSet::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut out = vec![0f32; 192];
    for _ in 0..3000 {
        t.apply(set.image(0), &mut rng, &mut out);
        // Identify the draw among all 81 × 2 candidates.
        let hit = (-4..=4)
            .flat_map(|dy| (-4..=4).flat_map(move |dx| [(dy, dx, false), (dy, dx, true)]))
            .find(|&(dy, dx, f)| reference(set.image(0), dy, dx, f) == out);
        seen.insert(hit.expect("output is some pad-crop(-flip) of the input"));
    }
    assert_eq!(seen.len(), 162, "every offset and flip occurs");
}

#[test]
fn random_resized_crop_of_the_whole_image_is_the_identity() {
    let set = toy(1);
    let aug = Augment {
        pad_crop: 0,
        hflip: false,
        random_resized_crop: Some(RandomResizedCrop {
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
        }),
    };
    let t = Transform::new(aug, &unit_norm(), 3, 8, 8);
    let mut out = vec![0f32; 192];
    t.apply(
        set.image(0),
        &mut rand::rngs::StdRng::seed_from_u64(1),
        &mut out,
    );
    let want: Vec<f32> = set.image(0).iter().map(|&v| v as f32 / 255.0).collect();
    assert_eq!(out, want);
    // A half-area crop stays within the pixel range and is mostly not the identity.
    let aug = Augment {
        random_resized_crop: Some(RandomResizedCrop {
            scale: (0.25, 0.25),
            ratio: (1.0, 1.0),
        }),
        ..Augment::none()
    };
    let t = Transform::new(aug, &unit_norm(), 3, 8, 8);
    t.apply(
        set.image(0),
        &mut rand::rngs::StdRng::seed_from_u64(2),
        &mut out,
    );
    assert!(out.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert_ne!(out, want);
}

fn loader(n: usize, cfg: LoaderConfig) -> Loader {
    Loader::new(
        Arc::new(toy(n)),
        Transform::new(Augment::default(), &unit_norm(), 3, 8, 8),
        cfg,
    )
}

fn all(l: &Loader, epoch: usize) -> Vec<Batch> {
    l.epoch(epoch).collect()
}

#[test]
fn same_seed_same_batches_whatever_the_thread_count() {
    let cfg = |threads| LoaderConfig {
        batch_size: 7,
        threads,
        prefetch: 2,
        seed: 42,
        ..Default::default()
    };
    let a = all(&loader(50, cfg(0)), 3);
    let b = all(&loader(50, cfg(1)), 3);
    let c = all(&loader(50, cfg(3)), 3);
    assert_eq!(a.len(), 7, "50 / 7 with the short batch dropped");
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_ne!(
        a,
        all(&loader(50, cfg(2)), 4),
        "another epoch, another order"
    );
    let d = all(&loader(50, LoaderConfig { seed: 43, ..cfg(2) }), 3);
    assert_ne!(a[0].indices, d[0].indices);
    // Each batch's rows are the images its indices name, augmented.
    assert!(a.iter().all(|b| b.rows() == 7 && b.images.len() == 7 * 192));
    // Resuming mid-epoch yields the same remaining batches.
    let rest: Vec<Batch> = loader(50, cfg(2)).epoch_from(3, 4).collect();
    assert_eq!(rest, a[4..]);
}

#[test]
fn evaluation_keeps_the_short_batch_in_order() {
    let l = Loader::new(
        Arc::new(toy(10)),
        Transform::new(Augment::none(), &unit_norm(), 3, 8, 8),
        LoaderConfig {
            batch_size: 4,
            sampler: Sampler::Sequential,
            drop_last: false,
            threads: 2,
            ..Default::default()
        },
    );
    let b = all(&l, 0);
    assert_eq!(b.iter().map(Batch::rows).collect::<Vec<_>>(), [4, 4, 2]);
    assert_eq!(b[2].indices, [8, 9]);
    assert_eq!(
        b[2].images[..192],
        toy(10)
            .image(8)
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect::<Vec<_>>()[..]
    );
}

#[test]
fn shuffled_epoch_visits_every_image_once() {
    let l = loader(
        40,
        LoaderConfig {
            batch_size: 8,
            threads: 2,
            ..Default::default()
        },
    );
    let mut idx: Vec<usize> = all(&l, 1).into_iter().flat_map(|b| b.indices).collect();
    idx.sort();
    assert_eq!(idx, (0..40).collect::<Vec<_>>());
}

#[test]
fn class_pairs_put_a_same_class_partner_after_the_anchors() {
    let l = loader(
        41,
        LoaderConfig {
            batch_size: 8,
            sampler: Sampler::ClassPairs,
            threads: 2,
            ..Default::default()
        },
    );
    let batches = all(&l, 0);
    assert_eq!(batches.len(), 5);
    for b in &batches {
        assert_eq!((b.anchors, b.rows()), (8, 16));
        for i in 0..8 {
            assert_eq!(b.labels[i], b.labels[8 + i]);
        }
        // Partners are random images, not merely the anchors repeated.
        assert_ne!(b.indices[..8], b.indices[8..]);
    }
}

#[test]
fn views_are_independent_augmentations_of_the_same_images() {
    let l = loader(
        16,
        LoaderConfig {
            batch_size: 4,
            sampler: Sampler::Views(2),
            threads: 1,
            ..Default::default()
        },
    );
    for b in all(&l, 0) {
        assert_eq!((b.anchors, b.rows()), (4, 8));
        assert_eq!(b.indices[..4], b.indices[4..]);
        let per = 192;
        let differing = (0..4)
            .filter(|&i| b.images[i * per..(i + 1) * per] != b.images[(4 + i) * per..(5 + i) * per])
            .count();
        assert!(
            differing >= 3,
            "views should differ: only {differing} of 4 did"
        );
    }
}
