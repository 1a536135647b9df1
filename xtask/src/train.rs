//! `cargo xtask train <method> [--dataset D] [--arch A] [--epochs N] [--batch-size B]
//! [--seed S] [--device cpu] [--teacher RUN_DIR] [--config FILE] [--set k=v ...]
//! [--limit-train N] [--out DIR]` and `cargo xtask train --resume RUN_DIR [--from best]`: trains
//! with kd-train
//! and writes a run folder (`runs/<method>-<dataset>-<arch>-s<seed>-<time>/`, see
//! `kd_train::run`).

use anyhow::{bail, Result};
use kd_train::{Device, RunOptions, TrainConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A method of METHODS.md.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(kd_train::methods::NAMES))]
    method: Option<String>,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long, conflicts_with = "method")]
    resume: Option<PathBuf>,
    /// With --resume: the checkpoint to continue from (`best` when `last` is damaged; the
    /// epochs after it run again).
    #[arg(long, requires = "resume", default_value = "last")]
    from: String,
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
    /// `cpu` (`cuda` needs the CUDA build, see docs/cuda.md).
    #[arg(long)]
    device: Option<Device>,
    /// kd, at, sp: the run folder of the trained teacher (same dataset).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// A RON config (configs/<method>.ron); the flags and --set override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a setting: `--set optim.lr=0.05 --set loss.beta=300` (dotted keys, RON values).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Train on the first N training images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// The folder that receives the run folder [default: $KD_RUNS, else <workspace>/runs].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop after this many epochs (resume later with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
    /// Print the resolved configuration and exit without training.
    #[arg(long)]
    print_config: bool,
}

/// `$KD_RUNS`, else `<workspace>/runs`.
pub fn runs_dir() -> PathBuf {
    std::env::var_os("KD_RUNS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let xtask = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            xtask.parent().unwrap_or(xtask).join("runs")
        })
}

/// A CUDA run from a runner built without CUDA rebuilds with it (or says what is missing).
fn ensure_device(device: Device) -> Result<()> {
    if device == Device::Cuda && !kd_train::device::available().contains(&"cuda") {
        crate::cuda::reexec_with_cuda()?;
    }
    Ok(())
}

/// How runs are carried out from the command line.
pub fn run_options(out: Option<PathBuf>, progress: bool, stop_after: Option<usize>) -> RunOptions {
    RunOptions {
        runs_dir: out.unwrap_or_else(runs_dir),
        datasets_dir: crate::fetch::datasets_dir(),
        progress,
        stop_after,
        interrupt: Some(kd_train::interrupt::install()),
    }
}

pub fn run(args: Args) -> Result<()> {
    let opts = run_options(args.out.clone(), !args.no_progress, args.stop_after);
    if let Some(dir) = &args.resume {
        ensure_device(TrainConfig::load(&dir.join("config.ron"))?.device)?;
        let r = match args.from.as_str() {
            "last" => kd_train::resume(dir, &opts)?,
            other => kd_train::resume_from(dir, other, &opts)?,
        };
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
            "name a method ({}) or --config FILE, or --resume RUN_DIR",
            kd_train::methods::NAMES.join(", ")
        ),
    }
    // The flags are overrides applied before `--set`, so that settings derived from them
    // follow (milestones at 50%/75% of `--epochs`, even when a config file resolved them for
    // its own epoch count).
    let mut sets = Vec::new();
    let mut flag = |key: &str, v: Option<String>| {
        if let Some(v) = v {
            sets.push(format!("{key}={v}"));
        }
    };
    flag("dataset", args.dataset.map(|d| format!("{d:?}")));
    flag("arch", args.arch.map(|a| format!("{a:?}")));
    flag("epochs", args.epochs.map(|e| e.to_string()));
    flag("batch_size", args.batch_size.map(|b| b.to_string()));
    flag("seed", args.seed.map(|s| s.to_string()));
    flag("device", args.device.map(|d| d.to_string()));
    flag(
        "teacher",
        args.teacher
            .map(|t| format!("{:?}", t.display().to_string())),
    );
    flag("data.limit_train", args.limit_train.map(|n| n.to_string()));
    sets.extend(args.sets.iter().cloned());
    let cfg = cfg.with_overrides(&sets)?;
    if args.print_config {
        if let Some(w) = cfg.ramp_warning(&cfg.info()?) {
            log::warn!("{w}");
        }
        print!("{}", cfg.to_ron());
        return Ok(());
    }
    ensure_device(cfg.device)?;
    let r = kd_train::train(cfg, &opts)?;
    println!("{}", r.run_dir.display());
    Ok(())
}
