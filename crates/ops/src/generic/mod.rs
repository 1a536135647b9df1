//! Device-generic implementations composed only of dfdx's public ops (slices, stacks,
//! matmuls, reductions, broadcasts), with dfdx's own autodiff. `Cuda` runs these; they are also
//! callable (and tested) on the CPU, where [`crate::set_generic_on_cpu`] routes the whole
//! network through them.
//!
//! The host work per call does not grow with the activations: after validating shapes, the
//! host looks up a table or computes a few ranges ([`host`] counts that time). Convolution is a
//! gather with a per-geometry table built once and kept on the device, then one matrix product
//! ([`conv2d`]); pooling a reduction over a free tiling view or over tap slices
//! ([`max_pool2d`]); upsampling slices and weighted sums ([`upsample_bilinear2x`]).
//! `docs/cuda.md` gives their device-memory cost.

mod conv;
pub mod host;
mod pool;
mod tables;
mod taps;

pub use conv::conv2d;
pub use pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d, upsample_bilinear2x};

use crate::channels::{check_concat, check_split};
use crate::norm::{check_bn, BatchNormCfg};
use crate::{OpsDevice, Shape4};
use dfdx::prelude::*;
use dfdx::shapes::SliceShape;

/// `x.slice(ranges)` with a gradient that adds to the gradient of `x`. dfdx 0.13's CPU slice
/// backward assigns instead of adding, which would drop every other contribution to the
/// gradient of `x` (another tap, a residual branch); on such a device
/// ([`OpsDevice::SLICE_GRAD_ADDS`]) the slice reads a copy, `x + 0`, whose gradient holds
/// nothing else. The GPU slices directly.
pub(crate) fn slice<S, R, D, T>(x: Tensor<S, f32, D, T>, ranges: R) -> Tensor<S::Sliced, f32, D, T>
where
    S: Shape + SliceShape<R>,
    R: 'static,
    D: OpsDevice,
    T: Tape<f32, D>,
{
    if D::SLICE_GRAD_ADDS {
        x.slice(ranges)
    } else {
        (x + 0.0).slice(ranges)
    }
}

/// Channel concatenation (see [`crate::concat_channels`]) with dfdx's `concat_along`.
pub fn concat_channels<D: Device<f32>, T: Tape<f32, D>>(
    xs: Vec<Tensor<Shape4, f32, D, T>>,
) -> Tensor<Shape4, f32, D, T> {
    let shapes: Vec<Shape4> = xs.iter().map(|x| *x.shape()).collect();
    check_concat(&shapes);
    let mut it = xs.into_iter();
    let first = it.next().expect("checked non-empty");
    it.fold(first, |acc, x| (acc, x).concat_along(Axis::<1>))
}

/// Channel split (see [`crate::split_channels`]) with dfdx's `slice`.
pub fn split_channels<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    sizes: &[usize],
) -> Vec<Tensor<Shape4, f32, D, T>> {
    let shape = *x.shape();
    check_split(shape, sizes);
    let mut off = 0;
    let mut outs = Vec::with_capacity(sizes.len());
    for &ci in sizes {
        let src = x.retaped::<T>();
        let piece: Tensor<Shape4, f32, D, T> =
            slice(src, (.., off..off + ci, .., ..)).reshape_like(&(shape.0, ci, shape.2, shape.3));
        outs.push(piece);
        off += ci;
    }
    // Hand the input's own tape to the first piece.
    let (_, tape) = x.split_tape();
    let (p0, t0) = outs.remove(0).split_tape();
    outs.insert(0, p0.put_tape(t0.merge(tape)));
    outs
}

/// `[N, C, H·W]`: dfdx's CUDA kernels pay index arithmetic per element and per dimension, so
/// BatchNorm works on three dimensions (a free reshape of a contiguous input).
type Planes<D, T> = Tensor<(usize, usize, usize), f32, D, T>;

fn planes<D: Device<f32>, T: Tape<f32, D>>(x: Tensor<Shape4, f32, D, T>) -> Planes<D, T> {
    let (n, c, h, w) = *x.shape();
    x.reshape_like(&(n, c, h * w))
}

fn per_channel<D: Device<f32>, T: Tape<f32, D>>(
    t: Tensor<(usize,), f32, D, T>,
    shape: &(usize, usize, usize),
) -> Planes<D, T> {
    t.broadcast_like::<(usize, usize, usize), Axes2<0, 2>>(shape)
}

/// Training-mode BatchNorm2d (see [`crate::batch_norm2d_train`]) from dfdx reductions.
pub fn batch_norm2d_train<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    weight: &Tensor<(usize,), f32, D>,
    bias: &Tensor<(usize,), f32, D>,
    running_mean: &mut Tensor<(usize,), f32, D>,
    running_var: &mut Tensor<(usize,), f32, D>,
    cfg: BatchNormCfg,
) -> Tensor<Shape4, f32, D, T> {
    let shape = *x.shape();
    check_bn(shape, [weight, bias, running_mean, running_var]);
    let m = shape.0 * shape.2 * shape.3;
    assert!(
        m > 1,
        "batch_norm2d: training needs more than one value per channel, input is {shape:?}"
    );
    let inv_m = 1.0 / m as f32;
    let x = planes(x);
    let flat = *x.shape();
    let mean = x.retaped::<T>().sum::<(usize,), Axes2<0, 2>>() * inv_m;
    let mom = cfg.momentum as f64;
    running_mean.axpy(1.0 - mom, &mean.retaped::<NoneTape>(), mom);
    let centered = x - per_channel(mean, &flat);
    let var = centered
        .retaped::<T>()
        .square()
        .sum::<(usize,), Axes2<0, 2>>()
        * inv_m;
    running_var.axpy(
        1.0 - mom,
        &var.retaped::<NoneTape>(),
        mom * m as f64 / (m - 1) as f64,
    );
    let scale = weight.retaped::<T>() / (var + cfg.eps).sqrt();
    let y = centered * per_channel(scale, &flat) + per_channel(bias.retaped::<T>(), &flat);
    let y = if cfg.relu { y.relu() } else { y };
    y.reshape_like(&shape)
}

/// Evaluation-mode BatchNorm2d (see [`crate::batch_norm2d_eval`]).
pub fn batch_norm2d_eval<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    weight: &Tensor<(usize,), f32, D>,
    bias: &Tensor<(usize,), f32, D>,
    running_mean: &Tensor<(usize,), f32, D>,
    running_var: &Tensor<(usize,), f32, D>,
    cfg: BatchNormCfg,
) -> Tensor<Shape4, f32, D, T> {
    let shape = *x.shape();
    check_bn(shape, [weight, bias, running_mean, running_var]);
    let std = (running_var.clone() + cfg.eps).sqrt();
    let scale = weight.retaped::<T>() / std;
    let x = planes(x);
    let flat = *x.shape();
    let y = (x - per_channel(running_mean.clone(), &flat)) * per_channel(scale, &flat)
        + per_channel(bias.retaped::<T>(), &flat);
    let y = if cfg.relu { y.relu() } else { y };
    y.reshape_like(&shape)
}

/// `max(a + b, 0)` (see [`crate::add_relu`]). `a` and `b` must be different tensors: like
/// every dfdx binary op, the backward pass panics when both sides are one tensor (the CPU
/// kernel takes that; add a tensor to itself as `x * 2.0`).
pub fn add_relu<D: Device<f32>, T: Tape<f32, D>>(
    a: Tensor<Shape4, f32, D, T>,
    b: Tensor<Shape4, f32, D, T>,
) -> Tensor<Shape4, f32, D, T> {
    assert_eq!(a.shape(), b.shape(), "add_relu: shapes differ");
    // One dimension: the least index arithmetic in dfdx's CUDA kernels (free reshapes of
    // contiguous inputs).
    let shape = *a.shape();
    let len = shape.num_elements();
    (a.reshape_like(&(len,)) + b.reshape_like(&(len,)))
        .relu()
        .reshape_like(&shape)
}

/// [`crate::channel_sq_mean`] from dfdx ops: square, mean over channels, reshape.
pub fn channel_sq_mean<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
) -> Tensor<(usize, usize), f32, D, T> {
    let (n, _, h, w) = *x.shape();
    let map: Tensor<(usize, usize, usize), f32, D, T> = x.square().mean::<_, Axis<1>>();
    map.reshape_like(&(n, h * w))
}
