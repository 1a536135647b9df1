//! `ffl` — Feature Fusion Learning (`METHODS.md`, "ffl"): with the fusion module's logits `z_f`
//! and `z̄ = mean_k z_k`,
//! `L = Σ_k CE(z_k) + CE(z_f) + ramp · [Σ_k KL_T(z_k ← sg z_f) + KL_T(z_f ← sg z̄)]`.
//! MFEF uses the same loss ([`crate::methods::mfef`]).

use crate::helpers::{attach, ce, kl_t, mean_of, ramp, sg};
use crate::inputs::{require_like, LossError, LossInputs, Terms};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// FFL's (and MFEF's) hyper-parameters; defaults `T = 3`, ramp length `R = 80` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FflParams {
    /// Temperature `T`.
    #[serde(rename = "T")]
    pub t: f32,
    /// Ramp length `R` in epochs (`METHODS.md` notation: 80). An option added here.
    pub ramp_epochs: f32,
}

impl Default for FflParams {
    fn default() -> Self {
        Self {
            t: 3.0,
            ramp_epochs: 80.0,
        }
    }
}

/// Terms `ce` (students and fused) and `kl` (ramp applied); inputs `logits[0..N]`,
/// `fused_logits`, `epoch`, `labels`. `method` names the caller in errors (`ffl` or `mfef`).
pub fn fusion_terms<D: OpsDevice, T: Tape<f32, D>>(
    method: &'static str,
    p: &FflParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let zs = x.logits_list(method, 1)?;
    let fused = require_like(method, "fused_logits", x.out.fused_logits.as_ref(), &zs[0])?;
    let y = x.labels_for(method, &zs[0])?;
    let w = ramp(x.epoch_for(method)?, p.ramp_epochs);
    let mut terms = Terms::new();
    for z in zs {
        terms.add("ce", ce(attach::<_, _, T>(z), &y));
    }
    terms.add("ce", ce(attach::<_, _, T>(fused), &y));
    for z in zs {
        terms.add("kl", kl_t(attach::<_, _, T>(z), sg(fused), p.t) * w);
    }
    let mean = mean_of(zs.iter().map(sg).collect());
    terms.add("kl", kl_t(attach::<_, _, T>(fused), mean, p.t) * w);
    Ok(terms)
}

/// FFL's terms (see [`fusion_terms`]).
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &FflParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    fusion_terms("ffl", p, x)
}

crate::loss!(
    /// The `ffl` loss.
    Ffl,
    FflParams
);
