//! The training loop of a run: epochs of steps (a method's feed, its loss, backward, SGD),
//! each epoch followed by the evaluation, the metrics row, the checkpoints and the summary.

use super::checkpoint::{self, CheckpointState, PartialEpoch};
use super::data::RunData;
use super::eval::evaluate;
use super::folder::{drop_metrics_after, write_replacing, EpochAcc, RunLog, Summary};
use super::{teacher, RunOptions, RunResult};
use crate::config::TrainConfig;
use crate::device::TrainDevice;
use crate::feed::count_correct;
use crate::method::{params_of, Fed, Method, Params, Spec, Structure};
use crate::metrics::{fmt_term, EpochRow, Metrics};
use crate::optim::Sgd;
use anyhow::{anyhow, bail, Result};
use dfdx::nn::{LoadFromSafetensors, NumParams, SaveToSafetensors, ZeroGrads};
use dfdx::prelude::*;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kd_data::Batch;
use kd_models::{Mat, Network};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What a training step leaves: the zeroed gradients for the next step and the loss values.
pub(crate) struct Stepped<D: TrainDevice> {
    pub grads: Gradients<f32, D>,
    pub terms: Vec<(&'static str, f32)>,
    pub total: f32,
}

/// A method's model on a device with its optimizer, ready to train or evaluate.
pub(crate) struct Model<M: Method, D: TrainDevice> {
    pub dev: D,
    pub net: M::Model<D>,
    pub opt: Sgd<M::Model<D>>,
}

impl<M: Method, D: TrainDevice> Model<M, D> {
    /// Builds the model of `cfg` for `data` (fresh weights from the device's seeded RNG).
    pub fn build(dev: D, cfg: &TrainConfig, data: &RunData) -> Result<Self> {
        let spec = Spec {
            arch: cfg.arch_name().to_string(),
            classes: data.classes,
            channels: data.channels,
            size: data.size,
            students: cfg.student_count(),
        };
        Self::build_spec(dev, cfg, &spec)
    }

    /// Builds the model of `cfg` for the input and classes of `spec`.
    pub fn build_spec(dev: D, cfg: &TrainConfig, spec: &Spec) -> Result<Self> {
        let net = <M::Model<D> as Structure<D>>::build(&dev, spec)?;
        let opt = Sgd::new(&net, cfg.optim.clone());
        Ok(Self { dev, net, opt })
    }

    /// One training step as every run takes it: the method's feed, its loss, backward and the
    /// SGD update at `lr`. `check` sees the first logits, the terms and the total before the
    /// update (with the optimizer's step count) and may stop the step with an error.
    pub fn step(
        &mut self,
        params: &Params<M>,
        fed: Fed<'_, D>,
        epoch: usize,
        step: usize,
        lr: f64,
        check: impl FnOnce(&Mat<D>, &[(&'static str, f32)], f32, u64) -> Result<()>,
    ) -> Result<Stepped<D>> {
        let mut inputs = M::feed(&mut self.net, fed)?;
        inputs.epoch = Some(epoch as f32);
        let z = (inputs.out.logits.first())
            .ok_or_else(|| anyhow!("the model returned no logits"))?
            .retaped::<NoneTape>();
        let out = kd_losses::compute(inputs, |x| <M::Loss as kd_losses::Loss>::terms(params, x))
            .map_err(|e| anyhow!("loss at epoch {} step {step}: {e}", epoch + 1))?;
        let terms = out.term_values();
        let total = out.total_value();
        check(&z, &terms, total, self.opt.steps)?;
        let mut g = out.total.backward();
        (self.opt)
            .update(&mut self.net, &mut g, lr)
            .map_err(|e| anyhow!("optimizer: {e:?}"))?;
        self.net.zero_grads(&mut g);
        Ok(Stepped {
            grads: g,
            terms,
            total,
        })
    }

    /// Loads `checkpoints/<name>/` of `run_dir` (hashes checked) and returns its state.
    pub fn load(&mut self, run_dir: &std::path::Path, name: &str) -> Result<CheckpointState> {
        let (state, dir) = checkpoint::load(run_dir, name)?;
        let file = dir.join("model.safetensors");
        self.net
            .load_safetensors(&file)
            .map_err(|e| checkpoint::damaged(run_dir, name, &file, e))?;
        let file = dir.join("optimizer.safetensors");
        self.opt
            .load::<D>(&file)
            .map_err(|e| checkpoint::damaged(run_dir, name, &file, e))?;
        self.opt.steps = state.steps;
        Ok(state)
    }
}

/// Sums over an epoch's batches (a resumed epoch starts from its checkpointed sums).
#[derive(Default)]
struct EpochSums {
    terms: Vec<(String, f64)>,
    total: f64,
    correct: usize,
    seen: usize,
    images: usize,
}

impl EpochSums {
    fn of(p: PartialEpoch) -> (usize, Self) {
        let s = Self {
            terms: p.term_sums,
            total: p.total_sum,
            correct: p.correct,
            seen: p.seen,
            images: p.images,
        };
        (p.batches_done, s)
    }

    fn partial(&self, batches_done: usize) -> PartialEpoch {
        PartialEpoch {
            batches_done,
            term_sums: self.terms.clone(),
            total_sum: self.total,
            correct: self.correct,
            seen: self.seen,
            images: self.images,
        }
    }
}

/// A run in training.
pub(crate) struct Trainer<M: Method, D: TrainDevice> {
    cfg: TrainConfig,
    params: Params<M>,
    run_dir: PathBuf,
    opts: RunOptions,
    log: RunLog,
    model: Model<M, D>,
    data: RunData,
    state: CheckpointState,
    teacher: Option<Network<D>>,
    bars: MultiProgress,
}

impl<M: Method, D: TrainDevice> Trainer<M, D> {
    /// Builds the model (then the teacher), and loads `checkpoints/<resume>/` when given.
    pub fn start(
        cfg: TrainConfig,
        run_dir: PathBuf,
        opts: &RunOptions,
        mut log: RunLog,
        data: RunData,
        dev: D,
        resume: Option<&str>,
    ) -> Result<Self> {
        let params = params_of::<M>(&cfg.loss).map_err(|e| anyhow!("loss: {e}"))?;
        let mut model = Model::<M, D>::build(dev, &cfg, &data)?;
        let teacher = teacher::load(&cfg, &model.dev, data.classes, data.channels, &mut log)?;
        let metrics = run_dir.join("metrics.csv");
        let state = match resume {
            Some(name) => {
                let s = model.load(&run_dir, name)?;
                drop_metrics_after(&metrics, s.epochs_done)?;
                log.info(&format!(
                    "resuming after epoch {} (step {}) from {}",
                    s.epochs_done,
                    s.steps,
                    run_dir.join("checkpoints").join(name).display()
                ));
                s
            }
            None => {
                // A run killed before its first checkpoint starts over: no stale rows.
                drop_metrics_after(&metrics, 0)?;
                CheckpointState::fresh(cfg.seed)
            }
        };
        log.info(&format!(
            "{} ({} parameters), {} batches of {} per epoch, {} epochs",
            cfg.arch_name(),
            model.net.num_trainable_params(),
            data.train.batches_per_epoch(),
            cfg.batch_size,
            cfg.total_epochs()
        ));
        Ok(Self {
            cfg,
            params,
            run_dir,
            opts: opts.clone(),
            log,
            model,
            data,
            state,
            teacher,
            bars: MultiProgress::new(),
        })
    }

    /// Whether Ctrl-C asked the run to stop.
    fn interrupted(&self) -> bool {
        self.opts
            .interrupt
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Trains the remaining epochs (or until interrupted, or `stop_after` epochs).
    pub fn run(mut self) -> Result<RunResult> {
        let epochs = self.cfg.total_epochs();
        let mut ran = 0;
        let epoch_bar = self.bar(epochs as u64, "epochs");
        epoch_bar.set_position(self.state.epochs_done as u64);
        epoch_bar.reset_eta();
        while self.state.epochs_done < epochs {
            // Between epochs: a Ctrl-C during the last step or the evaluation.
            if ran > 0 && self.interrupted() {
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

    /// Writes `summary.json` (by rename) from the run's state and `metrics.csv` (throughput
    /// and wall time over every epoch of the run) and returns it: after every epoch's `last`
    /// checkpoint, so a killed run is reported as incomplete, and a sweep never skips a run
    /// whose checkpoint is behind its summary.
    fn write_summary(&self) -> Result<Summary> {
        let rows = Metrics::load(&self.run_dir)
            .map(|m| m.rows)
            .unwrap_or_default();
        let n = rows.len().max(1) as f64;
        let summary = summary_of(
            &self.cfg,
            &self.state,
            rows.iter().map(|r| r.images_per_s).sum::<f64>() / n,
            rows.iter().map(|r| r.seconds).sum(),
        );
        let path = self.run_dir.join("summary.json");
        write_replacing(&path, &serde_json::to_string_pretty(&summary)?)?;
        Ok(summary)
    }

    /// One training epoch, its evaluation, the metrics row, the checkpoints and the summary.
    /// Returns false when interrupted inside the epoch (its partial state is checkpointed).
    fn epoch(&mut self, epoch: usize) -> Result<bool> {
        let lr = (self.cfg.schedule).lr_at(self.cfg.optim.lr, epoch, self.cfg.total_epochs());
        let batches = self.data.train.batches_per_epoch();
        let bar = self.bar(
            batches as u64,
            &format!("epoch {}/{}", epoch + 1, self.cfg.total_epochs()),
        );
        let t0 = Instant::now();
        let (skip, mut sums) = self
            .state
            .partial
            .take()
            .map(EpochSums::of)
            .unwrap_or_default();
        bar.set_position(skip as u64);
        // Rows trained on in this invocation (throughput; `sums.images` has a resumed
        // epoch's earlier part too).
        let mut images_here = 0usize;
        let mut grads = Some(self.model.net.alloc_grads());
        let loader = self.data.train.clone();
        for (i, batch) in loader.epoch_from(epoch, skip).enumerate() {
            let step = skip + i;
            let g = grads.take().expect("gradients");
            grads = Some(
                self.step(&batch, g, epoch, step, lr, &mut sums)
                    .inspect_err(|_| bar.abandon())?,
            );
            images_here += batch.rows();
            bar.set_message(format!(
                "train acc {:.1}%, {:.0} images/s",
                100.0 * sums.correct as f64 / sums.seen.max(1) as f64,
                images_here as f64 / t0.elapsed().as_secs_f64().max(1e-9)
            ));
            bar.inc(1);
            pause_if_asked(&self.run_dir, self.model.opt.steps);
            if step + 1 < batches && self.interrupted() {
                bar.abandon();
                return self.stop_inside(epoch, sums.partial(step + 1), step + 1, batches);
            }
        }
        bar.finish_and_clear();
        let train_secs = t0.elapsed().as_secs_f64();
        let ips = images_here as f64 / train_secs.max(1e-9);
        self.end_epoch(epoch, lr, sums, batches, ips, t0)?;
        Ok(true)
    }

    /// One step: the method's feed and loss, the non-finite check, backward and the update;
    /// returns the gradients (zeroed) for the next step.
    fn step(
        &mut self,
        batch: &Batch,
        grads: Gradients<f32, D>,
        epoch: usize,
        step: usize,
        lr: f64,
        sums: &mut EpochSums,
    ) -> Result<Gradients<f32, D>> {
        let b = batch.anchors;
        let fed = Fed {
            dev: self.model.dev.clone(),
            images: batch.images.clone(),
            shape: batch.shape(),
            anchors: b,
            labels: batch.labels[..b].iter().map(|&y| y as usize).collect(),
            grads,
            teacher: self.teacher.as_ref(),
        };
        let labels = fed.labels.clone();
        let params = &self.params;
        let (model, log, run_dir) = (&mut self.model, &mut self.log, &self.run_dir);
        let stepped = model.step(params, fed, epoch, step, lr, |z, terms, total, global| {
            sums.correct += count_correct(&z.as_vec(), z.shape().1, &labels);
            check_finite(log, run_dir, terms, total, epoch, step, global)
        })?;
        let Stepped {
            grads,
            terms,
            total,
        } = stepped;
        if sums.terms.is_empty() {
            sums.terms = terms.iter().map(|(n, _)| (n.to_string(), 0.0)).collect();
        }
        for ((_, s), (_, v)) in sums.terms.iter_mut().zip(&terms) {
            *s += *v as f64;
        }
        sums.total += total as f64;
        sums.seen += b;
        sums.images += batch.rows();
        Ok(grads)
    }

    /// Ctrl-C inside an epoch: a `last` checkpoint with the epoch's position and sums.
    fn stop_inside(
        &mut self,
        epoch: usize,
        p: PartialEpoch,
        done: usize,
        batches: usize,
    ) -> Result<bool> {
        self.state.steps = self.model.opt.steps;
        self.state.partial = Some(p);
        self.checkpoint("last")?;
        self.log.info(&format!(
            "interrupted: checkpoint written at epoch {} after batch {done} of {batches}; \
             continue with --resume {}",
            epoch + 1,
            self.run_dir.display()
        ));
        Ok(false)
    }

    /// After an epoch's steps: evaluation, state, metrics row, plots, checkpoints, summary,
    /// log line.
    fn end_epoch(
        &mut self,
        epoch: usize,
        lr: f64,
        sums: EpochSums,
        batches: usize,
        ips: f64,
        t0: Instant,
    ) -> Result<()> {
        let train_acc = 100.0 * sums.correct as f64 / sums.seen.max(1) as f64;
        let bar = self.bar(self.data.test.batches_per_epoch() as u64, "test");
        let (entries, test_acc) =
            evaluate::<M, D>(&self.model.net, &self.model.dev, &self.data.test, &bar);
        bar.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64();
        let s = &mut self.state;
        (s.epochs_done, s.steps, s.students, s.last_acc) = (
            epoch + 1,
            self.model.opt.steps,
            entries.clone(),
            test_acc.clone(),
        );
        let best_now = test_acc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let improved = best_now > s.best_acc;
        if improved {
            (s.best_acc, s.best_epoch, s.best_test_acc) = (best_now, epoch + 1, test_acc.clone());
        }
        let steps = batches.max(1) as f64;
        let row = EpochRow {
            epoch: epoch + 1,
            lr,
            loss: sums.total / steps,
            terms: sums
                .terms
                .iter()
                .map(|(n, v)| (n.clone(), v / steps))
                .collect(),
            train_acc,
            test_acc: entries
                .iter()
                .copied()
                .zip(test_acc.iter().copied())
                .collect(),
            images_per_s: ips,
            seconds: secs,
        };
        Metrics::append(&self.run_dir, &row)?;
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
        self.log.info(&epoch_line(&row, self.cfg.total_epochs()));
        Ok(())
    }

    /// Writes `checkpoints/<name>/` (see [`checkpoint::save`]).
    fn checkpoint(&self, name: &str) -> Result<()> {
        checkpoint::save(&self.run_dir, name, &self.state, |dir| {
            self.model
                .net
                .save_safetensors(dir.join("model.safetensors"))
                .map_err(|e| anyhow!("writing {}: {e:?}", dir.display()))?;
            self.model.opt.save::<D>(&dir.join("optimizer.safetensors"))
        })
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
}

/// The log line of an epoch.
fn epoch_line(row: &EpochRow, epochs: usize) -> String {
    let terms: Vec<String> = (row.terms.iter())
        .map(|(n, v)| format!("{n} {}", fmt_term(*v, 4)))
        .collect();
    let accs: Vec<String> = (row.test_acc.iter())
        .map(|(e, a)| format!("{e} {a:.2}%"))
        .collect();
    format!(
        "epoch {}/{epochs}: lr {:.4e}, loss {} ({}), train acc {:.2}%, test acc {}, {:.0} \
         images/s, {:.1}s",
        row.epoch,
        row.lr,
        fmt_term(row.loss, 4),
        terms.join(", "),
        row.train_acc,
        accs.join(", "),
        row.images_per_s,
        row.seconds
    )
}

/// The summary of a run at `state`, with these throughput and time figures.
pub(crate) fn summary_of(
    cfg: &TrainConfig,
    state: &CheckpointState,
    images_per_s: f64,
    seconds: f64,
) -> Summary {
    Summary {
        method: cfg.method.clone(),
        dataset: cfg.dataset.clone(),
        arch: cfg.arch_name().into(),
        seed: cfg.seed,
        students: state.students.clone(),
        epochs_done: state.epochs_done,
        epochs: cfg.total_epochs(),
        best: EpochAcc {
            epoch: state.best_epoch,
            test_acc: state.best_test_acc.clone(),
        },
        last: EpochAcc {
            epoch: state.epochs_done,
            test_acc: state.last_acc.clone(),
        },
        images_per_s,
        seconds,
    }
}

/// For kill-and-resume tests: with `KD_PAUSE_AT_STEP=k` set, the run stops after optimizer
/// step `k`, writes `<run>/PAUSED`, and waits there to be killed, so a test kills it at a known
/// point instead of after a guessed time.
fn pause_if_asked(run_dir: &std::path::Path, steps: u64) {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("KD_PAUSE_AT_STEP").ok()?.parse().ok());
    if *at == Some(steps) {
        let _ = std::fs::write(run_dir.join("PAUSED"), steps.to_string());
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

/// A non-finite loss term (or total) stops the run before the update, naming it and the step
/// (`global` is the optimizer's step count); the last epoch-end checkpoint stays as it was.
fn check_finite(
    log: &mut RunLog,
    run_dir: &std::path::Path,
    terms: &[(&str, f32)],
    total: f32,
    epoch: usize,
    step: usize,
    global: u64,
) -> Result<()> {
    let Some((name, v)) = (terms.iter().copied())
        .chain(std::iter::once(("total", total)))
        .find(|(_, v)| !v.is_finite())
    else {
        return Ok(());
    };
    let last = run_dir.join("checkpoints").join("last");
    let msg = format!(
        "non-finite loss: term `{name}` = {v} at epoch {} step {step} (global step {global}); \
         stopping. The last good checkpoint is {}",
        epoch + 1,
        if last.is_dir() {
            last.display().to_string()
        } else {
            "none (no epoch completed)".into()
        }
    );
    log.error(&msg);
    bail!(msg)
}
