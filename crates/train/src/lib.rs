//! kd-train: the trainer of kd (`cargo xtask train`).
//!
//! - [`method`]: a method as one unit ([`Method`]: its parameters, model, feed, loss and
//!   evaluated entries); [`methods`]: every method of `METHODS.md`, one file each, and the
//!   registry that lists them by name.
//! - [`config`]: [`TrainConfig`], read from RON, overridden with `--set key=value`, resolved to
//!   the paper protocol of `METHODS.md` ("Training protocol defaults") for the method.
//! - [`optim`]: SGD (momentum, Nesterov, L2 weight decay; PyTorch semantics) with saveable
//!   velocities, so resumed runs continue exactly.
//! - [`schedule`]: step and cosine learning-rate schedules with linear warm-up.
//! - [`interrupt`]: Ctrl-C writes a mid-epoch checkpoint and stops.
//! - [`run`]: run folders, the training loop, evaluation, checkpoints, resume ([`train`],
//!   [`resume`], [`evaluate_run`]).
//! - [`sweep`]: grids of runs that skip complete points and resume interrupted ones.
//! - [`metrics`], [`plot`], [`report`]: a run's `metrics.csv` written and read back (typed, by
//!   [`Entry`]), its PNG curves, and the comparison of several runs (mean ± std over seeds,
//!   curves, sweeps, papers' tables).
//!
//! Every method of `METHODS.md` trains on the CPU: the self-distillation methods `ce`, `scd`,
//! `sad`, `cskd`, `ddgsd`, `byot`; the teacher → student methods `kd`, `at`, `sp` (from a
//! teacher run, `TrainConfig::teacher`); the online methods `dml`, `one`, `okddip`, `kdcl` (one
//! view per network), `ffl` (fusion weight decay 1e-5) and `mfef`, with a configurable number
//! of students.
//!
//! ```no_run
//! use kd_train::{train, RunOptions, TrainConfig};
//! let cfg = TrainConfig::for_method("scd")?
//!     .with_overrides(&["dataset=fashion-mnist".into(), "epochs=3".into()])?;
//! let run = train(cfg, &RunOptions::default())?;
//! println!("{} {:?}", run.run_dir.display(), run.summary.best);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod config;
pub mod device;
pub mod entry;
pub mod feed;
pub mod interrupt;
pub mod method;
pub mod methods;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod report;
pub mod run;
pub mod schedule;
pub mod sweep;

pub use config::{DataConfig, TrainConfig};
pub use device::Device;
pub use entry::Entry;
pub use method::{Method, Protocol};
pub use optim::{Sgd, SgdConfig};
pub use report::Report;
pub use run::{
    evaluate_run, resume, resume_from, train, train_at, train_method, CheckpointState, EpochAcc,
    PartialEpoch, RunOptions, RunResult, Summary,
};
pub use schedule::{Schedule, ScheduleKind};
