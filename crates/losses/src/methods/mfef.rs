//! `mfef` — Multi-scale Feature Extraction and Fusion (`METHODS.md`, "mfef", a
//! reconstruction). Its extra modules (multi-scale extraction, dual attention) sit inside the
//! network before the fusion module; its loss is FFL's, on the fused logits they produce.

use crate::inputs::{LossError, LossInputs, Terms};
use crate::methods::ffl::{fusion_terms, FflParams};
use dfdx::prelude::*;
use kd_ops::OpsDevice;

/// MFEF's hyper-parameters: FFL's (`T = 3`, ramp length 80 epochs).
pub type MfefParams = FflParams;

/// Terms `ce` and `kl` exactly as FFL's; inputs `logits[0..N]`, `fused_logits`, `epoch`,
/// `labels`.
pub fn terms<D: OpsDevice, T: Tape<f32, D>>(
    p: &MfefParams,
    x: &LossInputs<D>,
) -> Result<Terms<D, T>, LossError> {
    fusion_terms("mfef", p, x)
}

crate::loss!(
    /// The `mfef` loss.
    Mfef,
    MfefParams
);
