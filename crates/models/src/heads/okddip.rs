//! OKDDip — Online KD with Diverse Peers (`METHODS.md`, okddip): 3 peers + 1 leader (4
//! branches; the leader is the last head). Pooled peer features `h_i` (the peers' embeddings)
//! → `q_i = W_q h_i`, `k_i = W_k h_i` (shared linear maps without bias, width `C/8`);
//! `α_ij = softmax_j(q_i · k_j)` over the peers, returned as `[b, P, P]`.
//!
//! Tensor names: the network's, `attention.query.weight`, `attention.key.weight`.

use crate::arch::ModelError;
use crate::layers::{fork, Cube, Linear, Map4, Mat, Mode};
use crate::model::Model;
use crate::network::{NetOutput, Network};
use crate::outputs::Outputs;
use dfdx::nn::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use kd_ops::OpsDevice;

/// The query/key projections.
#[derive(Debug, Clone)]
pub struct PeerAttention<D: Storage<E>, E: Dtype = f32> {
    pub query: Linear<D, E>,
    pub key: Linear<D, E>,
}

impl<D: Device<f32>> PeerAttention<D> {
    /// `C → max(C/8, 1)`, no bias.
    pub fn new(dev: &D, channels: usize) -> Self {
        let d = (channels / 8).max(1);
        Self {
            query: Linear::without_bias(dev, channels, d),
            key: Linear::without_bias(dev, channels, d),
        }
    }
}

impl<D: OpsDevice> PeerAttention<D> {
    /// `P` pooled features `[b, C]` → `α` `[b, P, P]`, rows summing to 1.
    pub fn forward<T: Tape<f32, D>>(&self, h: Vec<Mat<D, T>>) -> Cube<D, T> {
        let p = h.len();
        let (b, c) = *h[0].shape();
        // [P, b, C] → [P·b, C] (contiguous after stacking).
        let hs = h.stack().reshape_like(&(p * b, c));
        let (h1, h2) = fork(hs);
        let d = self.query.out_features();
        let q = self
            .query
            .forward(h1)
            .reshape_like(&(p, b, d))
            .permute::<(usize, usize, usize), Axes3<1, 0, 2>>();
        let k = self
            .key
            .forward(h2)
            .reshape_like(&(p, b, d))
            .permute::<(usize, usize, usize), Axes3<1, 2, 0>>();
        q.matmul(k).softmax::<Axis<2>>()
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for PeerAttention<D> {
    type To<E2: Dtype, D2: Device<E2>> = PeerAttention<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("query", |s: &Self| &s.query, |s: &mut Self| &mut s.query),
                Self::module("key", |s: &Self| &s.key, |s: &mut Self| &mut s.key),
            ),
            |(query, key)| PeerAttention { query, key },
        )
    }
}

/// A branched network (peers + leader) with the peer attention.
#[derive(Debug, Clone)]
pub struct Okddip<D: Storage<E>, E: Dtype = f32> {
    /// The network with `P + 1` heads: peers, then the leader.
    pub net: Network<D, E>,
    pub attention: PeerAttention<D, E>,
}

impl<D: Device<f32>> Okddip<D> {
    /// Projections for `net`'s peers (all heads but the last; at least 2 peers).
    pub fn new(dev: &D, net: Network<D>) -> Result<Self, ModelError> {
        if net.heads.len() < 3 {
            return Err(ModelError::Invalid(format!(
                "okddip needs at least 2 peers + 1 leader, got {} branches",
                net.heads.len()
            )));
        }
        let c = net.heads[0].fc.in_features();
        Ok(Self {
            attention: PeerAttention::new(dev, c),
            net,
        })
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Okddip<D> {
    type To<E2: Dtype, D2: Device<E2>> = Okddip<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("", |s: &Self| &s.net, |s: &mut Self| &mut s.net),
                Self::module(
                    "attention",
                    |s: &Self| &s.attention,
                    |s: &mut Self| &mut s.attention,
                ),
            ),
            |(net, attention)| Okddip { net, attention },
        )
    }
}

/// Outputs: `logits`/`embeddings` = peers then leader, `features` of peer 0, `attention`
/// `[b, P, P]` over the peers.
impl<D: OpsDevice> Model<D> for Okddip<D> {
    fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Outputs<D, T> {
        let out: NetOutput<D, T> = self.net.forward(x, mode);
        let peers = out.heads.len() - 1;
        let h = out.heads[..peers]
            .iter()
            .map(|o| o.embedding.retaped::<T>())
            .collect();
        let attention = self.attention.forward(h);
        let mut o = out.into_outputs();
        o.attention = Some(attention);
        o
    }

    fn students(&self) -> Vec<Network<D>> {
        self.net.students()
    }
}
