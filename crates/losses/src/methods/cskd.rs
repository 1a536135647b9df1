//! `cskd` — Class-wise Self-Knowledge Distillation (`METHODS.md`, "cskd"):
//! `L = CE(z, y) + λ · KL_T(z ← sg(z'))`, `z'` the logits of each anchor's same-class partner
//! (computed without a tape by the trainer, detached here in any case).

use crate::helpers::{attach, ce, kl_t, sg};
use crate::inputs::{require_like, LossError, LossInputs, Terms};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// CS-KD's hyper-parameters; defaults `T = 4`, `λ = 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CskdParams {
    /// Temperature `T`.
    #[serde(rename = "T")]
    pub t: f32,
    /// Weight `λ` of the KL term.
    pub lambda: f32,
}

impl Default for CskdParams {
    fn default() -> Self {
        Self {
            t: 4.0,
            lambda: 1.0,
        }
    }
}

/// Terms `ce` = `CE(z, y)` and `kl` = `λ KL_T(z ← sg z')`; inputs `logits[0]` (anchors),
/// `partner_logits`, `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &CskdParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let z = &x.logits_list("cskd", 1)?[0];
    let partner = require_like("cskd", "partner_logits", x.partner_logits(), z)?;
    let y = x.labels_for("cskd", z)?;
    let mut terms = Terms::new();
    terms.add("ce", ce(attach::<_, _, T>(z), &y));
    terms.add(
        "kl",
        kl_t(attach::<_, _, T>(z), sg(partner), p.t) * p.lambda,
    );
    Ok(terms)
}

crate::loss!(
    /// The `cskd` loss.
    Cskd,
    CskdParams
);
