//! `cargo xtask eval RUN_DIR [--checkpoint best|last]`: reloads a run's checkpoint and prints
//! its test accuracy per student / exit / ensemble (also written to `eval-<checkpoint>.json`
//! in the run folder).

use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A run folder (runs/<method>-<dataset>-<arch>-s<seed>-<time>).
    run_dir: PathBuf,
    /// `best` or `last`.
    #[arg(long, default_value = "best")]
    checkpoint: String,
}

pub fn run(args: Args) -> Result<()> {
    if !matches!(args.checkpoint.as_str(), "best" | "last") {
        bail!(
            "--checkpoint `{}`: valid checkpoints are best, last",
            args.checkpoint
        );
    }
    let opts = crate::train::run_options(None, true, None);
    let r = kd_train::evaluate_run(&args.run_dir, &args.checkpoint, &opts)?;
    println!(
        "{} checkpoint `{}` (epoch {}):",
        r.run_dir.display(),
        args.checkpoint,
        r.summary.last.epoch
    );
    for (s, a) in r.summary.students.iter().zip(&r.summary.last.test_acc) {
        println!("  {s:<10} {a:6.2}%");
    }
    Ok(())
}
