//! [`Outputs`]: what a model's forward pass hands to the losses; kd-losses' `LossInputs`
//! holds it as is (with the labels, a teacher's or a partner's outputs and the epoch).

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

impl<D: Storage<f32>, T: Tape<f32, D>> Outputs<D, T> {
    /// The outputs without their tapes, which are merged into `sink` (so that none is lost).
    pub fn split_tapes(self, sink: &mut T) -> Outputs<D> {
        fn take<S: Shape, D: Storage<f32>, T: Tape<f32, D>>(
            x: Tensor<S, f32, D, T>,
            sink: &mut T,
        ) -> Tensor<S, f32, D> {
            let (x, tape) = x.split_tape();
            *sink = std::mem::take(sink).merge(tape);
            x
        }
        Outputs {
            logits: self.logits.into_iter().map(|x| take(x, sink)).collect(),
            embeddings: self.embeddings.into_iter().map(|x| take(x, sink)).collect(),
            features: self.features.into_iter().map(|x| take(x, sink)).collect(),
            gate: self.gate.map(|x| take(x, sink)),
            attention: self.attention.map(|x| take(x, sink)),
            fused_logits: self.fused_logits.map(|x| take(x, sink)),
        }
    }

    /// The outputs on another tape type, with empty tapes (for detached uses: a teacher's or a
    /// partner's forward pass).
    pub fn retaped<T2: Tape<f32, D>>(&self) -> Outputs<D, T2> {
        Outputs {
            logits: self.logits.iter().map(|x| x.retaped()).collect(),
            embeddings: self.embeddings.iter().map(|x| x.retaped()).collect(),
            features: self.features.iter().map(|x| x.retaped()).collect(),
            gate: self.gate.as_ref().map(|x| x.retaped()),
            attention: self.attention.as_ref().map(|x| x.retaped()),
            fused_logits: self.fused_logits.as_ref().map(|x| x.retaped()),
        }
    }
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
