//! MFEF — Multi-scale Feature Extraction and Fusion (`METHODS.md`, mfef; a reconstruction):
//! FFL with two modules per student between its last-stage map `F_k` and the fusion.
//!
//! 1. [`MultiScale`] (Res2Net-style): `X = ReLU(BN(conv1×1(F_k)))` (`C → C`), split into 4
//!    groups of `C/4`; `y_1 = x_1`, `y_2 = K_2(x_2)`, `y_i = K_i(x_i + y_{i−1})` (i = 3, 4), each
//!    `K_i` conv3×3 (padding 1, no bias) + BN + ReLU at `C/4`;
//!    `Y = BN(conv1×1(concat(y_1..y_4))) + F_k`. Convolutions are bias-free (each is followed
//!    by BN).
//! 2. [`DualAttention`] (CBAM form): `M_c = sigmoid(MLP(avgpool Y) + MLP(maxpool Y))`, one MLP
//!    `C → C/16 → C` with ReLU shared by both poolings; `Y' = M_c ⊙ Y`;
//!    `M_s = sigmoid(conv7×7([mean_c Y'; max_c Y']))` (2 → 1 channels, padding 3);
//!    `Y'' = M_s ⊙ Y'`. Choices METHODS.md leaves open, taken from CBAM's reference code
//!    (Jongchan/attention-module): the MLP's linear layers have biases; the 7×7 conv has no
//!    bias. CBAM's code follows that conv with a BatchNorm(1), which METHODS.md's formula does
//!    not have, so it is left out; the channel order is METHODS.md's (mean, max).
//!
//! The fusion (FFL's) takes `concat_k Y''_k`. All MFEF modules and the fusion are
//! training-only. Tensor names: the students', `mfef.{k}.extract.{conv_in,bn_in,convs.{0,1,2},
//! bns.{0,1,2},conv_out,bn_out}`, `mfef.{k}.attention.{mlp.0,mlp.2,spatial}`, `fusion.*`.

use crate::arch::ModelError;
use crate::collection::{peek, List};
use crate::heads::ffl::{check_students, forward_students, students_field_name, Fusion};
use crate::layers::{bn, conv_bn, fork, gap, global_max, Linear, Map4, Mode};
use crate::model::Model;
use crate::network::Network;
use crate::outputs::Outputs;
use dfdx::nn::{Module, ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use kd_ops::{concat_channels, split_channels, BatchNorm2d, Conv2d, Conv2dCfg, OpsDevice, Shape4};

/// Groups of the multi-scale extraction (`s = 4`).
pub const SCALES: usize = 4;
/// CBAM's channel reduction.
pub const REDUCTION: usize = 16;

/// Multi-scale extraction (see the module docs).
#[derive(Debug, Clone)]
pub struct MultiScale<D: Storage<E>, E: Dtype = f32> {
    pub conv_in: Conv2d<D, E>,
    pub bn_in: BatchNorm2d<D, E>,
    /// `K_2, K_3, K_4`.
    pub convs: List<Conv2d<D, E>>,
    pub bns: List<BatchNorm2d<D, E>>,
    pub conv_out: Conv2d<D, E>,
    pub bn_out: BatchNorm2d<D, E>,
}

impl<D: Device<f32>> MultiScale<D> {
    pub fn new(dev: &D, c: usize) -> Self {
        let g = c / SCALES;
        Self {
            conv_in: Conv2d::new(dev, c, c, 1, Conv2dCfg::default()),
            bn_in: BatchNorm2d::new(dev, c).with_relu(),
            convs: List::new(
                (1..SCALES)
                    .map(|_| Conv2d::new(dev, g, g, 3, Conv2dCfg::new(1, 1)))
                    .collect(),
            ),
            bns: List::new(
                (1..SCALES)
                    .map(|_| BatchNorm2d::new(dev, g).with_relu())
                    .collect(),
            ),
            conv_out: Conv2d::new(dev, c, c, 1, Conv2dCfg::default()),
            bn_out: BatchNorm2d::new(dev, c),
        }
    }
}

impl<D: OpsDevice> MultiScale<D> {
    /// `F_k → Y` (same shape).
    pub fn forward<T: Tape<f32, D>>(&mut self, f: Map4<D, T>, mode: Mode) -> Map4<D, T> {
        let (f, f_skip) = fork(f);
        let c = f.shape().1;
        let x = conv_bn(&self.conv_in, &mut self.bn_in, f, mode);
        let mut xs = split_channels(x, &[c / SCALES; SCALES]).into_iter();
        let mut ys = vec![xs.next().expect("x_1")];
        let mut prev: Option<Map4<D, T>> = None;
        for (i, xi) in xs.enumerate() {
            let inp = match prev.take() {
                Some(p) => xi + p,
                None => xi,
            };
            let y = bn(
                &mut self.bns.items[i],
                self.convs.items[i].forward(inp),
                mode,
            );
            let (y, y_next) = fork(y);
            ys.push(y);
            prev = Some(y_next);
        }
        let y = concat_channels(ys);
        let y = conv_bn(&self.conv_out, &mut self.bn_out, y, mode);
        // `prev` (an empty-tape handle of y_4) is consumed by nothing further.
        drop(prev);
        y + f_skip
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for MultiScale<D> {
    type To<E2: Dtype, D2: Device<E2>> = MultiScale<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module(
                    "conv_in",
                    |s: &Self| &s.conv_in,
                    |s: &mut Self| &mut s.conv_in,
                ),
                Self::module("bn_in", |s: &Self| &s.bn_in, |s: &mut Self| &mut s.bn_in),
                Self::module("convs", |s: &Self| &s.convs, |s: &mut Self| &mut s.convs),
                Self::module("bns", |s: &Self| &s.bns, |s: &mut Self| &mut s.bns),
                Self::module(
                    "conv_out",
                    |s: &Self| &s.conv_out,
                    |s: &mut Self| &mut s.conv_out,
                ),
                Self::module("bn_out", |s: &Self| &s.bn_out, |s: &mut Self| &mut s.bn_out),
            ),
            |(conv_in, bn_in, convs, bns, conv_out, bn_out)| MultiScale {
                conv_in,
                bn_in,
                convs,
                bns,
                conv_out,
                bn_out,
            },
        )
    }
}

/// CBAM-form channel-then-spatial attention (see the module docs).
#[derive(Debug, Clone)]
pub struct DualAttention<D: Storage<E>, E: Dtype = f32> {
    pub mlp1: Linear<D, E>,
    pub mlp2: Linear<D, E>,
    pub spatial: Conv2d<D, E>,
}

impl<D: Device<f32>> DualAttention<D> {
    pub fn new(dev: &D, c: usize) -> Self {
        let r = (c / REDUCTION).max(1);
        Self {
            mlp1: Linear::new(dev, c, r),
            mlp2: Linear::new(dev, r, c),
            spatial: Conv2d::new(dev, 2, 1, 7, Conv2dCfg::new(1, 3)),
        }
    }
}

impl<D: OpsDevice> DualAttention<D> {
    /// `Y → Y''` (same shape).
    pub fn forward<T: Tape<f32, D>>(&self, y: Map4<D, T>) -> Map4<D, T> {
        let shape: Shape4 = *y.shape();
        let (b, _, h, w) = shape;
        let (y, ya) = fork(y);
        let (y, ym) = fork(y);
        let a = self.mlp2.forward(self.mlp1.forward(gap(ya)).relu());
        let m = self.mlp2.forward(self.mlp1.forward(global_max(ym)).relu());
        let mc = (a + m)
            .sigmoid()
            .broadcast_like::<Shape4, Axes2<2, 3>>(&shape);
        let y1 = y * mc;
        let (y1, y1a) = fork(y1);
        let (y1, y1b) = fork(y1);
        let mean_c = y1a
            .mean::<(usize, usize, usize), Axis<1>>()
            .reshape_like(&(b, 1, h, w));
        let max_c = y1b
            .max::<(usize, usize, usize), Axis<1>>()
            .reshape_like(&(b, 1, h, w));
        let ms = self
            .spatial
            .forward(concat_channels(vec![mean_c, max_c]))
            .sigmoid();
        let ms = ms
            .reshape_like(&(b, h, w))
            .broadcast_like::<Shape4, Axis<1>>(&shape);
        y1 * ms
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for DualAttention<D> {
    type To<E2: Dtype, D2: Device<E2>> = DualAttention<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("mlp.0", |s: &Self| &s.mlp1, |s: &mut Self| &mut s.mlp1),
                Self::module("mlp.2", |s: &Self| &s.mlp2, |s: &mut Self| &mut s.mlp2),
                Self::module(
                    "spatial",
                    |s: &Self| &s.spatial,
                    |s: &mut Self| &mut s.spatial,
                ),
            ),
            |(mlp1, mlp2, spatial)| DualAttention {
                mlp1,
                mlp2,
                spatial,
            },
        )
    }
}

/// One student's MFEF modules.
#[derive(Debug, Clone)]
pub struct MfefBlock<D: Storage<E>, E: Dtype = f32> {
    pub extract: MultiScale<D, E>,
    pub attention: DualAttention<D, E>,
}

impl<D: Device<f32>> MfefBlock<D> {
    pub fn new(dev: &D, c: usize) -> Self {
        Self {
            extract: MultiScale::new(dev, c),
            attention: DualAttention::new(dev, c),
        }
    }
}

impl<D: OpsDevice> MfefBlock<D> {
    /// `F_k → Y''_k`.
    pub fn forward<T: Tape<f32, D>>(&mut self, f: Map4<D, T>, mode: Mode) -> Map4<D, T> {
        let y = self.extract.forward(f, mode);
        self.attention.forward(y)
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for MfefBlock<D> {
    type To<E2: Dtype, D2: Device<E2>> = MfefBlock<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module(
                    "extract",
                    |s: &Self| &s.extract,
                    |s: &mut Self| &mut s.extract,
                ),
                Self::module(
                    "attention",
                    |s: &Self| &s.attention,
                    |s: &mut Self| &mut s.attention,
                ),
            ),
            |(extract, attention)| MfefBlock { extract, attention },
        )
    }
}

/// Students with MFEF blocks and FFL's fusion.
#[derive(Debug, Clone)]
pub struct Mfef<D: Storage<E>, E: Dtype = f32> {
    /// One network with `N` heads, or `N` one-head networks.
    pub nets: List<Network<D, E>>,
    /// One block per student.
    pub blocks: List<MfefBlock<D, E>>,
    pub fusion: Fusion<D, E>,
}

impl<D: Device<f32>> Mfef<D> {
    pub fn new(dev: &D, nets: Vec<Network<D>>) -> Result<Self, ModelError> {
        let (n, c, classes) = check_students("mfef", &nets)?;
        if c % SCALES != 0 || c < REDUCTION {
            return Err(ModelError::Invalid(format!(
                "mfef needs a last-stage width divisible by 4 and at least 16, got {c}"
            )));
        }
        Ok(Self {
            blocks: List::new((0..n).map(|_| MfefBlock::new(dev, c)).collect()),
            nets: List::new(nets),
            fusion: Fusion::new(dev, n, c, classes),
        })
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Mfef<D> {
    type To<E2: Dtype, D2: Device<E2>> = Mfef<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let n = peek(visitor, |s: &Self| s.nets.len())?.unwrap_or(0);
        let single = (n == 1).then(|| {
            Self::module(
                "",
                |s: &Self| &s.nets.items[0],
                |s: &mut Self| &mut s.nets.items[0],
            )
        });
        let list = (n != 1).then(|| {
            Self::module(
                students_field_name(n),
                |s: &Self| &s.nets,
                |s: &mut Self| &mut s.nets,
            )
        });
        visitor.visit_fields(
            (
                single.into_iter().collect::<Vec<_>>(),
                list.into_iter().collect::<Vec<_>>(),
                Self::module("mfef", |s: &Self| &s.blocks, |s: &mut Self| &mut s.blocks),
                Self::module("fusion", |s: &Self| &s.fusion, |s: &mut Self| &mut s.fusion),
            ),
            |(single, list, blocks, fusion)| Mfef {
                nets: list.into_iter().next().unwrap_or(List::new(single)),
                blocks,
                fusion,
            },
        )
    }
}

/// Outputs: `logits`/`embeddings` per student, `features` of student 0, `fused_logits` (from
/// the MFEF-refined maps).
impl<D: OpsDevice> Model<D> for Mfef<D> {
    fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Outputs<D, T> {
        let (features, heads) = forward_students(&mut self.nets.items, x, mode);
        let maps = heads
            .iter()
            .zip(&mut self.blocks.items)
            .map(|(h, blk)| blk.forward(h.feature.retaped::<T>(), mode))
            .collect();
        let fused = self.fusion.forward(maps, mode);
        let mut out = Outputs::empty();
        out.features = features.into_iter().map(|f| f.retaped::<T>()).collect();
        for h in heads {
            out.embeddings.push(h.embedding.retaped::<T>());
            out.logits.push(h.logits);
        }
        out.fused_logits = Some(fused);
        out
    }

    fn students(&self) -> Vec<Network<D>> {
        self.nets.items.iter().flat_map(|n| n.students()).collect()
    }
}
