//! A method of `METHODS.md` as one unit: [`Method`] says what it is ([`About`]: name,
//! protocol, teacher, students, batches, weight decay), its loss (a [`Loss`] of kd-losses: its
//! hyper-parameters and terms), the model it trains (a [`Structure`]: how it is built and what
//! its evaluation reports) and, where the default does not do, how a batch is fed to it.
//! [`crate::methods`] has one file per method and the registry that lists them by name.
//!
//! Adding a method that reuses an existing structure (a plain network, BYOT's exits, ONE's
//! gate, OKDDip's peers, FFL's or MFEF's fusion, independent networks) touches four files:
//! its method file (`crates/train/src/methods/<name>.rs`), its loss
//! (`crates/losses/src/methods/<name>.rs`), its config (`configs/<name>.ron`) and its reference
//! case (`crates/losses/tests/fixtures/losses/<name>.json`); plus one line in each of the two
//! module lists (`crates/train/src/methods/mod.rs`, whose `registry!` line is the registry, and
//! `crates/losses/src/methods/mod.rs`). A method that needs a new structure also adds the
//! structure's file (`crates/models/src/heads/<name>.rs`, one line in `heads/mod.rs`) and its
//! line in `crates/train/src/methods/structures.rs`: five files and four lines. Every other
//! list (the CLI's help, config validation, sweeps, reports, the tests that cover every
//! method) comes from the registry. A method can also be trained without being registered
//! ([`crate::run::train_method`]), as `tests/toy_method.rs` does from outside the crate.

use crate::device::TrainDevice;
use crate::entry::Entry;
use anyhow::Result;
use dfdx::prelude::*;
use kd_data::Sampler;
use kd_losses::{Loss, LossInputs};
use kd_models::{Mat, Model, Network, Outputs};
use serde_json::Value;

/// The training tape on device `D`.
pub type Tp<D> = OwnedTape<f32, D>;

/// The protocol of a method (`METHODS.md`, "Training protocol defaults").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One network distils itself: 200 epochs, ÷10 at 100 and 150, ResNet-18.
    SelfDistillation,
    /// A student learns from a trained teacher checkpoint: as self-distillation.
    Teacher,
    /// Several students trained together: 300 epochs, ÷10 at 150 and 225, ResNet-32.
    Online,
}

impl Protocol {
    /// Default epochs.
    pub fn epochs(self) -> usize {
        match self {
            Protocol::Online => 300,
            _ => 200,
        }
    }

    /// Default step-schedule milestones for a run of `epochs` epochs: after 50% and 75% of
    /// them (the protocol's 100/150 of 200 and 150/225 of 300; 7/11 of 15; none for a
    /// 1-epoch run).
    pub fn milestones(epochs: usize) -> Vec<usize> {
        let mut m: Vec<usize> = [epochs / 2, epochs * 3 / 4]
            .into_iter()
            .filter(|&m| m > 0)
            .collect();
        m.dedup();
        m
    }

    /// Default architecture.
    pub fn arch(self) -> &'static str {
        match self {
            Protocol::Online => "resnet32",
            _ => "resnet18",
        }
    }
}

/// What a method's model is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// An architecture of `kd_models::ARCH_NAMES`.
    pub arch: String,
    pub classes: usize,
    /// Input channels (1 or 3) and image side.
    pub channels: usize,
    pub size: usize,
    /// Students of an online method (1 for the others).
    pub students: usize,
}

impl Spec {
    /// `students` independent one-head backbones.
    pub fn networks<D: TrainDevice>(&self, dev: &D) -> Result<kd_models::Networks<D>> {
        let nets = (0..self.students)
            .map(|_| self.network(dev, 1))
            .collect::<Result<Vec<_>>>()?;
        Ok(kd_models::Networks::new(nets))
    }

    /// The backbone with `branches` heads.
    pub fn network<D: TrainDevice>(&self, dev: &D, branches: usize) -> Result<Network<D>> {
        let cfg = kd_models::NetConfig::new(self.classes, self.channels).branches(branches);
        kd_models::build_network(dev, &self.arch, cfg).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// A training batch for [`Method::feed`]: its pixels (normalised, NCHW, anchors first), to
/// put on the device whole ([`Fed::all`]) or in parts ([`Fed::rows`]).
pub struct Fed<'a, D: TrainDevice> {
    pub dev: D,
    pub images: Vec<f32>,
    /// `[rows, C, H, W]`.
    pub shape: (usize, usize, usize, usize),
    /// Anchors: the samples whose labels are given (CS-KD's partners and DDGSD's or KDCL's
    /// other views follow them).
    pub anchors: usize,
    pub labels: Vec<usize>,
    /// The gradients to trace the input with (they hold the model's parameters' buffers).
    pub grads: Gradients<f32, D>,
    /// The trained teacher of a teacher → student method.
    pub teacher: Option<&'a Network<D>>,
}

/// What a method is, besides its loss and model: its name, protocol, whether it needs a
/// teacher, its students, how batches are drawn and any per-parameter weight decay. Built
/// with `const` calls: `About::new("ffl", Protocol::Online).students(2, 2)`.
#[derive(Clone, Copy)]
pub struct About {
    /// Its name in `METHODS.md`, configs and run folders.
    pub name: &'static str,
    pub protocol: Protocol,
    /// Distils from a trained teacher run (`TrainConfig::teacher`).
    pub teacher: bool,
    /// Online methods: the default number of students and the fewest allowed.
    pub students: Option<(usize, usize)>,
    /// How the rows of a batch are drawn for a number of students.
    pub sampler: fn(usize) -> Sampler,
    /// Per-parameter weight decay: `(name prefix, decay)` pairs.
    pub weight_decay: &'static [(&'static str, f64)],
}

impl About {
    /// A method trained on shuffled batches, without a teacher, students or special decay.
    pub const fn new(name: &'static str, protocol: Protocol) -> Self {
        Self {
            name,
            protocol,
            teacher: false,
            students: None,
            sampler: |_| Sampler::Shuffled,
            weight_decay: &[],
        }
    }

    /// Distils from a trained teacher.
    pub const fn teacher(self) -> Self {
        Self {
            teacher: true,
            ..self
        }
    }

    /// Trains `default` students, at least `min`.
    pub const fn students(self, default: usize, min: usize) -> Self {
        Self {
            students: Some((default, min)),
            ..self
        }
    }

    /// Draws batches with `sampler` (given the number of students).
    pub const fn sampler(self, sampler: fn(usize) -> Sampler) -> Self {
        Self { sampler, ..self }
    }

    /// Per-parameter weight decay.
    pub const fn weight_decay(self, w: &'static [(&'static str, f64)]) -> Self {
        Self {
            weight_decay: w,
            ..self
        }
    }
}

/// A model structure of kd-models as the trainer sees it: how it is built for a [`Spec`], and
/// what an evaluation of it reports ([`crate::methods::structures`] has one per structure).
pub trait Structure<D: TrainDevice>: Model<D> + Sized {
    fn build(dev: &D, spec: &Spec) -> Result<Self>;

    /// The logits an evaluation reports, each with its entry, from an evaluation forward
    /// (default: the students' — `net` for one —, their mean as `ensemble` when there are
    /// several, and the fused logits).
    fn evaluate(out: Outputs<D>) -> Vec<(Entry, Mat<D>)> {
        crate::feed::students_ensemble_fused(out, Entry::Student)
    }
}

/// One method of `METHODS.md` (see the module docs).
pub trait Method: 'static {
    /// What it is.
    const ABOUT: About;
    /// The loss (its hyper-parameters and terms; kd-losses).
    type Loss: Loss;
    /// The trainable model (backbone and training-only modules).
    type Model<D: TrainDevice>: Structure<D>;

    /// Forwards a training batch and returns what the loss reads (default: one forward of
    /// every row, and the teacher's on the same input when there is one).
    fn feed<D: TrainDevice>(
        model: &mut Self::Model<D>,
        fed: Fed<'_, D>,
    ) -> Result<LossInputs<D, Tp<D>>> {
        Ok(crate::feed::one_forward(model, fed))
    }

    /// The logits an evaluation reports, each with its entry (default: the structure's).
    fn evaluate<D: TrainDevice>(out: Outputs<D>) -> Vec<(Entry, Mat<D>)> {
        <Self::Model<D> as Structure<D>>::evaluate(out)
    }
}

/// A method's facts that do not depend on the device, for configs, reports and the CLI: its
/// [`About`] (`info.name`, `info.protocol`, ...) and how its parameters resolve.
#[derive(Clone, Copy)]
pub struct Info {
    about: About,
    params: fn(&Value) -> Result<Value, String>,
}

impl std::ops::Deref for Info {
    type Target = About;
    fn deref(&self) -> &About {
        &self.about
    }
}

impl std::fmt::Debug for Info {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Info")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl Info {
    /// The facts of `M`.
    pub fn of<M: Method>() -> Self {
        Self {
            about: M::ABOUT,
            params: |v| {
                let p = params_of::<M>(v)?;
                serde_json::to_value(p).map_err(|e| e.to_string())
            },
        }
    }

    /// The sampler for `students` students.
    pub fn sampler(&self, students: usize) -> Sampler {
        (self.about.sampler)(students)
    }

    /// `params` (a JSON object of overrides, or null) with every default filled in.
    pub fn resolve_params(&self, params: &Value) -> Result<Value, String> {
        (self.params)(params).map_err(|e| format!("{}: bad params: {e}", self.name))
    }

    pub fn weight_decay_overrides(&self) -> Vec<(String, f64)> {
        (self.about.weight_decay.iter())
            .map(|(p, d)| (p.to_string(), *d))
            .collect()
    }
}

/// The hyper-parameters of method `M`.
pub type Params<M> = <<M as Method>::Loss as Loss>::Params;

/// `M`'s parameters from a JSON object of overrides (or null).
pub fn params_of<M: Method>(v: &Value) -> Result<Params<M>, String> {
    let v = if v.is_null() {
        Value::Object(Default::default())
    } else {
        v.clone()
    };
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Generic code run for a method chosen by name ([`registry::visit`]).
pub trait Visit {
    type Out;
    fn visit<M: Method>(self) -> Self::Out;
}
