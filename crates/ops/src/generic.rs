//! Device-generic implementations composed only of dfdx ops (gather, matmul, reductions,
//! broadcasts), with dfdx's own autodiff. `Cuda` runs these; they are also callable (and tested)
//! on the CPU. Convolution is an im2col `gather` (padding reads an appended zero) followed by a
//! batched matmul per group; pooling and upsampling gather each window (padded to the widest)
//! and take a weighted sum or a max.

use crate::channels::{check_concat, check_split};
use crate::conv::{Conv2dCfg, ConvGeom};
use crate::norm::{check_bn, BatchNormCfg};
use crate::pool::{adaptive_stencil, avg_stencil, max_stencil, Pool2dCfg};
use crate::stencil::Stencil;
use crate::upsample::bilinear_stencil;
use crate::Shape4;
use dfdx::prelude::*;

/// Flattens `x` and appends one element `pad`, so index `len` reads the padding value.
fn pad_flat<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    pad: f32,
) -> Tensor<(usize,), f32, D, T> {
    let len = x.shape().num_elements();
    let dev = x.device().clone();
    let flat = x.reshape_like(&(len,));
    let p = dev.tensor_from_vec(vec![pad], (1usize,));
    (flat, p).concat_along(Axis::<0>)
}

/// Gathered windows `[rows, width]` and the stencil's weights in the same layout.
type Windows<D, T> = (Tensor<(usize, usize), f32, D, T>, Vec<f32>);

fn gather_windows<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    st: &Stencil,
    pad: f32,
) -> Windows<D, T> {
    let planes = x.shape().0 * x.shape().1;
    let (idx, wt) = st.gather_table(planes);
    let (rows, wd) = (planes * st.out_len(), st.width());
    let dev = x.device().clone();
    let idx = dev.tensor_from_vec(idx, (rows * wd,));
    let g: Tensor<(usize,), f32, D, T> = pad_flat(x, pad).gather(idx);
    (g.reshape_like(&(rows, wd)), wt)
}

fn weighted<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    st: Stencil,
) -> Tensor<Shape4, f32, D, T> {
    let shape = st.out_shape(*x.shape());
    let dev = x.device().clone();
    let (g, wt) = gather_windows(x, &st, 0.0);
    let w = dev.tensor_from_vec(wt, *g.shape());
    (g * w).sum::<(usize,), Axis<1>>().reshape_like(&shape)
}

/// Max pooling (see [`crate::max_pool2d`]); ties share the gradient, as dfdx's `max` does.
pub fn max_pool2d<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    cfg: Pool2dCfg,
) -> Tensor<Shape4, f32, D, T> {
    let st = max_stencil(*x.shape(), cfg);
    let shape = st.out_shape(*x.shape());
    let (g, _) = gather_windows(x, &st, f32::NEG_INFINITY);
    g.max::<(usize,), Axis<1>>().reshape_like(&shape)
}

/// Average pooling (see [`crate::avg_pool2d`]).
pub fn avg_pool2d<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    cfg: Pool2dCfg,
) -> Tensor<Shape4, f32, D, T> {
    let st = avg_stencil(*x.shape(), cfg);
    weighted(x, st)
}

/// Adaptive average pooling (see [`crate::adaptive_avg_pool2d`]).
pub fn adaptive_avg_pool2d<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    out: (usize, usize),
) -> Tensor<Shape4, f32, D, T> {
    let st = adaptive_stencil(*x.shape(), out);
    weighted(x, st)
}

/// Bilinear ×2 upsampling (see [`crate::upsample_bilinear2x`]).
pub fn upsample_bilinear2x<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
) -> Tensor<Shape4, f32, D, T> {
    let st = bilinear_stencil(*x.shape());
    weighted(x, st)
}

/// Convolution (see [`crate::conv2d`]) as im2col gather + batched matmul.
pub fn conv2d<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    weight: &Tensor<Shape4, f32, D>,
    bias: Option<&Tensor<(usize,), f32, D>>,
    cfg: Conv2dCfg,
) -> Tensor<Shape4, f32, D, T> {
    let geo = ConvGeom::new(*x.shape(), *weight.shape(), cfg);
    if let Some(b) = bias {
        assert_eq!(
            b.shape().0,
            geo.co,
            "conv2d: bias has {} values for {} output channels",
            b.shape().0,
            geo.co
        );
    }
    let dev = x.device().clone();
    let ConvGeom {
        n,
        c,
        h,
        w,
        co,
        kh,
        kw,
        s,
        p,
        d,
        g: groups,
        cig,
        cog,
        oh,
        ow,
    } = geo;
    let (kg, pix) = (geo.kg(), geo.pix());
    let pad = n * c * h * w;
    let mut idx = Vec::with_capacity(groups * kg * n * pix);
    for g in 0..groups {
        for ci in 0..cig {
            for ki in 0..kh {
                for kj in 0..kw {
                    for b in 0..n {
                        for oy in 0..oh {
                            let iy = (oy * s + ki * d) as isize - p as isize;
                            for ox in 0..ow {
                                let ix = (ox * s + kj * d) as isize - p as isize;
                                let inside =
                                    iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize;
                                idx.push(if inside {
                                    ((b * c + g * cig + ci) * h + iy as usize) * w + ix as usize
                                } else {
                                    pad
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    let idx = dev.tensor_from_vec(idx, (groups * kg * n * pix,));
    let col: Tensor<(usize,), f32, D, T> = pad_flat(x, 0.0).gather(idx);
    let col = col.reshape_like(&(groups, kg, n * pix));
    let wr = weight.retaped::<T>().reshape_like(&(groups, cog, kg));
    let y: Tensor<(usize, usize, usize), f32, D, T> = wr.matmul(col);
    let y = y.reshape_like(&(groups * cog * n * pix,));
    let mut perm = Vec::with_capacity(n * co * pix);
    for b in 0..n {
        for o in 0..co {
            perm.extend((0..pix).map(|q| (o * n + b) * pix + q));
        }
    }
    let perm = dev.tensor_from_vec(perm, (n * co * pix,));
    let y: Tensor<(usize,), f32, D, T> = y.gather(perm);
    let out = y.reshape_like(&geo.out_shape());
    match bias {
        Some(b) => {
            let shape = geo.out_shape();
            out + b
                .retaped::<T>()
                .broadcast_like::<Shape4, Axes3<0, 2, 3>>(&shape)
        }
        None => out,
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
pub fn split_channels<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    sizes: &[usize],
) -> Vec<Tensor<Shape4, f32, D, T>> {
    let shape = *x.shape();
    check_split(shape, sizes);
    let mut off = 0;
    let mut outs = Vec::with_capacity(sizes.len());
    for &ci in sizes {
        let src = x.retaped::<T>();
        let piece: Tensor<Shape4, f32, D, T> = src
            .slice((.., off..off + ci, .., ..))
            .reshape_like(&(shape.0, ci, shape.2, shape.3));
        outs.push(piece);
        off += ci;
    }
    // Hand the input's own tape to the first piece.
    let (_, tape) = x.split_tape();
    let (p0, t0) = outs.remove(0).split_tape();
    outs.insert(0, p0.put_tape(t0.merge(tape)));
    outs
}

fn per_channel<D: Device<f32>, T: Tape<f32, D>>(
    t: Tensor<(usize,), f32, D, T>,
    shape: &Shape4,
) -> Tensor<Shape4, f32, D, T> {
    t.broadcast_like::<Shape4, Axes3<0, 2, 3>>(shape)
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
    let mean = x.retaped::<T>().sum::<(usize,), Axes3<0, 2, 3>>() * inv_m;
    let mom = cfg.momentum as f64;
    running_mean.axpy(1.0 - mom, &mean.retaped::<NoneTape>(), mom);
    let centered = x - per_channel(mean, &shape);
    let var = centered
        .retaped::<T>()
        .square()
        .sum::<(usize,), Axes3<0, 2, 3>>()
        * inv_m;
    running_var.axpy(
        1.0 - mom,
        &var.retaped::<NoneTape>(),
        mom * m as f64 / (m - 1) as f64,
    );
    let scale = weight.retaped::<T>() / (var + cfg.eps).sqrt();
    let y = centered * per_channel(scale, &shape) + per_channel(bias.retaped::<T>(), &shape);
    if cfg.relu {
        y.relu()
    } else {
        y
    }
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
    let y = (x - per_channel(running_mean.clone(), &shape)) * per_channel(scale, &shape)
        + per_channel(bias.retaped::<T>(), &shape);
    if cfg.relu {
        y.relu()
    } else {
        y
    }
}

/// `max(a + b, 0)` (see [`crate::add_relu`]).
pub fn add_relu<D: Device<f32>, T: Tape<f32, D>>(
    a: Tensor<Shape4, f32, D, T>,
    b: Tensor<Shape4, f32, D, T>,
) -> Tensor<Shape4, f32, D, T> {
    assert_eq!(a.shape(), b.shape(), "add_relu: shapes differ");
    (a + b).relu()
}
