//! ONE — On-the-fly Native Ensemble (`METHODS.md`, one): `m` branches over a shared trunk and a
//! gate: global average pool of the trunk's output `F_{L−1}` → linear(`C_{L−1}` → m, with
//! bias, as ONE's `nn.Linear`) → BatchNorm1d(m) → ReLU → softmax = `g` `[b, m]`.
//!
//! Tensor names: the network's (branches under `branches.{i}.`), `gate.fc.{weight,bias}`,
//! `gate.bn.{weight,bias,running_mean,running_var}`.

use crate::arch::ModelError;
use crate::layers::{bn1d, gap, Linear, Map4, Mat, Mode};
use crate::model::Model;
use crate::network::Network;
use crate::outputs::Outputs;
use dfdx::nn::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use kd_ops::{BatchNorm2d, OpsDevice};

/// ONE's gate.
#[derive(Debug, Clone)]
pub struct Gate<D: Storage<E>, E: Dtype = f32> {
    pub fc: Linear<D, E>,
    /// BatchNorm1d(m) with the ReLU fused.
    pub bn: BatchNorm2d<D, E>,
}

impl<D: Device<f32>> Gate<D> {
    pub fn new(dev: &D, channels: usize, m: usize) -> Self {
        Self {
            fc: Linear::new(dev, channels, m),
            bn: BatchNorm2d::new(dev, m).with_relu(),
        }
    }
}

impl<D: OpsDevice> Gate<D> {
    /// `F_{L−1}` `[b, C, H, W]` → `g` `[b, m]`, rows summing to 1.
    pub fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Mat<D, T> {
        bn1d(&mut self.bn, self.fc.forward(gap(x)), mode).softmax::<Axis<1>>()
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Gate<D> {
    type To<E2: Dtype, D2: Device<E2>> = Gate<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("fc", |s: &Self| &s.fc, |s: &mut Self| &mut s.fc),
                Self::module("bn", |s: &Self| &s.bn, |s: &mut Self| &mut s.bn),
            ),
            |(fc, bn)| Gate { fc, bn },
        )
    }
}

/// A branched network with ONE's gate.
#[derive(Debug, Clone)]
pub struct One<D: Storage<E>, E: Dtype = f32> {
    /// The network with `m` heads.
    pub net: Network<D, E>,
    pub gate: Gate<D, E>,
}

impl<D: Device<f32>> One<D> {
    /// A gate for `net`'s heads (`m = net.heads.len()`, at least 2; ONE uses 3).
    pub fn new(dev: &D, net: Network<D>) -> Result<Self, ModelError> {
        let m = net.heads.len();
        if m < 2 {
            return Err(ModelError::Invalid(format!(
                "one needs at least 2 branches, got {m}"
            )));
        }
        let c = net.stages.last().map(|s| s.out_channels()).unwrap_or(0);
        Ok(Self {
            gate: Gate::new(dev, c, m),
            net,
        })
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for One<D> {
    type To<E2: Dtype, D2: Device<E2>> = One<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("", |s: &Self| &s.net, |s: &mut Self| &mut s.net),
                Self::module("gate", |s: &Self| &s.gate, |s: &mut Self| &mut s.gate),
            ),
            |(net, gate)| One { net, gate },
        )
    }
}

/// Outputs: `logits`/`embeddings` per branch, `features` of branch 0, `gate`.
impl<D: OpsDevice> Model<D> for One<D> {
    fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Outputs<D, T> {
        let (shared, x) = self.net.forward_trunk(x, mode);
        let gate = self
            .gate
            .forward(shared.last().expect("a shared stage").retaped::<T>(), mode);
        let heads = self.net.forward_heads(x, mode);
        let mut out = crate::network::NetOutput { shared, heads }.into_outputs();
        out.gate = Some(gate);
        out
    }

    fn students(&self) -> Vec<Network<D>> {
        self.net.students()
    }
}
