//! `ddgsd` — Data-Distortion Guided Self-Distillation (`METHODS.md`, "ddgsd"):
//! `L = ½ CE(z1, y) + ½ CE(z2, y) + KL_T(z1 ← sg z2) + KL_T(z2 ← sg z1)
//!      + μ · Σ_d (mean_i e1_id − mean_i e2_id)²` (linear-kernel MMD, per dimension).

use crate::helpers::{attach, ce, kl_t, sg};
use crate::inputs::{LossError, LossInputs, Terms};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// DDGSD's hyper-parameters; defaults `T = 4`, `μ = 5e-4`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdgsdParams {
    /// Temperature `T`.
    #[serde(rename = "T")]
    pub t: f32,
    /// Weight `μ` of the MMD term.
    pub mu: f32,
}

impl Default for DdgsdParams {
    fn default() -> Self {
        Self { t: 4.0, mu: 5e-4 }
    }
}

/// Terms `ce` (both halves), `kl` (both directions) and `mmd`; inputs `logits[0..2]` and
/// `embeddings[0..2]` (the two views), `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &DdgsdParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let zs = x.logits_list("ddgsd", 2)?;
    if zs.len() != 2 {
        return Err(LossError::bad(
            "ddgsd",
            format!("needs 2 logits (two views), got {}", zs.len()),
        ));
    }
    let (z1, z2) = (&zs[0], &zs[1]);
    let (e1, e2) = match x.out.embeddings.as_slice() {
        [] => return Err(LossError::missing("ddgsd", "embeddings")),
        [e1, e2] if e1.shape() == e2.shape() && e1.shape().0 == z1.shape().0 => (e1, e2),
        es => {
            return Err(LossError::bad(
                "ddgsd",
                format!(
                    "needs 2 embeddings [b, D] of one shape for a batch of {}, got {:?}",
                    z1.shape().0,
                    es.iter().map(|e| *e.shape()).collect::<Vec<_>>()
                ),
            ))
        }
    };
    let y = x.labels_for("ddgsd", z1)?;
    let mut terms = Terms::new();
    terms.add("ce", ce(attach::<_, _, T>(z1), &y) * 0.5);
    terms.add("ce", ce(attach::<_, _, T>(z2), &y) * 0.5);
    terms.add("kl", kl_t(attach::<_, _, T>(z1), sg(z2), p.t));
    terms.add("kl", kl_t(attach::<_, _, T>(z2), sg(z1), p.t));
    let m1 = attach::<_, _, T>(e1).mean::<(usize,), Axis<0>>();
    let m2 = attach::<_, _, T>(e2).mean::<(usize,), Axis<0>>();
    terms.add("mmd", (m1 - m2).square().sum::<(), Axis<0>>() * p.mu);
    Ok(terms)
}

crate::loss!(
    /// The `ddgsd` loss.
    Ddgsd,
    DdgsdParams
);
