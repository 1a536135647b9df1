//! `sad` — Self Attention Distillation, classification form (`METHODS.md`, "sad").
//! `ψ(F) = softmax over H·W of att(F)`; for adjacent stages the deeper feature map is detached
//! and bilinearly upsampled ×2 (align-corners false) to the shallower size before `ψ`:
//! `L_sad = Σ_{l=1}^{L−1} mean((ψ(F_l) − ψ(up(sg F_{l+1})))²)`, `L = CE + w · L_sad`.

use crate::helpers::{att, attach, ce, mse, sg, Attention};
use crate::inputs::{LossError, LossInputs, Map4, Mat, Terms};
use crate::methods::scd::check_features;
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// SAD's hyper-parameters; default weight 1000.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SadParams {
    /// Weight `w` of `L_sad`.
    pub weight: f32,
}

impl Default for SadParams {
    fn default() -> Self {
        Self { weight: 1000.0 }
    }
}

/// `ψ(F)`: the attention map softmaxed over `H·W`, `[b, H·W]`.
pub fn psi<D: OpsDevice, T: Tape<f32, D>>(f: Map4<D, T>) -> Mat<D, T> {
    att(f, Attention::SqMean).softmax::<Axis<1>>()
}

/// Terms `ce` and `sad` (= `w · L_sad`); inputs `logits[0]`, `features[0..L]` (shallow → deep,
/// L ≥ 2, each stage half the previous one's height and width), `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &SadParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let z = &x.logits_list("sad", 1)?[0];
    check_features("sad", "features", &x.out.features, 2, z.shape().0)?;
    for (l, pair) in x.out.features.windows(2).enumerate() {
        let (_, _, h, w) = *pair[0].shape();
        let (_, _, hd, wd) = *pair[1].shape();
        if (2 * hd, 2 * wd) != (h, w) {
            return Err(LossError::bad(
                "sad",
                format!(
                    "features.{} is {hd}x{wd}: upsampled x2 it does not match features.{l} ({h}x{w})",
                    l + 1
                ),
            ));
        }
    }
    let y = x.labels_for("sad", z)?;
    let mut terms = Terms::new();
    terms.add("ce", ce(attach::<_, _, T>(z), &y));
    for pair in x.out.features.windows(2) {
        let student = psi(attach::<_, _, T>(&pair[0]));
        let target = psi(kd_ops::upsample_bilinear2x(sg(&pair[1])));
        terms.add("sad", mse(student, target) * p.weight);
    }
    Ok(terms)
}

crate::loss!(
    /// The `sad` loss.
    Sad,
    SadParams
);
