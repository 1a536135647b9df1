//! Channel-wise concatenation and splitting of NCHW tensors with runtime channel counts
//! (PyTorch's `torch.cat(xs, dim=1)` and `torch.split(x, sizes, dim=1)`), and the mean of
//! squares over channels (the attention map of AT, SAD and SCD).

use crate::util;
use crate::{OpsDevice, Shape4};
use dfdx::prelude::*;
use rayon::prelude::*;

pub(crate) fn check_concat(shapes: &[Shape4]) -> usize {
    assert!(
        !shapes.is_empty(),
        "concat_channels: no tensors to concatenate"
    );
    let (n, _, h, w) = shapes[0];
    for s in shapes {
        assert!(
            s.0 == n && s.2 == h && s.3 == w,
            "concat_channels: shapes {shapes:?} differ outside the channel dimension"
        );
    }
    shapes.iter().map(|s| s.1).sum()
}

pub(crate) fn check_split(x: Shape4, sizes: &[usize]) {
    assert!(!sizes.is_empty(), "split_channels: no sizes given");
    let total: usize = sizes.iter().sum();
    assert_eq!(
        total, x.1,
        "split_channels: sizes {sizes:?} add up to {total}, the input {x:?} has {} channels",
        x.1
    );
}

/// CPU fast path of [`concat_channels`].
pub(crate) fn concat_cpu<T: Tape<f32, Cpu>>(
    xs: Vec<Tensor<Shape4, f32, Cpu, T>>,
) -> Tensor<Shape4, f32, Cpu, T> {
    let shapes: Vec<Shape4> = xs.iter().map(|x| *x.shape()).collect();
    let c_total = check_concat(&shapes);
    let (n, _, h, w) = shapes[0];
    let hw = h * w;
    let mut tape = T::default();
    let mut parts = Vec::with_capacity(xs.len());
    for x in xs {
        let (x, t) = x.contiguous().split_tape();
        tape = tape.merge(t);
        parts.push(x);
    }
    let mut out = vec![0.0f32; n * c_total * hw];
    let mut off = 0;
    for x in &parts {
        let v = util::read4(x);
        let ci = x.shape().1;
        for b in 0..n {
            out[(b * c_total + off) * hw..(b * c_total + off + ci) * hw]
                .copy_from_slice(&v[b * ci * hw..(b + 1) * ci * hw]);
        }
        off += ci;
    }
    let out = parts[0].device().tensor_from_vec(out, (n, c_total, h, w));
    if T::OWNS_TAPE {
        let out_id = out.clone();
        tape.add_backward_op(move |grads| {
            let dout = util::take_grad(grads, &out_id)?;
            let mut off = 0;
            for x in &parts {
                let ci = x.shape().1;
                let dx = util::grad_mut(grads, x)?;
                for b in 0..n {
                    let src = &dout[(b * c_total + off) * hw..(b * c_total + off + ci) * hw];
                    for (d, s) in dx[b * ci * hw..(b + 1) * ci * hw].iter_mut().zip(src) {
                        *d += s;
                    }
                }
                off += ci;
            }
            util::release_grad(dout);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// CPU fast path of [`split_channels`].
pub(crate) fn split_cpu<T: Tape<f32, Cpu>>(
    x: Tensor<Shape4, f32, Cpu, T>,
    sizes: &[usize],
) -> Vec<Tensor<Shape4, f32, Cpu, T>> {
    let shape = *x.shape();
    check_split(shape, sizes);
    let (n, c, h, w) = shape;
    let hw = h * w;
    let (x, mut tape) = x.contiguous().split_tape();
    let v = util::read4(&x);
    let mut outs = Vec::with_capacity(sizes.len());
    let mut off = 0;
    for &ci in sizes {
        let mut o = vec![0.0f32; n * ci * hw];
        for b in 0..n {
            o[b * ci * hw..(b + 1) * ci * hw]
                .copy_from_slice(&v[(b * c + off) * hw..(b * c + off + ci) * hw]);
        }
        outs.push(x.device().tensor_from_vec(o, (n, ci, h, w)));
        off += ci;
    }
    if T::OWNS_TAPE {
        let ids: Vec<Tensor<Shape4, f32, Cpu>> = outs.clone();
        tape.add_backward_op(move |grads| {
            let mut off = 0;
            for o in &ids {
                let ci = o.shape().1;
                let g = util::take_grad(grads, o)?;
                let dx = util::grad_mut(grads, &x)?;
                for b in 0..n {
                    for (d, s) in dx[(b * c + off) * hw..(b * c + off + ci) * hw]
                        .iter_mut()
                        .zip(&g[b * ci * hw..(b + 1) * ci * hw])
                    {
                        *d += s;
                    }
                }
                util::release_grad(g);
                off += ci;
            }
            Ok(())
        });
    }
    let mut tape = Some(tape);
    outs.into_iter()
        .map(|o| o.put_tape(tape.take().unwrap_or_default()))
        .collect()
}

/// Concatenates NCHW tensors along the channel dimension. The tapes of all inputs are merged
/// into the output's.
pub fn concat_channels<D: OpsDevice, T: Tape<f32, D>>(
    xs: Vec<Tensor<Shape4, f32, D, T>>,
) -> Tensor<Shape4, f32, D, T> {
    D::concat_channels_op(xs)
}

/// Splits an NCHW tensor along the channel dimension into pieces of `sizes` channels (which
/// must add up to the input's). The first piece carries the input's tape (and the split's
/// backward op); the others carry fresh tapes, so every piece whose gradient matters must be
/// merged back into the loss (as using it in the loss does).
pub fn split_channels<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    sizes: &[usize],
) -> Vec<Tensor<Shape4, f32, D, T>> {
    D::split_channels_op(x, sizes)
}

/// CPU fast path of [`channel_sq_mean`]: one pass over `x` forward, one backward, both
/// parallel over samples (dfdx's square and mean run on one thread, with a strided reduction).
pub(crate) fn channel_sq_mean_cpu<T: Tape<f32, Cpu>>(
    x: Tensor<Shape4, f32, Cpu, T>,
) -> Tensor<(usize, usize), f32, Cpu, T> {
    let (n, c, h, w) = *x.shape();
    let hw = h * w;
    let (x, mut tape) = x.contiguous().split_tape();
    // dfdx's `mean` multiplies the sum by the reciprocal computed in f64.
    let inv = (1.0 / c.max(1) as f64) as f32;
    let mut out = util::zeros(n * hw);
    {
        let xv = util::read4(&x);
        out.par_chunks_mut(hw.max(1))
            .zip(xv.par_chunks((c * hw).max(1)))
            .for_each(|(o, xs)| {
                for plane in xs.chunks(hw) {
                    for (o, &v) in o.iter_mut().zip(plane) {
                        *o += v * v;
                    }
                }
                o.iter_mut().for_each(|o| *o *= inv);
            });
    }
    let out = x.device().tensor_from_vec(out, (n, hw));
    if T::OWNS_TAPE {
        let out_id = out.clone();
        tape.add_backward_op(move |grads| {
            let g = util::take_grad(grads, &out_id)?;
            let xv = util::read4(&x);
            let dx = util::grad_mut(grads, &x)?;
            dx.par_chunks_mut((c * hw).max(1))
                .zip(xv.par_chunks((c * hw).max(1)))
                .zip(g.par_chunks(hw.max(1)))
                .for_each(|((d, xs), gs)| {
                    for (dp, xp) in d.chunks_mut(hw).zip(xs.chunks(hw)) {
                        for ((d, &v), &g) in dp.iter_mut().zip(xp).zip(gs) {
                            *d += g * inv * (2.0 * v);
                        }
                    }
                });
            util::release_grad(g);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// `att(x)[n, y·w + x] = (1/C) Σ_c x[n, c, y, x]²`: the mean of squares over channels, as a
/// `[N, H·W]` matrix (`METHODS.md`, notation: the attention map of AT, SAD and SCD). The same
/// values and gradients as dfdx's `x.square().mean::<_, Axis<1>>()`, reshaped.
pub fn channel_sq_mean<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
) -> Tensor<(usize, usize), f32, D, T> {
    D::channel_sq_mean_op(x)
}
