//! `cargo xtask sweep <grid.ron> [--out DIR] [--list] [--point I] [--slurm]`: runs every point
//! of a grid (`kd_train::sweep`) in sequence, skipping complete points and resuming
//! interrupted ones, so an interrupted sweep continues where it stopped; or, with `--slurm`,
//! writes a job-array script running one point per array task, and prints the command that
//! merges the results (`cargo xtask report`).

use anyhow::{bail, Context, Result};
use kd_train::sweep::{run_point, Grid, Outcome};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// A grid file (configs/sweeps/*.ron).
    grid: PathBuf,
    /// Where the point folders go [default: <runs>/sweeps/<grid file name>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only list the points.
    #[arg(long)]
    list: bool,
    /// Run only point I (0-based; what each Slurm array task does).
    #[arg(long)]
    point: Option<usize>,
    /// Write <out>/sweep.sbatch (one point per array task) instead of running.
    #[arg(long)]
    slurm: bool,
    /// With --slurm: extra `#SBATCH` lines, e.g. --sbatch "--gres=gpu:1" --sbatch "--time=4:00:00".
    #[arg(long = "sbatch", value_name = "OPTION")]
    sbatch: Vec<String>,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (grid, dir) = Grid::load(&args.grid)?;
    let points = grid.points(&dir)?;
    let stem = args
        .grid
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sweep".into());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::train::runs_dir().join("sweeps").join(&stem));
    if args.list {
        for (i, p) in points.iter().enumerate() {
            println!("{i:3} {}", p.name);
        }
        return Ok(());
    }
    if args.slurm {
        let script = slurm_script(&args, &out, points.len())?;
        std::fs::create_dir_all(&out)?;
        let path = out.join("sweep.sbatch");
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} ({} points)", path.display(), points.len());
        println!("submit: sbatch {}", path.display());
        println!(
            "merge:  cargo xtask report {} --out {}",
            out.display(),
            out.join("report.md").display()
        );
        return Ok(());
    }
    let chosen: Vec<usize> = match args.point {
        Some(i) if i >= points.len() => {
            bail!(
                "--point {i}: the grid has {} points (0..{})",
                points.len(),
                points.len()
            )
        }
        Some(i) => vec![i],
        None => (0..points.len()).collect(),
    };
    let opts = crate::train::run_options(Some(out.clone()), !args.no_progress, None);
    std::fs::create_dir_all(&out)?;
    let interrupted = || {
        opts.interrupt
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
    };
    for i in chosen {
        let p = &points[i];
        log::info!("sweep point {}/{}: {}", i + 1, points.len(), p.name);
        match run_point(p, &out, &opts).with_context(|| format!("point {i} {}", p.name))? {
            Outcome::Skipped(_) => log::info!("{}: complete, skipped", p.name),
            Outcome::Ran(s) => log::info!(
                "{}: {} of {} epochs, last {:?}, best {:?}",
                p.name,
                s.epochs_done,
                s.epochs,
                s.last.test_acc,
                s.best.test_acc
            ),
        }
        if interrupted() {
            log::info!("interrupted: run the same command again to continue the sweep");
            break;
        }
    }
    println!("report: cargo xtask report {}", out.display());
    Ok(())
}

/// A Slurm job-array script: task `i` runs `sweep <grid> --point i --out <out>` with this
/// binary (so the cluster needs no Rust toolchain; build it, or a CUDA bundle, first).
fn slurm_script(args: &Args, out: &Path, n: usize) -> Result<String> {
    let exe = std::env::current_exe().context("finding this binary")?;
    // Inside a CUDA bundle (`bin/xtask` next to `run.sh`), tasks go through `run.sh`, which
    // restores the paths the binary needs.
    let exe = match exe
        .parent()
        .and_then(Path::parent)
        .map(|b| b.join("run.sh"))
    {
        Some(run) if run.is_file() && exe.parent().is_some_and(|d| d.ends_with("bin")) => run,
        _ => exe,
    };
    let grid = std::fs::canonicalize(&args.grid)?;
    let out_abs = std::path::absolute(out)?;
    let mut s = String::from("#!/bin/bash\n");
    let _ = writeln!(s, "#SBATCH --job-name=kd-sweep");
    let _ = writeln!(s, "#SBATCH --array=0-{}", n.saturating_sub(1));
    let _ = writeln!(s, "#SBATCH --output={}/slurm-%A_%a.out", out_abs.display());
    for o in &args.sbatch {
        let _ = writeln!(s, "#SBATCH {o}");
    }
    let _ = writeln!(
        s,
        "# one point per array task; a task that is requeued resumes its point.\n\
         # merge: cargo xtask report {} --out {}/report.md",
        out_abs.display(),
        out_abs.display()
    );
    let _ = writeln!(s, "set -euo pipefail");
    let _ = writeln!(
        s,
        "exec \"${{KD_XTASK:-{}}}\" sweep '{}' --out '{}' --point \"$SLURM_ARRAY_TASK_ID\" \
         --no-progress",
        exe.display(),
        grid.display(),
        out_abs.display()
    );
    Ok(s)
}
