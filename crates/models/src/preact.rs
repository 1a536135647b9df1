//! Pre-activation residual blocks, used by `resnet18-preact` and the WRNs (`ARCHITECTURES.md`):
//! `BN-ReLU-conv3×3(stride)-BN-ReLU-conv3×3`, plus the input (identity) or a bias-free conv1×1
//! projection of the *activated* input `ReLU(BN(x))` (no BN on the projection), no ReLU after
//! the sum.
//!
//! resnet18-preact: stem conv3×3(64) + BN + ReLU (the BN is what makes the spec's 11,217,444
//! parameters), blocks [2,2,2,2] at 64–512, no final BN, GAP → fc. Its stage outputs `F_l` are
//! the raw residual sums of each stage's last block (there is no ReLU at the end of a
//! pre-activation stage); the embedding is the GAP of the raw `F_4`.
//!
//! Tensor names: `conv1`, `bn1`, `layer{l}.{i}.{bn1,conv1,bn2,conv2,shortcut.0}`, `fc`.

use crate::arch::{ArchSpec, NetConfig};
use crate::layers::Linear;
use crate::layers::{bn, conv_bn, fork, Map4, Mode};
use crate::network::{Head, Network};
use crate::stage::{Block, BlockKind, Shortcut, Stage, StageKind};
use dfdx::nn::Module;
use dfdx::prelude::*;
use kd_ops::{BatchNorm2d, Conv2d, Conv2dCfg, OpsDevice};

impl<D: Device<f32>> Block<D> {
    /// A pre-activation block `in_c → out_c` (kind [`BlockKind::PreAct`] or
    /// [`BlockKind::Wide`]); projection when `stride ≠ 1` or `in_c ≠ out_c`.
    pub fn preact(dev: &D, kind: BlockKind, in_c: usize, out_c: usize, stride: usize) -> Self {
        let shortcut = (stride != 1 || in_c != out_c).then(|| Shortcut {
            conv: Conv2d::new(dev, in_c, out_c, 1, Conv2dCfg::new(stride, 0)),
            bn: None,
        });
        Self {
            kind,
            bn1: BatchNorm2d::new(dev, in_c).with_relu(),
            conv1: Conv2d::new(dev, in_c, out_c, 3, Conv2dCfg::new(stride, 1)),
            bn2: BatchNorm2d::new(dev, out_c).with_relu(),
            conv2: Conv2d::new(dev, out_c, out_c, 3, Conv2dCfg::new(1, 1)),
            shortcut,
        }
    }
}

impl<D: OpsDevice> Block<D> {
    /// `conv(ReLU(BN(conv(a)))) + (proj(a) or x)` with `a = ReLU(BN(x))`.
    pub(crate) fn forward_preact<T: Tape<f32, D>>(
        &mut self,
        x: Map4<D, T>,
        mode: Mode,
    ) -> Map4<D, T> {
        let (a, sc) = match &mut self.shortcut {
            Some(s) => {
                let (a, a2) = fork(bn(&mut self.bn1, x, mode));
                (a, s.conv.forward(a2))
            }
            None => {
                let (x, x2) = fork(x);
                (bn(&mut self.bn1, x, mode), x2)
            }
        };
        let out = conv_bn(&self.conv1, &mut self.bn2, a, mode);
        self.conv2.forward(out) + sc
    }
}

/// A stage of `n` pre-activation blocks `in_c → out_c`, the first with stride `stride`.
pub fn preact_stage<D: Device<f32>>(
    dev: &D,
    kind: BlockKind,
    in_c: usize,
    out_c: usize,
    n: usize,
    stride: usize,
) -> Stage<D> {
    let blocks = (0..n)
        .map(|i| {
            if i == 0 {
                Block::preact(dev, kind, in_c, out_c, stride)
            } else {
                Block::preact(dev, kind, out_c, out_c, 1)
            }
        })
        .collect();
    let kind = if kind == BlockKind::Wide {
        StageKind::Wide
    } else {
        StageKind::Residual
    };
    Stage {
        kind,
        blocks,
        units: Vec::new(),
        pool_before: false,
    }
}

/// resnet18-preact (`ArchFamily::PreAct`).
pub(crate) fn build<D: Device<f32>>(dev: &D, spec: ArchSpec, cfg: NetConfig) -> Network<D> {
    let l = spec.widths.len();
    let mut in_c = spec.stem;
    let mut stages = Vec::new();
    for s in 0..l - 1 {
        stages.push(preact_stage(
            dev,
            BlockKind::PreAct,
            in_c,
            spec.widths[s],
            spec.depths[s],
            if s == 0 { 1 } else { 2 },
        ));
        in_c = spec.widths[s];
    }
    let heads = (0..cfg.branches)
        .map(|_| Head {
            stage: preact_stage(
                dev,
                BlockKind::PreAct,
                in_c,
                spec.widths[l - 1],
                spec.depths[l - 1],
                2,
            ),
            bn: None,
            fc: Linear::new(dev, spec.widths[l - 1], cfg.classes),
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
        bn1: Some(BatchNorm2d::new(dev, spec.stem).with_relu()),
        stages,
        heads,
        classes: cfg.classes,
        in_channels: cfg.in_channels,
        spec,
    }
}
