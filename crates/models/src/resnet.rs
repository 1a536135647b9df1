//! Post-activation CIFAR ResNets (`ARCHITECTURES.md`): resnet18 (BasicBlocks [2,2,2,2], widths
//! 64–512), resnet20/32/56/110 (n = 3/5/9/18 blocks per stage, widths 16/32/64) and
//! resnet8x4/32x4 (stem 32, widths 64/128/256). Stem: conv3×3 (stride 1) + BN + ReLU, no
//! max-pool. Shortcut: conv1×1 + BN where the shape changes.
//!
//! Tensor names: `conv1`, `bn1`, `layer{l}.{i}.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1}`, `fc`.

use crate::arch::{ArchSpec, NetConfig};
use crate::layers::Linear;
use crate::layers::{conv_bn, fork, Map4, Mode};
use crate::network::{Head, Network};
use crate::stage::{Block, BlockKind, Shortcut, Stage, StageKind};
use dfdx::nn::Module;
use dfdx::prelude::*;
use kd_ops::{add_relu, BatchNorm2d, Conv2d, Conv2dCfg, OpsDevice};

impl<D: Device<f32>> Block<D> {
    /// A BasicBlock `in_c → out_c` whose first conv has stride `stride`; projection shortcut
    /// (conv1×1 stride `stride` + BN) when `stride ≠ 1` or `in_c ≠ out_c`.
    pub fn basic(dev: &D, in_c: usize, out_c: usize, stride: usize) -> Self {
        let shortcut = (stride != 1 || in_c != out_c).then(|| Shortcut {
            conv: Conv2d::new(dev, in_c, out_c, 1, Conv2dCfg::new(stride, 0)),
            bn: Some(BatchNorm2d::new(dev, out_c)),
        });
        Self {
            kind: BlockKind::Basic,
            conv1: Conv2d::new(dev, in_c, out_c, 3, Conv2dCfg::new(stride, 1)),
            bn1: BatchNorm2d::new(dev, out_c).with_relu(),
            conv2: Conv2d::new(dev, out_c, out_c, 3, Conv2dCfg::new(1, 1)),
            bn2: BatchNorm2d::new(dev, out_c),
            shortcut,
        }
    }
}

impl<D: OpsDevice> Block<D> {
    /// `ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x))`.
    pub(crate) fn forward_basic<T: Tape<f32, D>>(
        &mut self,
        x: Map4<D, T>,
        mode: Mode,
    ) -> Map4<D, T> {
        let (x, x2) = fork(x);
        let out = conv_bn(&self.conv1, &mut self.bn1, x, mode);
        let out = conv_bn(&self.conv2, &mut self.bn2, out, mode);
        let sc = match &mut self.shortcut {
            Some(s) => match &mut s.bn {
                Some(b) => conv_bn(&s.conv, b, x2, mode),
                None => s.conv.forward(x2),
            },
            None => x2,
        };
        add_relu(out, sc)
    }
}

/// A stage of `n` BasicBlocks `in_c → out_c`, the first with stride `stride`.
pub fn basic_stage<D: Device<f32>>(
    dev: &D,
    in_c: usize,
    out_c: usize,
    n: usize,
    stride: usize,
) -> Stage<D> {
    let blocks = (0..n)
        .map(|i| {
            if i == 0 {
                Block::basic(dev, in_c, out_c, stride)
            } else {
                Block::basic(dev, out_c, out_c, 1)
            }
        })
        .collect();
    Stage {
        kind: StageKind::Residual,
        blocks,
        units: Vec::new(),
        pool_before: false,
    }
}

/// A post-activation ResNet of `spec` (`ArchFamily::ResNet`).
pub(crate) fn build<D: Device<f32>>(dev: &D, spec: ArchSpec, cfg: NetConfig) -> Network<D> {
    let l = spec.widths.len();
    let mut in_c = spec.stem;
    let mut stages = Vec::new();
    for s in 0..l - 1 {
        stages.push(basic_stage(
            dev,
            in_c,
            spec.widths[s],
            spec.depths[s],
            if s == 0 { 1 } else { 2 },
        ));
        in_c = spec.widths[s];
    }
    let heads = (0..cfg.branches)
        .map(|_| Head {
            stage: basic_stage(dev, in_c, spec.widths[l - 1], spec.depths[l - 1], 2),
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
