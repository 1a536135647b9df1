//! `one` — On-the-fly Native Ensemble (`METHODS.md`, "one"): gated teacher
//! `z_e = Σ_i g_i z_i`, `L = Σ_i CE(z_i, y) + CE(z_e, y) + ramp(epoch) · Σ_i KL_T(z_i ← sg z_e)`.
//! The gate learns only through `CE(z_e, y)`.

use crate::helpers::{attach, ce, column, kl_t, ramp, scale_rows, sg};
use crate::inputs::{LossError, LossInputs, Mat, Terms};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// ONE's hyper-parameters; defaults `T = 3`, ramp length `R = 80` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OneParams {
    /// Temperature `T`.
    #[serde(rename = "T")]
    pub t: f32,
    /// Ramp length `R` in epochs (`METHODS.md` notation: 80). An option added here.
    pub ramp_epochs: f32,
}

impl Default for OneParams {
    fn default() -> Self {
        Self {
            t: 3.0,
            ramp_epochs: 80.0,
        }
    }
}

/// ONE's teacher, the gated ensemble `z_e = Σ_i g_i z_i` of the branches' logits `zs` with
/// the gate `[b, m]` (also what ONE reports as its ensemble).
pub fn gated_ensemble<D: OpsDevice, T: Tape<f32, D>>(zs: &[Mat<D>], gate: &Mat<D>) -> Mat<D, T> {
    let weighted = |i: usize, z: &Mat<D>| -> Mat<D, T> {
        scale_rows(attach::<_, _, T>(z), column(attach::<_, _, T>(gate), i))
    };
    zs.iter()
        .enumerate()
        .skip(1)
        .fold(weighted(0, &zs[0]), |acc, (i, z)| acc + weighted(i, z))
}

/// Terms `ce` (branches and ensemble) and `kl` (ramp applied); inputs `logits[0..m]`, `gate`
/// `[b, m]` (softmaxed), `epoch`, `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &OneParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let zs = x.logits_list("one", 1)?;
    let gate = x
        .out
        .gate
        .as_ref()
        .ok_or(LossError::missing("one", "gate"))?;
    let b = zs[0].shape().0;
    if *gate.shape() != (b, zs.len()) {
        return Err(LossError::bad(
            "one",
            format!(
                "gate has shape {:?}, expected [b, m] = {:?}",
                gate.shape(),
                (b, zs.len())
            ),
        ));
    }
    let y = x.labels_for("one", &zs[0])?;
    let w = ramp(x.epoch_for("one")?, p.ramp_epochs);
    let ensemble = gated_ensemble::<D, T>(zs, gate);
    let teacher = sg(&ensemble);
    let mut terms = Terms::new();
    for z in zs {
        terms.add("ce", ce(attach::<_, _, T>(z), &y));
    }
    terms.add("ce", ce(ensemble, &y));
    for z in zs {
        terms.add("kl", kl_t(attach::<_, _, T>(z), teacher.clone(), p.t) * w);
    }
    Ok(terms)
}

crate::loss!(
    /// The `one` loss.
    One,
    OneParams
);
