//! [`Outputs`]: what a model's forward pass hands to the losses, with the field names of
//! kd-losses' `LossInputs` (`logits`, `embeddings`, `features`, `gate`, `attention`,
//! `fused_logits`), so mapping is field by field.

use crate::layers::{Cube, Map4, Mat};
use dfdx::prelude::*;

/// Network outputs for a loss. Lists are ordered as kd-losses expects: logits/embeddings one
/// per exit (shallow → deepest), branch or student (OKDDip: peers, then the leader); features
/// `F_1..F_L` shallow → deep.
///
/// Tapes: each tensor carries the backward ops only it depends on that no other output
/// carries; the full backward pass is the merge of *every* field's tape (as
/// `LossInputs::split_tapes` does). Stage outputs and embeddings are empty-tape handles.
pub struct Outputs<D: Storage<f32>, T = NoneTape> {
    pub logits: Vec<Mat<D, T>>,
    pub embeddings: Vec<Mat<D, T>>,
    pub features: Vec<Map4<D, T>>,
    /// ONE's gate `g` `[b, m]`, softmaxed.
    pub gate: Option<Mat<D, T>>,
    /// OKDDip's peer attention `α` `[b, P, P]`, rows softmaxed.
    pub attention: Option<Cube<D, T>>,
    /// FFL/MFEF fused logits `z_f` `[b, K]`.
    pub fused_logits: Option<Mat<D, T>>,
}

impl<D: Storage<f32>, T> Outputs<D, T> {
    /// No outputs.
    pub fn empty() -> Self {
        Self {
            logits: Vec::new(),
            embeddings: Vec::new(),
            features: Vec::new(),
            gate: None,
            attention: None,
            fused_logits: None,
        }
    }
}
