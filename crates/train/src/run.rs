//! A training run: the run folder, the epoch loop, evaluation, checkpoints and resume.
//!
//! Run folder `runs/<method>-<dataset>-<arch>-s<seed>-<time>/`:
//! - `config.ron`: the resolved [`TrainConfig`] (what `--resume` reads back);
//! - `log.txt`: the log lines of the run (also sent to the `log` crate);
//! - `metrics.csv`: one row per epoch (epoch, lr, total loss, every loss term, train accuracy,
//!   test accuracy per student, images/s, seconds);
//! - `checkpoints/last/` and `checkpoints/best/`: `model.safetensors`, `optimizer.safetensors`
//!   (the SGD velocities) and `state.json` (epochs done, seed, steps, best accuracy); each is
//!   written to `<name>.tmp/` and renamed into place;
//! - `summary.json`: the best and last test accuracy per reported entry: every student (BYOT:
//!   every exit; OKDDip: peers, then the leader), then `ensemble` (mean of the students'
//!   logits) and `fused` (FFL/MFEF) where they exist (`METHODS.md`: "Report both the best and
//!   the last test accuracy, per student, per exit and for the ensemble"), with epochs done
//!   of the total, throughput and wall time; rewritten after every epoch's checkpoint, so a
//!   run killed mid-way is reported as incomplete;
//! - `eval-<checkpoint>.json`: written by [`evaluate_run`].
//!
//! The model is built from the method's [`Recipe`]: a plain network, BYOT exits, ONE's gate,
//! OKDDip's peers and leader, FFL/MFEF fusion over 2 branches, or independent networks (DML;
//! KDCL with one augmented view per network). A non-finite loss term stops the run before the
//! update, naming the term and the step; the last epoch-end checkpoint stays as it was.
//!
//! Determinism: model initialisation draws from a `Cpu` seeded with `seed`; every batch's
//! images and augmentation come from streams seeded by `(seed, epoch, batch)` (`kd_data`), so
//! there is no other random state, and a run resumed from an epoch-end checkpoint ends with the
//! same weights as an uninterrupted one.

use crate::config::TrainConfig;
use crate::device::TrainDevice;
use crate::optim::Sgd;
use crate::recipe::{Batching, Recipe, Structure};
use anyhow::{anyhow, bail, Context, Result};
use dfdx::nn::NumParams;
use dfdx::nn::{LoadFromSafetensors, SaveToSafetensors, ZeroGrads};
use dfdx::prelude::*;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kd_data::fetch::{fetch, fetch_hint, FetchOptions};
use kd_data::{
    load, Augment, Batch, DatasetName, ImageSet, LoadOptions, Loader, LoaderConfig, Normalize,
    Sampler, Split, Transform,
};
use kd_losses::{LossInputs, Method};
use kd_models::{
    build_network, Byot, Ffl, Map4, Mfef, Mode, Model, NetConfig, Network, Networks, Okddip, One,
    Outputs,
};
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The training tape on device `D`.
type Tp<D> = OwnedTape<f32, D>;

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

/// What a checkpoint records besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Epochs completed (the next epoch to run).
    pub epochs_done: usize,
    pub seed: u64,
    /// Optimizer updates so far.
    pub steps: u64,
    /// Best test accuracy (%) of any reported entry so far (-1 before the first evaluation),
    /// and its epoch (1-based).
    pub best_acc: f64,
    pub best_epoch: usize,
    /// Test accuracy per reported entry at the best epoch.
    pub best_test_acc: Vec<f64>,
    /// Test accuracy per reported entry at the end of the last completed epoch.
    pub last_acc: Vec<f64>,
    /// The reported entries: students (or BYOT exits), then `ensemble` and `fused` where the
    /// model has them.
    pub students: Vec<String>,
    /// How the random state is restored.
    pub rng: String,
    /// Set when the run was interrupted inside epoch `epochs_done` (Ctrl-C): where it stopped.
    #[serde(default)]
    pub partial: Option<PartialEpoch>,
}

/// The position and running sums of an interrupted epoch, so that resuming it continues with
/// the next batch and reports the same epoch metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Batches of the epoch already trained on.
    pub batches_done: usize,
    /// Sum over those batches of each loss term.
    pub term_sums: Vec<(String, f64)>,
    pub total_sum: f64,
    /// Correctly classified anchors, anchors, and rows seen.
    pub correct: usize,
    pub seen: usize,
    pub images: usize,
}

/// Test accuracy at one epoch (the default, epoch 0 with no accuracies: none yet).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochAcc {
    /// 1-based.
    pub epoch: usize,
    /// Per student, in %.
    pub test_acc: Vec<f64>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub method: String,
    pub dataset: String,
    pub arch: String,
    pub seed: u64,
    pub students: Vec<String>,
    pub epochs_done: usize,
    pub epochs: usize,
    pub best: EpochAcc,
    pub last: EpochAcc,
    /// Mean training throughput over the run's epochs: network inputs (batch rows) per
    /// second (`rows_per_anchor` of the method's sampler times the epoch's samples/s).
    pub images_per_s: f64,
    /// Wall time of the run's epochs (training and evaluation), summed over invocations.
    #[serde(default)]
    pub seconds: f64,
}

/// The result of [`train`] / [`resume`].
#[derive(Debug, Clone)]
pub struct RunResult {
    pub run_dir: PathBuf,
    pub summary: Summary,
}

/// Writes to the terminal (through `log`) and to `log.txt`.
struct RunLog {
    file: std::fs::File,
    start: Instant,
}

impl RunLog {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            file,
            start: Instant::now(),
        })
    }

    /// `msg` to the terminal at `level` and to `log.txt`, after the time and `tag`.
    fn write(&mut self, level: log::Level, tag: &str, msg: &str) {
        log::log!(level, "{msg}");
        let t = self.start.elapsed().as_secs_f64();
        let _ = writeln!(self.file, "[{t:9.1}s] {tag}{msg}");
    }

    fn info(&mut self, msg: &str) {
        self.write(log::Level::Info, "", msg);
    }

    fn warn(&mut self, msg: &str) {
        self.write(log::Level::Warn, "WARNING ", msg);
    }

    fn error(&mut self, msg: &str) {
        self.write(log::Level::Error, "ERROR ", msg);
    }
}

/// Starts a new run of `cfg` (resolved here) in a fresh folder under `opts.runs_dir`.
pub fn train(cfg: TrainConfig, opts: &RunOptions) -> Result<RunResult> {
    let cfg = cfg.resolve()?;
    check_teacher_given(&cfg)?;
    let stamp = time_stamp();
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
    let mut cfg = cfg.resolve()?;
    check_teacher_given(&cfg)?;
    // The saved config names the teacher by an absolute path, so resuming from another
    // working directory finds the same teacher.
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
    launch(cfg, run_dir.to_path_buf(), opts, Begin::default())
}

/// Continues the run in `run_dir` from its last epoch-end checkpoint (from the start when it
/// has none yet).
pub fn resume(run_dir: &Path, opts: &RunOptions) -> Result<RunResult> {
    let cfg = TrainConfig::load(&run_dir.join("config.ron"))?.resolve()?;
    let last = run_dir.join("checkpoints").join("last");
    let state = if last.join("state.json").is_file() {
        let text = std::fs::read_to_string(last.join("state.json"))?;
        Some(serde_json::from_str::<CheckpointState>(&text).context("reading state.json")?)
    } else {
        None
    };
    let begin = Begin {
        state,
        ..Default::default()
    };
    launch(cfg, run_dir.to_path_buf(), opts, begin)
}

/// Evaluates `checkpoints/<checkpoint>/` (`last` or `best`) of the run in `run_dir` on its
/// test set: accuracy per student (and ensemble, fused logits) in `summary.last`; also written
/// to `eval-<checkpoint>.json` in the run folder.
pub fn evaluate_run(run_dir: &Path, checkpoint: &str, opts: &RunOptions) -> Result<RunResult> {
    let cfg = TrainConfig::load(&run_dir.join("config.ron"))?.resolve()?;
    let path = run_dir
        .join("checkpoints")
        .join(checkpoint)
        .join("state.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no checkpoint `{checkpoint}`: reading {}", path.display()))?;
    let begin = Begin {
        state: Some(serde_json::from_str(&text).context("reading state.json")?),
        checkpoint: checkpoint.to_string(),
        eval_only: true,
    };
    launch(cfg, run_dir.to_path_buf(), opts, begin)
}

/// How a [`Trainer`] starts: fresh, or from a checkpoint to train on or only to evaluate.
struct Begin {
    /// The checkpoint's state (`None`: fresh weights).
    state: Option<CheckpointState>,
    /// Which checkpoint folder to load.
    checkpoint: String,
    eval_only: bool,
}

impl Default for Begin {
    fn default() -> Self {
        Self {
            state: None,
            checkpoint: "last".into(),
            eval_only: false,
        }
    }
}

/// UTC `YYYYMMDD-HHMMSS` (no time-zone database needed).
fn time_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Loads (fetching when missing) the dataset's train and test sets.
/// The training and evaluation sets, after the data regime (`data.per_class`,
/// `data.label_noise`, `data.holdout_per_class`), and a line saying what the regime did.
fn load_data(cfg: &TrainConfig, opts: &RunOptions) -> Result<(ImageSet, ImageSet, Option<String>)> {
    let name: DatasetName = cfg.dataset.parse()?;
    let dir = match &cfg.data.dir {
        Some(d) => d.clone(),
        None => {
            let dir = opts.datasets_dir.join(name.as_str());
            if !dir.is_dir() {
                log::info!("{name} is not in {}: fetching it", dir.display());
                let fo = FetchOptions {
                    root: opts.datasets_dir.clone(),
                    ..Default::default()
                };
                fetch(name, &fo).map_err(|e| {
                    anyhow!(
                        "fetching {name} failed: {e}\nto get it: {}",
                        fetch_hint(name)
                    )
                })?;
            }
            dir
        }
    };
    let lo = LoadOptions::default();
    let mut train =
        load(name, &dir, Split::Train, &lo).map_err(|e| anyhow!("{e} ({})", fetch_hint(name)))?;
    let mut test = load(name, &dir, Split::Test, &lo)?;
    let regime = cfg.data.regime();
    let mut note = None;
    if regime.is_active() {
        let applied = regime.apply(&mut train)?;
        let mut parts = Vec::new();
        if regime.label_noise.is_some() {
            parts.push(format!(
                "{} training labels replaced by another class ({:.2}%)",
                applied.flipped,
                100.0 * applied.noise_rate
            ));
        }
        if let Some(k) = regime.per_class {
            parts.push(format!("{k} training images per class"));
        }
        if let Some(held) = applied.holdout {
            parts.push(format!(
                "{} held-out training images evaluated instead of the test set",
                held.len()
            ));
            test = held;
        }
        note = Some(format!(
            "data regime (data.seed {}): {}",
            regime.seed,
            parts.join("; ")
        ));
    }
    if let Some(n) = cfg.data.limit_train {
        train.truncate(n);
    }
    if let Some(n) = cfg.data.limit_test {
        test.truncate(n);
    }
    Ok((train, test, note))
}

/// What the trainer needs of a model beyond [`Model`]: KDCL's per-network views.
trait Trainable<D: TrainDevice>: Model<D> {
    /// Forwards `views[k]` through student `k` (KDCL, `METHODS.md` "kdcl": each student sees
    /// its own augmentation). Only independent networks can.
    fn forward_views(
        &mut self,
        views: Vec<Map4<D, Tp<D>>>,
        mode: Mode,
    ) -> Result<Outputs<D, Tp<D>>> {
        let _ = (views, mode);
        bail!("this model cannot take one view per student")
    }
}

impl<D: TrainDevice> Trainable<D> for Network<D> {}
impl<D: TrainDevice> Trainable<D> for Byot<D> {}
impl<D: TrainDevice> Trainable<D> for One<D> {}
impl<D: TrainDevice> Trainable<D> for Okddip<D> {}
impl<D: TrainDevice> Trainable<D> for Ffl<D> {}
impl<D: TrainDevice> Trainable<D> for Mfef<D> {}

impl<D: TrainDevice> Trainable<D> for Networks<D> {
    fn forward_views(
        &mut self,
        views: Vec<Map4<D, Tp<D>>>,
        mode: Mode,
    ) -> Result<Outputs<D, Tp<D>>> {
        if views.len() != self.items.len() {
            bail!("{} views for {} networks", views.len(), self.items.len());
        }
        let mut out = Outputs::empty();
        for (k, (net, x)) in self.items.iter_mut().zip(views).enumerate() {
            let o = net.forward(x, mode).into_outputs();
            if k == 0 {
                out.features = o.features;
            }
            out.logits.extend(o.logits);
            out.embeddings.extend(o.embeddings);
        }
        Ok(out)
    }
}

/// Everything a run needs before its model exists.
struct Setup {
    cfg: TrainConfig,
    recipe: Recipe,
    method: Method,
    run_dir: PathBuf,
    opts: RunOptions,
    log: RunLog,
    train: Loader,
    test: Loader,
    classes: usize,
    channels: usize,
    size: usize,
}

/// Creates the device of `cfg.device`, then runs on it ([`launch_on`]).
fn launch(
    cfg: TrainConfig,
    run_dir: PathBuf,
    opts: &RunOptions,
    begin: Begin,
) -> Result<RunResult> {
    match cfg.device.as_str() {
        "cpu" => launch_on(Cpu::create(cfg.seed)?, cfg, run_dir, opts, begin),
        #[cfg(feature = "cuda")]
        "cuda" => launch_on(
            dfdx::prelude::Cuda::create(cfg.seed)?,
            cfg,
            run_dir,
            opts,
            begin,
        ),
        other => bail!("{}", crate::device::unavailable(other)),
    }
}

/// Loads the data, builds the method's model ([`Recipe::structure`]) on `dev` and runs it.
fn launch_on<D: TrainDevice>(
    dev: D,
    cfg: TrainConfig,
    run_dir: PathBuf,
    opts: &RunOptions,
    begin: Begin,
) -> Result<RunResult> {
    let setup = Setup::new(cfg, run_dir, opts)?;
    let arch = setup.cfg.arch_name().to_string();
    let cfg = NetConfig::new(setup.classes, setup.channels);
    let me = |e: kd_models::ModelError| anyhow!("{e}");
    let net = |n: usize| build_network(&dev, &arch, cfg.branches(n)).map_err(me);
    let size = setup.size;
    let n = setup.cfg.student_count();
    match setup.recipe.structure {
        Structure::Plain => Trainer::start(setup, dev.clone(), net(1)?, begin)?.go(),
        Structure::ByotExits => {
            let m = Byot::new(&dev, net(1)?, size).map_err(me)?;
            Trainer::start(setup, dev, m, begin)?.go()
        }
        Structure::OneGate => {
            let m = One::new(&dev, net(n)?).map_err(me)?;
            Trainer::start(setup, dev, m, begin)?.go()
        }
        Structure::Okddip => {
            let m = Okddip::new(&dev, net(n + 1)?).map_err(me)?;
            Trainer::start(setup, dev, m, begin)?.go()
        }
        Structure::FflFusion => {
            let m = Ffl::new(&dev, vec![net(n)?]).map_err(me)?;
            Trainer::start(setup, dev, m, begin)?.go()
        }
        Structure::MfefFusion => {
            let m = Mfef::new(&dev, vec![net(n)?]).map_err(me)?;
            Trainer::start(setup, dev, m, begin)?.go()
        }
        Structure::Networks => {
            let nets = (0..n).map(|_| net(1)).collect::<Result<Vec<_>>>()?;
            Trainer::start(setup, dev, Networks::new(nets), begin)?.go()
        }
    }
}

/// The training and evaluation state of a run.
struct Trainer<M, D: TrainDevice> {
    cfg: TrainConfig,
    recipe: Recipe,
    method: Method,
    run_dir: PathBuf,
    opts: RunOptions,
    log: RunLog,
    dev: D,
    model: M,
    opt: Sgd<M>,
    train: Loader,
    test: Loader,
    state: CheckpointState,
    /// The trained teacher (kd, at, sp), evaluated on every training batch.
    teacher: Option<Network<D>>,
    students: Vec<String>,
    best_epoch_acc: Option<EpochAcc>,
    last_epoch_acc: Option<EpochAcc>,
    /// Only evaluate checkpoint `checkpoint_name`.
    eval_only: bool,
    checkpoint_name: String,
    /// The epoch bar and the batch bars under it.
    bars: MultiProgress,
}

impl Setup {
    fn new(cfg: TrainConfig, run_dir: PathBuf, opts: &RunOptions) -> Result<Self> {
        let recipe = cfg.recipe()?;
        let method = cfg.loss_method()?;
        let mut log = RunLog::open(&run_dir.join("log.txt"))?;
        log.info(&format!("run folder {}", run_dir.display()));
        log.info(&format!("config:\n{}", cfg.to_ron()));
        if let Some(w) = cfg.ramp_warning()? {
            log.warn(&w);
        }
        check_teacher_given(&cfg)?;
        let (train_set, test_set, regime) = load_data(&cfg, opts)?;
        if let Some(r) = regime {
            log.info(&r);
        }
        log.info(&format!(
            "{}: {} training, {} test images of {}x{}x{}, {} classes",
            cfg.dataset,
            train_set.len(),
            test_set.len(),
            train_set.channels,
            train_set.height,
            train_set.width,
            train_set.classes.len()
        ));
        let info: DatasetName = cfg.dataset.parse()?;
        let norm = Normalize::of(&info.info());
        let (c, h, w) = (train_set.channels, train_set.height, train_set.width);
        let classes = train_set.classes.len();
        let train_t = Transform::new(cfg.data.augment.clone(), &norm, c, h, w);
        let test_t = Transform::new(Augment::none(), &norm, c, h, w);
        let train = Loader::new(
            Arc::new(train_set),
            train_t,
            LoaderConfig {
                batch_size: cfg.batch_size,
                sampler: recipe.batching.sampler(cfg.student_count()),
                drop_last: true,
                threads: cfg.data.threads,
                prefetch: cfg.data.prefetch,
                seed: cfg.seed,
            },
        );
        if train.batches_per_epoch() == 0 {
            bail!(
                "{} training images make no full batch of {}",
                train.set().len(),
                cfg.batch_size
            );
        }
        let test = Loader::new(
            Arc::new(test_set),
            test_t,
            LoaderConfig {
                batch_size: cfg.eval_batch_size,
                sampler: Sampler::Sequential,
                drop_last: false,
                threads: cfg.data.threads,
                prefetch: cfg.data.prefetch,
                seed: cfg.seed,
            },
        );
        Ok(Self {
            recipe,
            method,
            run_dir,
            opts: opts.clone(),
            log,
            train,
            test,
            classes,
            channels: c,
            size: h,
            cfg,
        })
    }
}

impl<D: TrainDevice, M: Trainable<D>> Trainer<M, D> {
    fn start(setup: Setup, dev: D, mut model: M, begin: Begin) -> Result<Self> {
        let Setup {
            cfg,
            recipe,
            method,
            run_dir,
            opts,
            mut log,
            train,
            test,
            classes,
            channels,
            ..
        } = setup;
        let eval_only = begin.eval_only;
        // Evaluation needs no teacher (it may have moved since the run).
        let teacher = if eval_only {
            None
        } else {
            load_teacher(&cfg, &dev, classes, channels, &mut log)?
        };
        let mut opt = Sgd::new(&model, cfg.optim.clone());
        let state = match begin.state {
            Some(s) => {
                let dir = run_dir.join("checkpoints").join(&begin.checkpoint);
                model
                    .load_safetensors(dir.join("model.safetensors"))
                    .map_err(|e| anyhow!("reading {}: {e:?}", dir.display()))?;
                opt.load(&dir.join("optimizer.safetensors"))?;
                opt.steps = s.steps;
                if !eval_only {
                    drop_metrics_after(&run_dir.join("metrics.csv"), s.epochs_done)?;
                }
                log.info(&format!(
                    "{} after epoch {} (step {}) from {}",
                    if eval_only { "evaluating" } else { "resuming" },
                    s.epochs_done,
                    s.steps,
                    dir.display()
                ));
                s
            }
            None => {
                if !eval_only {
                    // A run killed before its first checkpoint starts over: no stale rows.
                    drop_metrics_after(&run_dir.join("metrics.csv"), 0)?;
                }
                CheckpointState {
                    epochs_done: 0,
                    seed: cfg.seed,
                    steps: 0,
                    best_acc: -1.0,
                    best_epoch: 0,
                    best_test_acc: Vec::new(),
                    last_acc: Vec::new(),
                    students: Vec::new(),
                    partial: None,
                    rng: "none kept: initialisation from a Cpu seeded with `seed`, batches from \
                      streams seeded by (seed, epoch, batch)"
                        .into(),
                }
            }
        };
        let students = state.students.clone();
        let best_epoch_acc = (state.best_epoch > 0).then(|| EpochAcc {
            epoch: state.best_epoch,
            test_acc: state.best_test_acc.clone(),
        });
        let last_epoch_acc = (state.epochs_done > 0).then(|| EpochAcc {
            epoch: state.epochs_done,
            test_acc: state.last_acc.clone(),
        });
        log.info(&format!(
            "{} ({} parameters), {} batches of {} per epoch, {} epochs",
            cfg.arch_name(),
            model.num_trainable_params(),
            train.batches_per_epoch(),
            cfg.batch_size,
            cfg.total_epochs()
        ));
        Ok(Self {
            recipe,
            method,
            run_dir,
            opts,
            log,
            dev,
            model,
            opt,
            train,
            test,
            state,
            teacher,
            students,
            best_epoch_acc,
            last_epoch_acc,
            eval_only,
            checkpoint_name: begin.checkpoint,
            bars: MultiProgress::new(),
            cfg,
        })
    }

    /// Trains, or only evaluates the loaded checkpoint.
    fn go(mut self) -> Result<RunResult> {
        if !self.eval_only {
            return self.run();
        }
        let acc = self.evaluate();
        let last = EpochAcc {
            epoch: self.state.epochs_done,
            test_acc: acc,
        };
        self.log.info(&format!(
            "test accuracy after epoch {}: {}",
            last.epoch,
            self.students
                .iter()
                .zip(&last.test_acc)
                .map(|(s, a)| format!("{s} {a:.2}%"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let summary = self.summary(last.clone(), last, 0.0, 0.0);
        write_replacing(
            &self
                .run_dir
                .join(format!("eval-{}.json", self.checkpoint_name)),
            &serde_json::to_string_pretty(&summary)?,
        )?;
        Ok(RunResult {
            run_dir: self.run_dir,
            summary,
        })
    }

    fn run(mut self) -> Result<RunResult> {
        let epochs = self.cfg.total_epochs();
        let mut ran = 0;
        let epoch_bar = self.bar(epochs as u64, "epochs");
        epoch_bar.set_position(self.state.epochs_done as u64);
        epoch_bar.reset_eta();
        while self.state.epochs_done < epochs {
            // Between epochs: a Ctrl-C during the last step or the evaluation.
            if ran > 0
                && self
                    .opts
                    .interrupt
                    .is_some_and(|f| f.load(Ordering::SeqCst))
            {
                self.log.info(&format!(
                    "interrupted after epoch {}; continue with --resume {}",
                    self.state.epochs_done,
                    self.run_dir.display()
                ));
                break;
            }
            if self.opts.stop_after.is_some_and(|n| ran >= n) {
                self.log.info(&format!(
                    "stopping after {ran} epoch(s) as asked; resume with --resume {}",
                    self.run_dir.display()
                ));
                break;
            }
            if !self.epoch(self.state.epochs_done)? {
                break;
            }
            ran += 1;
            epoch_bar.inc(1);
            epoch_bar.set_message(format!(
                "best test acc {:.2}% (epoch {})",
                self.state.best_acc, self.state.best_epoch
            ));
        }
        epoch_bar.finish_and_clear();
        let summary = self.write_summary()?;
        self.log.info(&format!(
            "done: {} of {} epochs; last test accuracy {:?} (epoch {}), best {:?} (epoch {})",
            summary.epochs_done,
            epochs,
            summary.last.test_acc,
            summary.last.epoch,
            summary.best.test_acc,
            summary.best.epoch
        ));
        Ok(RunResult {
            run_dir: self.run_dir,
            summary,
        })
    }

    /// The run's summary at its current epoch with these accuracies and timings.
    fn summary(&self, best: EpochAcc, last: EpochAcc, images_per_s: f64, seconds: f64) -> Summary {
        Summary {
            method: self.cfg.method.clone(),
            dataset: self.cfg.dataset.clone(),
            arch: self.cfg.arch_name().into(),
            seed: self.cfg.seed,
            students: self.students.clone(),
            epochs_done: self.state.epochs_done,
            epochs: self.cfg.total_epochs(),
            best,
            last,
            images_per_s,
            seconds,
        }
    }

    /// Writes `summary.json` from the run's state and `metrics.csv` (throughput and wall time
    /// over every epoch of the run, not only this invocation's) and returns it. Written (by
    /// rename) after every epoch's `last` checkpoint, so a killed run is reported as
    /// incomplete, and a sweep never skips a run whose checkpoint is behind its summary.
    fn write_summary(&self) -> Result<Summary> {
        let (mut images_per_s, mut seconds) = (0.0, 0.0);
        if let Ok(m) = crate::metrics::Metrics::load(&self.run_dir) {
            if let (Some(ips), Some(secs)) = (m.column("images_per_s"), m.column("seconds")) {
                if !ips.is_empty() {
                    images_per_s = ips.iter().sum::<f64>() / ips.len() as f64;
                    seconds = secs.iter().sum();
                }
            }
        }
        let summary = self.summary(
            self.best_epoch_acc.clone().unwrap_or_default(),
            self.last_epoch_acc.clone().unwrap_or_default(),
            images_per_s,
            seconds,
        );
        let path = self.run_dir.join("summary.json");
        write_replacing(&path, &serde_json::to_string_pretty(&summary)?)?;
        Ok(summary)
    }

    /// One training epoch, its evaluation, the metrics row, the checkpoints and the summary.
    /// Returns false when interrupted inside the epoch (its partial state is checkpointed).
    fn epoch(&mut self, epoch: usize) -> Result<bool> {
        let epochs = self.cfg.total_epochs();
        let lr = self.cfg.schedule.lr_at(self.cfg.optim.lr, epoch, epochs);
        let batches = self.train.batches_per_epoch();
        let bar = self.bar(batches as u64, &format!("epoch {}/{epochs}", epoch + 1));
        let t0 = Instant::now();
        let mut grads = Some(self.model.alloc_grads());
        let mut sums: Vec<(String, f64)> = Vec::new();
        let mut total_sum = 0f64;
        let (mut correct, mut seen, mut images) = (0usize, 0usize, 0usize);
        let mut skip = 0;
        // Rows trained on in this invocation (throughput); `images` includes a resumed
        // epoch's earlier part.
        let mut images_here = 0usize;
        if let Some(p) = self.state.partial.take() {
            // Resuming an interrupted epoch: restore its running sums and skip its batches.
            skip = p.batches_done;
            sums = p.term_sums;
            total_sum = p.total_sum;
            (correct, seen, images) = (p.correct, p.seen, p.images);
            bar.set_position(skip as u64);
        }
        let loader = self.train.clone();
        for (i, batch) in loader.epoch_from(epoch, skip).enumerate() {
            let step = skip + i;
            let g = grads.take().expect("gradients");
            let (mut inputs, anchors_correct) = self.forward(&batch, g)?;
            inputs.epoch = Some(epoch as f32);
            let out = self
                .method
                .compute(inputs)
                .map_err(|e| anyhow!("loss at epoch {} step {step}: {e}", epoch + 1))?;
            let terms = out.term_values();
            let total = out.total_value();
            if let Some((name, v)) = terms
                .iter()
                .copied()
                .chain(std::iter::once(("total", total)))
                .find(|(_, v)| !v.is_finite())
            {
                bar.abandon();
                let last = self.run_dir.join("checkpoints").join("last");
                let msg = format!(
                    "non-finite loss: term `{name}` = {v} at epoch {} step {step} (global step \
                     {}); stopping. The last good checkpoint is {}",
                    epoch + 1,
                    self.opt.steps,
                    if last.is_dir() {
                        last.display().to_string()
                    } else {
                        "none (no epoch completed)".into()
                    }
                );
                self.log.error(&msg);
                bail!(msg);
            }
            if sums.is_empty() {
                sums = terms.iter().map(|(n, _)| (n.to_string(), 0.0)).collect();
            }
            for ((_, s), (_, v)) in sums.iter_mut().zip(&terms) {
                *s += *v as f64;
            }
            total_sum += total as f64;
            correct += anchors_correct;
            seen += batch.anchors;
            images += batch.rows();
            images_here += batch.rows();
            let mut g = out.total.backward();
            self.opt
                .update(&mut self.model, &mut g, lr)
                .map_err(|e| anyhow!("optimizer: {e:?}"))?;
            self.model.zero_grads(&mut g);
            grads = Some(g);
            bar.set_message(format!(
                "loss {total:.4}, train acc {:.1}%, {:.0} images/s",
                100.0 * correct as f64 / seen.max(1) as f64,
                images_here as f64 / t0.elapsed().as_secs_f64().max(1e-9)
            ));
            bar.inc(1);
            pause_if_asked(&self.run_dir, self.opt.steps);
            let last_step = step + 1 == batches;
            if !last_step
                && self
                    .opts
                    .interrupt
                    .is_some_and(|f| f.load(Ordering::SeqCst))
            {
                bar.abandon();
                self.state.steps = self.opt.steps;
                self.state.partial = Some(PartialEpoch {
                    batches_done: step + 1,
                    term_sums: sums,
                    total_sum,
                    correct,
                    seen,
                    images,
                });
                self.checkpoint("last")?;
                self.log.info(&format!(
                    "interrupted: checkpoint written at epoch {} after batch {} of {batches}; \
                     continue with --resume {}",
                    epoch + 1,
                    step + 1,
                    self.run_dir.display()
                ));
                return Ok(false);
            }
        }
        bar.finish_and_clear();
        let train_secs = t0.elapsed().as_secs_f64();
        let steps = batches.max(1) as f64;
        let train_acc = 100.0 * correct as f64 / seen.max(1) as f64;
        let test_acc = self.evaluate();
        let secs = t0.elapsed().as_secs_f64();
        let ips = images_here as f64 / train_secs.max(1e-9);
        self.state.epochs_done = epoch + 1;
        self.state.steps = self.opt.steps;
        self.state.last_acc = test_acc.clone();
        self.last_epoch_acc = Some(EpochAcc {
            epoch: epoch + 1,
            test_acc: test_acc.clone(),
        });
        let best_now = test_acc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let improved = best_now > self.state.best_acc;
        if improved {
            self.state.best_acc = best_now;
            self.state.best_epoch = epoch + 1;
            self.state.best_test_acc = test_acc.clone();
            self.best_epoch_acc = self.last_epoch_acc.clone();
        }
        let (loss, terms): (f64, Vec<(&str, f64)>) = (
            total_sum / steps,
            sums.iter().map(|(n, s)| (n.as_str(), s / steps)).collect(),
        );
        self.write_metrics(epoch + 1, lr, loss, &terms, train_acc, &test_acc, ips, secs)?;
        if let Err(e) = crate::plot::run_plots(&self.run_dir) {
            self.log.error(&format!("plots not drawn: {e:#}"));
        }
        // `best` first: a kill between the two leaves `last` one epoch behind, and resuming
        // redoes that epoch and rewrites `best`; the other order could leave a `last` that
        // points at a `best` never written.
        if improved {
            self.checkpoint("best")?;
        }
        self.checkpoint("last")?;
        self.write_summary()?;
        let terms_txt: Vec<String> = terms
            .iter()
            .map(|(n, v)| format!("{n} {}", fmt_term(*v, 4)))
            .collect();
        self.log.info(&format!(
            "epoch {}/{epochs}: lr {lr:.4e}, loss {} ({}), train acc {train_acc:.2}%, test \
             acc {}, {ips:.0} images/s, {secs:.1}s",
            epoch + 1,
            fmt_term(loss, 4),
            terms_txt.join(", "),
            self.students
                .iter()
                .zip(&test_acc)
                .map(|(s, a)| format!("{s} {a:.2}%"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(true)
    }

    /// A progress bar under the run's others (hidden without a terminal or with progress off).
    fn bar(&self, len: u64, prefix: &str) -> ProgressBar {
        if !self.opts.progress || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = self.bars.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{elapsed_precise}] {bar:30} {pos}/{len} (eta {eta}) {msg}",
            )
            .expect("a valid template"),
        );
        bar.set_prefix(prefix.to_string());
        bar
    }

    /// The training forward of one batch in the recipe's batching; returns the loss inputs and
    /// the number of anchors the (first) logits classify correctly.
    fn forward(
        &mut self,
        batch: &Batch,
        grads: Gradients<f32, D>,
    ) -> Result<(LossInputs<D, Tp<D>>, usize)> {
        let (rows, c, h, w) = batch.shape();
        let b = batch.anchors;
        let labels: Vec<usize> = batch.labels[..b].iter().map(|&y| y as usize).collect();
        let per = c * h * w;
        let inputs = match self.recipe.batching {
            Batching::Plain => {
                let x = self
                    .dev
                    .tensor_from_vec(batch.images.clone(), (rows, c, h, w));
                let teacher = (self.teacher.as_ref()).map(|t| Model::forward_eval(t, x.clone()));
                let out = Model::forward(&mut self.model, x.traced(grads), Mode::Train);
                let mut inputs = into_inputs(labels.clone(), out);
                if let Some(t) = teacher {
                    // Detached by the losses (`METHODS.md`: `sg z_t`, `sg a_t`, `sg G_t`).
                    inputs.teacher_logits = t.logits.into_iter().next().map(|z| z.retaped());
                    inputs.teacher_features = t.features.into_iter().map(|f| f.retaped()).collect();
                }
                inputs
            }
            Batching::ClassPairs => {
                let xa = self
                    .dev
                    .tensor_from_vec(batch.images[..b * per].to_vec(), (b, c, h, w));
                let xp = self
                    .dev
                    .tensor_from_vec(batch.images[b * per..].to_vec(), (rows - b, c, h, w));
                let out = Model::forward(&mut self.model, xa.traced(grads), Mode::Train);
                let partner = Model::forward(&mut self.model, xp, Mode::Train);
                let mut inputs = into_inputs(labels.clone(), out);
                inputs.partner_logits = partner.logits.into_iter().next().map(|z| z.retaped());
                inputs
            }
            Batching::TwoViewsOneForward => {
                let x = self
                    .dev
                    .tensor_from_vec(batch.images.clone(), (rows, c, h, w));
                let out = Model::forward(&mut self.model, x.traced(grads), Mode::Train);
                let mut inputs = LossInputs::new(labels.clone(), Vec::new());
                for z in out.logits {
                    let (z1, z2) = split_rows(z, b);
                    inputs.logits.extend([z1, z2]);
                }
                for e in out.embeddings {
                    let (e1, e2) = split_rows(e, b);
                    inputs.embeddings.extend([e1, e2]);
                }
                // Stage outputs are tape-free handles for a plain network; the loss ignores
                // them, but they go in so that no tape could be lost.
                inputs.features = out.features;
                inputs
            }
            Batching::ViewPerNetwork => {
                let k = self.cfg.student_count();
                let views = (0..k)
                    .map(|v| {
                        let x = self.dev.tensor_from_vec(
                            batch.images[v * b * per..(v + 1) * b * per].to_vec(),
                            (b, c, h, w),
                        );
                        x.put_tape(Tp::<D>::default())
                    })
                    .collect::<Vec<_>>();
                let mut views = views;
                let (x0, _) = views.remove(0).split_tape();
                views.insert(0, x0.traced(grads));
                let out = self.model.forward_views(views, Mode::Train)?;
                into_inputs(labels.clone(), out)
            }
        };
        let z = inputs
            .logits
            .first()
            .ok_or_else(|| anyhow!("the model returned no logits"))?
            .retaped::<NoneTape>();
        let correct = count_correct(&z.as_vec(), z.shape().1, &labels);
        Ok((inputs, correct))
    }

    /// Test accuracy (%) per student (evaluation mode: BatchNorm running statistics), then of
    /// the ensemble (mean of the students' logits) and of the fused logits where there are
    /// several students or a fusion module (`METHODS.md`: "Every student and the ensemble are
    /// evaluated and reported"). Sets the names of the entries.
    fn evaluate(&mut self) -> Vec<f64> {
        let n = self.test.set().len();
        let bar = self.bar(self.test.batches_per_epoch() as u64, "test");
        let mut correct: Vec<usize> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for batch in self.test.epoch(0) {
            let (rows, c, h, w) = batch.shape();
            let x = self.dev.tensor_from_vec(batch.images, (rows, c, h, w));
            let out: Outputs<D> = Model::forward_eval(&self.model, x);
            let labels: Vec<usize> = batch.labels.iter().map(|&y| y as usize).collect();
            let k = out.logits.first().map_or(1, |z| z.shape().1);
            let mut rows_of: Vec<Vec<f32>> = out.logits.iter().map(|z| z.as_vec()).collect();
            if names.is_empty() {
                names = entry_names(self.recipe.structure, rows_of.len());
            }
            if rows_of.len() > 1 {
                // ONE's ensemble is its gated teacher `z_e = Σ_i g_i z_i`; the others average.
                let m = rows_of.len();
                let gate = out.gate.as_ref().map(|g| g.as_vec());
                let mut mean = vec![0f32; rows_of[0].len()];
                for (i, z) in rows_of.iter().enumerate() {
                    for (r, (acc, zr)) in mean.chunks_mut(k).zip(z.chunks(k)).enumerate() {
                        let w = gate.as_ref().map_or(1.0 / m as f32, |g| g[r * m + i]);
                        for (a, v) in acc.iter_mut().zip(zr) {
                            *a += w * v;
                        }
                    }
                }
                rows_of.push(mean);
                if names.len() < rows_of.len() {
                    names.push("ensemble".into());
                }
            }
            if let Some(f) = &out.fused_logits {
                rows_of.push(f.as_vec());
                if names.len() < rows_of.len() {
                    names.push("fused".into());
                }
            }
            correct.resize(rows_of.len(), 0);
            for (acc, z) in correct.iter_mut().zip(&rows_of) {
                *acc += count_correct(z, k, &labels);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        self.students = names;
        self.state.students = self.students.clone();
        correct
            .iter()
            .map(|&k| 100.0 * k as f64 / n.max(1) as f64)
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn write_metrics(
        &self,
        epoch: usize,
        lr: f64,
        loss: f64,
        terms: &[(&str, f64)],
        train_acc: f64,
        test_acc: &[f64],
        ips: f64,
        secs: f64,
    ) -> Result<()> {
        let path = self.run_dir.join("metrics.csv");
        let new = !path.is_file() || std::fs::metadata(&path)?.len() == 0;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        if new {
            let mut head = vec!["epoch".to_string(), "lr".into(), "loss".into()];
            head.extend(terms.iter().map(|(n, _)| format!("loss_{n}")));
            head.push("train_acc".into());
            head.extend(self.students.iter().map(|s| format!("test_acc_{s}")));
            head.extend(["images_per_s".into(), "seconds".into()]);
            writeln!(f, "{}", head.join(","))?;
        }
        let mut row = vec![
            epoch.to_string(),
            format!("{:e}", lr as f32),
            fmt_term(loss, 6),
        ];
        row.extend(terms.iter().map(|(_, v)| fmt_term(*v, 6)));
        row.push(format!("{train_acc:.4}"));
        row.extend(test_acc.iter().map(|a| format!("{a:.4}")));
        row.extend([format!("{ips:.1}"), format!("{secs:.2}")]);
        writeln!(f, "{}", row.join(","))?;
        Ok(())
    }

    /// Writes `checkpoints/<name>/` through a temporary folder renamed into place.
    fn checkpoint(&self, name: &str) -> Result<()> {
        let dir = self.run_dir.join("checkpoints");
        let tmp = dir.join(format!("{name}.tmp"));
        let old = dir.join(format!("{name}.old"));
        let dst = dir.join(name);
        for d in [&tmp, &old] {
            if d.exists() {
                std::fs::remove_dir_all(d)?;
            }
        }
        std::fs::create_dir_all(&tmp)?;
        self.model
            .save_safetensors(tmp.join("model.safetensors"))
            .map_err(|e| anyhow!("writing {}: {e:?}", tmp.display()))?;
        self.opt.save(&tmp.join("optimizer.safetensors"))?;
        std::fs::write(
            tmp.join("state.json"),
            serde_json::to_string_pretty(&self.state)?,
        )?;
        if dst.exists() {
            std::fs::rename(&dst, &old)?;
        }
        std::fs::rename(&tmp, &dst)?;
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        Ok(())
    }
}

/// Teacher → student methods need `teacher` (checked before any data is loaded).
fn check_teacher_given(cfg: &TrainConfig) -> Result<()> {
    if cfg.recipe()?.teacher && cfg.teacher.is_none() {
        bail!(
            "method `{}` distils from a trained teacher: pass --teacher RUN_DIR (or `teacher: \
             \"RUN_DIR\"` in the config), a run folder of this project trained on {} (e.g. from \
             `cargo xtask train ce --dataset {} --arch resnet56`)",
            cfg.method,
            cfg.dataset,
            cfg.dataset
        );
    }
    Ok(())
}

/// The teacher network of a kd/at/sp run: the architecture of the run in `cfg.teacher`, with
/// its best checkpoint (its last when it has no best). Built after the student, so the student
/// starts from the same weights as a CE run with the same seed.
fn load_teacher<D: TrainDevice>(
    cfg: &TrainConfig,
    dev: &D,
    classes: usize,
    channels: usize,
    log: &mut RunLog,
) -> Result<Option<Network<D>>> {
    let Some(dir) = &cfg.teacher else {
        return Ok(None);
    };
    let what = || format!("teacher {}", dir.display());
    let tcfg = TrainConfig::load(&dir.join("config.ron"))
        .and_then(TrainConfig::resolve)
        .with_context(what)?;
    if tcfg.dataset != cfg.dataset {
        bail!(
            "{}: trained on {}, this run is on {}",
            what(),
            tcfg.dataset,
            cfg.dataset
        );
    }
    if tcfg.recipe()?.structure != Structure::Plain {
        bail!(
            "{}: a `{}` run trains more than one plain network; a teacher must be a run of ce, \
             scd, sad, cskd or ddgsd",
            what(),
            tcfg.method
        );
    }
    let ckpt = ["best", "last"]
        .iter()
        .map(|c| dir.join("checkpoints").join(c))
        .find(|d| d.join("model.safetensors").is_file())
        .ok_or_else(|| anyhow!("{}: no checkpoints/best or checkpoints/last", what()))?;
    let mut net = build_network(dev, tcfg.arch_name(), NetConfig::new(classes, channels))
        .map_err(|e| anyhow!("{}: {e}", what()))?;
    net.load_safetensors(ckpt.join("model.safetensors"))
        .map_err(|e| anyhow!("{}: reading {}: {e:?}", what(), ckpt.display()))?;
    let state: Option<CheckpointState> = std::fs::read_to_string(ckpt.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    log.info(&format!(
        "teacher: {} from {}{}",
        tcfg.arch_name(),
        ckpt.display(),
        state.map_or(String::new(), |s| format!(
            " (epoch {}, test accuracy {:.2}%)",
            s.epochs_done,
            s.last_acc.first().copied().unwrap_or(f64::NAN)
        ))
    ));
    Ok(Some(net))
}

/// For kill-and-resume tests: with `KD_PAUSE_AT_STEP=k` set, the run stops after optimizer
/// step `k`, writes `<run>/PAUSED`, and waits there to be killed, so a test kills it at a known
/// point instead of after a guessed time.
fn pause_if_asked(run_dir: &Path, steps: u64) {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("KD_PAUSE_AT_STEP").ok()?.parse().ok());
    if *at == Some(steps) {
        let _ = std::fs::write(run_dir.join("PAUSED"), steps.to_string());
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

/// Drops the rows of `metrics.csv` after epoch `epochs_done` (written before a kill that came
/// before their checkpoint), so a resumed run's metrics have one row per epoch.
fn drop_metrics_after(path: &Path, epochs_done: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| {
            *i == 0
                || l.split(',')
                    .next()
                    .and_then(|e| e.parse::<usize>().ok())
                    .is_some_and(|e| e <= epochs_done)
        })
        .map(|(_, l)| l)
        .collect();
    if kept.len() != text.lines().count() {
        write_replacing(path, &(kept.join("\n") + "\n"))?;
    }
    Ok(())
}

/// Writes `text` to `<path>.tmp` and renames it over `path`, so a kill leaves the old file or
/// the new one, never a truncated one.
fn write_replacing(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}

/// Names of `n` evaluated logits of a model of `structure`.
fn entry_names(structure: Structure, n: usize) -> Vec<String> {
    match (structure, n) {
        (_, 1) => vec!["net".into()],
        (Structure::ByotExits, n) => (1..=n).map(|i| format!("exit{i}")).collect(),
        (Structure::Okddip, n) => (0..n)
            .map(|i| {
                if i + 1 == n {
                    "leader".into()
                } else {
                    format!("peer{i}")
                }
            })
            .collect(),
        (_, n) => (0..n).map(|i| format!("student{i}")).collect(),
    }
}

/// A forward's outputs as loss inputs (every field, so that every tape reaches the total).
fn into_inputs<D: TrainDevice>(labels: Vec<usize>, out: Outputs<D, Tp<D>>) -> LossInputs<D, Tp<D>> {
    let mut inputs = LossInputs::new(labels, out.logits);
    inputs.features = out.features;
    inputs.embeddings = out.embeddings;
    inputs.gate = out.gate;
    inputs.attention = out.attention;
    inputs.fused_logits = out.fused_logits;
    inputs
}

/// A `[rows, cols]` tensor on the training tape.
type TapedMat<D> = Tensor<(usize, usize), f32, D, Tp<D>>;

/// Rows `0..b` and `b..` of `x`; the first part keeps `x`'s tape.
fn split_rows<D: TrainDevice>(x: TapedMat<D>, b: usize) -> (TapedMat<D>, TapedMat<D>) {
    let n = x.shape().0;
    let (x, tape) = x.split_tape();
    let first = x.clone().put_tape(tape).slice((0..b, ..));
    let second = x.put_tape(Tp::<D>::default()).slice((b..n, ..));
    (first, second)
}

/// Rows of `z` (`[n, k]`, row-major) whose arg-max is the label.
fn count_correct(z: &[f32], k: usize, labels: &[usize]) -> usize {
    z.chunks(k)
        .zip(labels)
        .filter(|(row, &y)| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .is_some_and(|(i, _)| i == y)
        })
        .count()
}

/// A loss (or loss term) epoch mean for the log and `metrics.csv`: `decimals` decimals, or
/// scientific notation with `decimals − 1` significant digits below 1e-3, so a small term
/// keeps its digits (DDGSD's MMD term is ~5e-6 and would print as 0.0000).
fn fmt_term(v: f64, decimals: usize) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.*e}", decimals.saturating_sub(2))
    } else {
        format!("{v:.decimals$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real Fashion-MNIST (Debian's dataset-fashion-mnist; CI installs it): label noise
    /// changes 40% ± 1% of the training labels and no test label; the class-balanced subset
    /// and the held-out part have their sizes; the same data seed gives the same labels.
    #[test]
    fn data_regime_changes_training_labels_only() {
        let dir = PathBuf::from("/usr/share/datasets/fashion-mnist");
        if !dir.join("train-labels-idx1-ubyte.gz").is_file() {
            eprintln!(
                "skipped: no Fashion-MNIST in {} (apt-get install dataset-fashion-mnist)",
                dir.display()
            );
            return;
        }
        let raw = |split| {
            kd_data::load(
                DatasetName::FashionMnist,
                &dir,
                split,
                &LoadOptions::default(),
            )
            .unwrap()
        };
        let (raw_train, raw_test) = (raw(kd_data::Split::Train), raw(kd_data::Split::Test));
        let with = |sets: &[&str]| {
            let mut all = vec![
                "dataset=fashion-mnist".to_string(),
                format!("data.dir=\"{}\"", dir.display()),
            ];
            all.extend(sets.iter().map(|s| s.to_string()));
            let cfg = TrainConfig::default()
                .with_overrides(&all)
                .unwrap()
                .resolve()
                .unwrap();
            load_data(&cfg, &RunOptions::default()).unwrap()
        };
        let (noisy, test, note) = with(&["data.label_noise=0.4", "data.seed=3"]);
        assert_eq!(
            test.labels, raw_test.labels,
            "the test set keeps its labels"
        );
        let changed = noisy
            .labels
            .iter()
            .zip(&raw_train.labels)
            .filter(|(a, b)| a != b)
            .count();
        let rate = changed as f64 / raw_train.len() as f64;
        assert!((rate - 0.4).abs() < 0.01, "noise rate {rate}");
        assert!(note.unwrap().contains("training labels replaced"));
        let (again, _, _) = with(&["data.label_noise=0.4", "data.seed=3"]);
        assert_eq!(again.labels, noisy.labels, "same seed, same labels");
        let (small, held, _) = with(&["data.per_class=1000", "data.holdout_per_class=100"]);
        assert_eq!(small.class_counts(), vec![1000; 10]);
        assert_eq!(
            held.class_counts(),
            vec![100; 10],
            "the held-out part replaces the test set"
        );
    }

    #[test]
    fn small_terms_keep_their_digits() {
        assert_eq!(fmt_term(0.43471, 4), "0.4347");
        assert_eq!(fmt_term(0.0, 4), "0.0000");
        assert_eq!(fmt_term(3.456e-6, 4), "3.46e-6");
        assert_eq!(fmt_term(-2.0e-4, 4), "-2.00e-4");
        assert_eq!(fmt_term(5.123456e-6, 6), "5.1235e-6");
        let back: f64 = fmt_term(5.123456e-6, 6)
            .parse()
            .expect("metrics.csv stays numeric");
        assert!((back - 5.1235e-6).abs() < 1e-12, "{back}");
    }

    #[test]
    fn time_stamp_is_well_formed() {
        let s = time_stamp();
        assert_eq!(s.len(), 15, "{s}");
        assert!(s.starts_with("20"), "{s}");
    }

    #[test]
    fn counts_argmax_hits() {
        let z = [0.1, 0.9, 0.8, 0.2, 0.5, 0.4];
        assert_eq!(count_correct(&z, 2, &[1, 0, 1]), 2);
    }
}
