//! `kdcl` — Collaborative Learning, MinLogit teacher (`METHODS.md`, "kdcl"):
//! `z_t[j] = min_k (z_k[j] − z_k[y])` per sample and class,
//! `L = Σ_k [CE(z_k, y) + KL_T(z_k ← sg z_t)]`.

use crate::helpers::{attach, ce, kl_t, sg};
use crate::inputs::{Labels, LossError, LossInputs, Mat, Terms};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// KDCL's hyper-parameters; default `T = 2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KdclParams {
    /// Temperature `T`.
    #[serde(rename = "T")]
    pub t: f32,
}

impl Default for KdclParams {
    fn default() -> Self {
        Self { t: 2.0 }
    }
}

/// The MinLogit teacher `z_t[j] = min_k (z_k[j] − z_k[y])` (detached).
pub fn min_logit<D: OpsDevice>(zs: &[Mat<D>], y: &Labels<D>) -> Mat<D> {
    let shifted = |z: &Mat<D>| {
        let shape = *z.shape();
        let zy: Tensor<(usize,), f32, D> = sg(z).select(y.clone());
        sg(z) - zy.broadcast_like::<_, Axis<1>>(&shape)
    };
    zs[1..]
        .iter()
        .fold(shifted(&zs[0]), |acc, z| acc.minimum(shifted(z)))
}

/// Terms `ce` and `kl`, summed over the students; inputs `logits[0..K]`, `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &KdclParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let zs = x.logits_list("kdcl", 1)?;
    let y = x.labels_for("kdcl", &zs[0])?;
    let teacher = min_logit(zs, &y);
    let mut terms = Terms::new();
    for z in zs {
        terms.add("ce", ce(attach::<_, _, T>(z), &y));
        terms.add("kl", kl_t(attach::<_, _, T>(z), teacher.clone(), p.t));
    }
    Ok(terms)
}

crate::loss!(
    /// The `kdcl` loss.
    Kdcl,
    KdclParams
);
