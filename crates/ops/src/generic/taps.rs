//! Windows as slices. A `kh×kw` window with stride `s`, dilation `d` and padding `p` reads, for
//! its tap `(i, j)`, the padded input at rows `y·s + i·d` and columns `x·s + j·d`: one strided
//! slice per tap. dfdx slices only contiguous ranges, so the padded input is viewed with each
//! axis split into `(rows / s, s)`: row `q·s + r` is `[q, r]`, and a tap's rows are the range
//! `(i·d)/s .. (i·d)/s + oh` at phase `(i·d) % s`. Every slice is then a plain range, computed on
//! the device with no index table; the host only does this arithmetic.

use super::slice;
use crate::{OpsDevice, Shape4};
use dfdx::prelude::*;

/// The padded layout and output size of a window op over dims 2 and 3 of an NCHW-like tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Taps {
    pub k: (usize, usize),
    pub stride: (usize, usize),
    pub pad: (usize, usize),
    pub dilation: usize,
    pub out: (usize, usize),
    /// Rows and columns of the padded input divided by the stride.
    pub q: (usize, usize),
}

impl Taps {
    /// The layout for output size `out` (already validated by the op).
    pub fn new(
        k: (usize, usize),
        stride: (usize, usize),
        pad: (usize, usize),
        dilation: usize,
        out: (usize, usize),
    ) -> Self {
        let q = |k: usize, s: usize, o: usize| ((k - 1) * dilation) / s + o;
        Self {
            k,
            stride,
            pad,
            dilation,
            out,
            q: (q(k.0, stride.0, out.0), q(k.1, stride.1, out.1)),
        }
    }

    /// Number of taps.
    pub fn len(&self) -> usize {
        self.k.0 * self.k.1
    }

    /// Padded rows and columns: `pad` before the input, the rest after (or the input cropped
    /// where no tap reads it).
    pub fn padded(&self) -> (usize, usize) {
        (self.q.0 * self.stride.0, self.q.1 * self.stride.1)
    }
}

/// A tensor of `shape` filled with `value` (on the device: a memset and a scalar add).
fn filled<D: Device<f32>>(dev: &D, shape: Shape4, value: f32) -> Tensor<Shape4, f32, D> {
    let z = dev.zeros_like(&shape);
    if value == 0.0 {
        z
    } else {
        z + value
    }
}

/// Pads dims 2 and 3 of `x` with `value`: `taps.pad` rows and columns before the input, and
/// after it as many as make [`Taps::padded`] (cropping the input's last rows or columns when no
/// tap reads them). The result is contiguous whatever the strides of `x`.
pub(super) fn pad<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    taps: &Taps,
    value: f32,
) -> Tensor<Shape4, f32, D, T> {
    let (a, b, h, w) = *x.shape();
    let (rows, cols) = taps.padded();
    let (top, left) = taps.pad;
    let dev = x.device().clone();
    let mut x = x;
    // Crop what no tap reads.
    let (h, w) = (h.min(rows - top), w.min(cols - left));
    if (h, w) != (x.shape().2, x.shape().3) {
        x = slice(x, (.., .., 0..h, 0..w));
    }
    let (bottom, right) = (rows - top - h, cols - left - w);
    if (top, bottom, left, right) == (0, 0, 0, 0) {
        return x.contiguous();
    }
    if left > 0 {
        x = (filled(&dev, (a, b, h, left), value).retaped::<T>(), x).concat_along(Axis::<3>);
    }
    if right > 0 {
        x = (x, filled(&dev, (a, b, h, right), value)).concat_along(Axis::<3>);
    }
    if top > 0 {
        x = (filled(&dev, (a, b, top, cols), value).retaped::<T>(), x).concat_along(Axis::<2>);
    }
    if bottom > 0 {
        x = (x, filled(&dev, (a, b, bottom, cols), value)).concat_along(Axis::<2>);
    }
    x
}

/// The input of every tap of `taps`, row-major over `(i, j)`, each `[a, b, oh, ow]`, from `xp`
/// = [`pad`]`(x)` of shape `[a, b, rows, cols]`.
pub(super) fn slices<D: OpsDevice, T: Tape<f32, D>>(
    xp: Tensor<Shape4, f32, D, T>,
    taps: &Taps,
) -> Vec<Tensor<Shape4, f32, D, T>> {
    let (a, b, _, _) = *xp.shape();
    let (sh, sw) = taps.stride;
    let (qh, qw) = taps.q;
    let (oh, ow) = taps.out;
    let d = taps.dilation;
    // Row `q·s + r` of the padded input is `[q, r]` of this view (free: `xp` is contiguous).
    let split = xp.reshape_like(&(a, b, qh, sh, qw, sw));
    let n = taps.len();
    let mut out = Vec::with_capacity(n);
    for t in 0..n {
        let (i, j) = ((t / taps.k.1) * d, (t % taps.k.1) * d);
        let (qi, ri, qj, rj) = (i / sh, i % sh, j / sw, j % sw);
        let src = split.retaped::<T>();
        let tap = slice(
            src,
            (.., .., qi..qi + oh, ri..ri + 1, qj..qj + ow, rj..rj + 1),
        );
        out.push(tap.reshape_like(&(a, b, oh, ow)));
    }
    // The input's own tape goes with the first tap (the others were cut from retaped copies).
    let (_, tape) = split.split_tape();
    let (t0, tape0) = out.remove(0).split_tape();
    out.insert(0, t0.put_tape(tape0.merge(tape)));
    out
}

/// Stacks the taps along a new leading axis (`[taps, a, b, oh, ow]`).
pub(super) fn stack<D: OpsDevice, T: Tape<f32, D>>(
    taps: Vec<Tensor<Shape4, f32, D, T>>,
) -> Tensor<(usize, usize, usize, usize, usize), f32, D, T> {
    taps.stack()
}
