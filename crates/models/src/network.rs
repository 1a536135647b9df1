//! [`Network`]: one backbone of `ARCHITECTURES.md` — stem, shared stages, and one or more
//! heads (last stage + optional final BN + classifier). One head is the plain network;
//! `branches = N` heads are the multi-branch students of ONE, OKDDip, FFL and MFEF ("the last
//! stage and the classifier duplicated N times, the stem and the other stages shared").
//!
//! # Tensor names
//! With one head every tensor has its PyTorch path (`conv1.weight`, `bn1.running_mean`,
//! `layer1.0.conv1.weight`, `layer1.0.shortcut.0.weight`, `fc.weight`; see each family's
//! module). With `N > 1` heads the duplicated parts live under `branches.{i}.` (e.g.
//! `branches.2.layer3.0.conv1.weight`, `branches.2.fc.bias`). [`Network::student`] returns one
//! branch as a plain network with plain names.
//!
//! # Tapes
//! [`Network::forward`] puts the tape of the stem, the shared stages and head 0 on head 0's
//! logits; head `i > 0`'s logits carry only head `i`'s ops; stage outputs and embeddings are
//! returned tape-free (same tensor ids: use them with `.retaped::<T>()`, gradients are keyed by
//! id and accumulate). The backward pass of a forward is the merge of the tapes of *all* its
//! logits (kd-losses' `LossInputs` merges every input's tape).

use crate::arch::ArchSpec;
use crate::collection::peek;
use crate::layers::{bn, conv_bn, gap, Linear, Map4, Mat, Mode};
use crate::outputs::Outputs;
use crate::stage::{conv_out_shape, Stage};
use dfdx::nn::{Module, ModuleVisitor, NumParams, TensorCollection};
use dfdx::prelude::*;
use kd_ops::{BatchNorm2d, Conv2d, OpsDevice};

/// The duplicated part of a network: its last stage, the final BN + ReLU (WRN only) and the
/// classifier (global average pool → linear).
#[derive(Debug, Clone)]
pub struct Head<D: Storage<E>, E: Dtype = f32> {
    pub stage: Stage<D, E>,
    pub bn: Option<BatchNorm2d<D, E>>,
    pub fc: Linear<D, E>,
}

/// A backbone with one or more heads (see the module docs).
#[derive(Debug, Clone)]
pub struct Network<D: Storage<E>, E: Dtype = f32> {
    pub spec: ArchSpec,
    pub classes: usize,
    pub in_channels: usize,
    /// Stem convolution (3×3, stride 1); absent for VGG, whose first block starts at the input.
    pub conv1: Option<Conv2d<D, E>>,
    /// Stem BN + ReLU (ResNets); absent for WRN and VGG.
    pub bn1: Option<BatchNorm2d<D, E>>,
    /// Shared stages `1..L−1`.
    pub stages: Vec<Stage<D, E>>,
    /// One head per branch (stage `L`, final BN, classifier).
    pub heads: Vec<Head<D, E>>,
}

/// What one head computes.
pub struct HeadOutput<D: Storage<f32>, T> {
    /// `F_L` `[b, C_L, H_L, W_L]`, tape-free.
    pub feature: Map4<D>,
    /// The pooled embedding `e` `[b, C_L]`, tape-free.
    pub embedding: Mat<D>,
    /// The logits `z` `[b, K]`, with the tape (see the module docs).
    pub logits: Mat<D, T>,
}

/// A forward pass of a [`Network`].
pub struct NetOutput<D: Storage<f32>, T> {
    /// `F_1..F_{L−1}` (shared stages), tape-free.
    pub shared: Vec<Map4<D>>,
    /// One entry per head.
    pub heads: Vec<HeadOutput<D, T>>,
}

impl<D: Device<f32>, T: Tape<f32, D>> NetOutput<D, T> {
    /// `F_1..F_L` as seen by head `i` (shared stages, then head `i`'s last stage), tape-free.
    pub fn features(&self, i: usize) -> Vec<Map4<D>> {
        let mut f = self.shared.clone();
        f.push(self.heads[i].feature.clone());
        f
    }

    /// The outputs in kd-losses' `LossInputs` layout: `logits`/`embeddings` one per head,
    /// `features` = `F_1..F_L` of head 0 (empty-tape handles).
    pub fn into_outputs(self) -> Outputs<D, T> {
        let features = self
            .features(0)
            .into_iter()
            .map(|f| f.retaped::<T>())
            .collect();
        let mut out = Outputs::empty();
        out.features = features;
        for h in self.heads {
            out.embeddings.push(h.embedding.retaped::<T>());
            out.logits.push(h.logits);
        }
        out
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Network<D> {
    type To<E2: Dtype, D2: Device<E2>> = Network<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let (spec, classes, in_channels, has_conv, has_bn, ns, nh, head_bn) =
            peek(visitor, |s: &Self| {
                (
                    s.spec.clone(),
                    s.classes,
                    s.in_channels,
                    s.conv1.is_some(),
                    s.bn1.is_some(),
                    s.stages.len(),
                    s.heads.len(),
                    s.heads.first().is_some_and(|h| h.bn.is_some()),
                )
            })?
            .unwrap_or_default();
        let stage_names: Vec<String> = (0..ns).map(|l| spec.stage_name(l)).collect();
        let prefix = |i: usize| {
            if nh == 1 {
                String::new()
            } else {
                format!("branches.{i}.")
            }
        };
        let hstage_names: Vec<String> = (0..nh)
            .map(|i| format!("{}{}", prefix(i), spec.stage_name(ns)))
            .collect();
        let hbn_names: Vec<String> = (0..nh).map(|i| format!("{}bn1", prefix(i))).collect();
        let hfc_names: Vec<String> = (0..nh)
            .map(|i| format!("{}{}", prefix(i), spec.fc_name()))
            .collect();
        let conv = has_conv.then(|| {
            Self::module(
                "conv1",
                |s: &Self| s.conv1.as_ref().expect("conv1"),
                |s: &mut Self| s.conv1.as_mut().expect("conv1"),
            )
        });
        let stem_bn = has_bn.then(|| {
            Self::module(
                "bn1",
                |s: &Self| s.bn1.as_ref().expect("bn1"),
                |s: &mut Self| s.bn1.as_mut().expect("bn1"),
            )
        });
        visitor.visit_fields(
            (
                conv.into_iter().collect::<Vec<_>>(),
                stem_bn.into_iter().collect::<Vec<_>>(),
                stage_names
                    .iter()
                    .enumerate()
                    .map(|(l, n)| {
                        Self::module(
                            n,
                            move |s: &Self| &s.stages[l],
                            move |s: &mut Self| &mut s.stages[l],
                        )
                    })
                    .collect::<Vec<_>>(),
                hstage_names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        Self::module(
                            n,
                            move |s: &Self| &s.heads[i].stage,
                            move |s: &mut Self| &mut s.heads[i].stage,
                        )
                    })
                    .collect::<Vec<_>>(),
                hbn_names
                    .iter()
                    .enumerate()
                    .filter(|_| head_bn)
                    .map(|(i, n)| {
                        Self::module(
                            n,
                            move |s: &Self| s.heads[i].bn.as_ref().expect("final bn"),
                            move |s: &mut Self| s.heads[i].bn.as_mut().expect("final bn"),
                        )
                    })
                    .collect::<Vec<_>>(),
                hfc_names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        Self::module(
                            n,
                            move |s: &Self| &s.heads[i].fc,
                            move |s: &mut Self| &mut s.heads[i].fc,
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            move |(conv, stem_bn, stages, hstages, hbns, hfcs)| {
                let mut hbns = hbns.into_iter();
                Network {
                    spec,
                    classes,
                    in_channels,
                    conv1: conv.into_iter().next(),
                    bn1: stem_bn.into_iter().next(),
                    stages,
                    heads: hstages
                        .into_iter()
                        .zip(hfcs)
                        .map(|(stage, fc)| Head {
                            stage,
                            bn: hbns.next(),
                            fc,
                        })
                        .collect(),
                }
            },
        )
    }
}

impl<D: OpsDevice> Network<D> {
    /// The stem and the shared stages: `F_1..F_{L−1}` (the last one carries the tape).
    pub fn forward_trunk<T: Tape<f32, D>>(
        &mut self,
        x: Map4<D, T>,
        mode: Mode,
    ) -> (Vec<Map4<D>>, Map4<D, T>) {
        let mut x = match (&self.conv1, &mut self.bn1) {
            (Some(c), Some(b)) => conv_bn(c, b, x, mode),
            (Some(c), None) => c.forward(x),
            (None, Some(b)) => bn(b, x, mode),
            (None, None) => x,
        };
        let mut shared = Vec::with_capacity(self.stages.len());
        for s in &mut self.stages {
            let (y, tape) = s.forward(x, mode).split_tape();
            shared.push(y.clone());
            x = y.put_tape(tape);
        }
        (shared, x)
    }

    /// One head on the trunk output: `F_L`, `e = GAP(F_L)`, `z = fc(e)`.
    pub fn forward_head<T: Tape<f32, D>>(
        &mut self,
        i: usize,
        x: Map4<D, T>,
        mode: Mode,
    ) -> HeadOutput<D, T> {
        let h = &mut self.heads[i];
        let mut f = h.stage.forward(x, mode);
        if let Some(b) = &mut h.bn {
            f = bn(b, f, mode);
        }
        let (f, tape) = f.split_tape();
        let (e, tape) = gap(f.clone().put_tape(tape)).split_tape();
        let logits = h.fc.forward(e.clone().put_tape(tape));
        HeadOutput {
            feature: f,
            embedding: e,
            logits,
        }
    }

    /// Every head on the trunk output `x`: head 0 gets `x`'s tape, the others empty-tape
    /// handles.
    pub fn forward_heads<T: Tape<f32, D>>(
        &mut self,
        x: Map4<D, T>,
        mode: Mode,
    ) -> Vec<HeadOutput<D, T>> {
        let (x, tape) = x.split_tape();
        let mut tape = Some(tape);
        (0..self.heads.len())
            .map(|i| {
                let inp = x.clone().put_tape(tape.take().unwrap_or_default());
                self.forward_head(i, inp, mode)
            })
            .collect()
    }

    /// The whole network in `mode` (see the module docs for where the tape goes).
    pub fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> NetOutput<D, T> {
        let (shared, x) = self.forward_trunk(x, mode);
        let heads = self.forward_heads(x, mode);
        NetOutput { shared, heads }
    }

    /// Evaluation forward (running statistics; `self` is not modified). Runs on a shallow copy
    /// (tensors are reference-counted and keep their ids, so gradients still reach the
    /// parameters when `x` carries a tape).
    pub fn forward_eval<T: Tape<f32, D>>(&self, x: Map4<D, T>) -> NetOutput<D, T> {
        self.clone().forward(x, Mode::Eval)
    }
}

/// One row of a layer table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    /// The module's path (the prefix of its tensor names).
    pub name: String,
    /// Output shape without the batch dimension.
    pub shape: Vec<usize>,
    /// Trainable parameters of the module.
    pub params: usize,
}

impl<D: Device<f32>> Network<D> {
    /// Trainable parameters (BN weight and bias, not running statistics).
    pub fn num_params(&self) -> usize {
        self.num_trainable_params()
    }

    /// Head `i` with the shared trunk, as a plain one-head network (PyTorch names, the
    /// architecture's exact parameter count): the student kept at inference.
    pub fn student(&self, i: usize) -> Network<D> {
        let mut n = self.clone();
        n.heads = vec![self.heads[i].clone()];
        n
    }

    /// Every head as a plain network.
    pub fn students(&self) -> Vec<Network<D>> {
        (0..self.heads.len()).map(|i| self.student(i)).collect()
    }

    /// `(C, H, W)` of every stage output `F_1..F_L` for an `(H, W)` input.
    pub fn stage_shapes(&self, (h, w): (usize, usize)) -> Vec<(usize, usize, usize)> {
        let mut s = (self.in_channels, h, w);
        if let Some(c) = &self.conv1 {
            s = conv_out_shape(c, s);
        }
        let mut out = Vec::new();
        for st in self
            .stages
            .iter()
            .chain(std::iter::once(&self.heads[0].stage))
        {
            s = st.out_shape(s);
            out.push(s);
        }
        out
    }

    /// A layer table for an `(H, W)` input: stem, every block (VGG: every conv/BN), final BN,
    /// pooling and classifier of every head.
    pub fn layer_table(&self, (h, w): (usize, usize)) -> Vec<LayerRow> {
        let mut rows = Vec::new();
        let mut s = (self.in_channels, h, w);
        let v = |s: (usize, usize, usize)| vec![s.0, s.1, s.2];
        if let Some(c) = &self.conv1 {
            s = conv_out_shape(c, s);
            rows.push(LayerRow {
                name: "conv1".into(),
                shape: v(s),
                params: c.num_trainable_params(),
            });
        }
        if let Some(b) = &self.bn1 {
            rows.push(LayerRow {
                name: "bn1".into(),
                shape: v(s),
                params: b.num_trainable_params(),
            });
        }
        let stage_rows = |rows: &mut Vec<LayerRow>,
                          prefix: &str,
                          st: &Stage<D>,
                          mut s: (usize, usize, usize)| {
            if st.pool_before {
                s = (s.0, s.1 / 2, s.2 / 2);
                rows.push(LayerRow {
                    name: format!("{prefix}(maxpool 2×2)"),
                    shape: v(s),
                    params: 0,
                });
            }
            for (name, b) in st.child_names().iter().zip(&st.blocks) {
                s = b.out_shape(s);
                rows.push(LayerRow {
                    name: format!("{prefix}.{name}"),
                    shape: v(s),
                    params: b.num_trainable_params(),
                });
            }
            for (j, u) in st.units.iter().enumerate() {
                s = (u.conv.weight.shape().0, s.1, s.2);
                rows.push(LayerRow {
                    name: format!("{prefix}.{}", 3 * j),
                    shape: v(s),
                    params: u.conv.num_trainable_params(),
                });
                rows.push(LayerRow {
                    name: format!("{prefix}.{}", 3 * j + 1),
                    shape: v(s),
                    params: u.bn.num_trainable_params(),
                });
            }
            s
        };
        for (l, st) in self.stages.iter().enumerate() {
            s = stage_rows(&mut rows, &self.spec.stage_name(l), st, s);
        }
        let nh = self.heads.len();
        for (i, head) in self.heads.iter().enumerate() {
            let p = if nh == 1 {
                String::new()
            } else {
                format!("branches.{i}.")
            };
            let hs = stage_rows(
                &mut rows,
                &format!("{p}{}", self.spec.stage_name(self.stages.len())),
                &head.stage,
                s,
            );
            if let Some(b) = &head.bn {
                rows.push(LayerRow {
                    name: format!("{p}bn1"),
                    shape: v(hs),
                    params: b.num_trainable_params(),
                });
            }
            rows.push(LayerRow {
                name: format!("{p}(global avg pool)"),
                shape: vec![hs.0],
                params: 0,
            });
            rows.push(LayerRow {
                name: format!("{p}{}", self.spec.fc_name()),
                shape: vec![head.fc.out_features()],
                params: head.fc.num_trainable_params(),
            });
        }
        rows
    }
}
