//! `kd` — Hinton's knowledge distillation (`METHODS.md`, "kd — Hinton"):
//! `L = (1 − α) CE(z_s, y) + α · KL_T(z_s ← sg z_t)`.

use crate::helpers::{attach, ce, kl_t, sg};
use crate::inputs::{require_like, LossError, LossInputs, Terms};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// KD's hyper-parameters; defaults `T = 4`, `α = 0.9`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KdParams {
    /// Temperature `T`.
    #[serde(rename = "T")]
    pub t: f32,
    /// Weight `α` of the KL term (CE gets `1 − α`).
    pub alpha: f32,
}

impl Default for KdParams {
    fn default() -> Self {
        Self { t: 4.0, alpha: 0.9 }
    }
}

/// Terms `ce` = `(1 − α) CE(z_s, y)` and `kl` = `α KL_T(z_s ← sg z_t)`; inputs `logits[0]` (the
/// student), `teacher_logits`, `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &KdParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let z = &x.logits_list("kd", 1)?[0];
    let zt = require_like("kd", "teacher_logits", x.teacher_logits(), z)?;
    let y = x.labels_for("kd", z)?;
    let mut terms = Terms::new();
    terms.add("ce", ce(attach::<_, _, T>(z), &y) * (1.0 - p.alpha));
    terms.add("kl", kl_t(attach::<_, _, T>(z), sg(zt), p.t) * p.alpha);
    Ok(terms)
}

crate::loss!(
    /// The `kd` loss.
    Kd,
    KdParams
);
