//! `cargo xtask sweep <grid.ron> [--out DIR] [--list] [--point I] [--jobs N] [--slurm]`: runs
//! every point of a grid (`kd_train::sweep`), skipping complete points and resuming
//! interrupted ones, so an interrupted sweep continues where it stopped. Points run in sequence,
//! or `--jobs N` at a time as child processes (`--point I`) sharing the cores; or, with
//! `--slurm`, a job-array script runs one point per array task. Prints the command that merges
//! the results (`cargo xtask report`).

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
    /// Run N points at a time, each in its own process with 1/N of the cores
    /// (RAYON_NUM_THREADS, unless set) and its output in <out>/logs/<point>.log. On 2 cores,
    /// two single-threaded runs finish about 1.4x more points per hour than one at a time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    jobs: u32,
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
        std::fs::create_dir_all(&out)?;
        // Points with a teacher in the grid run in a second array, after the first.
        let (first, after): (Vec<usize>, Vec<usize>) =
            (0..points.len()).partition(|&i| points[i].teacher_point.is_none());
        let mut written = Vec::new();
        for (file, part, job) in [
            ("sweep.sbatch", &first, "kd-sweep"),
            ("sweep-students.sbatch", &after, "kd-sweep-students"),
        ] {
            if part.is_empty() {
                continue;
            }
            let path = out.join(file);
            std::fs::write(&path, slurm_script(&args, &out, part, job)?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {} ({} points)", path.display(), part.len());
            written.push(path);
        }
        match written.as_slice() {
            [one] => println!("submit: sbatch {}", one.display()),
            [a, b] => println!(
                "submit (the second array waits for the teachers in the first):\n  \
                 jid=$(sbatch --parsable {}) && sbatch --dependency=afterok:$jid {}",
                a.display(),
                b.display()
            ),
            _ => {}
        }
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
    if args.jobs > 1 && chosen.len() > 1 {
        let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
        let teacher: Vec<Option<usize>> = points
            .iter()
            .map(|p| {
                let t = p.teacher_point.as_deref()?;
                names.iter().position(|n| *n == t)
            })
            .collect();
        run_parallel(&args, &out, &names, &teacher, &chosen, &interrupted)?;
        println!("report: cargo xtask report {}", out.display());
        return Ok(());
    }
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

/// Runs the points `chosen` `args.jobs` at a time, each as `<this binary> sweep <grid> --point
/// I --out <out>` with its output in `<out>/logs/<name>.log`; a point whose `teacher[i]` is
/// also chosen starts once that one has finished. Stops starting new ones once `stop()`
/// (Ctrl-C, which the children get too and answer with a checkpoint). Fails at the end naming
/// every point that failed and its log.
fn run_parallel(
    args: &Args,
    out: &Path,
    names: &[&str],
    teacher: &[Option<usize>],
    chosen: &[usize],
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = std::env::var("RAYON_NUM_THREADS")
        .unwrap_or_else(|_| (cores / args.jobs as usize).max(1).to_string());
    log::info!(
        "{} points, {} at a time, {threads} thread(s) each; logs in {}",
        chosen.len(),
        args.jobs,
        logs.display()
    );
    let mut queue: Vec<usize> = chosen.to_vec();
    let mut running: Vec<(usize, PathBuf, std::process::Child)> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut failed_ids: Vec<usize> = Vec::new();
    loop {
        // A point waits while its teacher is queued or running; it fails with its teacher.
        let pending = |t: usize, queue: &[usize], running: &[(usize, PathBuf, _)]| {
            queue.contains(&t) || running.iter().any(|(r, _, _)| *r == t)
        };
        queue.retain(|&i| match teacher[i] {
            Some(t) if failed_ids.contains(&t) => {
                failed.push(format!(
                    "{i} {} (its teacher {} failed)",
                    names[i], names[t]
                ));
                false
            }
            _ => true,
        });
        while running.len() < args.jobs as usize && !stop() {
            let ready = queue
                .iter()
                .position(|&i| teacher[i].is_none_or(|t| !pending(t, &queue, &running)));
            let Some(i) = ready.map(|k| queue.remove(k)) else {
                break;
            };
            let log_path = logs.join(format!("{}.log", names[i]));
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("opening {}", log_path.display()))?;
            let child = std::process::Command::new(&exe)
                .arg("sweep")
                .arg(&args.grid)
                .arg("--out")
                .arg(out)
                .args(["--point", &i.to_string(), "--no-progress"])
                .env("RAYON_NUM_THREADS", &threads)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting point {i} ({})", exe.display()))?;
            log::info!("point {}/{} started: {}", i + 1, names.len(), names[i]);
            running.push((i, log_path, child));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut k = 0;
        while k < running.len() {
            match running[k].2.try_wait()? {
                None => k += 1,
                Some(status) => {
                    let (i, log, _) = running.swap_remove(k);
                    if status.success() {
                        log::info!("point {}/{} finished: {}", i + 1, names.len(), names[i]);
                    } else {
                        log::error!(
                            "point {i} {} failed ({status}), see {}",
                            names[i],
                            log.display()
                        );
                        failed.push(format!("{i} {} ({})", names[i], log.display()));
                        failed_ids.push(i);
                    }
                }
            }
        }
    }
    if stop() {
        log::info!("interrupted: run the same command again to continue the sweep");
    }
    if !failed.is_empty() {
        bail!(
            "{} point(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// A Slurm job-array script named `job`: task `k` runs `sweep <grid> --point points[k] --out
/// <out>` with this binary (so the cluster needs no Rust toolchain; build it, or a CUDA
/// bundle, first).
fn slurm_script(args: &Args, out: &Path, points: &[usize], job: &str) -> Result<String> {
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
    let _ = writeln!(s, "#SBATCH --job-name={job}");
    let _ = writeln!(s, "#SBATCH --array=0-{}", points.len().saturating_sub(1));
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
    let list: Vec<String> = points.iter().map(|i| i.to_string()).collect();
    let _ = writeln!(s, "POINTS=({})", list.join(" "));
    let _ = writeln!(
        s,
        "exec \"${{KD_XTASK:-{}}}\" sweep '{}' --out '{}' \\\n  --point \"${{POINTS[$SLURM_ARRAY_TASK_ID]}}\" \
         --no-progress",
        exe.display(),
        grid.display(),
        out_abs.display()
    );
    Ok(s)
}
