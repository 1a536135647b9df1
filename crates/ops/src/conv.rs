//! 2-D convolution over NCHW inputs with an OIHW weight (PyTorch's `F.conv2d`): stride,
//! zero padding, dilation, groups (depthwise included) and an optional bias.
//!
//! `out[n, o, y, x] = bias[o] + Σ_{c, i, j} w[o, c, i, j] · in[n, g·C/G + c, y·s − p + i·d, x·s − p + j·d]`
//! where `g = o / (O/G)`. The CPU kernel lowers each sample and group to one `gemm` (im2col; a
//! 1×1 stride-1 unpadded convolution reads the input directly), and the backward pass computes
//! `dW += dY · colᵀ` and `dX += col2im(Wᵀ · dY)`.

use crate::util::{self, Mat};
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
    fn flat_shift(&self) -> bool {
        self.s == 1 && self.ow == self.w
    }
    /// The output columns `lo..hi` whose input column `ox·s + off` lies inside `0..w`.
    fn valid_cols(&self, off: isize) -> (usize, usize) {
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

/// im2col of one group of one sample: `x` is `[cig, h, w]`; row `r` of the `[cig·kh·kw, oh·ow]`
/// matrix is written at `col[r·ld + c0 ..]` (so several samples can sit side by side).
fn im2col(geo: &ConvGeom, x: &[f32], col: &mut [f32], ld: usize, c0: usize) {
    if geo.flat_shift() {
        im2col_shift(geo, x, col, ld, c0)
    } else {
        im2col_rows(geo, x, col, ld, c0)
    }
}

/// [`im2col`] row by row, for any geometry.
fn im2col_rows(geo: &ConvGeom, x: &[f32], col: &mut [f32], ld: usize, c0: usize) {
    let ow = geo.ow;
    for c in 0..geo.cig {
        let plane = &x[c * geo.h * geo.w..(c + 1) * geo.h * geo.w];
        for ki in 0..geo.kh {
            for kj in 0..geo.kw {
                let row = ((c * geo.kh + ki) * geo.kw + kj) * ld + c0;
                let off = (kj * geo.d) as isize - geo.p as isize;
                let (lo, hi) = geo.valid_cols(off);
                for oy in 0..geo.oh {
                    let dst = &mut col[row + oy * ow..row + (oy + 1) * ow];
                    let iy = (oy * geo.s + ki * geo.d) as isize - geo.p as isize;
                    if iy < 0 || iy >= geo.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * geo.w..(iy as usize + 1) * geo.w];
                    // Loops, not `fill`: these runs are a pixel or two, too short for memset.
                    for v in &mut dst[..lo] {
                        *v = 0.0;
                    }
                    for v in &mut dst[hi..] {
                        *v = 0.0;
                    }
                    if geo.s == 1 {
                        let a = (lo as isize + off) as usize;
                        dst[lo..hi].copy_from_slice(&src[a..a + hi - lo]);
                    } else {
                        for (ox, v) in dst.iter_mut().enumerate().take(hi).skip(lo) {
                            *v = src[(ox as isize * geo.s as isize + off) as usize];
                        }
                    }
                }
            }
        }
    }
}

/// col2im of one group of one sample: adds the matrix laid out as in [`im2col`] into
/// `dx` (`[cig, h, w]`).
fn col2im(geo: &ConvGeom, col: &[f32], ld: usize, c0: usize, dx: &mut [f32]) {
    if geo.flat_shift() {
        col2im_shift(geo, col, ld, c0, dx)
    } else {
        col2im_rows(geo, col, ld, c0, dx)
    }
}

/// [`col2im`] row by row, for any geometry.
fn col2im_rows(geo: &ConvGeom, col: &[f32], ld: usize, c0: usize, dx: &mut [f32]) {
    let ow = geo.ow;
    for c in 0..geo.cig {
        let plane = &mut dx[c * geo.h * geo.w..(c + 1) * geo.h * geo.w];
        for ki in 0..geo.kh {
            for kj in 0..geo.kw {
                let row = ((c * geo.kh + ki) * geo.kw + kj) * ld + c0;
                let off = (kj * geo.d) as isize - geo.p as isize;
                let (lo, hi) = geo.valid_cols(off);
                for oy in 0..geo.oh {
                    let iy = (oy * geo.s + ki * geo.d) as isize - geo.p as isize;
                    if iy < 0 || iy >= geo.h as isize {
                        continue;
                    }
                    let src = &col[row + oy * ow..row + (oy + 1) * ow];
                    let dst = &mut plane[iy as usize * geo.w..(iy as usize + 1) * geo.w];
                    if geo.s == 1 {
                        let a = (lo as isize + off) as usize;
                        for (d, s) in dst[a..a + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += s;
                        }
                    } else {
                        for (ox, v) in src.iter().enumerate().take(hi).skip(lo) {
                            dst[(ox as isize * geo.s as isize + off) as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// One tap of a stride-1 convolution whose output is as wide as its input ("same" padding):
/// its im2col row is the input plane shifted by one flat offset, so the output rows whose input
/// row exists are a single contiguous run.
struct Tap {
    /// Input channel (within the group).
    c: usize,
    /// Input index minus output index.
    shift: isize,
    /// Output rows `oy0..oy1` read inside the image.
    oy0: usize,
    oy1: usize,
    /// Output columns `lo..hi` read inside the image (the others read padding).
    lo: usize,
    hi: usize,
}

/// Calls `f(r, tap)` for every im2col row `r` of a [`ConvGeom::flat_shift`] geometry.
fn for_each_tap(geo: &ConvGeom, mut f: impl FnMut(usize, Tap)) {
    let (h, w) = (geo.h as isize, geo.w as isize);
    let mut r = 0;
    for c in 0..geo.cig {
        for ki in 0..geo.kh {
            let dy = (ki * geo.d) as isize - geo.p as isize;
            let oy0 = (-dy).clamp(0, geo.oh as isize) as usize;
            let oy1 = (h - dy).clamp(oy0 as isize, geo.oh as isize) as usize;
            for kj in 0..geo.kw {
                let dx = (kj * geo.d) as isize - geo.p as isize;
                let (lo, hi) = geo.valid_cols(dx);
                let shift = dy * w + dx;
                f(
                    r,
                    Tap {
                        c,
                        shift,
                        oy0,
                        oy1,
                        lo,
                        hi,
                    },
                );
                r += 1;
            }
        }
    }
}

/// [`im2col`] for [`ConvGeom::flat_shift`] geometries: one copy per tap, then the few output
/// columns that read padding are zeroed.
fn im2col_shift(geo: &ConvGeom, x: &[f32], col: &mut [f32], ld: usize, c0: usize) {
    let (ow, hw, pix) = (geo.ow, geo.h * geo.w, geo.pix());
    for_each_tap(geo, |r, t| {
        let (oy0, oy1) = (t.oy0, t.oy1);
        let plane = &x[t.c * hw..(t.c + 1) * hw];
        let dst = &mut col[r * ld + c0..r * ld + c0 + pix];
        dst[..oy0 * ow].fill(0.0);
        dst[oy1 * ow..].fill(0.0);
        if oy0 == oy1 {
            return;
        }
        // Output q reads input q + shift; clamp the run to the plane (the clipped ends are
        // padding columns, zeroed below).
        let q0 = ((oy0 * ow) as isize).max(-t.shift) as usize;
        let q1 = ((oy1 * ow) as isize).min(hw as isize - t.shift) as usize;
        if q1 > q0 {
            let a = (q0 as isize + t.shift) as usize;
            dst[q0..q1].copy_from_slice(&plane[a..a + (q1 - q0)]);
        }
        for row in dst[oy0 * ow..oy1 * ow].chunks_exact_mut(ow) {
            for v in &mut row[..t.lo] {
                *v = 0.0;
            }
            for v in &mut row[t.hi..] {
                *v = 0.0;
            }
        }
    });
}

/// [`col2im`] for [`ConvGeom::flat_shift`] geometries: per output row, the columns that read
/// inside the image are added into the input row they came from.
fn col2im_shift(geo: &ConvGeom, col: &[f32], ld: usize, c0: usize, dx: &mut [f32]) {
    let (ow, hw) = (geo.ow, geo.h * geo.w);
    for_each_tap(geo, |r, t| {
        let plane = &mut dx[t.c * hw..(t.c + 1) * hw];
        let src = &col[r * ld + c0..];
        for oy in t.oy0..t.oy1 {
            let q = oy * ow;
            let a = (q as isize + t.lo as isize + t.shift) as usize;
            let d = &mut plane[a..a + (t.hi - t.lo)];
            for (dv, sv) in d.iter_mut().zip(&src[q + t.lo..q + t.hi]) {
                *dv += sv;
            }
        }
    });
}

/// Output pixels one `gemm` should cover: samples with small images are batched side by side
/// so the matrices stay wide enough for `gemm` to run near peak.
const TARGET_COLS: usize = 512;

/// Samples per `gemm` for a chunk of `chunk` samples.
fn samples_per_gemm(geo: &ConvGeom, chunk: usize) -> usize {
    (TARGET_COLS / geo.pix().max(1)).clamp(1, chunk.max(1))
}

/// Forward pass on row-major buffers: `out` is `[n, co, oh, ow]`, overwritten. The batch is
/// split into one contiguous run per rayon thread; each runs its `gemm`s single-threaded.
pub(crate) fn forward_cpu(
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
                    for (i, dc) in dob.chunks(pix).enumerate() {
                        db[i % geo.co] += dc.iter().sum::<f32>();
                    }
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
                                &dcol,
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
            for g in 0..geo.g {
                for k in 0..kg {
                    for o in 0..geo.cog {
                        dw[(g * geo.cog + o) * kg + k] = dwt[(g * kg + k) * geo.cog + o];
                    }
                }
            }
            (dw, db)
        })
        .collect();
    let mut iter = partials.into_iter();
    let (mut dw, mut db) = iter
        .next()
        .unwrap_or_else(|| (vec![0.0; geo.co * kg], vec![0.0; geo.co]));
    for (pw, pb) in iter {
        dw.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
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
    let xv = util::read(&x);
    let wv = util::read(weight);
    let bv = bias.map(util::read);
    let mut out = vec![0.0f32; geo.n * geo.co * geo.pix()];
    forward_cpu(&geo, &xv, &wv, bv.as_deref(), &mut out);
    drop(xv);
    let out = x.device().tensor_from_vec(out, geo.out_shape());
    if T::OWNS_TAPE {
        let (out_id, weight, bias) = (out.clone(), weight.clone(), bias.cloned());
        tape.add_backward_op(move |grads| {
            let dout = util::take_grad(grads, &out_id)?;
            let xv = util::read(&x);
            let dx = util::grad_mut(grads, &x)?;
            let (dw, db) = backward_cpu(&geo, &xv, &wv, &dout, dx, bias.is_some());
            util::put_grad(grads, &out_id, dout)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-copy-per-tap im2col and its col2im agree exactly with the row-by-row versions
    /// on every "same"-width geometry (3×3 and 5×5 kernels, dilation, images narrower than
    /// the kernel's reach), including the columns and rows that read padding.
    #[test]
    fn shifted_taps_match_row_by_row() {
        for &(c, h, w, k, p, d) in &[
            (2, 5, 5, 3, 1, 1),
            (3, 4, 6, 5, 2, 1),
            (1, 7, 3, 3, 2, 2),
            (2, 1, 1, 3, 1, 1),
            (1, 2, 2, 5, 2, 1),
            (2, 3, 9, 3, 3, 3),
        ] {
            let geo = ConvGeom::new((1, c, h, w), (1, c, k, k), Conv2dCfg::new(1, p).dilation(d));
            assert!(geo.flat_shift(), "{geo:?}");
            let x: Vec<f32> = (0..c * h * w).map(|i| 1.0 + i as f32).collect();
            let (ld, c0) = (geo.pix() + 3, 2);
            let mut a = vec![f32::NAN; geo.kg() * ld];
            let mut b = a.clone();
            im2col_shift(&geo, &x, &mut a, ld, c0);
            im2col_rows(&geo, &x, &mut b, ld, c0);
            for r in 0..geo.kg() {
                let (ra, rb) = (
                    &a[r * ld + c0..][..geo.pix()],
                    &b[r * ld + c0..][..geo.pix()],
                );
                assert_eq!(ra, rb, "{geo:?} row {r}");
            }
            let dcol: Vec<f32> = (0..geo.kg() * ld).map(|i| (i % 7) as f32 - 3.0).collect();
            let (mut da, mut db) = (vec![0.5f32; x.len()], vec![0.5f32; x.len()]);
            col2im_shift(&geo, &dcol, ld, c0, &mut da);
            col2im_rows(&geo, &dcol, ld, c0, &mut db);
            assert_eq!(da, db, "{geo:?}");
        }
    }
}
