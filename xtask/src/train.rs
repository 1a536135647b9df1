//! `cargo xtask train <method> [--dataset D] [--arch A] [--epochs N] [--batch-size B]
//! [--seed S] [--config FILE] [--set k=v ...] [--limit-train N] [--out DIR]` and
//! `cargo xtask train --resume RUN_DIR`, `cargo xtask train --eval RUN_DIR [--checkpoint
//! best|last]`: trains with kd-train and writes a run folder
//! (`runs/<method>-<dataset>-<arch>-s<seed>-<time>/`, see `kd_train::run`).

use anyhow::{bail, Result};
use kd_train::{RunOptions, TrainConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A method of METHODS.md (trainable now: ce, scd, sad, cskd, ddgsd).
    method: Option<String>,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long, conflicts_with = "method")]
    resume: Option<PathBuf>,
    /// Only evaluate a run's checkpoint (see --checkpoint) on its test set; prints the accuracy
    /// per student and writes eval-<checkpoint>.json into the run folder.
    #[arg(long, conflicts_with_all = ["method", "resume"])]
    eval: Option<PathBuf>,
    /// With --eval: `last` or `best`.
    #[arg(long, default_value = "last")]
    checkpoint: String,
    /// Dataset name (default cifar100).
    #[arg(long)]
    dataset: Option<String>,
    /// Architecture (default resnet18; resnet32 for online methods).
    #[arg(long)]
    arch: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// A RON config (configs/<method>.ron); the flags and --set override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a setting: `--set optim.lr=0.05 --set loss.beta=300` (dotted keys, RON values).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Train on the first N training images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// The folder that receives the run folder [default: <workspace>/runs].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop after this many epochs (resume later with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
}

/// `<workspace>/runs`.
fn runs_dir() -> PathBuf {
    let xtask = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).join("runs")
}

pub fn run(args: Args) -> Result<()> {
    let opts = RunOptions {
        runs_dir: args.out.clone().unwrap_or_else(runs_dir),
        datasets_dir: crate::fetch::datasets_dir(),
        progress: !args.no_progress,
        stop_after: args.stop_after,
        interrupt: Some(kd_train::interrupt::install()),
    };
    if let Some(dir) = &args.eval {
        let r = kd_train::evaluate_run(dir, &args.checkpoint, &opts)?;
        for (s, a) in r.summary.students.iter().zip(&r.summary.last.test_acc) {
            println!("{s}\t{a:.2}");
        }
        return Ok(());
    }
    if let Some(dir) = &args.resume {
        let r = kd_train::resume(dir, &opts)?;
        println!("{}", r.run_dir.display());
        return Ok(());
    }
    let mut cfg = match &args.config {
        Some(path) => TrainConfig::load(path)?,
        None => TrainConfig::default(),
    };
    match (&args.method, &args.config) {
        (Some(m), _) => cfg.method = m.clone(),
        (None, Some(_)) => {}
        (None, None) => bail!(
            "name a method (trainable: {}) or --config FILE, or --resume RUN_DIR",
            kd_train::Recipe::trainable_methods().join(", ")
        ),
    }
    if let Some(d) = args.dataset {
        cfg.dataset = d;
    }
    if let Some(a) = args.arch {
        cfg.arch = Some(a);
    }
    if let Some(e) = args.epochs {
        cfg.epochs = Some(e);
    }
    if let Some(b) = args.batch_size {
        cfg.batch_size = b;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if let Some(n) = args.limit_train {
        cfg.data.limit_train = Some(n);
    }
    let cfg = cfg.with_overrides(&args.sets)?;
    let r = kd_train::train(cfg, &opts)?;
    println!("{}", r.run_dir.display());
    Ok(())
}
