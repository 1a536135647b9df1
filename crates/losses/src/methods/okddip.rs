//! `okddip` — Online Knowledge Distillation with Diverse Peers (`METHODS.md`, "okddip").
//! Peer targets `t_i = Σ_j α_ij z_j` (`α` the peers' attention, given as an input),
//! `L = Σ_i CE(z_i) + CE(z_L) + ramp · [Σ_i KL_T(z_i ← t_i) + KL_T(z_L ← mean_i z_i)]`.
//! Unlike every other method the targets stay attached (as in the original code), so the
//! attention (and through it `W_q`, `W_k`) learns only through the peers' targets.

use crate::helpers::{attach, ce, column, kl_t, mean_of, ramp, scale_rows};
use crate::inputs::{LossError, LossInputs, Mat, Terms};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// OKDDip's hyper-parameters; defaults `T = 3`, ramp length `R = 80` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OkddipParams {
    /// Temperature `T`.
    #[serde(rename = "T")]
    pub t: f32,
    /// Ramp length `R` in epochs (`METHODS.md` notation: 80). An option added here.
    pub ramp_epochs: f32,
}

impl Default for OkddipParams {
    fn default() -> Self {
        Self {
            t: 3.0,
            ramp_epochs: 80.0,
        }
    }
}

/// Terms `ce` (peers and leader) and `kl` (ramp applied); inputs `logits[0..P+1]` (peers, then
/// the leader), `attention` `[b, P, P]` (rows softmaxed), `epoch`, `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &OkddipParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let zs = x.logits_list("okddip", 2)?;
    let n_peers = zs.len() - 1;
    let (peers, leader) = (&zs[..n_peers], &zs[n_peers]);
    let attention = x
        .out
        .attention
        .as_ref()
        .ok_or(LossError::missing("okddip", "attention"))?;
    let b = zs[0].shape().0;
    if *attention.shape() != (b, n_peers, n_peers) {
        return Err(LossError::bad(
            "okddip",
            format!(
                "attention has shape {:?}, expected [b, P, P] = {:?}",
                attention.shape(),
                (b, n_peers, n_peers)
            ),
        ));
    }
    let y = x.labels_for("okddip", &zs[0])?;
    let w = ramp(x.epoch_for("okddip")?, p.ramp_epochs);
    // α as [b, P·P]: α_ij is column i·P + j.
    let alpha: Mat<D> = attention.clone().reshape_like(&(b, n_peers * n_peers));
    let alpha_ij = |i: usize, j: usize| column(attach::<_, _, T>(&alpha), i * n_peers + j);
    let mut terms = Terms::new();
    for z in zs {
        terms.add("ce", ce(attach::<_, _, T>(z), &y));
    }
    for (i, z) in peers.iter().enumerate() {
        let target = (1..n_peers).fold(
            scale_rows(attach::<_, _, T>(&peers[0]), alpha_ij(i, 0)),
            |acc, j| acc + scale_rows(attach::<_, _, T>(&peers[j]), alpha_ij(i, j)),
        );
        terms.add("kl", kl_t(attach::<_, _, T>(z), target, p.t) * w);
    }
    let peer_mean = mean_of(peers.iter().map(attach::<_, _, T>).collect());
    terms.add("kl", kl_t(attach::<_, _, T>(leader), peer_mean, p.t) * w);
    Ok(terms)
}

crate::loss!(
    /// The `okddip` loss.
    Okddip,
    OkddipParams
);
