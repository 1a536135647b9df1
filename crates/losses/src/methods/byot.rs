//! `byot` — Be Your Own Teacher (`METHODS.md`, "byot"). Deepest exit: `CE(z_L, y)`; each
//! shallow exit `i`: `(1 − α) CE(z_i, y) + α · KL_T(z_i ← sg z_L) + λ · mean((e_i − sg e_L)²)`.

use crate::helpers::{attach, ce, kl_t, mse, sg};
use crate::inputs::{LossError, LossInputs, Terms};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// BYOT's hyper-parameters; defaults `α = 0.3`, `T = 3`, `λ = 0.03`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ByotParams {
    /// Weight `α` of each shallow exit's KL term (its CE gets `1 − α`).
    pub alpha: f32,
    /// Temperature `T`.
    #[serde(rename = "T")]
    pub t: f32,
    /// Weight `λ` of each shallow exit's feature (embedding) term.
    pub lambda: f32,
}

impl Default for ByotParams {
    fn default() -> Self {
        Self {
            alpha: 0.3,
            t: 3.0,
            lambda: 0.03,
        }
    }
}

/// Terms `ce` (every exit), `kl` and `feat` (summed over the shallow exits); inputs
/// `logits[0..L]` and `embeddings[0..L]` (shallow exits first, deepest last), `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &ByotParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let zs = x.logits_list("byot", 2)?;
    let es = &x.out.embeddings;
    if es.is_empty() {
        return Err(LossError::missing("byot", "embeddings"));
    }
    let b = zs[0].shape().0;
    if es.len() != zs.len()
        || es
            .iter()
            .any(|e| *e.shape() != *es[0].shape() || e.shape().0 != b)
    {
        return Err(LossError::bad(
            "byot",
            format!(
                "needs one embedding [b, D] of one shape per exit: {} exits, embeddings {:?}",
                zs.len(),
                es.iter().map(|e| *e.shape()).collect::<Vec<_>>()
            ),
        ));
    }
    let y = x.labels_for("byot", &zs[0])?;
    let last = zs.len() - 1;
    let (z_deep, e_deep) = (&zs[last], &es[last]);
    let mut terms = Terms::new();
    terms.add("ce", ce(attach::<_, _, T>(z_deep), &y));
    for (z, e) in zs[..last].iter().zip(&es[..last]) {
        terms.add("ce", ce(attach::<_, _, T>(z), &y) * (1.0 - p.alpha));
        terms.add("kl", kl_t(attach::<_, _, T>(z), sg(z_deep), p.t) * p.alpha);
        terms.add("feat", mse(attach::<_, _, T>(e), sg(e_deep)) * p.lambda);
    }
    Ok(terms)
}

crate::loss!(
    /// The `byot` loss.
    Byot,
    ByotParams
);
