//! A training run: the run folder, the training loop, evaluation, checkpoints and resume.
//!
//! Run folder `runs/<method>-<dataset>-<arch>-s<seed>-<time>/`:
//! - `config.ron`: the resolved [`TrainConfig`] (what `--resume` reads back);
//! - `log.txt`: the log lines of the run (also sent to the `log` crate);
//! - `metrics.csv`: one row per epoch ([`crate::metrics`]);
//! - `checkpoints/last/` and `checkpoints/best/`: `model.safetensors`, `optimizer.safetensors`
//!   (the SGD velocities) and `state.json` (epochs done, steps, best accuracy, the files'
//!   sha256) ([`checkpoint`]);
//! - `summary.json`: the best and last test accuracy per reported entry ([`Summary`];
//!   `METHODS.md`: "Report both the best and the last test accuracy, per student, per exit and
//!   for the ensemble"), epochs done of the total, throughput and wall time; rewritten after
//!   every epoch's checkpoint, so a run killed mid-way is reported as incomplete;
//! - `eval-<checkpoint>.json`: written by [`evaluate_run`].
//!
//! The method ([`crate::method::Method`], by name from [`crate::methods`]) builds the model,
//! feeds it the batches, gives the loss terms and names what is evaluated. A non-finite loss
//! term stops the run before the update, naming the term and the step; the last epoch-end
//! checkpoint stays as it was.
//!
//! Determinism: model initialisation draws from a device seeded with `seed`; every batch's
//! images and augmentation come from streams seeded by `(seed, epoch, batch)` (`kd_data`), so
//! there is no other random state, and a run resumed from an epoch-end checkpoint ends with the
//! same weights as an uninterrupted one.

pub mod checkpoint;
mod data;
mod eval;
pub mod folder;
pub mod steps;
mod teacher;
mod trainer;

pub use checkpoint::{CheckpointState, PartialEpoch};
pub use folder::{EpochAcc, Summary};
pub use steps::{time_steps, StepTimes};

use crate::config::TrainConfig;
use crate::device::{Device, TrainDevice};
use crate::method::{Info, Method, Visit};
use anyhow::{bail, Context, Result};
use data::RunData;
use folder::{write_replacing, RunLog};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use trainer::{summary_of, Model, Trainer};

/// Where and how a run is carried out (not part of the config: it does not change results).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The parent of new run folders (`runs/`).
    pub runs_dir: PathBuf,
    /// The datasets folder (`datasets/`), where missing datasets are fetched to.
    pub datasets_dir: PathBuf,
    /// Show progress bars (only ever on a terminal).
    pub progress: bool,
    /// Stop after this many epochs in this invocation (a time-boxed run, or an interruption in
    /// tests); the run can be resumed later.
    pub stop_after: Option<usize>,
    /// When this flag becomes true (Ctrl-C, see [`crate::interrupt`]), the run finishes the
    /// current step, writes `checkpoints/last` with its position inside the epoch, and stops;
    /// `resume` continues with the next batch.
    pub interrupt: Option<&'static AtomicBool>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            runs_dir: PathBuf::from("runs"),
            datasets_dir: kd_data::default_root(),
            progress: true,
            stop_after: None,
            interrupt: None,
        }
    }
}

/// The result of [`train`] / [`resume`].
#[derive(Debug, Clone)]
pub struct RunResult {
    pub run_dir: PathBuf,
    pub summary: Summary,
}

/// How a run starts.
enum Start {
    Fresh,
    /// From `checkpoints/<name>/`, to train on.
    Resume(String),
    /// From `checkpoints/<name>/`, only to evaluate.
    Evaluate(String),
}

/// Starts a new run of `cfg` (resolved here) in a fresh folder under `opts.runs_dir`.
pub fn train(cfg: TrainConfig, opts: &RunOptions) -> Result<RunResult> {
    let cfg = cfg.resolve()?;
    let stamp = folder::time_stamp();
    let base = format!(
        "{}-{}-{}-s{}-{stamp}",
        cfg.method,
        cfg.dataset,
        cfg.arch_name(),
        cfg.seed
    );
    let mut run_dir = opts.runs_dir.join(&base);
    let mut n = 1;
    while run_dir.exists() {
        n += 1;
        run_dir = opts.runs_dir.join(format!("{base}-{n}"));
    }
    train_at(cfg, &run_dir, opts)
}

/// Starts a new run of `cfg` in the folder `run_dir` (which must not hold a run yet).
pub fn train_at(cfg: TrainConfig, run_dir: &Path, opts: &RunOptions) -> Result<RunResult> {
    let info = crate::methods::info(&cfg.method)?;
    let cfg = prepare(cfg.resolve_with(&info)?, &info, run_dir)?;
    launch(cfg, run_dir.to_path_buf(), opts, Start::Fresh)
}

/// Starts a new run of method `M`, which need not be registered (a method of one's own), with
/// `cfg` (its `method` must be `M::NAME`) in `run_dir`. Resuming it goes through this
/// function's siblings only for registered methods.
pub fn train_method<M: Method>(
    cfg: TrainConfig,
    run_dir: &Path,
    opts: &RunOptions,
) -> Result<RunResult> {
    let info = Info::of::<M>();
    let cfg = prepare(cfg.resolve_with(&info)?, &info, run_dir)?;
    Launch {
        cfg,
        run_dir: run_dir.to_path_buf(),
        opts: opts.clone(),
        start: Start::Fresh,
    }
    .visit::<M>()
}

/// Checks a new run of `cfg` and writes its folder and `config.ron`; the teacher is named by
/// its absolute path, so resuming from another working directory finds it.
fn prepare(mut cfg: TrainConfig, info: &Info, run_dir: &Path) -> Result<TrainConfig> {
    teacher::check_given(&cfg, info)?;
    if let Some(t) = &cfg.teacher {
        let abs = std::fs::canonicalize(t)
            .with_context(|| format!("teacher: {} is not a run folder", t.display()))?;
        cfg.teacher = Some(abs);
    }
    if run_dir.join("config.ron").exists() {
        bail!(
            "{} already holds a run (continue it with --resume)",
            run_dir.display()
        );
    }
    std::fs::create_dir_all(run_dir.join("checkpoints"))
        .with_context(|| format!("creating {}", run_dir.display()))?;
    std::fs::write(run_dir.join("config.ron"), cfg.to_ron())?;
    Ok(cfg)
}

/// Continues the run in `run_dir` from its last epoch-end checkpoint (from the start when it
/// has none yet).
pub fn resume(run_dir: &Path, opts: &RunOptions) -> Result<RunResult> {
    let start = if run_dir.join("checkpoints/last/state.json").is_file() {
        Start::Resume("last".into())
    } else {
        Start::Fresh
    };
    relaunch(run_dir, opts, start)
}

/// Continues the run in `run_dir` from `checkpoints/<checkpoint>/` (`best`, when `last` is
/// damaged): the epochs after it run again.
pub fn resume_from(run_dir: &Path, checkpoint: &str, opts: &RunOptions) -> Result<RunResult> {
    relaunch(run_dir, opts, Start::Resume(checkpoint.into()))
}

/// Evaluates `checkpoints/<checkpoint>/` (`last` or `best`) of the run in `run_dir` on its
/// test set: accuracy per reported entry in `summary.last`; also written to
/// `eval-<checkpoint>.json` in the run folder.
pub fn evaluate_run(run_dir: &Path, checkpoint: &str, opts: &RunOptions) -> Result<RunResult> {
    relaunch(run_dir, opts, Start::Evaluate(checkpoint.into()))
}

/// Starts the run in `run_dir` again, from its `config.ron`.
fn relaunch(run_dir: &Path, opts: &RunOptions, start: Start) -> Result<RunResult> {
    let cfg = TrainConfig::load(&run_dir.join("config.ron"))?.resolve()?;
    launch(cfg, run_dir.to_path_buf(), opts, start)
}

/// A run of a registered method.
fn launch(
    cfg: TrainConfig,
    run_dir: PathBuf,
    opts: &RunOptions,
    start: Start,
) -> Result<RunResult> {
    let name = cfg.method.clone();
    crate::methods::visit(
        &name,
        Launch {
            cfg,
            run_dir,
            opts: opts.clone(),
            start,
        },
    )?
}

/// A run, for the method it is visited with, on the config's device.
struct Launch {
    cfg: TrainConfig,
    run_dir: PathBuf,
    opts: RunOptions,
    start: Start,
}

impl Visit for Launch {
    type Out = Result<RunResult>;
    fn visit<M: Method>(self) -> Result<RunResult> {
        match self.cfg.device {
            Device::Cpu => self.on::<M, dfdx::prelude::Cpu>(),
            #[cfg(feature = "cuda")]
            Device::Cuda => self.on::<M, dfdx::prelude::Cuda>(),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => bail!("{}", crate::device::unavailable("cuda")),
        }
    }
}

impl Launch {
    fn on<M: Method, D: TrainDevice>(self) -> Result<RunResult> {
        let Launch {
            cfg,
            run_dir,
            opts,
            start,
        } = self;
        let info = Info::of::<M>();
        let mut log = RunLog::open(&run_dir.join("log.txt"))?;
        log.info(&format!("run folder {}", run_dir.display()));
        log.info(&format!("config:\n{}", cfg.to_ron()));
        if let Some(w) = cfg.ramp_warning(&info) {
            log.warn(&w);
        }
        teacher::check_given(&cfg, &info)?;
        // Steady-state steps reuse resident memory instead of mapping and zeroing each large
        // activation afresh; `cargo xtask bench models` times the step with the same setting.
        if kd_ops::keep_large_allocations() {
            log.info("allocator: large blocks stay on the heap (kd_ops::keep_large_allocations)");
        }
        let data = RunData::new(&cfg, &info, &opts)?;
        for n in &data.notes {
            log.info(n);
        }
        let dev = D::create(cfg.seed)?;
        match start {
            Start::Evaluate(name) => {
                evaluate_checkpoint::<M, D>(dev, cfg, &run_dir, log, data, &name)
            }
            Start::Fresh => {
                Trainer::<M, D>::start(cfg, run_dir, &opts, log, data, dev, None)?.run()
            }
            Start::Resume(name) => {
                Trainer::<M, D>::start(cfg, run_dir, &opts, log, data, dev, Some(&name))?.run()
            }
        }
    }
}

/// Evaluates `checkpoints/<name>/` and writes `eval-<name>.json`.
fn evaluate_checkpoint<M: Method, D: TrainDevice>(
    dev: D,
    cfg: TrainConfig,
    run_dir: &Path,
    mut log: RunLog,
    data: RunData,
    name: &str,
) -> Result<RunResult> {
    let mut model = Model::<M, D>::build(dev, &cfg, &data)?;
    let mut state = model.load(run_dir, name)?;
    log.info(&format!(
        "evaluating after epoch {} (step {}) from {}",
        state.epochs_done,
        state.steps,
        run_dir.join("checkpoints").join(name).display()
    ));
    let bar = indicatif::ProgressBar::hidden();
    let (entries, acc) = eval::evaluate::<M, D>(&model.net, &model.dev, &data.test, &bar);
    log.info(&format!(
        "test accuracy after epoch {}: {}",
        state.epochs_done,
        (entries.iter().zip(&acc))
            .map(|(e, a)| format!("{e} {a:.2}%"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    (state.students, state.last_acc) = (entries, acc.clone());
    // The evaluated accuracy as both best and last.
    (state.best_epoch, state.best_test_acc) = (state.epochs_done, acc);
    let summary = summary_of(&cfg, &state, 0.0, 0.0);
    write_replacing(
        &run_dir.join(format!("eval-{name}.json")),
        &serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(RunResult {
        run_dir: run_dir.to_path_buf(),
        summary,
    })
}
