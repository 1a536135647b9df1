//! What a loss is computed from ([`LossInputs`]), what it returns ([`LossOutput`], built with
//! [`Terms`]) and how it fails ([`LossError`]).
//!
//! The inputs are the network outputs listed in `FIXTURES.md` ("Inputs per method"); every loss
//! of `METHODS.md` is a pure function of them.
//!
//! # Tapes
//!
//! Every input tensor may carry a tape (the backward ops of the network that produced it).
//! [`crate::compute`] first splits *all* of them off into one tape (so none is lost,
//! even that of an input a method only uses detached), computes the terms from tape-free
//! copies (re-attached with an empty tape where the input enters with a gradient, see
//! [`crate::helpers::attach`]), and merges that tape into the total. Gradients are keyed by
//! tensor id, so every attached use of an input accumulates into the input's gradient.

use dfdx::prelude::*;
use kd_ops::OpsDevice;
use std::fmt;

pub use kd_models::{Cube, Map4, Mat, Outputs};

/// A scalar: a loss term or the total.
pub type Scalar<D, T = NoneTape> = Tensor<(), f32, D, T>;
/// Class labels on the device, `[b]`.
pub type Labels<D> = Tensor<(usize,), usize, D>;

/// What a loss is computed from (`FIXTURES.md`, "Inputs per method"): the trained model's
/// forward pass ([`Outputs`], as the model returns it), the labels, and what some methods
/// read besides: a trained teacher's forward pass, each anchor's same-class partner's, the
/// epoch.
///
/// Only what a method needs must be set: a method missing an input returns
/// [`LossError::MissingInput`] naming it (with `FIXTURES.md`'s input name); the rest is
/// ignored. Lists are ordered as `FIXTURES.md` says (stages shallow → deep, exits shallow →
/// deepest, peers then leader).
pub struct LossInputs<D: Storage<f32>, T = NoneTape> {
    /// Class of every anchor, `[b]`.
    pub labels: Vec<usize>,
    /// The model's outputs: logits `[b, K]` (the network's, each view's for DDGSD, each
    /// exit's for BYOT, each student's for the online methods), stage outputs, embeddings,
    /// ONE's gate, OKDDip's attention, FFL/MFEF's fused logits.
    pub out: Outputs<D, T>,
    /// A trained teacher's outputs on the same images (KD: logits; AT, SP: stage outputs);
    /// they enter detached.
    pub teacher: Option<Outputs<D, T>>,
    /// CS-KD: the outputs of each anchor's same-class partner; they enter detached.
    pub partner: Option<Outputs<D, T>>,
    /// Epoch, counted from 0, for the ramp (ONE, OKDDip, FFL, MFEF).
    pub epoch: Option<f32>,
}

impl<D: Storage<f32>, T> LossInputs<D, T> {
    /// Inputs with only labels and logits set.
    pub fn new(labels: Vec<usize>, logits: Vec<Mat<D, T>>) -> Self {
        let mut out = Outputs::empty();
        out.logits = logits;
        Self::of(labels, out)
    }

    /// A model's outputs and the labels.
    pub fn of(labels: Vec<usize>, out: Outputs<D, T>) -> Self {
        Self {
            labels,
            out,
            teacher: None,
            partner: None,
            epoch: None,
        }
    }
}

impl<D: Storage<f32>, T: Tape<f32, D>> LossInputs<D, T> {
    /// Splits the tape off every input and merges them into one: the tape-free inputs the
    /// methods compute from, and the tape that must end up in the total (see the module docs).
    pub fn split_tapes(self) -> (LossInputs<D, NoneTape>, T) {
        let mut sink = T::default();
        let inputs = LossInputs {
            labels: self.labels,
            out: self.out.split_tapes(&mut sink),
            teacher: self.teacher.map(|o| o.split_tapes(&mut sink)),
            partner: self.partner.map(|o| o.split_tapes(&mut sink)),
            epoch: self.epoch,
        };
        (inputs, sink)
    }
}
impl<D: OpsDevice> LossInputs<D, NoneTape> {
    /// The teacher's logits `[b, K]` (`teacher_logits`).
    pub fn teacher_logits(&self) -> Option<&Mat<D>> {
        self.teacher.as_ref()?.logits.first()
    }

    /// The teacher's stage outputs (`teacher_features`; empty without a teacher).
    pub fn teacher_features(&self) -> &[Map4<D>] {
        self.teacher.as_ref().map_or(&[], |t| &t.features)
    }

    /// The partner's logits `[b, K]` (`partner_logits`).
    pub fn partner_logits(&self) -> Option<&Mat<D>> {
        self.partner.as_ref()?.logits.first()
    }

    /// `logits[0..]`, at least `min` of them, all `[b, K]` with the same shape; `method` names
    /// the caller in errors.
    pub fn logits_list(&self, method: &'static str, min: usize) -> Result<&[Mat<D>], LossError> {
        let logits = &self.out.logits;
        if logits.len() < min {
            return Err(if logits.is_empty() {
                LossError::missing(method, "logits")
            } else {
                LossError::bad(
                    method,
                    format!("needs at least {min} logits tensors, got {}", logits.len()),
                )
            });
        }
        let shape = *logits[0].shape();
        for (i, z) in logits.iter().enumerate() {
            if *z.shape() != shape {
                return Err(LossError::bad(
                    method,
                    format!(
                        "logits.{i} has shape {:?}, logits.0 has {shape:?}",
                        z.shape()
                    ),
                ));
            }
        }
        Ok(logits)
    }

    /// The labels as a device index tensor, after checking there is one per row of `[b, K]`
    /// logits and each is below `K`.
    pub fn labels_for(
        &self,
        method: &'static str,
        logits: &Mat<D>,
    ) -> Result<Labels<D>, LossError> {
        let (b, k) = *logits.shape();
        if self.labels.is_empty() {
            return Err(LossError::missing(method, "labels"));
        }
        if self.labels.len() != b {
            return Err(LossError::bad(
                method,
                format!("{} labels for a batch of {b}", self.labels.len()),
            ));
        }
        if let Some(&y) = self.labels.iter().find(|&&y| y >= k) {
            return Err(LossError::bad(
                method,
                format!("label {y} out of range for {k} classes"),
            ));
        }
        Ok(logits.device().tensor_from_vec(self.labels.clone(), (b,)))
    }

    /// The epoch (for the ramp), which must be set, finite and non-negative.
    pub fn epoch_for(&self, method: &'static str) -> Result<f32, LossError> {
        match self.epoch {
            None => Err(LossError::missing(method, "epoch")),
            Some(e) if !(e.is_finite() && e >= 0.0) => Err(LossError::bad(
                method,
                format!("epoch must be finite and >= 0, got {e}"),
            )),
            Some(e) => Ok(e),
        }
    }
}

/// Checks that an optional `[b, K]` input is present and shaped like `like`.
pub fn require_like<'a, D: Storage<f32>>(
    method: &'static str,
    name: &'static str,
    x: Option<&'a Mat<D>>,
    like: &Mat<D>,
) -> Result<&'a Mat<D>, LossError> {
    let x = x.ok_or(LossError::missing(method, name))?;
    if x.shape() != like.shape() {
        return Err(LossError::bad(
            method,
            format!(
                "{name} has shape {:?}, logits have {:?}",
                x.shape(),
                like.shape()
            ),
        ));
    }
    Ok(x)
}

/// The named, weighted terms of a loss, gathered while it is computed (`METHODS.md`: "Every
/// method reports its loss as named terms; the total is their sum with the weights applied").
/// Adding to a name already present sums into it, keeping first-use order.
pub struct Terms<D: Storage<f32>, T> {
    entries: Vec<(&'static str, Scalar<D, T>)>,
}

impl<D: OpsDevice, T: Tape<f32, D>> Default for Terms<D, T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<D: OpsDevice, T: Tape<f32, D>> Terms<D, T> {
    /// No terms yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` (already weighted) to the term `name`.
    pub fn add(&mut self, name: &'static str, value: Scalar<D, T>) {
        match self.entries.iter().position(|(n, _)| *n == name) {
            Some(i) => {
                let (_, old) = self.entries.remove(i);
                self.entries.insert(i, (name, old + value));
            }
            None => self.entries.push((name, value)),
        }
    }

    /// The total (the sum of the terms) carrying every tape, `extra` included, and detached
    /// copies of the terms for logging.
    pub fn finish(self, extra: T) -> Result<LossOutput<D, T>, LossError> {
        let mut terms = Vec::with_capacity(self.entries.len());
        let mut total: Option<Scalar<D, T>> = None;
        for (name, value) in self.entries {
            terms.push((name, value.retaped::<NoneTape>()));
            total = Some(match total {
                None => value,
                Some(t) => t + value,
            });
        }
        let total = total.ok_or_else(|| LossError::bad("terms", "a loss with no terms".into()))?;
        let (total, tape) = total.split_tape();
        Ok(LossOutput {
            total: total.put_tape(tape.merge(extra)),
            terms,
        })
    }
}

/// A computed loss: the total to call `backward` on, and its weighted terms.
pub struct LossOutput<D: Storage<f32>, T> {
    /// Sum of the terms, with the tapes of every input merged in.
    pub total: Scalar<D, T>,
    /// The weighted terms (detached), in the method's order; their sum is `total`.
    pub terms: Vec<(&'static str, Scalar<D>)>,
}

impl<D: OpsDevice, T> LossOutput<D, T> {
    /// The value of the total (copies it to the host).
    pub fn total_value(&self) -> f32 {
        scalar_value(&self.total.retaped::<NoneTape>())
    }

    /// Every term's value (copies them to the host), for logging.
    pub fn term_values(&self) -> Vec<(&'static str, f32)> {
        self.terms
            .iter()
            .map(|(n, t)| (*n, scalar_value(t)))
            .collect()
    }

    /// One term's value, if the method reports it.
    pub fn term(&self, name: &str) -> Option<f32> {
        self.terms
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| scalar_value(t))
    }
}

/// The value of a scalar tensor, copied to the host.
fn scalar_value<D: OpsDevice>(t: &Scalar<D>) -> f32 {
    t.as_vec()[0]
}

/// Why a loss could not be computed.
#[derive(Debug, Clone, PartialEq)]
pub enum LossError {
    /// An input the method needs was not given.
    MissingInput {
        method: &'static str,
        input: &'static str,
    },
    /// An input has the wrong count, shape or value.
    BadInput {
        method: &'static str,
        message: String,
    },
}

impl LossError {
    /// `method` needs `input`, which is missing.
    pub fn missing(method: &'static str, input: &'static str) -> Self {
        Self::MissingInput { method, input }
    }

    /// An input of `method` is malformed.
    pub fn bad(method: &'static str, message: String) -> Self {
        Self::BadInput { method, message }
    }
}

impl fmt::Display for LossError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingInput { method, input } => {
                write!(f, "{method}: missing required input `{input}`")
            }
            Self::BadInput { method, message } => write!(f, "{method}: {message}"),
        }
    }
}

impl std::error::Error for LossError {}
