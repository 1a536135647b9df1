//! `at` — Attention Transfer (`METHODS.md`, "at"). For each matched stage
//! `a = rownorm(att(F))`; `L = CE + β · Σ_l mean((a_s,l − sg a_t,l)²)`.
//!
//! Where the student's and teacher's maps differ in size, the larger *feature map* is
//! adaptive-average-pooled to the smaller one before `att` (as RepDistiller's `Attention` loss
//! does); channel counts may differ (`att` averages over channels).

use crate::helpers::{att, attach, ce, mse, rownorm, sg, Attention};
use crate::inputs::{LossError, LossInputs, Map4, Terms};
use crate::methods::scd::check_features;
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// AT's hyper-parameters; default `β = 1000`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AtParams {
    /// Weight `β` of the attention term.
    pub beta: f32,
}

impl Default for AtParams {
    fn default() -> Self {
        Self { beta: 1000.0 }
    }
}

/// `F` pooled to `(h, w)` when larger there, unchanged otherwise.
fn pool_to<D: OpsDevice, T: Tape<f32, D>>(f: Map4<D, T>, hw: (usize, usize)) -> Map4<D, T> {
    let (_, _, h, w) = *f.shape();
    if (h, w) == hw {
        f
    } else {
        kd_ops::adaptive_avg_pool2d(f, hw)
    }
}

/// Terms `ce` and `at` (= `β Σ_l mean((a_s − sg a_t)²)`); inputs `logits[0]`, `features` and
/// `teacher_features` (matched stage by stage), `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &AtParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let z = &x.logits_list("at", 1)?[0];
    let b = z.shape().0;
    check_features("at", "features", &x.out.features, 1, b)?;
    check_features("at", "teacher_features", x.teacher_features(), 1, b)?;
    if x.out.features.len() != x.teacher_features().len() {
        return Err(LossError::bad(
            "at",
            format!(
                "{} student stages but {} teacher stages",
                x.out.features.len(),
                x.teacher_features().len()
            ),
        ));
    }
    let y = x.labels_for("at", z)?;
    let mut terms = Terms::new();
    terms.add("ce", ce(attach::<_, _, T>(z), &y));
    for (fs, ft) in x.out.features.iter().zip(x.teacher_features()) {
        let (_, _, hs, ws) = *fs.shape();
        let (_, _, ht, wt) = *ft.shape();
        if !((hs >= ht && ws >= wt) || (hs <= ht && ws <= wt)) {
            return Err(LossError::bad(
                "at",
                format!(
                    "stage sizes {:?} and {:?} cannot be pooled to one",
                    fs.shape(),
                    ft.shape()
                ),
            ));
        }
        let hw = (hs.min(ht), ws.min(wt));
        let a_s = rownorm(att(pool_to(attach::<_, _, T>(fs), hw), Attention::SqMean));
        let a_t = rownorm(att(pool_to(sg(ft), hw), Attention::SqMean));
        terms.add("at", mse(a_s, a_t) * p.beta);
    }
    Ok(terms)
}

crate::loss!(
    /// The `at` loss.
    At,
    AtParams
);
