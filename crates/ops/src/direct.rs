//! Direct 3×3 convolution (stride 1, padding 1, no dilation, one group: every 3×3 layer of the
//! ResNets but the downsampling ones) without an im2col matrix.
//!
//! The input is copied once into a *framed* layout: per channel, the images of a stack one
//! under the other with row stride `s = w + 1`, each row followed by one zero (the right
//! padding of this row and the left padding of the next) and each image followed by one zero
//! row (the bottom padding of this image and the top padding of the next). Output pixel
//! `(j, y, x)` then sits at `q = (j·(h+1) + y)·s + x` and reads tap `(ki, kj)` at `q + ki·s + kj`
//! of the frame: every tap is a plain shift, so one microkernel over `q` runs all taps from
//! registers, and the stack's extra positions (`x = w`, the separator rows) are computed and
//! dropped. With the same frame for `∂/∂y`:
//!
//! - forward: `y[o, q] = Σ_{c,t} w[o, c, t] · x̂[c, q + shiftₜ]`;
//! - `∂/∂x[c, q] = Σ_{o,t} w[o, c, 8 − t] · ∂ŷ[o, q + shiftₜ]` (the same kernel, flipped taps);
//! - `∂/∂w[o, c, t] = Σ_q ∂ŷ[o, s + 1 + q] · x̂[c, q + shiftₜ]` (`∂ŷ` shifted by `s + 1` is `∂/∂y`
//!   at output positions, zero at the dropped ones).
//!
//! The kernels use AVX-512 or AVX2 + FMA when the CPU has them (checked at run time) and plain
//! loops otherwise; all three compute the same sums.

use crate::conv::ConvGeom;
use crate::util;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Instruction sets the kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The widest this CPU runs.
    pub(crate) fn best() -> Isa {
        *Self::available()
            .last()
            .expect("the portable kernels always run")
    }
    /// Every set this CPU runs, narrowest first.
    pub(crate) fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                v.push(Isa::Avx512);
            }
        }
        v
    }
}

/// Output channels per packed weight block.
const MR: usize = 8;
/// Input channels per pass over the output: their packed weights (`KC·9·MR` values, 18 KiB)
/// stay in the L1 cache while the tiles sweep the stack.
const KC: usize = 64;
/// Output positions per microkernel tile (three AVX-512 vectors, six AVX2 ones).
const TILE: usize = 48;
/// Output positions a stack aims for: enough to amortise each `∂/∂w` block's final sums.
const TARGET_Q: usize = 4096;
/// Narrower images are left to im2col: their frame wastes too many positions.
const MIN_WIDTH: usize = 8;
/// Wider layers are left to im2col, whose `gemm` blocks its operands for the caches: at 256
/// channels (ResNet-18's third stage) it was 11% faster than these kernels, at 128 channels
/// 9% slower, at 64 channels 21% slower (one thread, batch 16, AVX-512).
const MAX_CHANNELS: usize = 128;

/// True for the geometries this module runs.
pub(crate) fn applies(geo: &ConvGeom) -> bool {
    (geo.kh, geo.kw, geo.s, geo.p, geo.d, geo.g) == (3, 3, 1, 1, 1, 1)
        && geo.w >= MIN_WIDTH
        && geo.c.max(geo.co) <= MAX_CHANNELS
}

/// The frame of a stack of `nb` images of `h × w`.
#[derive(Debug, Clone, Copy)]
struct Frame {
    h: usize,
    w: usize,
    nb: usize,
    /// Row stride, `w + 1`.
    s: usize,
    /// Output positions computed, a multiple of [`TILE`].
    qpad: usize,
    /// Values per channel of a framed buffer.
    len: usize,
}

impl Frame {
    fn new(h: usize, w: usize, nb: usize) -> Self {
        let s = w + 1;
        let qpad = (nb * (h + 1) * s).div_ceil(TILE) * TILE;
        Self {
            h,
            w,
            nb,
            s,
            qpad,
            // The last tile's reads end below `qpad + 2s + 2`; `∂ŷ` is read from `s + 1`.
            len: qpad + 2 * s + 2,
        }
    }
    /// Images per stack for images of `h × w`.
    fn stack(h: usize, w: usize) -> usize {
        TARGET_Q.div_ceil((h + 1) * (w + 1)).max(1)
    }
    /// Frame offset of tap `t = 3·ki + kj` relative to the output position.
    fn shifts(&self) -> [usize; 9] {
        std::array::from_fn(|t| (t / 3) * self.s + t % 3)
    }
    /// Writes `c` channels of `nb` NCHW images (`src`) into the framed `dst` (`[c][len]`).
    fn fill(&self, src: &[f32], c: usize, dst: &mut [f32]) {
        let (h, w, s, hw) = (self.h, self.w, self.s, self.h * self.w);
        for (ch, d) in dst.chunks_exact_mut(self.len).take(c).enumerate() {
            d[..1 + s].fill(0.0);
            for j in 0..self.nb {
                let img = &src[(j * c + ch) * hw..][..hw];
                let top = 1 + (1 + j * (h + 1)) * s;
                for (y, row) in img.chunks_exact(w).enumerate() {
                    let at = top + y * s;
                    d[at..at + w].copy_from_slice(row);
                    d[at + w] = 0.0;
                }
                let sep = top + h * s;
                let end = if j + 1 == self.nb { self.len } else { sep + s };
                d[sep..end].fill(0.0);
            }
        }
    }
    /// Calls `row(ch, at, src)` for every output row of the stack: `src` is the row's `w`
    /// values in `o` (`[c][ld]`, frame coordinates), `at` where it starts in `c` channels of
    /// `nb` NCHW images.
    fn unframe(&self, o: &[f32], ld: usize, c: usize, mut row: impl FnMut(usize, usize, &[f32])) {
        let (h, w, s, hw) = (self.h, self.w, self.s, self.h * self.w);
        for j in 0..self.nb {
            for ch in 0..c {
                let base = ch * ld + j * (h + 1) * s;
                for y in 0..h {
                    row(ch, (j * c + ch) * hw + y * w, &o[base + y * s..][..w]);
                }
            }
        }
    }
}

/// Packs `w` (`[co][ci][9]`, or with `transpose` the weight of `∂/∂x`: `[ci][co][9]` read as
/// `w[o][c][8 − t]` for output `c`) into blocks of [`MR`] output rows: `[rows/MR][inputs][9][MR]`,
/// zero rows past the end.
fn pack(w: &[f32], co: usize, ci: usize, transpose: bool) -> Vec<f32> {
    let (rows, ins) = if transpose { (ci, co) } else { (co, ci) };
    let mut p = vec![0.0f32; rows.div_ceil(MR) * MR * ins * 9];
    for r in 0..rows {
        for i in 0..ins {
            for t in 0..9 {
                let v = if transpose {
                    w[(i * ci + r) * 9 + 8 - t]
                } else {
                    w[(r * ci + i) * 9 + t]
                };
                p[(((r / MR) * ins + i) * 9 + t) * MR + r % MR] = v;
            }
        }
    }
    p
}

/// `o[r][q] = Σ_{c, t} wp[c][t][r] · x̂[c][q + shiftₜ]` for the rows `r < rows` of one packed
/// block and every `q < qpad`; `o` has row stride `ld`.
#[allow(clippy::too_many_arguments)]
fn conv_block(
    isa: Isa,
    fr: &Frame,
    xf: &[f32],
    cin: usize,
    wp: &[f32],
    rows: usize,
    o: &mut [f32],
    ld: usize,
) {
    assert!(xf.len() >= cin * fr.len && wp.len() >= cin * 9 * MR && rows <= MR);
    assert!(rows > 0 && o.len() >= (rows - 1) * ld + fr.qpad && ld >= fr.qpad);
    let sh = fr.shifts();
    match isa {
        Isa::Portable => portable::conv_block(fr, xf, cin, &sh, wp, rows, o, ld),
        // SAFETY: the CPU has the features (`Isa::available`); the asserts bound every access.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            x86::conv_block_avx512(fr, xf.as_ptr(), cin, &sh, wp.as_ptr(), rows, o, ld)
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            for half in 0..rows.div_ceil(4) {
                let (r0, n) = (half * 4, (rows - half * 4).min(4));
                let ob = &mut o[r0 * ld..];
                x86::conv_block_avx2(fr, xf.as_ptr(), cin, &sh, wp.as_ptr().add(r0), n, ob, ld)
            }
        },
    }
}

/// `dw[o][c][t] += Σ_q ∂ŷ[o][s + 1 + q] · x̂[c][q + shiftₜ]` for every output row `o` of
/// `dyf` (`[co][len]`) and input channel `c` of `xf`; `dw` is `[co][cin][9]`.
fn weight_grad(
    isa: Isa,
    fr: &Frame,
    xf: &[f32],
    cin: usize,
    dyf: &[f32],
    co: usize,
    dw: &mut [f32],
) {
    assert!(xf.len() >= cin * fr.len && dyf.len() >= co * fr.len && dw.len() >= co * cin * 9);
    let sh = fr.shifts();
    match isa {
        Isa::Portable => portable::weight_grad(fr, xf, cin, &sh, dyf, co, dw),
        // SAFETY: as in `conv_block`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::weight_grad_avx512(fr, xf, cin, &sh, dyf, co, dw) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::weight_grad_avx2(fr, xf, cin, &sh, dyf, co, dw) },
    }
}

/// Forward pass on row-major buffers (`out` overwritten), as [`crate::conv`]'s.
pub(crate) fn forward(
    isa: Isa,
    geo: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (c, co, hw) = (geo.c, geo.co, geo.h * geo.w);
    let wp = pack(w, co, c, false);
    let per = util::per_thread(geo.n);
    let body = |i: usize, outs: &mut [MaybeUninit<f32>]| {
        let xs = &x[i * per * c * hw..][..outs.len() / co * c];
        let nb = Frame::stack(geo.h, geo.w).min(xs.len() / (c * hw));
        let full = Frame::new(geo.h, geo.w, nb);
        let mut xf = util::scratch(0, c * full.len);
        let mut of = util::scratch(1, co * full.qpad);
        for (ob, xb) in outs.chunks_mut(nb * co * hw).zip(xs.chunks(nb * c * hw)) {
            let fr = Frame::new(geo.h, geo.w, xb.len() / (c * hw));
            fr.fill(xb, c, &mut xf);
            for (b, ofb) in of
                .chunks_mut(MR * full.qpad)
                .take(co.div_ceil(MR))
                .enumerate()
            {
                let rows = (co - b * MR).min(MR);
                let wb = &wp[b * c * 9 * MR..];
                conv_block(isa, &fr, &xf, c, wb, rows, ofb, full.qpad);
            }
            fr.unframe(&of, full.qpad, co, |ch, at, src| {
                let bv = bias.map_or(0.0, |b| b[ch]);
                for (d, &v) in ob[at..at + src.len()].iter_mut().zip(src) {
                    d.write(v + bv);
                }
            });
        }
        util::give_scratch(0, xf);
        util::give_scratch(1, of);
    };
    // SAFETY: `unframe` visits every row of every channel of every image of the chunk.
    unsafe { util::filled(geo.n * co * hw, per * co * hw, body) }
}

/// Backward pass on row-major buffers, as [`crate::conv`]'s: adds `∂/∂x` into `dx` and returns
/// `(∂/∂w, ∂/∂bias)`.
pub(crate) fn backward(
    isa: Isa,
    geo: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dout: &[f32],
    dx: &mut [f32],
    with_bias: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (c, co, hw) = (geo.c, geo.co, geo.h * geo.w);
    let wt = pack(w, co, c, true);
    let per = util::per_thread(geo.n);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(per * c * hw)
        .zip(x.par_chunks(per * c * hw))
        .zip(dout.par_chunks(per * co * hw))
        .map(|((dxs, xs), douts)| {
            let mut dw = vec![0.0f32; co * c * 9];
            let mut db = vec![0.0f32; co];
            let nb = Frame::stack(geo.h, geo.w).min(xs.len() / (c * hw));
            let full = Frame::new(geo.h, geo.w, nb);
            let mut xf = util::scratch(0, c * full.len);
            let mut dyf = util::scratch(1, co * full.len);
            let mut dxf = util::scratch(2, c * full.qpad);
            for ((dxb, xb), dob) in dxs
                .chunks_mut(nb * c * hw)
                .zip(xs.chunks(nb * c * hw))
                .zip(douts.chunks(nb * co * hw))
            {
                if with_bias {
                    for (i, dc) in dob.chunks(hw).enumerate() {
                        db[i % co] += dc.iter().sum::<f32>();
                    }
                }
                let fr = Frame::new(geo.h, geo.w, xb.len() / (c * hw));
                fr.fill(xb, c, &mut xf);
                fr.fill(dob, co, &mut dyf);
                weight_grad(isa, &fr, &xf, c, &dyf, co, &mut dw);
                for (b, dxfb) in dxf
                    .chunks_mut(MR * full.qpad)
                    .take(c.div_ceil(MR))
                    .enumerate()
                {
                    let rows = (c - b * MR).min(MR);
                    let wb = &wt[b * co * 9 * MR..];
                    conv_block(isa, &fr, &dyf, co, wb, rows, dxfb, full.qpad);
                }
                fr.unframe(&dxf, full.qpad, c, |_, at, src| {
                    for (d, v) in dxb[at..at + src.len()].iter_mut().zip(src) {
                        *d += v;
                    }
                });
            }
            util::give_scratch(0, xf);
            util::give_scratch(1, dyf);
            util::give_scratch(2, dxf);
            (dw, db)
        })
        .collect();
    let mut iter = partials.into_iter();
    let (mut dw, mut db) = iter
        .next()
        .unwrap_or_else(|| (vec![0.0; co * c * 9], vec![0.0; co]));
    for (pw, pb) in iter {
        dw.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
    }
    (dw, db)
}

/// Plain loops: the reference the vector kernels are tested against, and the path on CPUs
/// without AVX2.
mod portable {
    use super::{Frame, MR};

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_block(
        fr: &Frame,
        xf: &[f32],
        cin: usize,
        sh: &[usize; 9],
        wp: &[f32],
        rows: usize,
        o: &mut [f32],
        ld: usize,
    ) {
        for r in 0..rows {
            o[r * ld..r * ld + fr.qpad].fill(0.0);
        }
        for c in 0..cin {
            let xc = &xf[c * fr.len..(c + 1) * fr.len];
            for (t, &s) in sh.iter().enumerate() {
                for r in 0..rows {
                    let wv = wp[(c * 9 + t) * MR + r];
                    let orow = &mut o[r * ld..r * ld + fr.qpad];
                    for (ov, xv) in orow.iter_mut().zip(&xc[s..s + fr.qpad]) {
                        *ov += wv * xv;
                    }
                }
            }
        }
    }

    pub(super) fn weight_grad(
        fr: &Frame,
        xf: &[f32],
        cin: usize,
        sh: &[usize; 9],
        dyf: &[f32],
        co: usize,
        dw: &mut [f32],
    ) {
        let off = fr.s + 1;
        for o in 0..co {
            let dy = &dyf[o * fr.len + off..o * fr.len + off + fr.qpad];
            for c in 0..cin {
                let xc = &xf[c * fr.len..(c + 1) * fr.len];
                for (t, &s) in sh.iter().enumerate() {
                    let sum: f32 = dy.iter().zip(&xc[s..s + fr.qpad]).map(|(a, b)| a * b).sum();
                    dw[(o * cin + c) * 9 + t] += sum;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Frame, KC, MR};
    use std::arch::x86_64::*;

    /// AVX-512 tile: 8 output rows × 48 positions in 24 accumulators; per input channel and
    /// tap, three loads of the frame and eight broadcast weights.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv_block_avx512(
        fr: &Frame,
        xf: *const f32,
        cin: usize,
        sh: &[usize; 9],
        wp: *const f32,
        rows: usize,
        o: &mut [f32],
        ld: usize,
    ) {
        let op = o.as_mut_ptr();
        for c0 in (0..cin).step_by(KC) {
            let mut q = 0;
            while q < fr.qpad {
                let mut acc = [[_mm512_setzero_ps(); 3]; MR];
                if c0 > 0 {
                    for (r, ar) in acc.iter_mut().enumerate().take(rows) {
                        for (k, a) in ar.iter_mut().enumerate() {
                            *a = _mm512_loadu_ps(op.add(r * ld + q + 16 * k));
                        }
                    }
                }
                for c in c0..(c0 + KC).min(cin) {
                    let xc = xf.add(c * fr.len + q);
                    let wc = wp.add(c * 9 * MR);
                    // The nine taps written out: a loop of nine mispredicts its exit.
                    macro_rules! tap {
                        ($($t:literal)*) => {$(
                            let a = xc.add(sh[$t]);
                            let v = [
                                _mm512_loadu_ps(a),
                                _mm512_loadu_ps(a.add(16)),
                                _mm512_loadu_ps(a.add(32)),
                            ];
                            let wt = wc.add($t * MR);
                            for (r, ar) in acc.iter_mut().enumerate() {
                                let b = _mm512_set1_ps(*wt.add(r));
                                for (k, a) in ar.iter_mut().enumerate() {
                                    *a = _mm512_fmadd_ps(v[k], b, *a);
                                }
                            }
                        )*};
                    }
                    tap!(0 1 2 3 4 5 6 7 8);
                }
                for (r, ar) in acc.iter().enumerate().take(rows) {
                    for (k, a) in ar.iter().enumerate() {
                        _mm512_storeu_ps(op.add(r * ld + q + 16 * k), *a);
                    }
                }
                q += 48;
            }
        }
    }

    /// AVX2 tile: 4 output rows (of the 8 of a packed block, starting at `wp`) × 24 positions
    /// in 12 accumulators.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv_block_avx2(
        fr: &Frame,
        xf: *const f32,
        cin: usize,
        sh: &[usize; 9],
        wp: *const f32,
        rows: usize,
        o: &mut [f32],
        ld: usize,
    ) {
        let op = o.as_mut_ptr();
        for c0 in (0..cin).step_by(KC) {
            let mut q = 0;
            while q < fr.qpad {
                let mut acc = [[_mm256_setzero_ps(); 3]; 4];
                if c0 > 0 {
                    for (r, ar) in acc.iter_mut().enumerate().take(rows) {
                        for (k, a) in ar.iter_mut().enumerate() {
                            *a = _mm256_loadu_ps(op.add(r * ld + q + 8 * k));
                        }
                    }
                }
                for c in c0..(c0 + KC).min(cin) {
                    let xc = xf.add(c * fr.len + q);
                    let wc = wp.add(c * 9 * MR);
                    macro_rules! tap {
                        ($($t:literal)*) => {$(
                            let a = xc.add(sh[$t]);
                            let v = [
                                _mm256_loadu_ps(a),
                                _mm256_loadu_ps(a.add(8)),
                                _mm256_loadu_ps(a.add(16)),
                            ];
                            let wt = wc.add($t * MR);
                            for (r, ar) in acc.iter_mut().enumerate() {
                                let b = _mm256_broadcast_ss(&*wt.add(r));
                                for (k, a) in ar.iter_mut().enumerate() {
                                    *a = _mm256_fmadd_ps(v[k], b, *a);
                                }
                            }
                        )*};
                    }
                    tap!(0 1 2 3 4 5 6 7 8);
                }
                for (r, ar) in acc.iter().enumerate().take(rows) {
                    for (k, a) in ar.iter().enumerate() {
                        _mm256_storeu_ps(op.add(r * ld + q + 8 * k), *a);
                    }
                }
                q += 24;
            }
        }
    }

    /// One step of [`dw_rows_avx512`]: for each tap `(t, a, b, c)`, one load of the frame at
    /// `q + sh[t]` and its products with the three rows of `∂y` into `a`, `b`, `c`. Written out
    /// (not a loop over arrays) so that all 27 sums stay in registers.
    macro_rules! taps {
        ($x:ident, $q:ident, $sh:ident, $y0:ident, $y1:ident, $y2:ident, [$(($t:literal, $a:ident, $b:ident, $c:ident)),*]) => {
            $(
                let v = _mm512_loadu_ps($x.add($q + $sh[$t]));
                $a = _mm512_fmadd_ps($y0, v, $a);
                $b = _mm512_fmadd_ps($y1, v, $b);
                $c = _mm512_fmadd_ps($y2, v, $c);
            )*
        };
    }

    /// The 27 dot products of [`dw_rows_avx512`] for one input channel `x`.
    // `avx512vl`: the final lane sums work on 256- and 128-bit halves; without VL those must
    // live in the first 16 registers, and LLVM then keeps every sum there and spills.
    #[target_feature(enable = "avx512f,avx512vl")]
    unsafe fn dots27(
        x: *const f32,
        sh: &[usize; 9],
        [dy, d1, d2]: [*const f32; 3],
        qpad: usize,
    ) -> [[f32; 9]; 3] {
        let z = _mm512_setzero_ps();
        let [mut a0, mut a1, mut a2, mut a3, mut a4, mut a5, mut a6, mut a7, mut a8] = [z; 9];
        let [mut b0, mut b1, mut b2, mut b3, mut b4, mut b5, mut b6, mut b7, mut b8] = [z; 9];
        let [mut c0, mut c1, mut c2, mut c3, mut c4, mut c5, mut c6, mut c7, mut c8] = [z; 9];
        let mut q = 0;
        while q < qpad {
            let (y0, y1, y2) = (
                _mm512_loadu_ps(dy.add(q)),
                _mm512_loadu_ps(d1.add(q)),
                _mm512_loadu_ps(d2.add(q)),
            );
            taps!(
                x,
                q,
                sh,
                y0,
                y1,
                y2,
                [
                    (0, a0, b0, c0),
                    (1, a1, b1, c1),
                    (2, a2, b2, c2),
                    (3, a3, b3, c3),
                    (4, a4, b4, c4),
                    (5, a5, b5, c5),
                    (6, a6, b6, c6),
                    (7, a7, b7, c7),
                    (8, a8, b8, c8)
                ]
            );
            q += 16;
        }
        [
            [
                _mm512_reduce_add_ps(a0),
                _mm512_reduce_add_ps(a1),
                _mm512_reduce_add_ps(a2),
                _mm512_reduce_add_ps(a3),
                _mm512_reduce_add_ps(a4),
                _mm512_reduce_add_ps(a5),
                _mm512_reduce_add_ps(a6),
                _mm512_reduce_add_ps(a7),
                _mm512_reduce_add_ps(a8),
            ],
            [
                _mm512_reduce_add_ps(b0),
                _mm512_reduce_add_ps(b1),
                _mm512_reduce_add_ps(b2),
                _mm512_reduce_add_ps(b3),
                _mm512_reduce_add_ps(b4),
                _mm512_reduce_add_ps(b5),
                _mm512_reduce_add_ps(b6),
                _mm512_reduce_add_ps(b7),
                _mm512_reduce_add_ps(b8),
            ],
            [
                _mm512_reduce_add_ps(c0),
                _mm512_reduce_add_ps(c1),
                _mm512_reduce_add_ps(c2),
                _mm512_reduce_add_ps(c3),
                _mm512_reduce_add_ps(c4),
                _mm512_reduce_add_ps(c5),
                _mm512_reduce_add_ps(c6),
                _mm512_reduce_add_ps(c7),
                _mm512_reduce_add_ps(c8),
            ],
        ]
    }

    /// `∂/∂w` for three output rows (`dy`, `dy + len`, `dy + 2·len`, or fewer: `rows`) and
    /// every input channel: per channel, 27 dot products over the stack in registers, reduced
    /// across lanes once at the end.
    #[target_feature(enable = "avx512f")]
    unsafe fn dw_rows_avx512(
        fr: &Frame,
        xf: &[f32],
        cin: usize,
        sh: &[usize; 9],
        dy: *const f32,
        rows: usize,
        dw: &mut [f32],
    ) {
        // Missing rows read row 0 again; their sums are dropped.
        let d1 = if rows > 1 { dy.add(fr.len) } else { dy };
        let d2 = if rows > 2 { dy.add(2 * fr.len) } else { dy };
        for c in 0..cin {
            let sums = dots27(xf.as_ptr().add(c * fr.len), sh, [dy, d1, d2], fr.qpad);
            for (r, v) in sums.iter().enumerate().take(rows) {
                let at = (r * cin + c) * 9;
                dw[at..at + 9].iter_mut().zip(v).for_each(|(d, v)| *d += v);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_grad_avx512(
        fr: &Frame,
        xf: &[f32],
        cin: usize,
        sh: &[usize; 9],
        dyf: &[f32],
        co: usize,
        dw: &mut [f32],
    ) {
        let off = fr.s + 1;
        for o in (0..co).step_by(3) {
            let dy = dyf.as_ptr().add(o * fr.len + off);
            let rows = (co - o).min(3);
            dw_rows_avx512(fr, xf, cin, sh, dy, rows, &mut dw[o * cin * 9..]);
        }
    }

    /// `∂/∂w` for one output row and one input channel with AVX2: nine 8-lane dot products.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_grad_avx2(
        fr: &Frame,
        xf: &[f32],
        cin: usize,
        sh: &[usize; 9],
        dyf: &[f32],
        co: usize,
        dw: &mut [f32],
    ) {
        let off = fr.s + 1;
        for o in 0..co {
            let dy = dyf.as_ptr().add(o * fr.len + off);
            for c in 0..cin {
                let x = xf.as_ptr().add(c * fr.len);
                let mut acc = [_mm256_setzero_ps(); 9];
                let mut q = 0;
                while q < fr.qpad {
                    let d = _mm256_loadu_ps(dy.add(q));
                    for (t, &s) in sh.iter().enumerate() {
                        acc[t] = _mm256_fmadd_ps(d, _mm256_loadu_ps(x.add(q + s)), acc[t]);
                    }
                    q += 8;
                }
                for (t, a) in acc.iter().enumerate() {
                    let mut lanes = [0.0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
                    dw[(o * cin + c) * 9 + t] += lanes.iter().sum::<f32>();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::{backward_im2col, forward_im2col, Conv2dCfg};
    use rand::{Rng, SeedableRng};

    fn close(what: &str, a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// Every kernel this CPU runs agrees with the im2col convolution, forward and backward:
    /// channel counts off the block sizes (1, 3, 5, 17 rows), one to several images per stack
    /// and a partial last stack, non-square images, more channels than one pass takes ([`KC`]),
    /// bias.
    #[test]
    fn direct_matches_im2col() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for &(n, c, h, w, co, bias) in &[
            (1, 1, 8, 8, 1, false),
            (3, 3, 9, 12, 5, true),
            (2, 17, 8, 10, 3, false),
            (70, 4, 8, 8, 17, false),
            (2, 2, 33, 32, 9, true),
            (2, 70, 8, 9, 66, true),
        ] {
            let geo = ConvGeom::new((n, c, h, w), (co, c, 3, 3), Conv2dCfg::new(1, 1));
            assert!(applies(&geo));
            let mut u =
                |k: usize| -> Vec<f32> { (0..k).map(|_| rng.gen_range(-1.0..1.0)).collect() };
            let (x, wt, b, dy) = (u(n * c * h * w), u(co * c * 9), u(co), u(n * co * h * w));
            let bias = bias.then_some(&b[..]);
            let mut want = vec![0.0; n * co * h * w];
            forward_im2col(&geo, &x, &wt, bias, &mut want);
            let mut dx_want = vec![0.5; x.len()];
            let (dw_want, db_want) =
                backward_im2col(&geo, &x, &wt, &dy, &mut dx_want, bias.is_some());
            for isa in Isa::available() {
                let what = format!("{isa:?} {n}x{c}x{h}x{w} -> {co}");

                let got = forward(isa, &geo, &x, &wt, bias);
                close(&format!("out {what}"), &got, &want, 1e-5);
                let mut dx = vec![0.5; x.len()];
                let (dw, db) = backward(isa, &geo, &x, &wt, &dy, &mut dx, bias.is_some());
                close(&format!("dx {what}"), &dx, &dx_want, 1e-5);
                close(&format!("dw {what}"), &dw, &dw_want, 1e-4);
                close(&format!("db {what}"), &db, &db_want, 1e-5);
            }
        }
    }
}
