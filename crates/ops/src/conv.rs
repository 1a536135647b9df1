//! 2-D convolution over NCHW inputs with an OIHW weight (PyTorch's `F.conv2d`): stride,
//! zero padding, dilation, groups (depthwise included) and an optional bias.
//!
//! `out[n, o, y, x] = bias[o] + Σ_{c, i, j} w[o, c, i, j] · in[n, g·C/G + c, y·s − p + i·d, x·s − p + j·d]`
//! where `g = o / (O/G)`. On the CPU, the 3×3 convolutions that `crate::direct` takes (its
//! `applies` has the cutoffs: every 3×3 layer of ResNet-20, and all of ResNet-18's but its two
//! widest stride-2 ones) run its direct kernels, except that the widest stride-1 layers
//! (`crate::winograd::applies`: ResNet-18's 256 channels 8×8 and 512 channels 4×4) run their
//! forward and backward passes as Winograd `F(2×2, 3×3)`. Every other geometry lowers each sample
//! and group to one `gemm` (im2col; a 1×1 stride-1 unpadded convolution reads the input
//! directly), and the backward pass computes `dW += dY · colᵀ` and `dX += col2im(Wᵀ · dY)`.

use crate::direct;
use crate::im2col::{col2im, im2col};
use crate::shared;
use crate::util::{self, Mat};
use crate::winograd;
use crate::{OpsDevice, Shape4};
use dfdx::prelude::*;
use rayon::prelude::*;

/// Hyper-parameters of a convolution (square stride, padding and dilation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dCfg {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Default for Conv2dCfg {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

impl Conv2dCfg {
    /// Stride and padding, no dilation, one group.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride,
            padding,
            ..Self::default()
        }
    }
    /// The same configuration with dilation `d`.
    pub fn dilation(self, d: usize) -> Self {
        Self {
            dilation: d,
            ..self
        }
    }
    /// The same configuration with `g` groups.
    pub fn groups(self, g: usize) -> Self {
        Self { groups: g, ..self }
    }
}

/// Every size of one convolution, validated.
#[derive(Debug, Clone, Copy)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub s: usize,
    pub p: usize,
    pub d: usize,
    pub g: usize,
    /// Input channels per group.
    pub cig: usize,
    /// Output channels per group.
    pub cog: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Checks the shapes against each other; panics with the offending values.
    pub fn new(x: Shape4, weight: Shape4, cfg: Conv2dCfg) -> Self {
        let (n, c, h, w) = x;
        let (co, wc, kh, kw) = weight;
        let Conv2dCfg {
            stride: s,
            padding: p,
            dilation: d,
            groups: g,
        } = cfg;
        assert!(
            s > 0 && d > 0 && g > 0,
            "conv2d: stride {s}, dilation {d} and groups {g} must be positive"
        );
        assert!(
            c.is_multiple_of(g),
            "conv2d: input channels {c} are not divisible by groups {g}"
        );
        assert!(
            co.is_multiple_of(g),
            "conv2d: output channels {co} are not divisible by groups {g}"
        );
        assert!(
            wc == c / g,
            "conv2d: weight {weight:?} has {wc} input channels per group, but input {x:?} with {g} groups has {}",
            c / g
        );
        assert!(kh > 0 && kw > 0, "conv2d: empty kernel {kh}x{kw}");
        let (eh, ew) = (d * (kh - 1) + 1, d * (kw - 1) + 1);
        assert!(
            h + 2 * p >= eh && w + 2 * p >= ew,
            "conv2d: input {h}x{w} with padding {p} is smaller than the dilated kernel {eh}x{ew}"
        );
        let oh = (h + 2 * p - eh) / s + 1;
        let ow = (w + 2 * p - ew) / s + 1;
        Self {
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
            g,
            cig: c / g,
            cog: co / g,
            oh,
            ow,
        }
    }
    /// Panics unless a bias of `len` values (if any) has one per output channel.
    pub fn check_bias(&self, len: Option<usize>) {
        if let Some(len) = len {
            assert_eq!(
                len, self.co,
                "conv2d: bias has {len} values for {} output channels",
                self.co
            );
        }
    }

    /// Rows of one group's im2col matrix.
    pub fn kg(&self) -> usize {
        self.cig * self.kh * self.kw
    }
    /// Output pixels per channel.
    pub fn pix(&self) -> usize {
        self.oh * self.ow
    }
    /// True when the im2col matrix of a group is the input itself.
    pub fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.s == 1 && self.p == 0
    }
    pub fn out_shape(&self) -> Shape4 {
        (self.n, self.co, self.oh, self.ow)
    }
    /// True for stride-1 convolutions whose output rows are as wide as the input rows (3×3
    /// with padding 1, say): each im2col row is then the input shifted by one flat offset.
    pub(crate) fn flat_shift(&self) -> bool {
        self.s == 1 && self.ow == self.w
    }
    /// The output columns `lo..hi` whose input column `ox·s + off` lies inside `0..w`.
    pub(crate) fn valid_cols(&self, off: isize) -> (usize, usize) {
        let (s, w) = (self.s as isize, self.w as isize);
        let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
        let hi = if w - off <= 0 {
            0
        } else {
            ((w - off) + s - 1) / s
        };
        let hi = (hi as usize).min(self.ow);
        ((lo as usize).min(hi), hi)
    }
}

/// Output pixels one `gemm` should cover: samples with small images are batched side by side
/// so the matrices stay wide enough for `gemm` to run near peak.
const TARGET_COLS: usize = 512;

/// Samples per `gemm` for a chunk of `chunk` samples.
fn samples_per_gemm(geo: &ConvGeom, chunk: usize) -> usize {
    (TARGET_COLS / geo.pix().max(1)).clamp(1, chunk.max(1))
}

/// Forward pass on row-major buffers, giving `[n, co, oh, ow]`. The widest "same" 3×3
/// convolutions run [`winograd`], the others [`direct`]'s kernels, every other geometry
/// [`forward_im2col`].
pub(crate) fn forward_cpu(geo: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    if winograd::applies(geo) {
        winograd::forward(geo, x, w, bias)
    } else if direct::applies(geo) {
        direct::forward(direct::Isa::best(), geo, x, w, bias)
    } else {
        let mut out = util::zeros(geo.n * geo.co * geo.pix());
        forward_im2col(geo, x, w, bias, &mut out);
        out
    }
}

/// [`forward_cpu`] through im2col and `gemm`. The batch is split into one contiguous run per
/// rayon thread; each runs its `gemm`s single-threaded.
pub(crate) fn forward_im2col(
    geo: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (kg, pix, chw, gin) = (
        geo.kg(),
        geo.pix(),
        geo.c * geo.h * geo.w,
        geo.cig * geo.h * geo.w,
    );
    let per = util::per_thread(geo.n);
    out.par_chunks_mut(per * geo.co * pix)
        .zip(x.par_chunks(per * chw))
        .for_each(|(outs, xs)| {
            let nb = samples_per_gemm(geo, xs.len() / chw);
            let direct = geo.pointwise() && nb == 1;
            let mut col = util::scratch(0, if direct { 0 } else { kg * nb * pix });
            let mut tmp = util::scratch(1, if nb > 1 { geo.cog * nb * pix } else { 0 });
            for (ob, xb) in outs.chunks_mut(nb * geo.co * pix).zip(xs.chunks(nb * chw)) {
                let m = xb.len() / chw;
                let ld = m * pix;
                for g in 0..geo.g {
                    let colg: &[f32] = if direct {
                        &xb[g * gin..(g + 1) * gin]
                    } else {
                        for j in 0..m {
                            im2col(
                                geo,
                                &xb[j * chw + g * gin..j * chw + (g + 1) * gin],
                                &mut col,
                                ld,
                                j * pix,
                            );
                        }
                        &col
                    };
                    let wg = Mat {
                        data: &w[g * geo.cog * kg..(g + 1) * geo.cog * kg],
                        rs: kg,
                        cs: 1,
                    };
                    let rhs = Mat {
                        data: colg,
                        rs: ld,
                        cs: 1,
                    };
                    if m == 1 {
                        util::matmul(
                            geo.cog,
                            pix,
                            kg,
                            &mut ob[g * geo.cog * pix..(g + 1) * geo.cog * pix],
                            pix,
                            false,
                            wg,
                            rhs,
                        );
                    } else {
                        util::matmul(geo.cog, ld, kg, &mut tmp, ld, false, wg, rhs);
                        for j in 0..m {
                            for o in 0..geo.cog {
                                let dst = (j * geo.co + g * geo.cog + o) * pix;
                                ob[dst..dst + pix].copy_from_slice(
                                    &tmp[o * ld + j * pix..o * ld + (j + 1) * pix],
                                );
                            }
                        }
                    }
                }
                if let Some(b) = bias {
                    for (oc, &bv) in ob.chunks_mut(pix).zip(b.iter().cycle()) {
                        oc.iter_mut().for_each(|v| *v += bv);
                    }
                }
            }
            util::give_scratch(0, col);
            util::give_scratch(1, tmp);
        });
}

/// Backward pass on row-major buffers: adds `∂/∂x` into `dx` and returns `(∂/∂w, ∂/∂bias)`
/// (`∂/∂bias` is left at zero unless `with_bias`: it costs a pass over `dout`).
pub(crate) fn backward_cpu(
    geo: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dout: &[f32],
    dx: &mut [f32],
    with_bias: bool,
) -> (Vec<f32>, Vec<f32>) {
    if winograd::applies(geo) {
        winograd::backward_input(geo, w, dout, dx);
        winograd::backward_weights(geo, x, dout, with_bias)
    } else if direct::applies(geo) {
        direct::backward(direct::Isa::best(), geo, x, w, dout, dx, with_bias)
    } else {
        backward_im2col(geo, x, w, dout, dx, with_bias)
    }
}

/// [`backward_cpu`] through im2col and `gemm`.
pub(crate) fn backward_im2col(
    geo: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dout: &[f32],
    dx: &mut [f32],
    with_bias: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (kg, pix, chw, gin) = (
        geo.kg(),
        geo.pix(),
        geo.c * geo.h * geo.w,
        geo.cig * geo.h * geo.w,
    );
    let per = util::per_thread(geo.n);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(per * chw)
        .zip(x.par_chunks(per * chw))
        .zip(dout.par_chunks(per * geo.co * pix))
        .map(|((dxs, xs), douts)| {
            // ∂/∂w per group, transposed: [g][kg][cog].
            let mut dwt = vec![0.0f32; geo.co * kg];
            let mut db = vec![0.0f32; geo.co];
            let nb = samples_per_gemm(geo, xs.len() / chw);
            let mut dyt = util::scratch(3, geo.cog * nb * pix);
            let direct = geo.pointwise() && nb == 1;
            let buf = if direct { 0 } else { kg * nb * pix };
            let mut col = util::scratch(0, buf);
            let mut dcol = util::scratch(1, buf);
            let mut dtmp = util::scratch(2, if nb > 1 { geo.cog * nb * pix } else { 0 });
            for ((dxb, xb), dob) in dxs
                .chunks_mut(nb * chw)
                .zip(xs.chunks(nb * chw))
                .zip(douts.chunks(nb * geo.co * pix))
            {
                let m = xb.len() / chw;
                let ld = m * pix;
                if with_bias {
                    add_bias_grad(&mut db, dob, pix);
                }
                for g in 0..geo.g {
                    let wg = &w[g * geo.cog * kg..(g + 1) * geo.cog * kg];
                    let colg: &[f32] = if direct {
                        &xb[g * gin..(g + 1) * gin]
                    } else {
                        for j in 0..m {
                            im2col(
                                geo,
                                &xb[j * chw + g * gin..j * chw + (g + 1) * gin],
                                &mut col,
                                ld,
                                j * pix,
                            );
                        }
                        &col
                    };
                    let dg: &[f32] = if m == 1 {
                        &dob[g * geo.cog * pix..(g + 1) * geo.cog * pix]
                    } else {
                        for j in 0..m {
                            for o in 0..geo.cog {
                                let src = (j * geo.co + g * geo.cog + o) * pix;
                                dtmp[o * ld + j * pix..o * ld + (j + 1) * pix]
                                    .copy_from_slice(&dob[src..src + pix]);
                            }
                        }
                        &dtmp
                    };
                    let dym = Mat {
                        data: dg,
                        rs: ld,
                        cs: 1,
                    };
                    // dW_gᵀ += col_g · dY_gᵀ, with dY_g transposed first: both operands then
                    // stream row by row, which `gemm` runs much faster than a transposed operand.
                    util::transpose(dg, geo.cog, ld, &mut dyt);
                    util::matmul(
                        kg,
                        geo.cog,
                        ld,
                        &mut dwt[g * kg * geo.cog..(g + 1) * kg * geo.cog],
                        geo.cog,
                        true,
                        Mat {
                            data: colg,
                            rs: ld,
                            cs: 1,
                        },
                        Mat {
                            data: &dyt,
                            rs: geo.cog,
                            cs: 1,
                        },
                    );
                    // dcol = W_gᵀ · dY_g
                    let wt = Mat {
                        data: wg,
                        rs: 1,
                        cs: kg,
                    };
                    if direct {
                        util::matmul(
                            kg,
                            pix,
                            geo.cog,
                            &mut dxb[g * gin..(g + 1) * gin],
                            pix,
                            true,
                            wt,
                            dym,
                        );
                    } else {
                        util::matmul(kg, ld, geo.cog, &mut dcol, ld, false, wt, dym);
                        for j in 0..m {
                            col2im(
                                geo,
                                &mut dcol,
                                ld,
                                j * pix,
                                &mut dxb[j * chw + g * gin..j * chw + (g + 1) * gin],
                            );
                        }
                    }
                }
            }
            util::give_scratch(0, col);
            util::give_scratch(1, dcol);
            util::give_scratch(2, dtmp);
            util::give_scratch(3, dyt);
            let mut dw = vec![0.0f32; geo.co * kg];
            let per_group = kg * geo.cog;
            for (src, dst) in dwt.chunks(per_group).zip(dw.chunks_mut(per_group)) {
                util::transpose(src, kg, geo.cog, dst);
            }
            (dw, db)
        })
        .collect();
    sum_partials(partials, (geo.co * kg, geo.co))
}

/// Adds the bias gradient of `dout` (whole samples of `db.len()` channels of `pix` values) into
/// `db`: one sum per channel plane.
pub(crate) fn add_bias_grad(db: &mut [f32], dout: &[f32], pix: usize) {
    for (i, plane) in dout.chunks(pix).enumerate() {
        db[i % db.len()] += plane.iter().sum::<f32>();
    }
}

/// The sum, in thread order, of the per-thread `(∂/∂w, ∂/∂bias)` of a backward pass (zeros of
/// lengths `lens` when there are none). The weight gradients are added on the pool: at 512
/// channels they are 2.4 M values (16 × as many for Winograd's), and one thread adding them
/// left the other idle.
pub(crate) fn sum_partials(
    partials: Vec<(Vec<f32>, Vec<f32>)>,
    lens: (usize, usize),
) -> (Vec<f32>, Vec<f32>) {
    let mut iter = partials.into_iter();
    let (mut dw, mut db) = iter
        .next()
        .unwrap_or_else(|| (util::zeros(lens.0), vec![0.0; lens.1]));
    for (pw, pb) in iter {
        dw.par_chunks_mut(util::FILL_CHUNK)
            .zip(pw.par_chunks(util::FILL_CHUNK))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
        db.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
    }
    (dw, db)
}

/// The CPU fast path of [`conv2d`].
pub(crate) fn conv2d_cpu<T: Tape<f32, Cpu>>(
    x: Tensor<Shape4, f32, Cpu, T>,
    weight: &Tensor<Shape4, f32, Cpu>,
    bias: Option<&Tensor<(usize,), f32, Cpu>>,
    cfg: Conv2dCfg,
) -> Tensor<Shape4, f32, Cpu, T> {
    let geo = ConvGeom::new(*x.shape(), *weight.shape(), cfg);
    geo.check_bias(bias.map(|b| b.shape().0));
    let (x, mut tape) = x.contiguous().split_tape();
    let xv = util::read4(&x);
    let wv = util::read(weight);
    let bv = bias.map(util::read);
    let out = forward_cpu(&geo, &xv, &wv, bv.as_deref());
    drop(xv);
    let (out, published) = shared::publish(x.device(), out, geo.out_shape(), T::OWNS_TAPE);
    if T::OWNS_TAPE {
        let (out_id, weight, bias) = (out.clone(), weight.clone(), bias.cloned());
        tape.add_backward_op(move |grads| {
            drop(published);
            let dout = util::take_grad(grads, &out_id)?;
            let xv = util::read4(&x);
            let dx = util::grad_mut(grads, &x)?;
            let (dw, db) = backward_cpu(&geo, &xv, &wv, &dout, dx, bias.is_some());
            util::release_grad(dout);
            util::add_grad(grads, &weight, &dw)?;
            if let Some(b) = &bias {
                util::add_grad(grads, b, &db)?;
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// 2-D convolution (PyTorch `F.conv2d`) of `x: [N, C, H, W]` with `weight: [O, C/groups, kh, kw]`
/// and an optional `bias: [O]`, giving `[N, O, OH, OW]` with
/// `OH = (H + 2·padding − dilation·(kh − 1) − 1) / stride + 1`.
///
/// The tape travels with `x`; gradients of `weight` and `bias` are written under their ids
/// (so `Gradients::get(&weight)` and dfdx optimisers find them). Panics on inconsistent shapes.
pub fn conv2d<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    weight: &Tensor<Shape4, f32, D>,
    bias: Option<&Tensor<(usize,), f32, D>>,
    cfg: Conv2dCfg,
) -> Tensor<Shape4, f32, D, T> {
    D::conv2d_op(x, weight, bias, cfg)
}

/// What the CPU's faster convolutions are tested against.
#[cfg(test)]
pub(crate) mod reference {
    use super::{backward_im2col, forward_im2col, ConvGeom};
    use rand::{rngs::StdRng, Rng};

    /// A random case of a geometry (values in [-1, 1)) with its im2col forward and backward
    /// passes; `dx` started at 0.5 everywhere, so that adding into `∂/∂x` is checked too.
    pub(crate) struct Case {
        pub x: Vec<f32>,
        pub w: Vec<f32>,
        pub bias: Option<Vec<f32>>,
        pub dy: Vec<f32>,
        pub out: Vec<f32>,
        pub dx: Vec<f32>,
        pub dw: Vec<f32>,
        pub db: Vec<f32>,
    }

    impl Case {
        pub(crate) fn new(geo: &ConvGeom, bias: bool, rng: &mut StdRng) -> Self {
            let mut u =
                |k: usize| -> Vec<f32> { (0..k).map(|_| rng.gen_range(-1.0..1.0)).collect() };
            let out_len = geo.n * geo.co * geo.pix();
            let (x, w, b, dy) = (
                u(geo.n * geo.c * geo.h * geo.w),
                u(geo.co * geo.c * 9),
                u(geo.co),
                u(out_len),
            );
            let bias = bias.then_some(b);
            let mut out = vec![0.0; out_len];
            forward_im2col(geo, &x, &w, bias.as_deref(), &mut out);
            let mut dx = vec![0.5; x.len()];
            let (dw, db) = backward_im2col(geo, &x, &w, &dy, &mut dx, bias.is_some());
            Self {
                x,
                w,
                bias,
                dy,
                out,
                dx,
                dw,
                db,
            }
        }
    }

    /// Asserts `a ≈ b` element-wise within `tol · (1 + |b|)`, naming `what` and the index.
    pub(crate) fn close(what: &str, a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }
}
