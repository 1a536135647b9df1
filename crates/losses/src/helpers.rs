//! The shared helpers of `METHODS.md` ("Notation and shared helpers"), written once: CE, the
//! tempered KL, `rownorm`, the attention maps, `gram`, the ramp, and the attach/detach handles.
//!
//! All are generic over the dfdx device and tape, built only from dfdx ops (no host buffer
//! access), so the same code runs on the CPU and on CUDA.
//!
//! A dfdx binary op accumulates a gradient for *both* operands under their tensor ids, even an
//! operand without a tape. Two rules follow: the two operands of a binary op never share an id
//! (dfdx panics), and a stop-gradient copy ([`sg`]) gets a fresh id, so nothing it takes part in
//! can reach the original's gradient.

use crate::inputs::{Labels, Map4, Mat, Scalar};
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// An input entering with a gradient: a copy with the same id (so its gradient accumulates into
/// the input's) and an empty tape of type `T` (the input's own tape is merged into the total
/// separately, see [`crate::inputs`]).
pub fn attach<S: Shape, D: OpsDevice, T: Tape<f32, D>>(
    x: &Tensor<S, f32, D>,
) -> Tensor<S, f32, D, T> {
    x.retaped::<T>()
}

/// `sg(x)`, stop-gradient: the values of `x` under a fresh id, without a tape.
pub fn sg<S: Shape, D: OpsDevice, T>(x: &Tensor<S, f32, D, T>) -> Tensor<S, f32, D> {
    x.retaped::<NoneTape>() * 1.0f32
}

/// A copy of `x` under a fresh id sharing its tape position: for using one traced tensor as
/// both operands of a binary op (e.g. `Q Qᵀ`), which dfdx forbids for equal ids.
fn fresh_copy<S: Shape, D: OpsDevice, T: Tape<f32, D>>(
    x: &Tensor<S, f32, D, T>,
) -> Tensor<S, f32, D, T> {
    x.with_empty_tape() * 1.0f32
}

/// `CE(z, y)`: mean over the batch of `−log softmax(z)[y]`.
pub fn ce<D: OpsDevice, T: Tape<f32, D>>(z: Mat<D, T>, y: &Labels<D>) -> Scalar<D, T> {
    let picked: Tensor<(usize,), f32, D, T> = z.log_softmax::<Axis<1>>().select(y.clone());
    picked.mean::<(), Axis<0>>().negate()
}

/// `KL_T(z_s ← z_t) = T² · (1/b) · Σ_i Σ_k p_ik (log p_ik − log q_ik)`, `p = σ_T(z_t)`,
/// `q = σ_T(z_s)`, no epsilon. The target is detached when `TT` is [`NoneTape`] (pass
/// [`sg`]`(z_t)`), attached when it carries a tape (OKDDip).
pub fn kl_t<D: OpsDevice, TS: Tape<f32, D> + Merge<TT>, TT: Tape<f32, D>>(
    zs: Mat<D, TS>,
    zt: Mat<D, TT>,
    t: f32,
) -> Scalar<D, TS> {
    let b = zs.shape().0 as f32;
    let log_q = (zs / t).log_softmax::<Axis<1>>();
    let log_p = (zt / t).log_softmax::<Axis<1>>();
    let p = log_p.with_empty_tape().exp();
    let kl = (log_q.negate() + log_p) * p;
    kl.sum::<(), Axes2<0, 1>>() * (t * t / b)
}

/// `rownorm(x) = x / max(‖x‖₂, 1e-12)` per row, computed as `x / sqrt(max(‖x‖₂², 1e-24))`: the
/// same value and gradient, but finite at a zero row (whose gradient is then zero).
pub fn rownorm<D: OpsDevice, T: Tape<f32, D>>(x: Mat<D, T>) -> Mat<D, T> {
    let shape = *x.shape();
    let norm = x
        .with_empty_tape()
        .square()
        .sum::<(usize,), Axis<1>>()
        .clamp(1e-24f32, f32::MAX)
        .sqrt();
    x / norm.broadcast_like::<_, Axis<1>>(&shape)
}

/// How `att(F)` is computed (`METHODS.md`, SCD's `attention` option).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attention {
    /// `att(F) = mean over channels of F²` (the notation section; AT, SAD, SCD's default).
    #[default]
    SqMean,
    /// `att(F) = Σ_c w_c |F_c|`, `w = softmax_c(mean_hw F_c)` per sample (SCD option).
    ChannelSoftmax,
}

/// `att(F)` flattened to `[b, H·W]`, in the given variant.
pub fn att<D: OpsDevice, T: Tape<f32, D>>(f: Map4<D, T>, kind: Attention) -> Mat<D, T> {
    let (b, c, h, w) = *f.shape();
    let map: Tensor<(usize, usize, usize), f32, D, T> = match kind {
        // One fused, parallel pass on the CPU (dfdx's square and mean on the GPU).
        Attention::SqMean => return kd_ops::channel_sq_mean(f),
        Attention::ChannelSoftmax => {
            let weights = f
                .with_empty_tape()
                .mean::<(usize, usize), Axes2<2, 3>>()
                .softmax::<Axis<1>>()
                .broadcast_like::<_, Axes2<2, 3>>(&(b, c, h, w));
            (f.abs() * weights).sum::<_, Axis<1>>()
        }
    };
    map.reshape_like(&(b, h * w))
}

/// `gram(Q) = rownorm(Q Qᵀ)`, a `[b, b]` matrix.
pub fn gram<D: OpsDevice, T: Tape<f32, D>>(q: Mat<D, T>) -> Mat<D, T> {
    let qt = fresh_copy(&q).permute::<(usize, usize), Axes2<1, 0>>();
    rownorm(q.matmul(qt))
}

/// `‖A − B‖²_F / b²` for `[b, b]` matrices (SCD's and SP's normalisation), `B` detached.
pub fn sq_frobenius_over_b2<D: OpsDevice, T: Tape<f32, D>>(
    a: Mat<D, T>,
    b: Mat<D>,
) -> Scalar<D, T> {
    let n = a.shape().0 as f32;
    (a - b).square().sum::<(), Axes2<0, 1>>() / (n * n)
}

/// `mean((a − b)²)` over every element, `b` detached.
pub fn mse<D: OpsDevice, T: Tape<f32, D>>(a: Mat<D, T>, b: Mat<D>) -> Scalar<D, T> {
    (a - b).square().mean::<(), Axes2<0, 1>>()
}

/// `ramp(epoch) = exp(−5 · (1 − min(epoch, R)/R)²)`, `R` in epochs (80 in `METHODS.md`), epoch
/// counted from 0.
pub fn ramp(epoch: f32, r: f32) -> f32 {
    let x = 1.0 - epoch.min(r) / r;
    (-5.0 * x * x).exp()
}

/// Column `j` of a `[b, n]` matrix as `[b]` (gate weights, attention weights).
pub fn column<D: OpsDevice, T: Tape<f32, D>>(
    x: Mat<D, T>,
    j: usize,
) -> Tensor<(usize,), f32, D, T> {
    let b = x.shape().0;
    let idx = x.device().tensor_from_vec(vec![j; b], (b,));
    x.select(idx)
}

/// `w_i · z_i` for a per-sample weight `w` `[b]` and rows `z` `[b, K]`.
pub fn scale_rows<D: OpsDevice, T: Tape<f32, D> + Merge<TW>, TW: Tape<f32, D>>(
    z: Mat<D, T>,
    w: Tensor<(usize,), f32, D, TW>,
) -> Mat<D, T> {
    let shape = *z.shape();
    z * w.broadcast_like::<_, Axis<1>>(&shape)
}

/// The mean of several `[b, K]` tensors.
pub fn mean_of<D: OpsDevice, T: Tape<f32, D>>(xs: Vec<Mat<D, T>>) -> Mat<D, T> {
    let n = xs.len() as f32;
    let mut iter = xs.into_iter();
    let first = iter.next().expect("mean_of needs at least one tensor");
    iter.fold(first, |acc, x| acc + x) / n
}
