//! Wide ResNets WRN-d-k (`ARCHITECTURES.md`): stem conv3×3(16) without BN; `(d − 4)/6`
//! pre-activation blocks (`preact.rs`) per stage, widths 16k/32k/64k, strides 1/2/2; bias-free
//! conv1×1 projection of the activated input where the shape changes; final BN + ReLU; GAP →
//! fc. Stage outputs: `F_1`, `F_2` are the raw residual sums of stages 1–2 (a pre-activation
//! stage ends without ReLU); `F_3` is taken after the final BN + ReLU (RepDistiller's
//! `wrn.py` does the same), so the final BN belongs to the head and is duplicated with it.
//!
//! Tensor names (RepDistiller's `wrn.py`): `conv1`,
//! `block{l}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}`, `bn1` (the final BN), `fc`.

use crate::arch::{ArchSpec, NetConfig};
use crate::layers::Linear;
use crate::network::{Head, Network};
use crate::preact::preact_stage;
use crate::stage::BlockKind;
use dfdx::prelude::*;
use kd_ops::{BatchNorm2d, Conv2d, Conv2dCfg};

/// A WRN of `spec` (`ArchFamily::Wide`).
pub(crate) fn build<D: Device<f32>>(dev: &D, spec: ArchSpec, cfg: NetConfig) -> Network<D> {
    let l = spec.widths.len();
    let mut in_c = spec.stem;
    let mut stages = Vec::new();
    for s in 0..l - 1 {
        stages.push(preact_stage(
            dev,
            BlockKind::Wide,
            in_c,
            spec.widths[s],
            spec.depths[s],
            if s == 0 { 1 } else { 2 },
        ));
        in_c = spec.widths[s];
    }
    let w = spec.widths[l - 1];
    let heads = (0..cfg.branches)
        .map(|_| Head {
            stage: preact_stage(dev, BlockKind::Wide, in_c, w, spec.depths[l - 1], 2),
            bn: Some(BatchNorm2d::new(dev, w).with_relu()),
            fc: Linear::new(dev, w, cfg.classes),
        })
        .collect();
    Network {
        conv1: Some(Conv2d::new(
            dev,
            cfg.in_channels,
            spec.stem,
            3,
            Conv2dCfg::new(1, 1),
        )),
        bn1: None,
        stages,
        heads,
        classes: cfg.classes,
        in_channels: cfg.in_channels,
        spec,
    }
}
