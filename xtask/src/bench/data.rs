//! `cargo xtask bench data`: images/s of the CIFAR training transform (4-pixel pad + random
//! crop + flip + normalise, u8 → f32 NCHW batches of 128) through the loader at 1 and 2
//! worker threads, on 50,000 synthetic 32×32 RGB images (the cost does not depend on the pixel
//! values).

use anyhow::Result;
use kd_data::augment::{Augment, Normalize, Transform};
use kd_data::{DatasetName, ImageSet, Loader, LoaderConfig};
use rand::{Rng, SeedableRng};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Epochs timed per thread count (after one warm-up epoch).
    #[arg(long, default_value_t = 3)]
    epochs: usize,
}

pub fn run(args: Args) -> Result<()> {
    let info = DatasetName::Cifar10.info();
    let n = 50_000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let set = Arc::new(ImageSet {
        images: (0..n * 3072).map(|_| rng.gen()).collect(),
        labels: (0..n as u32).map(|i| i % 10).collect(),
        channels: 3,
        height: 32,
        width: 32,
        classes: (0..10).map(|c| c.to_string()).collect(),
    });
    let mut table = String::from(
        "| threads | images/s | images/s per thread | ms per batch of 128 |\n|---|---|---|---|\n",
    );
    for threads in [1, 2] {
        let transform = Transform::new(Augment::default(), &Normalize::of(&info), 3, 32, 32);
        let cfg = LoaderConfig {
            batch_size: 128,
            threads,
            prefetch: 8,
            seed: 1,
            ..Default::default()
        };
        let loader = Loader::new(set.clone(), transform, cfg);
        let mut sink = 0f32;
        for b in loader.epoch(0) {
            sink += b.images[0];
        }
        let start = Instant::now();
        let mut images = 0;
        for e in 1..=args.epochs {
            for b in loader.epoch(e) {
                images += b.rows();
                sink += b.images[b.images.len() - 1];
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let ips = images as f64 / secs;
        writeln!(
            table,
            "| {threads} | {ips:.0} | {:.0} | {:.3} |",
            ips / threads as f64,
            1e3 * 128.0 / ips
        )?;
        std::hint::black_box(sink);
    }
    let path = super::write_report("data", &table)?;
    println!("{table}\nwritten to {}", path.display());
    Ok(())
}
