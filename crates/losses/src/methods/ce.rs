//! `ce` — the baseline (`METHODS.md`, "ce — baseline"): `L = CE(z, y)`.

use crate::helpers::{attach, ce};
use crate::inputs::{LossError, LossInputs, Terms};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// The baseline has no hyper-parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CeParams {}

/// Term `ce` = `CE(logits[0], y)`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    _p: &CeParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    let z = &x.logits_list("ce", 1)?[0];
    let y = x.labels_for("ce", z)?;
    let mut terms = Terms::new();
    terms.add("ce", ce(attach(z), &y));
    Ok(terms)
}

crate::loss!(
    /// The `ce` loss.
    Ce,
    CeParams
);
