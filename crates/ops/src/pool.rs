//! Pooling over NCHW inputs: `max_pool2d`, `avg_pool2d` (zero padding counts in the average,
//! PyTorch's `count_include_pad=True`) and `adaptive_avg_pool2d` (PyTorch's window rule). Both
//! the CPU kernels and the generic path are driven by a [`Stencil`](crate::stencil).

use crate::stencil::{window_out, Stencil};
use crate::util;
use crate::{OpsDevice, Shape4};
use dfdx::prelude::*;
use rayon::prelude::*;

/// A square pooling window: kernel size, stride and zero padding (at most `kernel / 2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dCfg {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Pool2dCfg {
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel,
            stride,
            padding,
        }
    }
}

pub(crate) fn adaptive_stencil(x: Shape4, out: (usize, usize)) -> Stencil {
    Stencil::adaptive_avg((x.2, x.3), out)
}

/// A pooling window over one plane, for the direct CPU kernels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    k: usize,
    s: usize,
    p: usize,
}

impl Window {
    pub(crate) fn new(x: Shape4, cfg: Pool2dCfg, op: &str) -> Self {
        let (oh, ow) = window_out((x.2, x.3), cfg.kernel, cfg.stride, cfg.padding, op);
        Self {
            h: x.2,
            w: x.3,
            oh,
            ow,
            k: cfg.kernel,
            s: cfg.stride,
            p: cfg.padding,
        }
    }
    /// The in-bounds input range of output index `o` along an axis of length `n`.
    #[inline]
    fn span(&self, o: usize, n: usize) -> (usize, usize) {
        let a = (o * self.s) as isize - self.p as isize;
        (
            a.max(0) as usize,
            ((a + self.k as isize).max(0) as usize).min(n),
        )
    }
    fn in_len(&self) -> usize {
        self.h * self.w
    }
    fn out_len(&self) -> usize {
        self.oh * self.ow
    }
    fn out_shape(&self, x: Shape4) -> Shape4 {
        (x.0, x.1, self.oh, self.ow)
    }
}

/// CPU: direct max pooling, recording the first maximum of each window for the backward.
pub(crate) fn max_window_cpu<T: Tape<f32, Cpu>>(
    x: Tensor<Shape4, f32, Cpu, T>,
    win: Window,
) -> Tensor<Shape4, f32, Cpu, T> {
    let (x, mut tape) = x.contiguous().split_tape();
    let shape = *x.shape();
    let xv = util::read4(&x);
    let (il, ol) = (win.in_len(), win.out_len());
    let n_out = shape.0 * shape.1 * ol;
    let (mut out, mut arg) = (vec![0.0f32; n_out], vec![0u32; n_out]);
    out.par_chunks_mut(ol)
        .zip(arg.par_chunks_mut(ol))
        .zip(xv.par_chunks(il))
        .with_min_len(8)
        .for_each(|((o, a), xp)| {
            for oy in 0..win.oh {
                let (y0, y1) = win.span(oy, win.h);
                for ox in 0..win.ow {
                    let (x0, x1) = win.span(ox, win.w);
                    let (mut best, mut bi) = (f32::NEG_INFINITY, u32::MAX);
                    'win: for y in y0..y1 {
                        let row = &xp[y * win.w..(y + 1) * win.w];
                        for (xx, &v) in row.iter().enumerate().take(x1).skip(x0) {
                            if v > best || bi == u32::MAX || v.is_nan() {
                                best = v;
                                bi = (y * win.w + xx) as u32;
                                if v.is_nan() {
                                    break 'win;
                                }
                            }
                        }
                    }
                    o[oy * win.ow + ox] = best;
                    a[oy * win.ow + ox] = bi;
                }
            }
        });
    drop(xv);
    let out = x.device().tensor_from_vec(out, win.out_shape(shape));
    if T::OWNS_TAPE {
        let out_id = out.clone();
        tape.add_backward_op(move |grads| {
            let dout = util::take_grad(grads, &out_id)?;
            let dx = util::grad_mut(grads, &x)?;
            dx.par_chunks_mut(il)
                .zip(dout.par_chunks(ol))
                .zip(arg.par_chunks(ol))
                .with_min_len(8)
                .for_each(|((dp, g), a)| {
                    for (&i, &gv) in a.iter().zip(g) {
                        if i != u32::MAX {
                            dp[i as usize] += gv;
                        }
                    }
                });
            util::release_grad(dout);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// CPU: direct average pooling (divisor `kernel²`, padding counted as zeros).
pub(crate) fn avg_window_cpu<T: Tape<f32, Cpu>>(
    x: Tensor<Shape4, f32, Cpu, T>,
    win: Window,
) -> Tensor<Shape4, f32, Cpu, T> {
    let (x, mut tape) = x.contiguous().split_tape();
    let shape = *x.shape();
    let xv = util::read4(&x);
    let (il, ol) = (win.in_len(), win.out_len());
    let scale = 1.0 / (win.k * win.k) as f32;
    let mut out = vec![0.0f32; shape.0 * shape.1 * ol];
    out.par_chunks_mut(ol)
        .zip(xv.par_chunks(il))
        .with_min_len(8)
        .for_each(|(o, xp)| {
            for oy in 0..win.oh {
                let (y0, y1) = win.span(oy, win.h);
                for ox in 0..win.ow {
                    let (x0, x1) = win.span(ox, win.w);
                    let mut acc = 0.0f32;
                    for y in y0..y1 {
                        acc += xp[y * win.w + x0..y * win.w + x1].iter().sum::<f32>();
                    }
                    o[oy * win.ow + ox] = acc * scale;
                }
            }
        });
    drop(xv);
    let out = x.device().tensor_from_vec(out, win.out_shape(shape));
    if T::OWNS_TAPE {
        let out_id = out.clone();
        tape.add_backward_op(move |grads| {
            let dout = util::take_grad(grads, &out_id)?;
            let dx = util::grad_mut(grads, &x)?;
            dx.par_chunks_mut(il)
                .zip(dout.par_chunks(ol))
                .with_min_len(8)
                .for_each(|(dp, g)| {
                    for oy in 0..win.oh {
                        let (y0, y1) = win.span(oy, win.h);
                        for ox in 0..win.ow {
                            let (x0, x1) = win.span(ox, win.w);
                            let gv = g[oy * win.ow + ox] * scale;
                            for y in y0..y1 {
                                dp[y * win.w + x0..y * win.w + x1]
                                    .iter_mut()
                                    .for_each(|d| *d += gv);
                            }
                        }
                    }
                });
            util::release_grad(dout);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// CPU: applies a weighted stencil plane by plane, with its backward.
pub(crate) fn weighted_cpu<T: Tape<f32, Cpu>>(
    x: Tensor<Shape4, f32, Cpu, T>,
    st: Stencil,
) -> Tensor<Shape4, f32, Cpu, T> {
    let (x, mut tape) = x.contiguous().split_tape();
    let shape = *x.shape();
    let xv = util::read4(&x);
    let mut out = vec![0.0f32; shape.0 * shape.1 * st.out_len()];
    st.weighted_forward(&xv, &mut out);
    let out = x.device().tensor_from_vec(out, st.out_shape(shape));
    if T::OWNS_TAPE {
        let out_id = out.clone();
        tape.add_backward_op(move |grads| {
            let dout = util::take_grad(grads, &out_id)?;
            st.weighted_backward(&dout, util::grad_mut(grads, &x)?);
            util::release_grad(dout);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// Max pooling (PyTorch `F.max_pool2d`, padding with −∞): `[N, C, H, W] → [N, C, OH, OW]`,
/// `OH = (H + 2·padding − kernel) / stride + 1`.
pub fn max_pool2d<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    cfg: Pool2dCfg,
) -> Tensor<Shape4, f32, D, T> {
    D::max_pool2d_op(x, cfg)
}

/// Average pooling (PyTorch `F.avg_pool2d` with `count_include_pad=True`: every window divides
/// by `kernel²`, padding counting as zeros).
pub fn avg_pool2d<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    cfg: Pool2dCfg,
) -> Tensor<Shape4, f32, D, T> {
    D::avg_pool2d_op(x, cfg)
}

/// Adaptive average pooling (PyTorch `F.adaptive_avg_pool2d`) to `out = (OH, OW)`: output row
/// `i` averages input rows `⌊i·H/OH⌋ .. ⌈(i+1)·H/OH⌉` (likewise columns). `(1, 1)` is global
/// average pooling.
pub fn adaptive_avg_pool2d<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    out: (usize, usize),
) -> Tensor<Shape4, f32, D, T> {
    D::adaptive_avg_pool2d_op(x, out)
}
