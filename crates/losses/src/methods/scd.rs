//! `scd` — Similarity and Consistency by Self-Distillation (`METHODS.md`, "scd", a
//! reconstruction). Per stage `G_l = gram(att(F_l))`;
//! `L_scd = Σ_{l=1}^{L−1} ‖G_l − sg(G_target(l))‖²_F / b²` with target `l + 1` (`next`) or `L`
//! (`deepest`); `L = CE(z, y) + β · L_scd`.

use crate::helpers::{att, attach, ce, gram, sq_frobenius_over_b2, Attention};
use crate::inputs::{LossError, LossInputs, Map4, Mat, Terms};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// Which stage's similarity matrix each stage is pulled towards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScdTarget {
    /// The next deeper stage, `sg(G_{l+1})`.
    Next,
    /// The deepest stage, `sg(G_L)`, for every stage (default).
    #[default]
    Deepest,
}

/// SCD's hyper-parameters; defaults `β = 30`, target `deepest`, attention `sq_mean`: the best
/// setting of the Fashion-MNIST study (`docs/results/fashion-mnist-scd.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScdParams {
    /// Weight `β` of the similarity-consistency term (unpublished; `METHODS.md` starts at 100,
    /// the Fashion-MNIST study chose 30).
    pub beta: f32,
    /// The target of each stage.
    pub target: ScdTarget,
    /// How `att(F)` is computed.
    pub attention: Attention,
}

impl Default for ScdParams {
    fn default() -> Self {
        Self {
            beta: 30.0,
            target: ScdTarget::Deepest,
            attention: Attention::SqMean,
        }
    }
}

/// Checks a list of stage outputs: at least `min`, all 4-d with batch `b`.
pub(crate) fn check_features<D: Storage<f32>>(
    method: &'static str,
    name: &'static str,
    fs: &[Map4<D>],
    min: usize,
    b: usize,
) -> Result<(), LossError> {
    if fs.is_empty() {
        return Err(LossError::missing(method, name));
    }
    if fs.len() < min {
        return Err(LossError::bad(
            method,
            format!("needs at least {min} {name}, got {}", fs.len()),
        ));
    }
    if let Some((l, f)) = fs.iter().enumerate().find(|(_, f)| f.shape().0 != b) {
        return Err(LossError::bad(
            method,
            format!("{name}.{l} has shape {:?}, batch should be {b}", f.shape()),
        ));
    }
    Ok(())
}

/// The weighted SCD term `β · L_scd` from the stage outputs (shallow → deep, at least two).
pub fn scd_term<D: OpsDevice, T: Tape<f32, D>>(
    p: &ScdParams,
    fs: &[Map4<D>],
) -> Tensor<(), f32, D, T> {
    let last = fs.len() - 1;
    // Targets are computed without a tape: they enter detached.
    let detached_gram = |f: &Map4<D>| -> Mat<D> { gram(att(f.clone(), p.attention)) };
    let deepest = detached_gram(&fs[last]);
    let term = |l: usize| {
        let g = gram(att(attach::<_, _, T>(&fs[l]), p.attention));
        let target = match p.target {
            ScdTarget::Next if l + 1 < last => detached_gram(&fs[l + 1]),
            _ => deepest.clone(),
        };
        sq_frobenius_over_b2(g, target)
    };
    (1..last).fold(term(0), |acc, l| acc + term(l)) * p.beta
}

/// Terms `ce` and `scd` (= `β L_scd`); inputs `logits[0]`, `features[0..L]` (shallow → deep,
/// L ≥ 2), `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &ScdParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let z = &x.logits_list("scd", 1)?[0];
    check_features("scd", "features", &x.out.features, 2, z.shape().0)?;
    let y = x.labels_for("scd", z)?;
    let mut terms = Terms::new();
    terms.add("ce", ce(attach::<_, _, T>(z), &y));
    terms.add("scd", scd_term(p, &x.out.features));
    Ok(terms)
}

crate::loss!(
    /// The `scd` loss.
    Scd,
    ScdParams
);
