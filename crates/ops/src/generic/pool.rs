//! Pooling and upsampling from slices and reductions, with no index table.
//!
//! - Windows that tile the input (`k = s`, no padding, as in every pooling of our networks):
//!   the input viewed `[N, C, oh, k, ow, k]` (free) reduced over the two window axes.
//! - Other windows: one slice per tap of the padded input ([`super::taps`]), stacked and
//!   reduced over the tap axis.
//! - Adaptive average pooling: the tiling view when the output divides the input, otherwise
//!   one slice and sum per output row, then per output column (PyTorch's window rule).
//! - Bilinear ×2 upsampling (`align_corners=False`): per axis, even outputs are
//!   `¼·x[i−1] + ¾·x[i]` and odd ones `¾·x[i] + ¼·x[i+1]` over the edge-replicated input,
//!   interleaved by a stack and one copy.

use super::slice;
use super::taps::{self, Taps};
use crate::pool::Pool2dCfg;
use crate::stencil::window_out;
use crate::{OpsDevice, Shape4};
use dfdx::prelude::*;

type Tiles<D, T> = Tensor<(usize, usize, usize, usize, usize, usize), f32, D, T>;
type T3<D, T> = Tensor<(usize, usize, usize), f32, D, T>;

/// `x` viewed `[N, C, oh, kh, ow, kw]` when `(kh, kw)` windows with the same stride tile it.
fn tiles<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    (kh, kw): (usize, usize),
) -> Tiles<D, T> {
    let (n, c, h, w) = *x.shape();
    x.reshape_like(&(n, c, h / kh, kh, w / kw, kw))
}

/// The layout of a square pooling window, when it does not simply tile the input.
fn layout(x: Shape4, cfg: Pool2dCfg, op: &str) -> Option<Taps> {
    let (oh, ow) = window_out((x.2, x.3), cfg.kernel, cfg.stride, cfg.padding, op);
    let tiling = cfg.kernel == cfg.stride
        && cfg.padding == 0
        && x.2 == oh * cfg.kernel
        && x.3 == ow * cfg.kernel;
    (!tiling).then(|| {
        let k = cfg.kernel;
        Taps::new(
            (k, k),
            (cfg.stride, cfg.stride),
            (cfg.padding, cfg.padding),
            1,
            (oh, ow),
        )
    })
}

type Stacked<D, T> = Tensor<(usize, usize, usize, usize, usize), f32, D, T>;

/// How a pooling reduces a window.
trait Reduce {
    const OP: &'static str;
    /// What padding reads.
    const PAD: f32;
    /// Over the two window axes of the tiling view.
    fn tiles<D: OpsDevice, T: Tape<f32, D>>(t: Tiles<D, T>) -> Tensor<Shape4, f32, D, T>;
    /// Over the stacked taps.
    fn taps<D: OpsDevice, T: Tape<f32, D>>(s: Stacked<D, T>) -> Tensor<Shape4, f32, D, T>;
}

/// The window's maximum; ties share the gradient, as dfdx's `max` does.
struct Max;

impl Reduce for Max {
    const OP: &'static str = "max_pool2d";
    const PAD: f32 = f32::NEG_INFINITY;
    fn tiles<D: OpsDevice, T: Tape<f32, D>>(t: Tiles<D, T>) -> Tensor<Shape4, f32, D, T> {
        t.max::<Shape4, Axes2<3, 5>>()
    }
    fn taps<D: OpsDevice, T: Tape<f32, D>>(s: Stacked<D, T>) -> Tensor<Shape4, f32, D, T> {
        s.max::<Shape4, Axis<0>>()
    }
}

/// The window's mean, padding counted as zeros (every tap is a window element: `/ k²`).
struct Mean;

impl Reduce for Mean {
    const OP: &'static str = "avg_pool2d";
    const PAD: f32 = 0.0;
    fn tiles<D: OpsDevice, T: Tape<f32, D>>(t: Tiles<D, T>) -> Tensor<Shape4, f32, D, T> {
        t.mean::<Shape4, Axes2<3, 5>>()
    }
    fn taps<D: OpsDevice, T: Tape<f32, D>>(s: Stacked<D, T>) -> Tensor<Shape4, f32, D, T> {
        s.mean::<Shape4, Axis<0>>()
    }
}

/// A pooling of square windows: the tiling view when the windows tile the input, otherwise
/// the taps of the padded input.
fn pool<R: Reduce, D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    cfg: Pool2dCfg,
) -> Tensor<Shape4, f32, D, T> {
    match super::host::plan(|| layout(*x.shape(), cfg, R::OP)) {
        None => R::tiles(tiles(x, (cfg.kernel, cfg.kernel))),
        Some(lay) => R::taps(taps::stack(taps::slices(taps::pad(x, &lay, R::PAD), &lay))),
    }
}

/// Max pooling (see [`crate::max_pool2d`]); ties share the gradient, as dfdx's `max` does.
pub fn max_pool2d<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    cfg: Pool2dCfg,
) -> Tensor<Shape4, f32, D, T> {
    pool::<Max, D, T>(x, cfg)
}

/// Average pooling (see [`crate::avg_pool2d`]): padding counts as zeros.
pub fn avg_pool2d<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    cfg: Pool2dCfg,
) -> Tensor<Shape4, f32, D, T> {
    pool::<Mean, D, T>(x, cfg)
}

/// PyTorch's adaptive window `[⌊i·n/o⌋, ⌈(i+1)·n/o⌉)` of output `i`.
fn adaptive_span(i: usize, n: usize, o: usize) -> (usize, usize) {
    (i * n / o, ((i + 1) * n).div_ceil(o))
}

/// Adaptive average pooling (see [`crate::adaptive_avg_pool2d`]).
pub fn adaptive_avg_pool2d<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    out: (usize, usize),
) -> Tensor<Shape4, f32, D, T> {
    let (n, c, h, w) = *x.shape();
    let (oh, ow) = out;
    assert!(
        oh > 0 && ow > 0 && h > 0 && w > 0,
        "adaptive_avg_pool2d: empty input {h}x{w} or output {oh}x{ow}"
    );
    if h % oh == 0 && w % ow == 0 {
        return tiles(x, (h / oh, w / ow)).mean::<Shape4, Axes2<3, 5>>();
    }
    // Rows: [oh, N, C, W].
    let rows: Vec<T3<D, T>> = (0..oh)
        .map(|i| {
            let (a, b) = adaptive_span(i, h, oh);
            let part = slice(x.retaped::<T>(), (.., .., a..b, ..));
            part.sum::<(usize, usize, usize), Axis<2>>() / (b - a) as f32
        })
        .collect();
    let rows = with_tape_of(rows, x).stack();
    // Columns: [ow, oh, N, C].
    let cols: Vec<T3<D, T>> = (0..ow)
        .map(|j| {
            let (a, b) = adaptive_span(j, w, ow);
            let part = slice(rows.retaped::<T>(), (.., .., .., a..b));
            part.sum::<(usize, usize, usize), Axis<3>>() / (b - a) as f32
        })
        .collect();
    let cols = with_tape_of(cols, rows).stack();
    cols.permute::<Shape4, Axes4<2, 3, 1, 0>>()
        .reshape_like(&(n, c, oh, ow))
        .contiguous()
}

/// Moves the tape of `src` (whose retaped copies made `parts`) onto the first part.
fn with_tape_of<S: Shape, S2: Shape, D: OpsDevice, T: Tape<f32, D>>(
    mut parts: Vec<Tensor<S, f32, D, T>>,
    src: Tensor<S2, f32, D, T>,
) -> Vec<Tensor<S, f32, D, T>> {
    let (_, tape) = src.split_tape();
    let (p0, t0) = parts.remove(0).split_tape();
    parts.insert(0, p0.put_tape(t0.merge(tape)));
    parts
}

/// Bilinear ×2 upsampling along dim 2: `[N, C, H, W]` → `[N, C, 2H, W]`.
fn upsample_rows<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
) -> Tensor<Shape4, f32, D, T> {
    let (n, c, h, w) = *x.shape();
    let first = slice(x.retaped::<T>(), (.., .., 0..1, ..));
    let last = slice(x.retaped::<T>(), (.., .., h - 1..h, ..));
    // Edge-replicated: [N, C, H + 2, W].
    let xr = ((first, x).concat_along(Axis::<2>), last).concat_along(Axis::<2>);
    let at = |a: usize| slice(xr.retaped::<T>(), (.., .., a..a + h, ..));
    let (above, below) = (at(0), at(2));
    let even = above * 0.25 + at(1) * 0.75;
    let odd = at(1) * 0.75 + below * 0.25;
    let both = with_tape_of(vec![even, odd], xr).stack();
    both.permute::<(usize, usize, usize, usize, usize), Axes5<1, 2, 3, 0, 4>>()
        .reshape_like(&(n, c, 2 * h, w))
}

/// Bilinear ×2 upsampling (see [`crate::upsample_bilinear2x`]).
pub fn upsample_bilinear2x<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
) -> Tensor<Shape4, f32, D, T> {
    let tall = upsample_rows(x);
    let wide = upsample_rows(tall.permute::<Shape4, Axes4<0, 1, 3, 2>>());
    wide.permute::<Shape4, Axes4<0, 1, 3, 2>>().contiguous()
}
