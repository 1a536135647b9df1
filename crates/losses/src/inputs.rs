//! What a loss is computed from ([`LossInputs`]), what it returns ([`LossOutput`], built with
//! [`Terms`]) and how it fails ([`LossError`]).
//!
//! The inputs are the network outputs listed in `FIXTURES.md` ("Inputs per method"); every loss
//! of `METHODS.md` is a pure function of them.
//!
//! # Tapes
//!
//! Every input tensor may carry a tape (the backward ops of the network that produced it).
//! [`crate::Method::compute`] first splits *all* of them off into one tape (so none is lost,
//! even that of an input a method only uses detached), computes the terms from tape-free
//! copies (re-attached with an empty tape where the input enters with a gradient, see
//! [`crate::helpers::attach`]), and merges that tape into the total. Gradients are keyed by
//! tensor id, so every attached use of an input accumulates into the input's gradient.

use dfdx::prelude::*;
use kd_ops::OpsDevice;
use std::fmt;

/// A `[rows, cols]` tensor with runtime sizes: logits `[b, K]`, embeddings `[b, D]`, a gate
/// `[b, m]`.
pub type Mat<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;
/// A `[b, C, H, W]` feature map (a backbone stage's output).
pub type Map4<D, T = NoneTape> = Tensor<kd_ops::Shape4, f32, D, T>;
/// A `[b, P, P]` tensor: OKDDip's peer attention.
pub type Cube<D, T = NoneTape> = Tensor<(usize, usize, usize), f32, D, T>;
/// A scalar: a loss term or the total.
pub type Scalar<D, T = NoneTape> = Tensor<(), f32, D, T>;
/// Class labels on the device, `[b]`.
pub type Labels<D> = Tensor<(usize,), usize, D>;

/// The network outputs a loss is computed from (`FIXTURES.md`, "Inputs per method").
///
/// Only the fields a method needs must be set: a method missing one returns
/// [`LossError::MissingInput`] naming it; fields it does not use are ignored. List fields are
/// ordered as `FIXTURES.md` says (stages shallow → deep, exits shallow → deepest, peers then
/// leader).
pub struct LossInputs<D: Storage<f32>, T = NoneTape> {
    /// Class of every anchor, `[b]`.
    pub labels: Vec<usize>,
    /// Logits `[b, K]`: the network's (one entry), each view's (DDGSD), each exit's (BYOT), each
    /// student's or branch's (online methods).
    pub logits: Vec<Mat<D, T>>,
    /// Stage outputs `F_l` `[b, C_l, H_l, W_l]`, shallow → deep (SCD, SAD, AT, SP).
    pub features: Vec<Map4<D, T>>,
    /// Pooled embeddings `e` `[b, D]` matching `logits` (DDGSD, BYOT).
    pub embeddings: Vec<Mat<D, T>>,
    /// Teacher logits `[b, K]` (KD); enters detached.
    pub teacher_logits: Option<Mat<D, T>>,
    /// Teacher stage outputs, matched to `features` (AT; SP uses the last); enter detached.
    pub teacher_features: Vec<Map4<D, T>>,
    /// Logits of each anchor's same-class partner `[b, K]` (CSKD); enters detached.
    pub partner_logits: Option<Mat<D, T>>,
    /// Fused logits `z_f` `[b, K]` (FFL, MFEF).
    pub fused_logits: Option<Mat<D, T>>,
    /// ONE's gate `g` `[b, m]`, already softmaxed.
    pub gate: Option<Mat<D, T>>,
    /// OKDDip's peer attention `α` `[b, P, P]`, rows already softmaxed.
    pub attention: Option<Cube<D, T>>,
    /// Epoch, counted from 0, for the ramp (ONE, OKDDip, FFL, MFEF).
    pub epoch: Option<f32>,
}

impl<D: Storage<f32>, T> LossInputs<D, T> {
    /// Inputs with only labels and logits set.
    pub fn new(labels: Vec<usize>, logits: Vec<Mat<D, T>>) -> Self {
        Self {
            labels,
            logits,
            features: Vec::new(),
            embeddings: Vec::new(),
            teacher_logits: None,
            teacher_features: Vec::new(),
            partner_logits: None,
            fused_logits: None,
            gate: None,
            attention: None,
            epoch: None,
        }
    }
}

fn take_tape<S: Shape, D: Storage<f32>, T: Tape<f32, D>>(
    x: Tensor<S, f32, D, T>,
    sink: &mut T,
) -> Tensor<S, f32, D, NoneTape> {
    let (x, tape) = x.split_tape();
    *sink = std::mem::take(sink).merge(tape);
    x
}

impl<D: Storage<f32>, T: Tape<f32, D>> LossInputs<D, T> {
    /// Splits the tape off every input and merges them into one: the tape-free inputs the
    /// methods compute from, and the tape that must end up in the total (see the module docs).
    pub fn split_tapes(self) -> (LossInputs<D, NoneTape>, T) {
        let mut sink = T::default();
        let s = &mut sink;
        let list2 = |v: Vec<Mat<D, T>>, s: &mut T| -> Vec<Mat<D>> {
            v.into_iter().map(|x| take_tape(x, s)).collect()
        };
        let list4 = |v: Vec<Map4<D, T>>, s: &mut T| -> Vec<Map4<D>> {
            v.into_iter().map(|x| take_tape(x, s)).collect()
        };
        let inputs = LossInputs {
            labels: self.labels,
            logits: list2(self.logits, s),
            features: list4(self.features, s),
            embeddings: list2(self.embeddings, s),
            teacher_logits: self.teacher_logits.map(|x| take_tape(x, s)),
            teacher_features: list4(self.teacher_features, s),
            partner_logits: self.partner_logits.map(|x| take_tape(x, s)),
            fused_logits: self.fused_logits.map(|x| take_tape(x, s)),
            gate: self.gate.map(|x| take_tape(x, s)),
            attention: self.attention.map(|x| take_tape(x, s)),
            epoch: self.epoch,
        };
        (inputs, sink)
    }
}

impl<D: OpsDevice> LossInputs<D, NoneTape> {
    /// `logits[0..]`, at least `min` of them, all `[b, K]` with the same shape; `method` names
    /// the caller in errors.
    pub fn logits_list(&self, method: &'static str, min: usize) -> Result<&[Mat<D>], LossError> {
        if self.logits.len() < min {
            return Err(if self.logits.is_empty() {
                LossError::missing(method, "logits")
            } else {
                LossError::bad(
                    method,
                    format!(
                        "needs at least {min} logits tensors, got {}",
                        self.logits.len()
                    ),
                )
            });
        }
        let shape = *self.logits[0].shape();
        for (i, z) in self.logits.iter().enumerate() {
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
        Ok(&self.logits)
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
    x: &'a Option<Mat<D>>,
    like: &Mat<D>,
) -> Result<&'a Mat<D>, LossError> {
    let x = x.as_ref().ok_or(LossError::missing(method, name))?;
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
    /// The method name is not in the registry.
    UnknownMethod(String),
    /// The parameters did not parse (unknown field, wrong type).
    Params { method: String, message: String },
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
            Self::UnknownMethod(name) => write!(
                f,
                "unknown method `{name}`; valid methods: {}",
                crate::METHOD_NAMES.join(", ")
            ),
            Self::Params { method, message } => write!(f, "{method}: bad params: {message}"),
            Self::MissingInput { method, input } => {
                write!(f, "{method}: missing required input `{input}`")
            }
            Self::BadInput { method, message } => write!(f, "{method}: {message}"),
        }
    }
}

impl std::error::Error for LossError {}
