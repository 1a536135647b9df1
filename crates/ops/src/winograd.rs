//! Winograd convolution `F(2×2, 3×3)` (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", CVPR 2016, eq. 8) for the forward and backward passes of wide "same" 3×3 layers:
//! each 2×2 block of outputs is `Y = Aᵀ [Σ_c (G g G ᵀ) ⊙ (Bᵀ d B)] A`, so one tile of 16
//! products per input channel replaces 36 multiplications: 2.25× fewer than
//! [`crate::direct`]'s kernels. The sum over input channels is 16 matrix products (one per
//! element of the 4×4 tile, `gemm`), of `[tiles × inputs]` transformed input tiles by
//! `[inputs × outputs]` transformed weights.
//!
//! `∂/∂x` of a stride-1, padding-1 3×3 convolution is the same convolution of `∂/∂y` with the
//! kernel rotated by 180° and its channel axes swapped, so it runs through the same code.
//! `∂/∂w` differentiates the same formula: `∂U[e] = Σ_tiles (A ∂Y Aᵀ)[e]ᵀ · (Bᵀ d B)[e]`, 16
//! more products, and `∂g = Gᵀ ∂U G`.

use crate::conv::ConvGeom;
use crate::util::{self, Mat};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Layers this module runs: stride 1, padding 1, 3×3, even output sizes (whole 2×2 tiles),
/// at least this many input and output channels and at most [`MAX_PIXELS`] outputs per
/// channel. There the 16 matrix products are wide enough for `gemm` to run near its peak and
/// the tile transforms (a cost per channel and pixel) are small beside them. Time against the
/// direct kernels (two threads, 128 images, alternating in one process), forward / backward:
/// 0.75–0.76× / 0.72–0.73× at 512 channels 4×4, 0.84–0.86× / 0.79–0.82× at 256 channels
/// 8×8. Left direct: 128 channels 16×16 (0.92–0.93× / 1.06–1.08×), 64 channels 8×8
/// (1.15–1.25× / 1.2×), 64 channels 32×32 (1.64–1.66× / 1.7–1.8×).
const MIN_CHANNELS: usize = 128;

/// See [`MIN_CHANNELS`].
const MAX_PIXELS: usize = 64;

/// Tiles per stack: the columns of each matrix product.
const TARGET_TILES: usize = 512;

/// True for the geometries this module runs.
pub(crate) fn applies(geo: &ConvGeom) -> bool {
    (geo.kh, geo.kw, geo.s, geo.p, geo.d, geo.g) == (3, 3, 1, 1, 1, 1)
        && geo.oh.is_multiple_of(2)
        && geo.ow.is_multiple_of(2)
        && geo.c.min(geo.co) >= MIN_CHANNELS
        && geo.oh * geo.ow <= MAX_PIXELS
        && geo.c.is_multiple_of(L)
        && geo.co.is_multiple_of(L)
}

/// Channels per block of the tile transforms (their loops run over whole blocks).
const L: usize = 16;

/// `G g Gᵀ` of every kernel, as the right operands of the 16 products: `[cin][16][cout]`, so
/// element `e`'s operand is `cin × cout` with row stride `16·cout`. Kernel `(o, c)` is
/// `w[(o·cin + c)·9 ..]`, or with `rotate` (the kernel of `∂/∂x`, whose outputs are the layer's
/// inputs) `w[(c·cout + o)·9 ..]` turned by 180°.
fn transform_weights(w: &[f32], cout: usize, cin: usize, rotate: bool) -> Vec<f32> {
    let body = |c: usize, uc: &mut [MaybeUninit<f32>]| {
        for o in 0..cout {
            let g: [f32; 9] = if rotate {
                let k = &w[(c * cout + o) * 9..][..9];
                std::array::from_fn(|i| k[8 - i])
            } else {
                w[(o * cin + c) * 9..][..9].try_into().expect("nine taps")
            };
            // G g: 4×3, one column of the kernel at a time.
            let mut gg = [[0.0f32; 3]; 4];
            for j in 0..3 {
                let (a, b, d) = (g[j], g[3 + j], g[6 + j]);
                gg[0][j] = a;
                gg[1][j] = 0.5 * (a + b + d);
                gg[2][j] = 0.5 * (a - b + d);
                gg[3][j] = d;
            }
            // (G g) Gᵀ: 4×4.
            for (i, [a, b, d]) in gg.into_iter().enumerate() {
                let t = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (q, v) in t.into_iter().enumerate() {
                    uc[(4 * i + q) * cout + o].write(v);
                }
            }
        }
    };
    // SAFETY: chunk `c` is `[16][cout]`, and the loops write each `(e, o)` of it.
    unsafe { util::filled(cin * 16 * cout, 16 * cout, body) }
}

/// The layer's shape as this module sees it: `cin` channels of `h × w` in, `cout` out.
#[derive(Clone, Copy)]
struct Shape {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
}

impl Shape {
    fn tiles(&self) -> (usize, usize) {
        (self.h / 2, self.w / 2)
    }
    /// Images per stack: about [`TARGET_TILES`] tiles, at most `per`.
    fn stack(&self, per: usize) -> usize {
        let (th, tw) = self.tiles();
        TARGET_TILES.div_ceil(th * tw).clamp(1, per.max(1))
    }
}

/// `Bᵀ d` of one column of four values (Lavin & Gray's `F(2, 3)` input transform).
#[inline(always)]
fn bt([a, b, c, d]: [f32; 4]) -> [f32; 4] {
    [a - c, b + c, c - b, b - d]
}

/// `Aᵀ m` of one column of four values (the output transform).
#[inline(always)]
fn at([a, b, c, d]: [f32; 4]) -> [f32; 2] {
    [a + b + c, b - c - d]
}

/// `Bᵀ d B` of the tiles of one image: `p` is the image with a zero border, channels last
/// (`[h + 2][w + 2][cin]`); tile `(ty, tx)` goes to row `t0 + ty·tw + tx` of each element's
/// `[tiles][cin]` matrix in `v` (`[16][nt][cin]`). Each lane of a block of [`L`] channels is
/// one independent transform, so the loop over lanes vectorises.
// The lane index reads sixteen blocks at once.
#[allow(clippy::needless_range_loop)]
fn transform_input(s: &Shape, p: &[f32], v: &mut [f32], nt: usize, t0: usize) {
    let (th, tw) = s.tiles();
    let (cin, pw) = (s.cin, s.w + 2);
    assert!(v.len() >= 16 * nt * cin && t0 + th * tw <= nt);
    assert!(p.len() >= (s.h + 2) * pw * cin);
    for ty in 0..th {
        for tx in 0..tw {
            let t = t0 + ty * tw + tx;
            for cb in (0..cin).step_by(L) {
                let d: [&[f32]; 16] = std::array::from_fn(|rk| {
                    let at = ((2 * ty + rk / 4) * pw + 2 * tx + rk % 4) * cin + cb;
                    &p[at..at + L]
                });
                let vp = v.as_mut_ptr();
                for l in 0..L {
                    // Bᵀ along each row's four columns, then along the rows.
                    let rows: [[f32; 4]; 4] =
                        std::array::from_fn(|r| bt(std::array::from_fn(|k| d[4 * r + k][l])));
                    for q in 0..4 {
                        let col = bt(std::array::from_fn(|r| rows[r][q]));
                        for (i, x) in col.into_iter().enumerate() {
                            // SAFETY: inside `v` (asserted above: `t < nt`, `cb + l < cin`).
                            unsafe { *vp.add(((4 * i + q) * nt + t) * cin + cb + l) = x };
                        }
                    }
                }
            }
        }
    }
}

/// `Aᵀ M A` of the tiles of one image (`mt`, `[16][nt][cout]`, rows `t0 + ty·tw + tx`): the
/// image's outputs, channels last, into `o` (`[h][w][cout]`).
// The lane index reads sixteen blocks at once.
#[allow(clippy::needless_range_loop)]
fn transform_output(s: &Shape, mt: &[f32], nt: usize, t0: usize, o: &mut [f32]) {
    let (th, tw) = s.tiles();
    let cout = s.cout;
    assert!(mt.len() >= 16 * nt * cout && t0 + th * tw <= nt);
    assert!(o.len() >= s.h * s.w * cout);
    for ty in 0..th {
        for tx in 0..tw {
            let t = t0 + ty * tw + tx;
            for ob in (0..cout).step_by(L) {
                let m: [&[f32]; 16] = std::array::from_fn(|e| {
                    let at = (e * nt + t) * cout + ob;
                    &mt[at..at + L]
                });
                let op = o.as_mut_ptr();
                for l in 0..L {
                    // Aᵀ down each of the four columns, then along the two rows.
                    let cols: [[f32; 2]; 4] =
                        std::array::from_fn(|q| at(std::array::from_fn(|i| m[4 * i + q][l])));
                    for a in 0..2 {
                        let y = at(std::array::from_fn(|q| cols[q][a]));
                        for (b, x) in y.into_iter().enumerate() {
                            let i = ((2 * ty + a) * s.w + 2 * tx + b) * cout + ob + l;
                            // SAFETY: inside `o` (asserted above).
                            unsafe { *op.add(i) = x };
                        }
                    }
                }
            }
        }
    }
}

/// The convolution of one thread's images `xs` (`[n][cin][h][w]`) with transformed weights
/// `u` ([`transform_weights`]), stack by stack: `put(j, o, values)` receives the `h·w` outputs
/// of channel `o` of image `j`.
fn convolve(
    s: &Shape,
    xs: &[f32],
    u: &[f32],
    per: usize,
    mut put: impl FnMut(usize, usize, &[f32]),
) {
    let (hw, chw) = (s.h * s.w, s.cin * s.h * s.w);
    let n = xs.len() / chw;
    let mb = s.stack(per);
    let (th, tw) = s.tiles();
    let full = mb * th * tw;
    let plen = (s.h + 2) * (s.w + 2) * s.cin;
    let mut vbuf = util::scratch(0, 16 * s.cin * full);
    let mut mbuf = util::scratch(1, 16 * s.cout * full);
    let mut pbuf = util::scratch(2, plen.max(hw * s.cout));
    let mut tbuf = util::scratch(3, chw.max(hw * s.cout));
    for j0 in (0..n).step_by(mb) {
        let m = mb.min(n - j0);
        let nt = m * th * tw;
        let (v, mt) = (&mut vbuf[..16 * s.cin * nt], &mut mbuf[..16 * s.cout * nt]);
        for j in 0..m {
            let x = &xs[(j0 + j) * chw..][..chw];
            transform_image(s, x, &mut pbuf, &mut tbuf, v, nt, j * th * tw);
        }
        for e in 0..16 {
            let lhs = Mat {
                data: &v[e * nt * s.cin..][..nt * s.cin],
                rs: s.cin,
                cs: 1,
            };
            let rhs = Mat {
                data: &u[e * s.cout..],
                rs: 16 * s.cout,
                cs: 1,
            };
            let dst = &mut mt[e * nt * s.cout..][..nt * s.cout];
            util::matmul(nt, s.cout, s.cin, dst, s.cout, false, lhs, rhs);
        }
        for j in 0..m {
            let o = &mut pbuf[..hw * s.cout];
            transform_output(s, mt, nt, j * th * tw, o);
            util::transpose(o, hw, s.cout, &mut tbuf);
            for (ch, vals) in tbuf.chunks_exact(hw).take(s.cout).enumerate() {
                put(j0 + j, ch, vals);
            }
        }
    }
    for (slot, buf) in [vbuf, mbuf, pbuf, tbuf].into_iter().enumerate() {
        util::give_scratch(slot, buf);
    }
}

/// [`transform_input`] of one NCHW image `x`: transposed to channels last in `tbuf`, then
/// given its zero border in `pbuf`.
fn transform_image(
    s: &Shape,
    x: &[f32],
    pbuf: &mut [f32],
    tbuf: &mut [f32],
    v: &mut [f32],
    nt: usize,
    t0: usize,
) {
    let hw = s.h * s.w;
    util::transpose(x, s.cin, hw, tbuf);
    let p = &mut pbuf[..(s.h + 2) * (s.w + 2) * s.cin];
    let row = (s.w + 2) * s.cin;
    p[..row].fill(0.0);
    p[(s.h + 1) * row..].fill(0.0);
    for y in 0..s.h {
        let r = &mut p[(y + 1) * row..][..row];
        r[..s.cin].fill(0.0);
        r[(s.w + 1) * s.cin..].fill(0.0);
        r[s.cin..(s.w + 1) * s.cin].copy_from_slice(&tbuf[y * s.w * s.cin..][..s.w * s.cin]);
    }
    transform_input(s, p, v, nt, t0);
}

/// `A ∂Y Aᵀ` of the tiles of one image's output gradient `dy` (channels last, `[h][w][cout]`):
/// the gradient of each tile's `M` ([`transform_output`]'s input), into `d` (`[16][nt][cout]`,
/// rows `t0 + ty·tw + tx`).
// The lane index reads four blocks at once.
#[allow(clippy::needless_range_loop)]
fn transform_grad(s: &Shape, dy: &[f32], d: &mut [f32], nt: usize, t0: usize) {
    let (th, tw) = s.tiles();
    let cout = s.cout;
    assert!(d.len() >= 16 * nt * cout && t0 + th * tw <= nt);
    // `A v` of two values: the transpose of [`at`].
    let a = |[p, q]: [f32; 2]| [p, p + q, p - q, -q];
    for ty in 0..th {
        for tx in 0..tw {
            let t = t0 + ty * tw + tx;
            for ob in (0..cout).step_by(L) {
                let g: [&[f32]; 4] = std::array::from_fn(|ab| {
                    let at = ((2 * ty + ab / 2) * s.w + 2 * tx + ab % 2) * cout + ob;
                    &dy[at..at + L]
                });
                let dp = d.as_mut_ptr();
                for l in 0..L {
                    let rows = [a([g[0][l], g[1][l]]), a([g[2][l], g[3][l]])];
                    for q in 0..4 {
                        for (i, x) in a([rows[0][q], rows[1][q]]).into_iter().enumerate() {
                            // SAFETY: inside `d` (asserted above).
                            unsafe { *dp.add(((4 * i + q) * nt + t) * cout + ob + l) = x };
                        }
                    }
                }
            }
        }
    }
}

/// `∂/∂w` (`[co][c][9]`) of the layer: per element `e` of the tile, `∂U[e] = Σ_tiles ∂M[e]ᵀ ·
/// V[e]` (16 matrix products, summed over each thread's stacks and then over threads), then
/// `∂g = Gᵀ ∂U G` per kernel. Also `∂/∂bias` (zeros unless `with_bias`).
pub(crate) fn backward_weights(
    geo: &ConvGeom,
    x: &[f32],
    dout: &[f32],
    with_bias: bool,
) -> (Vec<f32>, Vec<f32>) {
    let s = Shape {
        cin: geo.c,
        cout: geo.co,
        h: geo.h,
        w: geo.w,
    };
    let (hw, chw, (th, tw)) = (geo.pix(), geo.c * geo.h * geo.w, s.tiles());
    let per = util::per_thread(geo.n);
    let mb = s.stack(per);
    let full = mb * th * tw;
    let partials: Vec<(Vec<f32>, Vec<f32>)> = x
        .par_chunks(per * chw)
        .zip(dout.par_chunks(per * geo.co * hw))
        .map(|(xs, douts)| {
            let n = xs.len() / chw;
            let mut du = vec![0.0f32; 16 * s.cout * s.cin];
            let mut db = vec![0.0f32; s.cout];
            let mut vbuf = util::scratch(0, 16 * s.cin * full);
            let mut dbuf = util::scratch(1, 16 * s.cout * full);
            let mut pbuf = util::scratch(2, ((s.h + 2) * (s.w + 2) * s.cin).max(hw * s.cout));
            let mut tbuf = util::scratch(3, chw.max(hw * s.cout));
            for j0 in (0..n).step_by(mb) {
                let m = mb.min(n - j0);
                let nt = m * th * tw;
                let (v, d) = (&mut vbuf[..16 * s.cin * nt], &mut dbuf[..16 * s.cout * nt]);
                for j in 0..m {
                    let x = &xs[(j0 + j) * chw..][..chw];
                    transform_image(&s, x, &mut pbuf, &mut tbuf, v, nt, j * th * tw);
                    let dy = &douts[(j0 + j) * s.cout * hw..][..s.cout * hw];
                    if with_bias {
                        crate::conv::add_bias_grad(&mut db, dy, hw);
                    }
                    util::transpose(dy, s.cout, hw, &mut tbuf);
                    transform_grad(&s, &tbuf, d, nt, j * th * tw);
                }
                for e in 0..16 {
                    let lhs = Mat {
                        data: &d[e * nt * s.cout..][..nt * s.cout],
                        rs: 1,
                        cs: s.cout,
                    };
                    let rhs = Mat {
                        data: &v[e * nt * s.cin..][..nt * s.cin],
                        rs: s.cin,
                        cs: 1,
                    };
                    let dst = &mut du[e * s.cout * s.cin..][..s.cout * s.cin];
                    util::matmul(s.cout, s.cin, nt, dst, s.cin, j0 > 0, lhs, rhs);
                }
            }
            for (slot, buf) in [vbuf, dbuf, pbuf, tbuf].into_iter().enumerate() {
                util::give_scratch(slot, buf);
            }
            (du, db)
        })
        .collect();
    let (du, db) = crate::conv::sum_partials(partials, (16 * s.cout * s.cin, s.cout));
    // Gᵀ of four values: the transpose of the weight transform's `G`.
    let gt = |[a, b, c, d]: [f32; 4]| [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d];
    let plane = s.cout * s.cin;
    let body = |o: usize, dwo: &mut [MaybeUninit<f32>]| {
        for (c, k) in dwo.chunks_exact_mut(9).enumerate() {
            let u: [f32; 16] = std::array::from_fn(|e| du[e * plane + o * s.cin + c]);
            // Gᵀ down each of the four columns, then along the three rows.
            let cols: [[f32; 3]; 4] =
                std::array::from_fn(|q| gt(std::array::from_fn(|i| u[4 * i + q])));
            for (r, kr) in k.chunks_exact_mut(3).enumerate() {
                let row = gt(std::array::from_fn(|q| cols[q][r]));
                kr.iter_mut().zip(row).for_each(|(d, v)| {
                    d.write(v);
                });
            }
        }
    };
    // SAFETY: chunk `o` is `[cin][9]`, and the loops write each kernel's nine values.
    let dw = unsafe { util::filled(plane * 9, s.cin * 9, body) };
    (dw, db)
}

/// Forward pass on row-major buffers, as [`crate::conv`]'s: `[n, co, oh, ow]`.
pub(crate) fn forward(geo: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let s = Shape {
        cin: geo.c,
        cout: geo.co,
        h: geo.h,
        w: geo.w,
    };
    let (chw, ohw) = (geo.c * geo.h * geo.w, geo.pix());
    let per = util::per_thread(geo.n);
    let u = transform_weights(w, geo.co, geo.c, false);
    let body = |i: usize, outs: &mut [MaybeUninit<f32>]| {
        let xs = &x[i * per * chw..][..outs.len() / (geo.co * ohw) * chw];
        convolve(&s, xs, &u, per, |j, o, vals| {
            let b = bias.map_or(0.0, |b| b[o]);
            let dst = &mut outs[(j * geo.co + o) * ohw..][..ohw];
            for (d, &v) in dst.iter_mut().zip(vals) {
                d.write(v + b);
            }
        });
    };
    // SAFETY: `convolve` emits every row of every output channel of every image of the chunk.
    unsafe { util::filled(geo.n * geo.co * ohw, per * geo.co * ohw, body) }
}

/// Adds `∂/∂x` of the layer into `dx`: the convolution of `dout` with the rotated, transposed
/// kernel.
pub(crate) fn backward_input(geo: &ConvGeom, w: &[f32], dout: &[f32], dx: &mut [f32]) {
    let s = Shape {
        cin: geo.co,
        cout: geo.c,
        h: geo.oh,
        w: geo.ow,
    };
    let (chw, ohw) = (geo.c * geo.h * geo.w, geo.pix());
    let per = util::per_thread(geo.n);
    let u = transform_weights(w, geo.c, geo.co, true);
    dx.par_chunks_mut(per * chw)
        .zip(dout.par_chunks(per * geo.co * ohw))
        .for_each(|(dxs, douts)| {
            convolve(&s, douts, &u, per, |j, c, vals| {
                let dst = &mut dxs[(j * geo.c + c) * geo.h * geo.w..][..geo.h * geo.w];
                dst.iter_mut().zip(vals).for_each(|(d, v)| *d += v);
            });
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::reference::{close, Case};
    use crate::conv::Conv2dCfg;
    use rand::SeedableRng;

    /// The forward pass, `∂/∂x`, `∂/∂w` and `∂/∂bias` agree with im2col: non-square images, a
    /// partial last stack, bias, and input and output channel counts that differ.
    #[test]
    fn winograd_matches_im2col() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for &(n, c, h, w, co, bias) in &[
            (3, 128, 8, 6, 144, true),
            (5, 144, 4, 4, 128, false),
            (2, 128, 2, 32, 128, false),
            (40, 128, 4, 4, 160, true),
        ] {
            let geo = ConvGeom::new((n, c, h, w), (co, c, 3, 3), Conv2dCfg::new(1, 1));
            assert!(applies(&geo), "{geo:?}");
            let r = Case::new(&geo, bias, &mut rng);
            let what = format!("{n}x{c}x{h}x{w} -> {co}");
            // Sums of up to 144·9 products of values in [-1, 1), in 16 products of transformed
            // values: the transforms' rounding stays below 1e-4 of the partial sums.
            let got = forward(&geo, &r.x, &r.w, r.bias.as_deref());
            close(&format!("out {what}"), &got, &r.out, 1e-4);
            let mut dx = vec![0.5; r.x.len()];
            backward_input(&geo, &r.w, &r.dy, &mut dx);
            close(&format!("dx {what}"), &dx, &r.dx, 1e-4);
            let (dw, db) = backward_weights(&geo, &r.x, &r.dy, bias);
            close(&format!("dw {what}"), &dw, &r.dw, 1e-4);
            close(&format!("db {what}"), &db, &r.db, 1e-5);
        }
    }
}
