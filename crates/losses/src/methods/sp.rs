//! `sp` — Similarity-Preserving distillation (`METHODS.md`, "sp"). On the last stage
//! `G = gram(flatten(F))` (all of `C·H·W`); `L = CE + γ · ‖G_s − sg G_t‖²_F / b²`.

use crate::helpers::{attach, ce, gram, sg, sq_frobenius_over_b2};
use crate::inputs::{LossError, LossInputs, Map4, Mat, Terms};
use crate::methods::scd::check_features;
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// SP's hyper-parameters; default `γ = 3000`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpParams {
    /// Weight `γ` of the similarity term.
    pub gamma: f32,
}

impl Default for SpParams {
    fn default() -> Self {
        Self { gamma: 3000.0 }
    }
}

/// `flatten(F)`: `[b, C·H·W]`.
pub fn flatten<D: OpsDevice, T: Tape<f32, D>>(f: Map4<D, T>) -> Mat<D, T> {
    let (b, c, h, w) = *f.shape();
    f.reshape_like(&(b, c * h * w))
}

/// Terms `ce` and `sp` (= `γ ‖G_s − sg G_t‖²_F / b²`); inputs `logits[0]`, `features` and
/// `teacher_features` (the last stage of each is used), `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &SpParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let z = &x.logits_list("sp", 1)?[0];
    let b = z.shape().0;
    check_features("sp", "features", &x.out.features, 1, b)?;
    check_features("sp", "teacher_features", x.teacher_features(), 1, b)?;
    let y = x.labels_for("sp", z)?;
    let fs = &x.out.features[x.out.features.len() - 1];
    let ft = &x.teacher_features()[x.teacher_features().len() - 1];
    let gs = gram(flatten(attach::<_, _, T>(fs)));
    let gt = gram(flatten(sg(ft)));
    let mut terms = Terms::new();
    terms.add("ce", ce(attach::<_, _, T>(z), &y));
    terms.add("sp", sq_frobenius_over_b2(gs, gt) * p.gamma);
    Ok(terms)
}

crate::loss!(
    /// The `sp` loss.
    Sp,
    SpParams
);
