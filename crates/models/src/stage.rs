//! Residual blocks and stages: the containers shared by every backbone family, their tensor
//! names, dispatch of the forward pass (the block bodies live in `resnet.rs`, `preact.rs` and
//! `vgg.rs`) and output-shape arithmetic.

use crate::collection::peek;
use crate::layers::{Map4, Mode};
use dfdx::nn::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use kd_ops::{max_pool2d, BatchNorm2d, Conv2d, Conv2dBiased, OpsDevice, Pool2dCfg};

/// Which body a [`Block`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockKind {
    /// Post-activation BasicBlock (`resnet.rs`): conv-BN-ReLU-conv-BN, + shortcut, ReLU.
    #[default]
    Basic,
    /// Pre-activation block (`preact.rs`): BN-ReLU-conv-BN-ReLU-conv + shortcut, no ReLU.
    PreAct,
    /// The same pre-activation block under the WRN names (`convShortcut`, `wrn.rs`).
    Wide,
}

/// A projection shortcut: `shortcut.0` (1×1 conv, no bias) and, for post-activation blocks,
/// `shortcut.1` (BatchNorm).
#[derive(Debug, Clone)]
pub struct Shortcut<D: Storage<E>, E: Dtype = f32> {
    pub conv: Conv2d<D, E>,
    pub bn: Option<BatchNorm2d<D, E>>,
}

impl<D: Device<f32>> TensorCollection<f32, D> for Shortcut<D> {
    type To<E2: Dtype, D2: Device<E2>> = Shortcut<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let has_bn = peek(visitor, |s: &Self| s.bn.is_some())?.unwrap_or(false);
        let bn = has_bn.then(|| {
            Self::module(
                "1",
                |s: &Self| s.bn.as_ref().expect("bn"),
                |s: &mut Self| s.bn.as_mut().expect("bn"),
            )
        });
        visitor.visit_fields(
            (
                Self::module("0", |s: &Self| &s.conv, |s: &mut Self| &mut s.conv),
                bn.into_iter().collect::<Vec<_>>(),
            ),
            |(conv, bn)| Shortcut {
                conv,
                bn: bn.into_iter().next(),
            },
        )
    }
}

/// A two-convolution residual block. Field names follow PyTorch: `conv1`, `bn1`, `conv2`,
/// `bn2`, `shortcut.0`/`shortcut.1` (`convShortcut` for [`BlockKind::Wide`]). For pre-activation
/// blocks `bn1` normalises the block's input (in-channels) and `bn2` the first conv's output.
#[derive(Debug, Clone)]
pub struct Block<D: Storage<E>, E: Dtype = f32> {
    pub kind: BlockKind,
    pub conv1: Conv2d<D, E>,
    pub bn1: BatchNorm2d<D, E>,
    pub conv2: Conv2d<D, E>,
    pub bn2: BatchNorm2d<D, E>,
    pub shortcut: Option<Shortcut<D, E>>,
}

impl<D: Device<f32>> TensorCollection<f32, D> for Block<D> {
    type To<E2: Dtype, D2: Device<E2>> = Block<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let (kind, has_sc) =
            peek(visitor, |s: &Self| (s.kind, s.shortcut.is_some()))?.unwrap_or_default();
        let wide = kind == BlockKind::Wide;
        let sc = (has_sc && !wide).then(|| {
            Self::module(
                "shortcut",
                |s: &Self| s.shortcut.as_ref().expect("shortcut"),
                |s: &mut Self| s.shortcut.as_mut().expect("shortcut"),
            )
        });
        let sc_wide = (has_sc && wide).then(|| {
            Self::module(
                "convShortcut",
                |s: &Self| &s.shortcut.as_ref().expect("shortcut").conv,
                |s: &mut Self| &mut s.shortcut.as_mut().expect("shortcut").conv,
            )
        });
        visitor.visit_fields(
            (
                Self::module("conv1", |s: &Self| &s.conv1, |s: &mut Self| &mut s.conv1),
                Self::module("bn1", |s: &Self| &s.bn1, |s: &mut Self| &mut s.bn1),
                Self::module("conv2", |s: &Self| &s.conv2, |s: &mut Self| &mut s.conv2),
                Self::module("bn2", |s: &Self| &s.bn2, |s: &mut Self| &mut s.bn2),
                sc.into_iter().collect::<Vec<_>>(),
                sc_wide.into_iter().collect::<Vec<_>>(),
            ),
            move |(conv1, bn1, conv2, bn2, sc, sc_wide)| Block {
                kind,
                conv1,
                bn1,
                conv2,
                bn2,
                shortcut: sc.into_iter().next().or(sc_wide
                    .into_iter()
                    .next()
                    .map(|conv| Shortcut { conv, bn: None })),
            },
        )
    }
}

impl<D: OpsDevice> Block<D> {
    /// Runs the block's body (see [`BlockKind`]).
    pub fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Map4<D, T> {
        match self.kind {
            BlockKind::Basic => self.forward_basic(x, mode),
            BlockKind::PreAct | BlockKind::Wide => self.forward_preact(x, mode),
        }
    }
}

impl<D: Device<f32>> Block<D> {
    /// `(C, H, W)` out for `(C, H, W)` in.
    pub fn out_shape(&self, s: (usize, usize, usize)) -> (usize, usize, usize) {
        let (c, h, w) = conv_out_shape(&self.conv1, s);
        conv_out_shape(&self.conv2, (c, h, w))
    }
}

/// `(C, H, W)` after a convolution.
pub fn conv_out_shape<D: Storage<f32>>(
    conv: &Conv2d<D>,
    (_, h, w): (usize, usize, usize),
) -> (usize, usize, usize) {
    let (o, _, kh, kw) = *conv.weight.shape();
    let cfg = conv.cfg;
    let f =
        |x: usize, k: usize| (x + 2 * cfg.padding - cfg.dilation * (k - 1) - 1) / cfg.stride + 1;
    (o, f(h, kh), f(w, kw))
}

/// One convolution + BatchNorm + ReLU of a VGG block; saved as entries `3j` (conv, with bias)
/// and `3j+1` (BN) of the block's `nn.Sequential` (`3j+2` is the ReLU).
#[derive(Debug, Clone)]
pub struct VggUnit<D: Storage<E>, E: Dtype = f32> {
    pub conv: Conv2dBiased<D, E>,
    pub bn: BatchNorm2d<D, E>,
}

/// How a stage names its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StageKind {
    /// `0`, `1`, ... (`layer1.0.conv1.weight`).
    #[default]
    Residual,
    /// `layer.0`, `layer.1`, ... (WRN's `block1.layer.0.conv1.weight`).
    Wide,
    /// VGG's `nn.Sequential`: `0` (conv), `1` (BN), `3`, `4`, ...
    Vgg,
}

/// One stage of a backbone: residual [`Block`]s, or VGG units preceded by an optional 2×2 max
/// pool. Its output is the stage output `F_l`.
#[derive(Debug, Clone)]
pub struct Stage<D: Storage<E>, E: Dtype = f32> {
    pub kind: StageKind,
    pub blocks: Vec<Block<D, E>>,
    pub units: Vec<VggUnit<D, E>>,
    /// 2×2 max pool (stride 2) on the stage's input (VGG stages 2–4).
    pub pool_before: bool,
}

impl<D: Device<f32>> TensorCollection<f32, D> for Stage<D> {
    type To<E2: Dtype, D2: Device<E2>> = Stage<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let (kind, nb, nu, pool_before) = peek(visitor, |s: &Self| {
            (s.kind, s.blocks.len(), s.units.len(), s.pool_before)
        })?
        .unwrap_or_default();
        let block_names: Vec<String> = (0..nb)
            .map(|i| {
                if kind == StageKind::Wide {
                    format!("layer.{i}")
                } else {
                    i.to_string()
                }
            })
            .collect();
        let conv_names: Vec<String> = (0..nu).map(|j| (3 * j).to_string()).collect();
        let bn_names: Vec<String> = (0..nu).map(|j| (3 * j + 1).to_string()).collect();
        visitor.visit_fields(
            (
                block_names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        Self::module(
                            n,
                            move |s: &Self| &s.blocks[i],
                            move |s: &mut Self| &mut s.blocks[i],
                        )
                    })
                    .collect::<Vec<_>>(),
                conv_names
                    .iter()
                    .enumerate()
                    .map(|(j, n)| {
                        Self::module(
                            n,
                            move |s: &Self| &s.units[j].conv,
                            move |s: &mut Self| &mut s.units[j].conv,
                        )
                    })
                    .collect::<Vec<_>>(),
                bn_names
                    .iter()
                    .enumerate()
                    .map(|(j, n)| {
                        Self::module(
                            n,
                            move |s: &Self| &s.units[j].bn,
                            move |s: &mut Self| &mut s.units[j].bn,
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            move |(blocks, convs, bns)| Stage {
                kind,
                blocks,
                units: convs
                    .into_iter()
                    .zip(bns)
                    .map(|(conv, bn)| VggUnit { conv, bn })
                    .collect(),
                pool_before,
            },
        )
    }
}

impl<D: OpsDevice> Stage<D> {
    /// `[b, C_in, H, W] → F_l`.
    pub fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Map4<D, T> {
        let mut x = if self.pool_before {
            max_pool2d(x, Pool2dCfg::new(2, 2, 0))
        } else {
            x
        };
        for b in &mut self.blocks {
            x = b.forward(x, mode);
        }
        for u in &mut self.units {
            x = u.forward(x, mode);
        }
        x
    }
}

impl<D: Device<f32>> Stage<D> {
    /// `(C, H, W)` of `F_l` for `(C, H, W)` in.
    pub fn out_shape(&self, s: (usize, usize, usize)) -> (usize, usize, usize) {
        let mut s = if self.pool_before {
            (s.0, s.1 / 2, s.2 / 2)
        } else {
            s
        };
        for b in &self.blocks {
            s = b.out_shape(s);
        }
        for u in &self.units {
            s = (u.conv.weight.shape().0, s.1, s.2);
        }
        s
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        match (self.blocks.last(), self.units.last()) {
            (Some(b), _) => b.conv2.weight.shape().0,
            (None, Some(u)) => u.conv.weight.shape().0,
            (None, None) => 0,
        }
    }

    /// Names and modules of the stage's children, for layer tables: `(name, in→out shape fn)`.
    pub fn child_names(&self) -> Vec<String> {
        match self.kind {
            StageKind::Residual => (0..self.blocks.len()).map(|i| i.to_string()).collect(),
            StageKind::Wide => (0..self.blocks.len())
                .map(|i| format!("layer.{i}"))
                .collect(),
            StageKind::Vgg => (0..self.units.len())
                .map(|j| format!("{}", 3 * j))
                .collect(),
        }
    }
}
