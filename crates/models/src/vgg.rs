//! CIFAR VGG (`ARCHITECTURES.md`): five blocks of conv3×3 (with bias) + BN + ReLU units,
//! widths [[64],[128],[256],[512],[512]] (vgg8) or each doubled (vgg13), a 2×2 max-pool after
//! blocks 1–3 (stored as `pool_before` of stages 2–4, so `F_l` is the block's output before
//! pooling), global average pool → linear. The stage outputs are the five blocks' outputs.
//!
//! Tensor names (as RepDistiller's `vgg.py`): `block{0..4}.{3j}` (conv), `block{0..4}.{3j+1}`
//! (BN), `classifier`.

use crate::arch::{ArchSpec, NetConfig};
use crate::layers::Linear;
use crate::layers::{bn, Map4, Mode};
use crate::network::{Head, Network};
use crate::stage::{Stage, StageKind, VggUnit};
use dfdx::nn::Module;
use dfdx::prelude::*;
use kd_ops::{BatchNorm2d, Conv2dBiased, Conv2dCfg, OpsDevice};

impl<D: Device<f32>> VggUnit<D> {
    /// conv3×3 (padding 1, bias) `in_c → out_c` + BN + ReLU.
    pub fn new(dev: &D, in_c: usize, out_c: usize) -> Self {
        Self {
            conv: Conv2dBiased::new(dev, in_c, out_c, 3, Conv2dCfg::new(1, 1)),
            bn: BatchNorm2d::new(dev, out_c).with_relu(),
        }
    }
}

impl<D: OpsDevice> VggUnit<D> {
    pub fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Map4<D, T> {
        bn(&mut self.bn, self.conv.forward(x), mode)
    }
}

/// A VGG block of `n` units `in_c → out_c`, optionally preceded by the 2×2 max-pool.
pub fn vgg_stage<D: Device<f32>>(
    dev: &D,
    in_c: usize,
    out_c: usize,
    n: usize,
    pool_before: bool,
) -> Stage<D> {
    let units = (0..n)
        .map(|j| VggUnit::new(dev, if j == 0 { in_c } else { out_c }, out_c))
        .collect();
    Stage {
        kind: StageKind::Vgg,
        blocks: Vec::new(),
        units,
        pool_before,
    }
}

/// A VGG of `spec` (`ArchFamily::Vgg`): pools before stages 2–4 (after blocks 1–3).
pub(crate) fn build<D: Device<f32>>(dev: &D, spec: ArchSpec, cfg: NetConfig) -> Network<D> {
    let l = spec.widths.len();
    let mut in_c = cfg.in_channels;
    let mut stages = Vec::new();
    for s in 0..l - 1 {
        stages.push(vgg_stage(
            dev,
            in_c,
            spec.widths[s],
            spec.depths[s],
            (1..=3).contains(&s),
        ));
        in_c = spec.widths[s];
    }
    let w = spec.widths[l - 1];
    let heads = (0..cfg.branches)
        .map(|_| Head {
            stage: vgg_stage(dev, in_c, w, spec.depths[l - 1], (1..=3).contains(&(l - 1))),
            bn: None,
            fc: Linear::new(dev, w, cfg.classes),
        })
        .collect();
    Network {
        conv1: None,
        bn1: None,
        stages,
        heads,
        classes: cfg.classes,
        in_channels: cfg.in_channels,
        spec,
    }
}
