//! `dml` — Deep Mutual Learning (`METHODS.md`, "dml"):
//! `L = Σ_k [CE(z_k, y) + (1/(K−1)) Σ_{j≠k} KL_T(z_k ← sg z_j)]`, one synchronous step.

use crate::helpers::{attach, ce, kl_t, sg};
use crate::inputs::{LossError, LossInputs, Terms};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// DML's hyper-parameters; default `T = 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DmlParams {
    /// Temperature `T`.
    #[serde(rename = "T")]
    pub t: f32,
}

impl Default for DmlParams {
    fn default() -> Self {
        Self { t: 1.0 }
    }
}

/// Terms `ce` and `kl`, summed over the students; inputs `logits[0..K]` (K ≥ 2), `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &DmlParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let zs = x.logits_list("dml", 2)?;
    let y = x.labels_for("dml", &zs[0])?;
    let peers = 1.0 / (zs.len() - 1) as f32;
    let mut terms = Terms::new();
    for (k, zk) in zs.iter().enumerate() {
        terms.add("ce", ce(attach::<_, _, T>(zk), &y));
        for (j, zj) in zs.iter().enumerate() {
            if j != k {
                terms.add("kl", kl_t(attach::<_, _, T>(zk), sg(zj), p.t) * peers);
            }
        }
    }
    Ok(terms)
}

crate::loss!(
    /// The `dml` loss.
    Dml,
    DmlParams
);
