//! Fused BatchNorm2d (+ optional ReLU), convolution + BatchNorm as one op, and residual add +
//! ReLU.
//!
//! Training mode normalises with the batch statistics over `(N, H, W)` (biased variance) and
//! updates the running statistics as PyTorch does: `running = (1 − momentum)·running +
//! momentum·batch`, with the *unbiased* batch variance (`·M/(M−1)`, `M = N·H·W`) for
//! `running_var`. Evaluation mode normalises with the running statistics. Both are
//! `y = (x − μ)/√(σ² + eps)·γ + β`, followed by `max(y, 0)` when `relu` is set.

use crate::conv::ConvGeom;
use crate::lanes::{self, LANES};
use crate::layers::{BatchNorm2d, Conv2d};
use crate::{shared, util};
use crate::{OpsDevice, Shape4};
use dfdx::prelude::*;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// BatchNorm hyper-parameters (PyTorch's defaults: momentum 0.1, eps 1e-5) and whether a ReLU
/// follows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormCfg {
    pub momentum: f32,
    pub eps: f32,
    pub relu: bool,
}

impl Default for BatchNormCfg {
    fn default() -> Self {
        Self {
            momentum: 0.1,
            eps: 1e-5,
            relu: false,
        }
    }
}

impl BatchNormCfg {
    /// PyTorch's defaults, followed by a ReLU when `relu`.
    pub fn with_relu(relu: bool) -> Self {
        Self {
            relu,
            ..Self::default()
        }
    }
}

/// Panics unless each BatchNorm parameter (`weight`, `bias`, `running_mean`, `running_var`, in
/// that order) has one value per channel of `x`, naming the offending one.
pub(crate) fn check_bn<D: Storage<f32>>(x: Shape4, params: [&Tensor<(usize,), f32, D>; 4]) {
    let names = ["weight", "bias", "running_mean", "running_var"];
    for (name, t) in names.into_iter().zip(params) {
        let len = t.shape().0;
        assert_eq!(
            len, x.1,
            "batch_norm2d: `{name}` has {len} values, the input {x:?} has {} channels",
            x.1
        );
    }
}

/// `(Σ (v − k), Σ (v − k)²)` of a slice, in [`lanes::LANES`] partial sums.
fn shifted_sums(v: &[f32], k: f32) -> (f64, f64) {
    let (chunks, rest) = v.as_chunks::<LANES>();
    let (s, q) = lanes::shifted(chunks, k);
    let (mut s64, mut q64) = (0.0f64, 0.0f64);
    for &r in rest {
        let d = (r - k) as f64;
        s64 += d;
        q64 += d * d;
    }
    for l in 0..LANES {
        s64 += s[l] as f64;
        q64 += q[l] as f64;
    }
    (s64, q64)
}

/// Per-channel sums over the planes of `x: [n, c, hw]` (and of `y`, laid out alike), each
/// plane's pair from `f(channel, x plane, y plane)`. The batch is split into one contiguous run
/// of samples per rayon thread, so each thread streams through memory in order (a split by
/// channel reads one `hw`-sized plane per sample, scattered), and the runs' sums are added in
/// order, so the result does not depend on scheduling.
fn plane_sums(
    x: &[f32],
    y: &[f32],
    c: usize,
    hw: usize,
    f: impl Fn(usize, &[f32], &[f32]) -> (f64, f64) + Sync,
) -> Vec<(f64, f64)> {
    let per = util::per_thread(x.len() / (c * hw)) * c * hw;
    let runs: Vec<Vec<(f64, f64)>> = x
        .par_chunks(per)
        .zip(y.par_chunks(per))
        .map(|(xs, ys)| {
            let mut acc = vec![(0.0f64, 0.0f64); c];
            for (q, (xp, yp)) in xs.chunks(hw).zip(ys.chunks(hw)).enumerate() {
                let (a, b) = f(q % c, xp, yp);
                acc[q % c].0 += a;
                acc[q % c].1 += b;
            }
            acc
        })
        .collect();
    let mut sums = vec![(0.0f64, 0.0f64); c];
    for run in runs {
        for (s, r) in sums.iter_mut().zip(run) {
            s.0 += r.0;
            s.1 += r.1;
        }
    }
    sums
}

/// `(Σ g, Σ g·(x − μ)·invstd)` over one plane of the backward pass, `g` zeroed where the fused
/// ReLU's output was not positive (`RELU`), with `[scale, shift, μ, invstd]` of the channel.
fn grad_sums<const RELU: bool>(x: &[f32], dy: &[f32], p: [f32; 4]) -> (f64, f64) {
    let ((xc, xr), (gc, gr)) = (x.as_chunks::<LANES>(), dy.as_chunks::<LANES>());
    let (mut p1, mut p2) = lanes::masked_grad::<RELU>(xc, gc, p);
    if !xr.is_empty() {
        // The last values as one more chunk, padded with zero gradients (which add nothing).
        let (mut xt, mut gt) = ([0.0f32; LANES], [0.0f32; LANES]);
        xt[..xr.len()].copy_from_slice(xr);
        gt[..gr.len()].copy_from_slice(gr);
        let (t1, t2) = lanes::masked_grad::<RELU>(&[xt], &[gt], p);
        for l in 0..LANES {
            p1[l] += t1[l];
            p2[l] += t2[l];
        }
    }
    (
        p1.iter().map(|&v| v as f64).sum::<f64>(),
        p2.iter().map(|&v| v as f64).sum::<f64>(),
    )
}

/// Per-channel batch mean and biased variance of `x: [n, c, hw]`.
fn batch_stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f32>, Vec<f32>) {
    let m = (n * hw) as f64;
    // Sums of `x − k` with `k` the channel's first value, for a variance that does not
    // cancel catastrophically when the mean is large.
    let k: Vec<f32> = (0..c).map(|ch| x[ch * hw]).collect();
    plane_sums(x, x, c, hw, |ch, xp, _| shifted_sums(xp, k[ch]))
        .into_iter()
        .zip(&k)
        .map(|((s, q), &k)| {
            let mean_shift = s / m;
            let var = (q / m - mean_shift * mean_shift).max(0.0);
            ((k as f64 + mean_shift) as f32, var as f32)
        })
        .unzip()
}

/// Where a backward pass puts `∂/∂x`: added into an existing gradient buffer (`f32`), or
/// written into a fresh one (`MaybeUninit<f32>`, which then needs no zero-filling first).
trait GradOut: Send {
    fn put(&mut self, v: f32);
}

impl GradOut for f32 {
    fn put(&mut self, v: f32) {
        *self += v;
    }
}

impl GradOut for MaybeUninit<f32> {
    fn put(&mut self, v: f32) {
        self.write(v);
    }
}

/// Saved state of a BN forward pass, used by its backward.
struct BnSaved {
    c: usize,
    hw: usize,
    scale: Vec<f32>,
    shift: Vec<f32>,
    /// Statistics the output was normalised with (batch ones in training).
    mean: Vec<f32>,
    invstd: Vec<f32>,
    relu: bool,
    /// Whether the statistics depend on `x` (training mode).
    train: bool,
}

impl BnSaved {
    /// `y = x·scale[c] + shift[c]` (then ReLU), plane-parallel.
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let (c, relu) = (self.c, self.relu);
        util::map_chunks(x, self.hw, |q| {
            let (a, b) = (self.scale[q % c], self.shift[q % c]);
            move |v: f32| {
                let y = v * a + b;
                if relu {
                    y.max(0.0)
                } else {
                    y
                }
            }
        })
    }

    /// Puts `∂/∂x` into every element of `dx` (added or written: [`GradOut`]) and returns
    /// `(∂/∂γ, ∂/∂β)`.
    fn backward<O: GradOut>(&self, x: &[f32], dy: &[f32], dx: &mut [O]) -> (Vec<f32>, Vec<f32>) {
        assert!(
            dx.len() == x.len() && dy.len() == x.len(),
            "batch_norm2d: gradient lengths"
        );
        let (c, hw) = (self.c, self.hw);
        let n = x.len() / (c * hw);
        let sums: Vec<(f32, f32)> = plane_sums(x, dy, c, hw, |ch, xp, gp| {
            let (a, b, mu, is) = (
                self.scale[ch],
                self.shift[ch],
                self.mean[ch],
                self.invstd[ch],
            );
            if self.relu {
                grad_sums::<true>(xp, gp, [a, b, mu, is])
            } else {
                grad_sums::<false>(xp, gp, [a, b, mu, is])
            }
        })
        .into_iter()
        .map(|(s1, s2)| (s1 as f32, s2 as f32))
        .collect();
        let m = (n * hw) as f32;
        dx.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .zip(dy.par_chunks(hw))
            .enumerate()
            .with_min_len(4)
            .for_each(|(q, ((d, xp), gp))| {
                let ch = q % c;
                let (a, b, mu, is) = (
                    self.scale[ch],
                    self.shift[ch],
                    self.mean[ch],
                    self.invstd[ch],
                );
                let (k1, k2) = if self.train {
                    (sums[ch].0 / m, sums[ch].1 / m)
                } else {
                    (0.0, 0.0)
                };
                let f = |d: &mut O, xv: f32, g: f32| d.put(a * (g - k1 - (xv - mu) * is * k2));
                if self.relu {
                    for ((d, &xv), &g) in d.iter_mut().zip(xp).zip(gp) {
                        f(d, xv, if xv * a + b <= 0.0 { 0.0 } else { g });
                    }
                } else {
                    for ((d, &xv), &g) in d.iter_mut().zip(xp).zip(gp) {
                        f(d, xv, g);
                    }
                }
            });
        sums.into_iter().map(|(s1, s2)| (s2, s1)).unzip()
    }
}

/// Shared CPU driver: forward with the given statistics, then register the backward.
fn bn_cpu<T: Tape<f32, Cpu>>(
    x: Tensor<Shape4, f32, Cpu, NoneTape>,
    mut tape: T,
    xv: &[f32],
    weight: &Tensor<(usize,), f32, Cpu>,
    bias: &Tensor<(usize,), f32, Cpu>,
    saved: BnSaved,
) -> Tensor<Shape4, f32, Cpu, T> {
    let out = saved.forward(xv);
    let (out, published) = shared::publish(x.device(), out, *x.shape(), T::OWNS_TAPE);
    if T::OWNS_TAPE {
        let (out_id, weight, bias) = (out.clone(), weight.clone(), bias.clone());
        tape.add_backward_op(move |grads| {
            drop(published);
            let dy = util::take_grad(grads, &out_id)?;
            let xv = util::read4(&x);
            let (dg, db) = saved.backward(&xv, &dy, util::grad_mut(grads, &x)?);
            util::release_grad(dy);
            util::add_grad(grads, &weight, &dg)?;
            util::add_grad(grads, &bias, &db)
        });
    }
    out.put_tape(tape)
}

/// The batch statistics of `xv` (`shape`), the running statistics updated with them (PyTorch's
/// rule), and the state the backward pass needs.
fn train_stats(
    xv: &[f32],
    shape: Shape4,
    weight: &Tensor<(usize,), f32, Cpu>,
    bias: &Tensor<(usize,), f32, Cpu>,
    running_mean: &mut Tensor<(usize,), f32, Cpu>,
    running_var: &mut Tensor<(usize,), f32, Cpu>,
    cfg: BatchNormCfg,
) -> BnSaved {
    let (n, c, h, w) = shape;
    let (hw, m) = (h * w, n * h * w);
    assert!(
        m > 1,
        "batch_norm2d: training needs more than one value per channel, input is {shape:?}"
    );
    let (mean, var) = batch_stats(xv, n, c, hw);
    let (g, b) = (util::read(weight), util::read(bias));
    let invstd: Vec<f32> = var.iter().map(|&v| 1.0 / (v + cfg.eps).sqrt()).collect();
    let scale: Vec<f32> = g.iter().zip(&invstd).map(|(g, i)| g * i).collect();
    let shift: Vec<f32> = b
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    let (mom, unbias) = (cfg.momentum, m as f32 / (m - 1) as f32);
    let rm: Vec<f32> = util::read(running_mean)
        .iter()
        .zip(&mean)
        .map(|(r, v)| (1.0 - mom) * r + mom * v)
        .collect();
    let rv: Vec<f32> = util::read(running_var)
        .iter()
        .zip(&var)
        .map(|(r, v)| (1.0 - mom) * r + mom * v * unbias)
        .collect();
    running_mean.copy_from(&rm);
    running_var.copy_from(&rv);
    BnSaved {
        c,
        hw,
        scale,
        shift,
        mean,
        invstd,
        relu: cfg.relu,
        train: true,
    }
}

/// CPU fast path of [`batch_norm2d_train`].
pub(crate) fn bn_train_cpu<T: Tape<f32, Cpu>>(
    x: Tensor<Shape4, f32, Cpu, T>,
    weight: &Tensor<(usize,), f32, Cpu>,
    bias: &Tensor<(usize,), f32, Cpu>,
    running_mean: &mut Tensor<(usize,), f32, Cpu>,
    running_var: &mut Tensor<(usize,), f32, Cpu>,
    cfg: BatchNormCfg,
) -> Tensor<Shape4, f32, Cpu, T> {
    let shape = *x.shape();
    check_bn(shape, [weight, bias, running_mean, running_var]);
    let (x, tape) = x.contiguous().split_tape();
    let xv = util::read4(&x);
    let saved = train_stats(&xv, shape, weight, bias, running_mean, running_var, cfg);
    bn_cpu(x, tape, &xv, weight, bias, saved)
}

/// [`conv_bn2d_train`] as its two ops, one after the other (every device but the CPU).
pub(crate) fn conv_then_bn<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    conv: &Conv2d<D>,
    bn: &mut BatchNorm2d<D>,
) -> Tensor<Shape4, f32, D, T> {
    let z = D::conv2d_op(x, &conv.weight, None, conv.cfg);
    let (rm, rv) = (&mut bn.running_mean, &mut bn.running_var);
    D::batch_norm2d_train_op(z, &bn.weight, &bn.bias, rm, rv, bn.cfg)
}

/// CPU fast path of [`conv_bn2d_train`]: the convolution's output stays a buffer of this op (no
/// dfdx tensor, so no gradient buffer for dfdx to zero-fill on one thread), and the BatchNorm
/// backward pass writes its `∂/∂z` into a fresh buffer for the convolution's. The same values
/// and gradients as the two ops one after the other (equal as floats: where those add `∂/∂z` to
/// a zero-filled buffer, this writes it, so a zero may keep its sign).
pub(crate) fn conv_bn_train_cpu<T: Tape<f32, Cpu>>(
    x: Tensor<Shape4, f32, Cpu, T>,
    conv: &Conv2d<Cpu>,
    bn: &mut BatchNorm2d<Cpu>,
) -> Tensor<Shape4, f32, Cpu, T> {
    let geo = ConvGeom::new(*x.shape(), *conv.weight.shape(), conv.cfg);
    let shape = geo.out_shape();
    check_bn(
        shape,
        [&bn.weight, &bn.bias, &bn.running_mean, &bn.running_var],
    );
    let (x, mut tape) = x.contiguous().split_tape();
    let wv = util::read(&conv.weight);
    let z = {
        let xv = util::read4(&x);
        crate::conv::forward_cpu(&geo, &xv, &wv, None)
    };
    let saved = train_stats(
        &z,
        shape,
        &bn.weight,
        &bn.bias,
        &mut bn.running_mean,
        &mut bn.running_var,
        bn.cfg,
    );
    let out = saved.forward(&z);
    let (out, published) = shared::publish(x.device(), out, shape, T::OWNS_TAPE);
    if T::OWNS_TAPE {
        let out_id = out.clone();
        let (weight, gamma, beta) = (conv.weight.clone(), bn.weight.clone(), bn.bias.clone());
        tape.add_backward_op(move |grads| {
            drop(published);
            let dy = util::take_grad(grads, &out_id)?;
            // `∂/∂z` written straight into a fresh buffer (no zero-filling, no read-back).
            let mut dz: Vec<f32> = Vec::with_capacity(z.len());
            let (dg, db) = saved.backward(&z, &dy, &mut dz.spare_capacity_mut()[..z.len()]);
            // SAFETY: `backward` puts a value into every element of the slice it is given.
            unsafe { dz.set_len(z.len()) };
            util::release_grad(dy);
            let xv = util::read4(&x);
            let dx = util::grad_mut(grads, &x)?;
            let (dw, _) = crate::conv::backward_cpu(&geo, &xv, &wv, &dz, dx, false);
            util::add_grad(grads, &weight, &dw)?;
            util::add_grad(grads, &gamma, &dg)?;
            util::add_grad(grads, &beta, &db)
        });
    }
    out.put_tape(tape)
}

/// CPU fast path of [`batch_norm2d_eval`].
pub(crate) fn bn_eval_cpu<T: Tape<f32, Cpu>>(
    x: Tensor<Shape4, f32, Cpu, T>,
    weight: &Tensor<(usize,), f32, Cpu>,
    bias: &Tensor<(usize,), f32, Cpu>,
    running_mean: &Tensor<(usize,), f32, Cpu>,
    running_var: &Tensor<(usize,), f32, Cpu>,
    cfg: BatchNormCfg,
) -> Tensor<Shape4, f32, Cpu, T> {
    let shape = *x.shape();
    check_bn(shape, [weight, bias, running_mean, running_var]);
    let (_, c, h, w) = shape;
    let (x, tape) = x.contiguous().split_tape();
    let xv = util::read4(&x);
    let (g, b) = (util::read(weight), util::read(bias));
    let mean = util::read_vec(running_mean);
    let invstd: Vec<f32> = util::read(running_var)
        .iter()
        .map(|&v| 1.0 / (v + cfg.eps).sqrt())
        .collect();
    let scale: Vec<f32> = g.iter().zip(&invstd).map(|(g, i)| g * i).collect();
    let shift: Vec<f32> = b
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    let saved = BnSaved {
        c,
        hw: h * w,
        scale,
        shift,
        mean,
        invstd,
        relu: cfg.relu,
        train: false,
    };
    bn_cpu(x, tape, &xv, weight, bias, saved)
}

/// CPU fast path of [`add_relu`]: one fused pass forward, one pass per input backward (masked
/// by the output, which its tape keeps anyway).
pub(crate) fn add_relu_cpu<T: Tape<f32, Cpu>>(
    a: Tensor<Shape4, f32, Cpu, T>,
    b: Tensor<Shape4, f32, Cpu, T>,
) -> Tensor<Shape4, f32, Cpu, T> {
    assert_eq!(a.shape(), b.shape(), "add_relu: shapes differ");
    let (a, ta) = a.contiguous().split_tape();
    let (b, tb) = b.contiguous().split_tape();
    let mut tape = ta.merge(tb);
    let out = {
        let (av, bv) = (util::read4(&a), util::read4(&b));
        util::zip_map(&av, &bv, |x, y| (x + y).max(0.0))
    };
    let (out, published) = shared::publish(a.device(), out, *a.shape(), T::OWNS_TAPE);
    if T::OWNS_TAPE {
        let out_id = out.clone();
        tape.add_backward_op(move |grads| {
            // The ReLU passed the gradient where its output is positive (`max` gives 0 for a
            // NaN sum, which the mask then blocks too). The output is read in place.
            let y = util::read4(&out_id);
            drop(published);
            let g = util::take_grad(grads, &out_id)?;
            const CHUNK: usize = 1 << 14;
            // Both gradients in one pass over `g` and `y`: `a`'s buffer is moved out of `grads`
            // for the pass so that `b`'s can be borrowed beside it. If `b` is `a` (the same
            // tensor twice), its slot is the one just emptied, and it gets `2·mask(g)`.
            let mut da = util::take_grad(grads, &a)?;
            let db = util::grad_mut(grads, &b)?;
            if db.len() == g.len() {
                da.par_chunks_mut(CHUNK)
                    .zip(db.par_chunks_mut(CHUNK))
                    .zip(g.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
                    .for_each(|((da, db), (gp, yp))| {
                        for (((da, db), &g), &y) in da.iter_mut().zip(db).zip(gp).zip(yp) {
                            let m = if y > 0.0 { g } else { 0.0 };
                            *da += m;
                            *db += m;
                        }
                    });
            } else {
                da.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(y.par_chunks(CHUNK))
                    .for_each(|((d, gp), yp)| {
                        for ((d, &g), &y) in d.iter_mut().zip(gp).zip(yp) {
                            let m = if y > 0.0 { g } else { 0.0 };
                            *d += m + m;
                        }
                    });
            }
            util::put_grad(grads, &a, da)?;
            util::release_grad(g);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// Training-mode BatchNorm2d over `x: [N, C, H, W]` with affine `weight`/`bias` (`[C]`), fused
/// with a ReLU when `cfg.relu`; updates `running_mean`/`running_var` in place (PyTorch's rule,
/// unbiased running variance). Gradients flow to `x`, `weight` and `bias`.
pub fn batch_norm2d_train<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    weight: &Tensor<(usize,), f32, D>,
    bias: &Tensor<(usize,), f32, D>,
    running_mean: &mut Tensor<(usize,), f32, D>,
    running_var: &mut Tensor<(usize,), f32, D>,
    cfg: BatchNormCfg,
) -> Tensor<Shape4, f32, D, T> {
    D::batch_norm2d_train_op(x, weight, bias, running_mean, running_var, cfg)
}

/// `bn(conv(x))` in training mode (the convolution without bias, then
/// [`batch_norm2d_train`] with `bn`'s parameters, configuration and running statistics, which
/// it updates): the same values and gradients as the two ops, as one op where the device has a
/// fused path (the CPU: see `conv_bn_train_cpu`).
pub fn conv_bn2d_train<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    conv: &Conv2d<D>,
    bn: &mut BatchNorm2d<D>,
) -> Tensor<Shape4, f32, D, T> {
    D::conv_bn2d_train_op(x, conv, bn)
}

/// Evaluation-mode BatchNorm2d: normalises with the running statistics (`cfg.momentum` unused),
/// then ReLU when `cfg.relu`. Differentiable in `x`, `weight` and `bias`.
pub fn batch_norm2d_eval<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    weight: &Tensor<(usize,), f32, D>,
    bias: &Tensor<(usize,), f32, D>,
    running_mean: &Tensor<(usize,), f32, D>,
    running_var: &Tensor<(usize,), f32, D>,
    cfg: BatchNormCfg,
) -> Tensor<Shape4, f32, D, T> {
    D::batch_norm2d_eval_op(x, weight, bias, running_mean, running_var, cfg)
}

/// Residual join `max(a + b, 0)` (a ResNet block's output); the tapes are merged (pass the
/// skip branch as `x.retaped()` when both come from one traced tensor).
pub fn add_relu<D: OpsDevice, T: Tape<f32, D>>(
    a: Tensor<Shape4, f32, D, T>,
    b: Tensor<Shape4, f32, D, T>,
) -> Tensor<Shape4, f32, D, T> {
    D::add_relu_op(a, b)
}
