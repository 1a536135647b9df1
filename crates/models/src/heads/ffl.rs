//! FFL — Feature Fusion Learning (`METHODS.md`, ffl): students (branches of one network, or
//! independent networks with equal last-stage shapes) and a fusion module on the concatenated
//! last-stage maps (`N·C` channels): depthwise conv3×3 (groups `N·C`, no bias) → BN → ReLU →
//! conv1×1 to `C` (no bias) → BN → ReLU → global average pool → linear → fused logits `z_f`.
//!
//! Tensor names: the students' (one network: its plain names; several: `nets.{k}.`), and
//! `fusion.{dw_conv,dw_bn,pw_conv,pw_bn,fc}`. The fusion module's parameters are the ones the
//! trainer gives weight decay 1e-5 (all tensors under `fusion.`).

use crate::arch::ModelError;
use crate::collection::{peek, List};
use crate::layers::{conv_bn, gap, Linear, Map4, Mat, Mode};
use crate::model::Model;
use crate::network::{HeadOutput, Network};
use crate::outputs::Outputs;
use dfdx::nn::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use kd_ops::{concat_channels, BatchNorm2d, Conv2d, Conv2dCfg, OpsDevice};

/// FFL's fusion module.
#[derive(Debug, Clone)]
pub struct Fusion<D: Storage<E>, E: Dtype = f32> {
    pub dw_conv: Conv2d<D, E>,
    pub dw_bn: BatchNorm2d<D, E>,
    pub pw_conv: Conv2d<D, E>,
    pub pw_bn: BatchNorm2d<D, E>,
    pub fc: Linear<D, E>,
}

impl<D: Device<f32>> Fusion<D> {
    /// Fusion of `n` maps of `c` channels into `classes` logits.
    pub fn new(dev: &D, n: usize, c: usize, classes: usize) -> Self {
        let nc = n * c;
        Self {
            dw_conv: Conv2d::new(dev, nc, nc, 3, Conv2dCfg::new(1, 1).groups(nc)),
            dw_bn: BatchNorm2d::new(dev, nc).with_relu(),
            pw_conv: Conv2d::new(dev, nc, c, 1, Conv2dCfg::default()),
            pw_bn: BatchNorm2d::new(dev, c).with_relu(),
            fc: Linear::new(dev, c, classes),
        }
    }
}

impl<D: OpsDevice> Fusion<D> {
    /// The students' maps (concatenated in order) → `z_f` `[b, K]`.
    pub fn forward<T: Tape<f32, D>>(&mut self, maps: Vec<Map4<D, T>>, mode: Mode) -> Mat<D, T> {
        let x = concat_channels(maps);
        let x = conv_bn(&self.dw_conv, &mut self.dw_bn, x, mode);
        let x = conv_bn(&self.pw_conv, &mut self.pw_bn, x, mode);
        self.fc.forward(gap(x))
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Fusion<D> {
    type To<E2: Dtype, D2: Device<E2>> = Fusion<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module(
                    "dw_conv",
                    |s: &Self| &s.dw_conv,
                    |s: &mut Self| &mut s.dw_conv,
                ),
                Self::module("dw_bn", |s: &Self| &s.dw_bn, |s: &mut Self| &mut s.dw_bn),
                Self::module(
                    "pw_conv",
                    |s: &Self| &s.pw_conv,
                    |s: &mut Self| &mut s.pw_conv,
                ),
                Self::module("pw_bn", |s: &Self| &s.pw_bn, |s: &mut Self| &mut s.pw_bn),
                Self::module("fc", |s: &Self| &s.fc, |s: &mut Self| &mut s.fc),
            ),
            |(dw_conv, dw_bn, pw_conv, pw_bn, fc)| Fusion {
                dw_conv,
                dw_bn,
                pw_conv,
                pw_bn,
                fc,
            },
        )
    }
}

/// Visits a list of student networks: one network under the empty name (plain names), several
/// under `nets.{k}`. Used by [`Ffl`] and [`crate::heads::Mfef`].
pub(crate) fn students_field_name(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "nets"
    }
}

/// Checks a student set for fusion: at least 2 students, equal last-stage widths and classes;
/// returns `(students, C, classes)`.
pub(crate) fn check_students<D: Device<f32>>(
    method: &str,
    nets: &[Network<D>],
) -> Result<(usize, usize, usize), ModelError> {
    let heads: Vec<_> = nets
        .iter()
        .flat_map(|n| n.heads.iter().map(move |h| (h.fc.in_features(), n.classes)))
        .collect();
    if heads.len() < 2 {
        return Err(ModelError::Invalid(format!(
            "{method} needs at least 2 students, got {}",
            heads.len()
        )));
    }
    if heads.iter().any(|h| *h != heads[0]) {
        return Err(ModelError::Invalid(format!(
            "{method}: students must share the last-stage width and class count, got {heads:?}"
        )));
    }
    Ok((heads.len(), heads[0].0, heads[0].1))
}

/// Runs every student on `x`: network 0 gets `x`'s tape. Returns `F_1..F_L` of student 0 and
/// every head's output in order.
pub(crate) fn forward_students<D: OpsDevice, T: Tape<f32, D>>(
    nets: &mut [Network<D>],
    x: Map4<D, T>,
    mode: Mode,
) -> (Vec<Map4<D>>, Vec<HeadOutput<D, T>>) {
    let (x, tape) = x.split_tape();
    let mut tape = Some(tape);
    let mut features = Vec::new();
    let mut heads = Vec::new();
    for (k, net) in nets.iter_mut().enumerate() {
        let o = net.forward(x.clone().put_tape(tape.take().unwrap_or_default()), mode);
        if k == 0 {
            features = o.features(0);
        }
        heads.extend(o.heads);
    }
    (features, heads)
}

/// Students with FFL's fusion module.
#[derive(Debug, Clone)]
pub struct Ffl<D: Storage<E>, E: Dtype = f32> {
    /// One network with `N` heads, or `N` one-head networks.
    pub nets: List<Network<D, E>>,
    pub fusion: Fusion<D, E>,
}

impl<D: Device<f32>> Ffl<D> {
    pub fn new(dev: &D, nets: Vec<Network<D>>) -> Result<Self, ModelError> {
        let (n, c, classes) = check_students("ffl", &nets)?;
        Ok(Self {
            nets: List::new(nets),
            fusion: Fusion::new(dev, n, c, classes),
        })
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Ffl<D> {
    type To<E2: Dtype, D2: Device<E2>> = Ffl<D2, E2>;
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
                Self::module("fusion", |s: &Self| &s.fusion, |s: &mut Self| &mut s.fusion),
            ),
            |(single, list, fusion)| Ffl {
                nets: list.into_iter().next().unwrap_or(List::new(single)),
                fusion,
            },
        )
    }
}

/// Outputs: `logits`/`embeddings` per student, `features` of student 0, `fused_logits`.
impl<D: OpsDevice> Model<D> for Ffl<D> {
    fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Outputs<D, T> {
        let (features, heads) = forward_students(&mut self.nets.items, x, mode);
        let maps = heads.iter().map(|h| h.feature.retaped::<T>()).collect();
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
