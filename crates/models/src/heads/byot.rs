//! BYOT — Be Your Own Teacher (`METHODS.md`, byot; `ARCHITECTURES.md`, Exits): an exit after
//! every non-final stage `i`, a bottleneck that brings `F_i` to the final stage's width `C_L`
//! and resolution — conv1×1 → `C_L/4`, BN, ReLU; conv k×k stride k (no padding,
//! `k = H_i / H_L`), BN, ReLU; conv1×1 → `C_L`, BN, ReLU — then global average pooling (`e_i`)
//! and a linear classifier (`z_i`). The deepest exit is the network's own head.
//!
//! Tensor names: the network's plain names, and
//! `exits.{i}.bottleneck.{0,1,3,4,6,7}` (conv, BN, conv, BN, conv, BN of the
//! `nn.Sequential` with ReLUs at 2, 5, 8), `exits.{i}.fc`.

use crate::arch::ModelError;
use crate::collection::List;
use crate::layers::{conv_bn, gap, Linear, Map4, Mat, Mode};
use crate::model::Model;
use crate::network::Network;
use crate::outputs::Outputs;
use dfdx::nn::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use kd_ops::{BatchNorm2d, Conv2d, Conv2dCfg, OpsDevice};

/// One shallow exit.
#[derive(Debug, Clone)]
pub struct Exit<D: Storage<E>, E: Dtype = f32> {
    pub conv1: Conv2d<D, E>,
    pub bn1: BatchNorm2d<D, E>,
    pub conv2: Conv2d<D, E>,
    pub bn2: BatchNorm2d<D, E>,
    pub conv3: Conv2d<D, E>,
    pub bn3: BatchNorm2d<D, E>,
    pub fc: Linear<D, E>,
}

impl<D: Device<f32>> Exit<D> {
    /// An exit from a `in_c`-channel map to `out_c` channels, downsampling by `k`.
    pub fn new(dev: &D, in_c: usize, out_c: usize, k: usize, classes: usize) -> Self {
        let mid = (out_c / 4).max(1);
        Self {
            conv1: Conv2d::new(dev, in_c, mid, 1, Conv2dCfg::default()),
            bn1: BatchNorm2d::new(dev, mid).with_relu(),
            conv2: Conv2d::new(dev, mid, mid, k, Conv2dCfg::new(k, 0)),
            bn2: BatchNorm2d::new(dev, mid).with_relu(),
            conv3: Conv2d::new(dev, mid, out_c, 1, Conv2dCfg::default()),
            bn3: BatchNorm2d::new(dev, out_c).with_relu(),
            fc: Linear::new(dev, out_c, classes),
        }
    }
}

impl<D: OpsDevice> Exit<D> {
    /// `F_i → (e_i tape-free, z_i with the tape)`.
    pub fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> (Mat<D>, Mat<D, T>) {
        let x = conv_bn(&self.conv1, &mut self.bn1, x, mode);
        let x = conv_bn(&self.conv2, &mut self.bn2, x, mode);
        let x = conv_bn(&self.conv3, &mut self.bn3, x, mode);
        let (e, tape) = gap(x).split_tape();
        let z = self.fc.forward(e.clone().put_tape(tape));
        (e, z)
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Exit<D> {
    type To<E2: Dtype, D2: Device<E2>> = Exit<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                (
                    Self::module(
                        "bottleneck.0",
                        |s: &Self| &s.conv1,
                        |s: &mut Self| &mut s.conv1,
                    ),
                    Self::module("bottleneck.1", |s: &Self| &s.bn1, |s: &mut Self| &mut s.bn1),
                    Self::module(
                        "bottleneck.3",
                        |s: &Self| &s.conv2,
                        |s: &mut Self| &mut s.conv2,
                    ),
                    Self::module("bottleneck.4", |s: &Self| &s.bn2, |s: &mut Self| &mut s.bn2),
                    Self::module(
                        "bottleneck.6",
                        |s: &Self| &s.conv3,
                        |s: &mut Self| &mut s.conv3,
                    ),
                    Self::module("bottleneck.7", |s: &Self| &s.bn3, |s: &mut Self| &mut s.bn3),
                ),
                Self::module("fc", |s: &Self| &s.fc, |s: &mut Self| &mut s.fc),
            ),
            |((conv1, bn1, conv2, bn2, conv3, bn3), fc)| Exit {
                conv1,
                bn1,
                conv2,
                bn2,
                conv3,
                bn3,
                fc,
            },
        )
    }
}

/// A network with BYOT exits.
#[derive(Debug, Clone)]
pub struct Byot<D: Storage<E>, E: Dtype = f32> {
    /// The student (one head).
    pub net: Network<D, E>,
    /// One exit per non-final stage, shallow → deep.
    pub exits: List<Exit<D, E>>,
}

impl<D: Device<f32>> Byot<D> {
    /// Exits for `net` (one head) built for `size × size` inputs: the stride of exit `i` is
    /// `H_i / H_L`, so the exit's output matches the deepest stage's resolution at that size.
    pub fn new(dev: &D, net: Network<D>, size: usize) -> Result<Self, ModelError> {
        if net.heads.len() != 1 {
            return Err(ModelError::Invalid(format!(
                "byot needs a one-head network, got {} heads",
                net.heads.len()
            )));
        }
        let shapes = net.stage_shapes((size, size));
        let (cl, hl, _) = *shapes.last().expect("stages");
        let exits = shapes[..shapes.len() - 1]
            .iter()
            .map(|&(c, h, _)| Exit::new(dev, c, cl, (h / hl).max(1), net.classes))
            .collect();
        Ok(Self {
            net,
            exits: List::new(exits),
        })
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Byot<D> {
    type To<E2: Dtype, D2: Device<E2>> = Byot<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("", |s: &Self| &s.net, |s: &mut Self| &mut s.net),
                Self::module("exits", |s: &Self| &s.exits, |s: &mut Self| &mut s.exits),
            ),
            |(net, exits)| Byot { net, exits },
        )
    }
}

/// Outputs: `logits`/`embeddings` = exits shallow → deep, then the network's head (`z_L`,
/// `e_L`); `features` = `F_1..F_L`. The trunk's tape rides on `z_L`; each exit's logits carry
/// the exit's ops.
impl<D: OpsDevice> Model<D> for Byot<D> {
    fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Outputs<D, T> {
        let (shared, x) = self.net.forward_trunk(x, mode);
        let head = self.net.forward_heads(x, mode).pop().expect("one head");
        let mut out = Outputs::empty();
        for (f, exit) in shared.iter().zip(&mut self.exits.items) {
            let (e, z) = exit.forward(f.retaped::<T>(), mode);
            out.embeddings.push(e.retaped::<T>());
            out.logits.push(z);
        }
        out.embeddings.push(head.embedding.retaped::<T>());
        out.logits.push(head.logits);
        out.features = shared
            .iter()
            .chain(std::iter::once(&head.feature))
            .map(|f| f.retaped::<T>())
            .collect();
        out
    }

    fn students(&self) -> Vec<Network<D>> {
        vec![self.net.clone()]
    }
}
