//! Direct 3×3 convolution (padding 1, no dilation, one group; stride 1, or stride 2 on even
//! sizes; [`applies`] adds the width and channel cutoffs) without an im2col matrix: every 3×3
//! layer of ResNet-20 and all but one of ResNet-18's, of which `crate::conv` gives the widest
//! stride-1 ones (`crate::winograd::applies`) to Winograd first.
//!
//! The input is copied once into a *framed* layout ([`frame`]): per plane, the images of a stack
//! side by side, row `y` of every image in frame row `y + 1`, each image row followed by one
//! zero (the right padding of this image and the left padding of the next), with a zero row
//! above and below. With row stride `s`, output pixel `(j, y, x)` sits at `q = y·s + j·(w+1) + x`
//! and reads tap `(ki, kj)` at `q + ki·s + kj` of the frame: every tap is a plain shift, so one
//! microkernel over `q` runs all taps from registers, and the stack's extra positions (the zero
//! columns, `1/w` of the work) are computed and dropped.
//!
//! Layers 8 wide or narrower with 64 channels or more frame three *shifted planes* instead, without zero columns:
//! plane `kj` holds column `x + kj − 1` at `x` (zero outside the image), so tap `(ki, kj)` reads
//! plane `kj` at `q + ki·s` with `q = y·s + j·w + x`. Nothing is dropped, and with `s` and the
//! plane length multiples of 16 on a 64-byte-aligned frame every vector load is aligned.
//!
//! - forward: `y[o, q] = Σ_{c,t} w[o, c, t] · x̂[c, q + offₜ]`;
//! - `∂/∂x[c, q] = Σ_{o,t} w[o, c, t] · ∂ŷ[o, q + off′ₜ]`, the same kernel over the frame of
//!   `∂/∂y` with mirrored offsets;
//! - `∂/∂w[o, c, t] = Σ_q ∂ŷ[o, at + q] · x̂[c, q + offₜ]`, where `∂ŷ` from `at` (one row and
//!   column in, or the unshifted plane one row down) is `∂/∂y` at output positions, zero at the
//!   dropped ones.
//!
//! With AVX-512 or AVX2, `∂/∂w` of layers whose input channels come in blocks of 16 runs on a
//! *channel-interleaved* copy of the one-plane frame (`[c/16][position][16]`, see
//! [`weight_grad16`]): vectorised over 16 input channels instead of 16 positions, its loads
//! are aligned, whole-vector shifts and its sums need no reduction across lanes.
//!
//! A stride-2 convolution frames the four phases `x[2i + a, 2j + b]` of its input, each as large
//! as the output: each tap then reads one phase at a shift of 0 or 1 row and column, and
//! `∂/∂x` of phase `(a, b)` is a stride-1 pass over `∂ŷ` with the 1, 2 or 4 taps that read it.
//!
//! The kernels use AVX-512 or AVX2 + FMA when the CPU has them (checked at run time) and plain
//! loops otherwise; all three compute the same sums (in different orders, so not bit for bit).

mod frame;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::conv::ConvGeom;
use crate::util;
use frame::{aligned, Frame, Plan};
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

/// The environment variable that caps the instruction set of the direct convolution's kernels:
/// `portable`, `avx2` or `avx512` (to compare them on one machine). Unset, they use the widest
/// set the CPU runs.
pub const ISA_ENV: &str = "KD_OPS_ISA";

/// The instruction set of the direct convolution's kernels in this process: `avx512`, `avx2`
/// or `portable` (see [`ISA_ENV`]).
pub fn conv_isa() -> &'static str {
    Isa::best().name()
}

impl Isa {
    fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
        }
    }
    /// The widest set this CPU runs, or the one [`ISA_ENV`] names (read once per process).
    pub(crate) fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Self::capped(std::env::var(ISA_ENV).ok().as_deref()))
    }
    /// The widest set this CPU runs, or the one `cap` names. Panics, naming the variable and
    /// the choices, on a name this CPU cannot run.
    fn capped(cap: Option<&str>) -> Isa {
        let avail = Self::available();
        match cap.filter(|c| !c.is_empty()) {
            None => *avail.last().expect("the portable kernels always run"),
            Some(name) => *avail.iter().find(|i| i.name() == name).unwrap_or_else(|| {
                let names: Vec<_> = avail.iter().map(|i| i.name()).collect();
                panic!("{ISA_ENV}={name}: this CPU runs {names:?}")
            }),
        }
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
            if is_x86_feature_detected!("avx512f") {
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
/// Output positions per microkernel tile (three AVX-512 vectors; AVX2 tiles are a third).
const TILE: usize = 48;
/// Stride-1 layers at most [`SHIFTED_MAX_WIDTH`] wide with at least this many input and output
/// channels run on shifted planes: three copies of each frame, plane `k` shifted by `k − 1`
/// columns with its own zero padding, so that no position is dropped (`1/(w + 1)` of the work
/// otherwise) and, with a row stride that is a multiple of 16, every vector load is aligned
/// (∂/∂w alone runs about 1.2× faster on aligned loads). The three planes cost three copies and
/// about twice the L1 refills per tap row. Time against the one-plane layout (two threads,
/// alternating in one process): 0.86–0.89× at 512 channels 4×4, 0.96–0.99× at 256 channels 8×8,
/// 1.01× at 128 channels 16×16, 0.93–1.08× at 64 channels 32×32, and 1.07–1.19× at 16 and 32
/// channels (32×32, 16×16).
const SHIFTED_MIN_CHANNELS: usize = 64;
/// See [`SHIFTED_MIN_CHANNELS`].
const SHIFTED_MAX_WIDTH: usize = 8;
/// Output positions a stack aims for: enough to amortise each `∂/∂w` block's final sums.
const TARGET_Q: usize = 1024;
/// The layers each stride runs, `(narrowest output, most channels)`: the others are left to
/// im2col (a frame drops `1/(w + 1)` of its positions; `gemm` blocks wide layers for the
/// caches). Forward and backward time of these kernels over im2col's (AVX-512, two threads,
/// 128 images, the two alternating in one process): stride 1, 0.74–0.80× at 64 channels
/// (32×32), 0.89–1.03× at 128 (16×16), 0.93–1.06× at 256 (8×8), 0.86–0.99× at 512 (4×4);
/// stride 2, 0.87–1.03× for 64 → 128 channels, 0.99–1.10× for 128 → 256, 1.21× for 256 → 512.
/// With AVX-512's blocked `∂/∂w` ([`blocked_dw`]), 128 → 256 at stride 2 runs directly too:
/// 0.92–0.93× im2col's time (64 → 128: 0.79–0.81×; 256 → 512, 4 wide, 1.06–1.08×).
fn limits(stride: usize) -> (usize, usize) {
    match (stride, Isa::best()) {
        (1, _) => (4, 512),
        #[cfg(target_arch = "x86_64")]
        (_, Isa::Avx512) => (8, 256),
        _ => (8, 128),
    }
}

/// True for the geometries this module runs.
pub(crate) fn applies(geo: &ConvGeom) -> bool {
    let strided = match geo.s {
        1 => true,
        2 => geo.h.is_multiple_of(2) && geo.w.is_multiple_of(2),
        _ => false,
    };
    let (min_width, max_channels) = limits(geo.s);
    strided
        && (geo.kh, geo.kw, geo.p, geo.d, geo.g) == (3, 3, 1, 1, 1)
        && geo.ow >= min_width
        && geo.c.max(geo.co) <= max_channels
}

/// Packs `w` (`[co][ci][9]`) for a pass over `taps`: `[rows/MR][inputs][taps][MR]`, zero rows
/// past the end. The forward pass has rows = output channels, inputs = input channels;
/// `∂/∂x` (`transpose`) the other way round. One rayon task per block of [`MR`] rows (a layer of
/// 512 channels packs 2.4 M weights on every pass).
fn pack(w: &[f32], co: usize, ci: usize, transpose: bool, taps: &[usize]) -> Vec<f32> {
    let (rows, ins, nt) = if transpose {
        (ci, co, taps.len())
    } else {
        (co, ci, taps.len())
    };
    let mut p = vec![0.0f32; rows.div_ceil(MR) * MR * ins * nt];
    p.par_chunks_mut(ins * nt * MR)
        .enumerate()
        .for_each(|(b, pb)| {
            for r in b * MR..(b * MR + MR).min(rows) {
                for i in 0..ins {
                    let (o, c) = if transpose { (i, r) } else { (r, i) };
                    let src = &w[(o * ci + c) * 9..][..9];
                    for (k, &t) in taps.iter().enumerate() {
                        pb[(i * nt + k) * MR + r % MR] = src[t];
                    }
                }
            }
        });
    p
}

/// `o[r][q] = Σ_{c, k} wp[c][k][r] · x̂[c·cs + q + offs[k]]` for the rows `r < rows` of `o`
/// (row stride `ld`) and every `q < qpad`; `wp` is packed by [`pack`] for these rows and taps.
/// Input channels go [`KC`] at a time, each pass over every block of [`MR`] rows (one kernel
/// call, which adds to the block after the first pass): the pass's frames stay in the L2 cache
/// while the blocks sweep them.
#[allow(clippy::too_many_arguments)]
fn conv_rows(
    isa: Isa,
    fr: &Frame,
    (xf, cs, cin): (&[f32], usize, usize),
    offs: &[usize],
    wp: &[f32],
    rows: usize,
    o: &mut [f32],
    ld: usize,
) {
    let (nt, qpad) = (offs.len(), fr.qpad);
    let reach = offs.iter().max().copied().unwrap_or(0) + qpad;
    let blocks = rows.div_ceil(MR);
    assert!(cin > 0 && xf.len() >= (cin - 1) * cs + reach && wp.len() >= blocks * cin * nt * MR);
    assert!(rows > 0 && o.len() >= (rows - 1) * ld + qpad && ld >= qpad);
    for c0 in (0..cin).step_by(KC) {
        let src = (&xf[c0 * cs..], cs, (cin - c0).min(KC));
        for (b, ob) in o.chunks_mut(MR * ld).take(blocks).enumerate() {
            let (n, add) = ((rows - b * MR).min(MR), c0 > 0);
            let wb = &wp[(b * cin + c0) * nt * MR..];
            match isa {
                Isa::Portable => portable::conv_block(qpad, src, offs, wb, n, ob, ld, add),
                // SAFETY: the CPU has the features (`Isa::available`); the asserts bound every
                // access (each block's rows, weights and frame reads lie inside them).
                #[cfg(target_arch = "x86_64")]
                _ => unsafe {
                    x86::conv_block(isa == Isa::Avx512, qpad, src, offs, wb, n, ob, ld, add)
                },
            }
        }
    }
}

/// Output positions a stack of this layer aims for: [`TARGET_Q`], or half as many for layers
/// of 256 channels or more, whose stacks at [`TARGET_Q`] outgrow the L2 cache (an input
/// block of [`KC`] channels on shifted planes plus the output: 3 MB at 512 channels). Against
/// [`TARGET_Q`] everywhere, alternating in one process (two threads, 128 images): forward and
/// backward 0.90–0.95× the time at 256 channels 8×8 and 512 channels 4×4; at 128 channels
/// and fewer the smaller stack is slower (`∂/∂w` sums its lanes once per stack).
pub(super) fn target_q(geo: &ConvGeom) -> usize {
    if geo.c.max(geo.co) >= 256 {
        TARGET_Q / 2
    } else {
        TARGET_Q
    }
}

/// `dw[o][c][t] += Σ_q ∂ŷ[o·dcs + at + q] · x̂[c·cs + q + offs[t]]` for every output row `o` of
/// `dyf` (channel stride `dcs`, `∂/∂y` at output position 0 at `at`) and input channel `c`; `dw`
/// is `[co][cin][9]`. Output rows go three at a time: a kernel takes three rows of `∂ŷ` and one
/// input channel and returns their 27 sums.
#[allow(clippy::too_many_arguments)]
fn weight_grad(
    isa: Isa,
    fr: &Frame,
    (xf, cs, cin): (&[f32], usize, usize),
    offs: &[usize; 9],
    (dyf, dcs, at): (&[f32], usize, usize),
    co: usize,
    dw: &mut [f32],
) {
    let reach = offs.iter().max().copied().unwrap_or(0) + fr.qpad;
    assert!(cin > 0 && xf.len() >= (cin - 1) * cs + reach);
    assert!(co > 0 && dyf.len() >= (co - 1) * dcs + at + fr.qpad && dw.len() >= co * cin * 9);
    // Input channels go [`KC`] at a time: their frames stay in the L2 cache while every row
    // of `∂ŷ` passes once (all of `x̂` per output row would stream from L3 at 256 channels).
    for c0 in (0..cin).step_by(KC) {
        for o in (0..co).step_by(3) {
            let rows = (co - o).min(3);
            // Missing rows read the last again; their sums are dropped.
            let dy: [&[f32]; 3] =
                std::array::from_fn(|r| &dyf[(o + r.min(rows - 1)) * dcs + at..][..fr.qpad]);
            for c in c0..(c0 + KC).min(cin) {
                let x = &xf[c * cs..][..reach];
                let sums = match isa {
                    Isa::Portable => portable::dots27(x, offs, dy),
                    // SAFETY: the CPU has the features (`Isa::available`); `x` holds every value
                    // `offs` and `qpad` reach, each row of `dy` its `qpad` values.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { x86::dots27_avx512(x, offs, dy) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { x86::dots27_avx2(x, offs, dy) },
                };
                for (r, v) in sums.iter().enumerate().take(rows) {
                    let at = ((o + r) * cin + c) * 9;
                    dw[at..at + 9].iter_mut().zip(v).for_each(|(d, v)| *d += v);
                }
            }
        }
    }
}

/// Whether `∂/∂w` runs on channel-interleaved frames ([`weight_grad16`]): AVX-512 or AVX2,
/// input channels in whole blocks of 16, and outputs at least 8 wide. (At 512 channels 4×4
/// the one-plane interleaved frame of a stack, 62 KB per block, no longer stays in the L1
/// cache while the output channels pass: 1.04–1.08× [`weight_grad`]'s time even with the
/// dropped positions skipped.) Backward time against [`weight_grad`]'s, alternating in one
/// process (two threads, 128 images): 0.90× at 64 channels 32×32, 0.88× at 128 channels
/// 16×16, 0.96× at 256 channels 8×8, 0.90× for 64 → 128 channels at stride 2. With AVX2
/// (`KD_OPS_ISA=avx2` on the same machine): 0.88×, 0.87×, 0.92× and 0.90×.
fn blocked_dw(isa: Isa, geo: &ConvGeom) -> bool {
    isa != Isa::Portable && geo.c.is_multiple_of(16) && geo.ow >= 8
}

/// [`weight_grad`] vectorised over input channels: `x̂` is interleaved 16 channels at a time
/// into `xb` (`[c/16][cs][16]`), and `dwt[o][t][c] += Σ_q ∂ŷ[o·dcs + at + q] · x̂[c·cs + q +
/// offs[t]]` (`dwt` is `[co][9][cin]`). Every load is one aligned vector and no lane is summed
/// across: the sums are the kernel's 27 accumulators, added to `dwt` once per stack.
#[allow(clippy::too_many_arguments)]
fn weight_grad16(
    isa: Isa,
    fr: &Frame,
    (xf, cs, cin): (&[f32], usize, usize),
    xb: &mut [f32],
    offs: &[usize; 9],
    (dyf, dcs, at): (&[f32], usize, usize),
    co: usize,
    dwt: &mut [f32],
) {
    assert!(cin.is_multiple_of(16) && xf.len() >= cin * cs && xb.len() >= cin * cs);
    let reach = offs.iter().max().copied().unwrap_or(0) + fr.qpad;
    assert!(reach <= cs && dyf.len() >= (co - 1) * dcs + at + fr.qpad && dwt.len() >= co * 9 * cin);
    for (cb, blk) in xb.chunks_exact_mut(16 * cs).take(cin / 16).enumerate() {
        let src = &xf[cb * 16 * cs..][..16 * cs];
        for (e, v) in blk.chunks_exact_mut(16).enumerate() {
            for (l, d) in v.iter_mut().enumerate() {
                *d = src[l * cs + e];
            }
        }
    }
    // AVX-512 takes three output channels and all nine taps at a time, AVX2 two and three.
    let (step, taps) = if isa == Isa::Avx512 { (3, 9) } else { (2, 3) };
    // Each frame row holds `w` output positions per image, then `sep` dropped ones: the
    // kernels visit only the former.
    let seg = (fr.w, fr.w + fr.sep);
    for cb in 0..cin / 16 {
        let blk = &xb[cb * 16 * cs..][..16 * cs];
        for o in (0..co).step_by(step) {
            let rows = (co - o).min(step);
            // Missing rows read the last again; their sums are dropped.
            let dy = |r: usize| &dyf[(o + r.min(rows - 1)) * dcs + at..][..fr.h * fr.s];
            for t0 in (0..9).step_by(taps) {
                let out = &mut dwt[(o * 9 + t0) * cin + cb * 16..];
                match isa {
                    // SAFETY: the CPU runs the set (`blocked_dw`); the asserts bound the frame's
                    // reads (`reach ≤ cs` per block), the rows of `∂ŷ` and `dwt`'s rows.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe {
                        x86::dw_block16_avx512(
                            blk,
                            *offs,
                            [dy(0), dy(1), dy(2)],
                            seg,
                            rows,
                            out,
                            cin,
                        )
                    },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe {
                        let o3 = [offs[t0], offs[t0 + 1], offs[t0 + 2]];
                        x86::dw_block16_avx2(blk, o3, [dy(0), dy(1)], seg, rows, out, cin)
                    },
                    _ => unreachable!("blocked ∂/∂w needs AVX2 or AVX-512"),
                }
            }
        }
    }
}

/// `[co][9][c]` (as [`weight_grad16`] sums) to `[co][c][9]` (the weights' layout).
fn taps_last(dwt: &[f32], co: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; co * c * 9];
    for (o, rows) in dwt.chunks_exact(9 * c).take(co).enumerate() {
        for (t, row) in rows.chunks_exact(c).enumerate() {
            for (ci, v) in row.iter().enumerate() {
                out[(o * c + ci) * 9 + t] = *v;
            }
        }
    }
    out
}

/// Forward pass on row-major buffers, as [`crate::conv`]'s: `[n, co, oh, ow]`.
pub(crate) fn forward(
    isa: Isa,
    geo: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (c, co, chw, ohw) = (geo.c, geo.co, geo.c * geo.h * geo.w, geo.pix());
    let per = util::per_thread(geo.n);
    let plan = Plan::new(geo, per);
    let wp = pack(w, co, c, false, &(0..9).collect::<Vec<_>>());
    let body = |i: usize, outs: &mut [MaybeUninit<f32>]| {
        let xs = &x[i * per * chw..][..outs.len() / (co * ohw) * chw];
        let mut xbuf = util::scratch(0, c * plan.planes() * plan.full.len + 15);
        let mut obuf = util::scratch(1, co * plan.full.qpad + 15);
        let (xf, of) = (aligned(&mut xbuf), aligned(&mut obuf));
        let ld = plan.full.qpad;
        for (ob, xb) in outs
            .chunks_mut(plan.full.nb * co * ohw)
            .zip(xs.chunks(plan.full.nb * chw))
        {
            // A partial last stack has a shorter frame: its planes lie closer together.
            let fr = plan.frame(xb.len() / chw);
            let (cs, offs) = (plan.planes() * fr.len, plan.taps(&fr));
            plan.fill_input(&fr, xb, xf);
            conv_rows(isa, &fr, (xf, cs, c), &offs, &wp, co, of, ld);
            fr.unframe(of, ld, co, |ch, j, y, src| {
                let at = (j * co + ch) * ohw + y * geo.ow;
                let row = &mut ob[at..at + src.len()];
                match bias {
                    Some(b) => row.iter_mut().zip(src).for_each(|(d, &v)| {
                        d.write(v + b[ch]);
                    }),
                    None => row.iter_mut().zip(src).for_each(|(d, &v)| {
                        d.write(v);
                    }),
                }
            });
        }
        util::give_scratch(0, xbuf);
        util::give_scratch(1, obuf);
    };
    // SAFETY: `unframe` visits every row of every channel of every image of the chunk.
    unsafe { util::filled(geo.n * co * ohw, per * co * ohw, body) }
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
    let (c, co, chw, ohw) = (geo.c, geo.co, geo.c * geo.h * geo.w, geo.pix());
    let per = util::per_thread(geo.n);
    let plan = Plan::new(geo, per);
    // Each pass of `∂/∂x` with its packed weights (its taps are the same for every stack; their
    // offsets follow each stack's row stride).
    let passes: Vec<_> = plan
        .dx_passes()
        .into_iter()
        .map(|(ab, taps)| {
            let wt = pack(w, co, c, true, &taps);
            (ab, taps, wt)
        })
        .collect();
    let blocked = blocked_dw(isa, geo);
    // Shifted planes serve `∂/∂x`; blocked `∂/∂w` reads `x` and `∂/∂y` framed once more on one
    // plane (its taps shift by whole vectors, so its loads are aligned there too).
    let refr = blocked && plan.full.sep == 0;
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(per * chw)
        .zip(x.par_chunks(per * chw))
        .zip(dout.par_chunks(per * co * ohw))
        .map(|((dxs, xs), douts)| {
            // `[co][c][9]`, or `[co][9][c]` where `∂/∂w` is blocked.
            let mut dw = vec![0.0f32; co * c * 9];
            let mut db = vec![0.0f32; co];
            let ld = plan.full.qpad;
            // `∂ŷ` on shifted planes (for `∂/∂x`) where the input is, else on one plane.
            let dplanes = if plan.full.sep == 0 { 3 } else { 1 };
            let mut xbuf = util::scratch(0, c * plan.planes() * plan.full.len + 15);
            let mut dybuf = util::scratch(1, co * dplanes * plan.full.len + 15);
            let mut dxbuf = util::scratch(2, c * ld + 15);
            let blen = |n: usize| if blocked { n + 15 } else { 0 };
            let mut xbbuf = util::scratch(3, blen(c * plan.planes() * plan.full.len));
            let mut dy1buf = util::scratch(
                4,
                blen(if refr {
                    co * plan.full.one_plane().len
                } else {
                    0
                }),
            );
            let (xf, dyf, dxf) = (aligned(&mut xbuf), aligned(&mut dybuf), aligned(&mut dxbuf));
            let (xbl, dy1f) = (aligned(&mut xbbuf), aligned(&mut dy1buf));
            for ((dxb, xb), dob) in dxs
                .chunks_mut(plan.full.nb * chw)
                .zip(xs.chunks(plan.full.nb * chw))
                .zip(douts.chunks(plan.full.nb * co * ohw))
            {
                if with_bias {
                    crate::conv::add_bias_grad(&mut db, dob, ohw);
                }
                let fr = plan.frame(xb.len() / chw);
                let dcs = dplanes * fr.len;
                plan.fill_planes(&fr, dob, co, dyf);
                // The frame `∂/∂w` reads, with `x̂` and `∂ŷ` on it (`∂/∂y` at output position 0
                // at the centre tap's offset).
                let (wf, xw, dyw) = if refr {
                    let f1 = fr.one_plane();
                    f1.fill(xb, c, xf);
                    f1.fill(dob, co, dy1f);
                    (
                        f1,
                        (&xf[..], f1.len, c),
                        (&dy1f[..], f1.len, f1.shift(1, 1)),
                    )
                } else {
                    plan.fill_input(&fr, xb, xf);
                    let cs = plan.planes() * fr.len;
                    (fr, (&xf[..], cs, c), (&dyf[..], dcs, fr.shift(1, 1)))
                };
                let offs = plan.taps(&wf);
                if blocked {
                    weight_grad16(isa, &wf, xw, xbl, &offs, dyw, co, &mut dw);
                } else {
                    weight_grad(isa, &wf, xw, &offs, dyw, co, &mut dw);
                }
                for ((a, b), taps, wt) in &passes {
                    let offs: Vec<usize> = taps.iter().map(|&t| plan.dx_offset(&fr, t)).collect();
                    conv_rows(isa, &fr, (dyf, dcs, co), &offs, wt, c, dxf, ld);
                    let (s, h, w) = (geo.s, geo.h, geo.w);
                    fr.unframe(dxf, ld, c, |ch, j, y, src| {
                        let at = (j * c + ch) * h * w + (s * y + a) * w + b;
                        let row = &mut dxb[at..at + s * (src.len() - 1) + 1];
                        if s == 1 {
                            row.iter_mut().zip(src).for_each(|(d, v)| *d += v);
                        } else {
                            row.iter_mut()
                                .step_by(s)
                                .zip(src)
                                .for_each(|(d, v)| *d += v);
                        }
                    });
                }
            }
            for (slot, buf) in [xbuf, dybuf, dxbuf, xbbuf, dy1buf].into_iter().enumerate() {
                util::give_scratch(slot, buf);
            }
            (dw, db)
        })
        .collect();
    let (dw, db) = crate::conv::sum_partials(partials, (co * c * 9, co));
    (if blocked { taps_last(&dw, co, c) } else { dw }, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::reference::{close, Case};
    use crate::conv::Conv2dCfg;
    use rand::SeedableRng;

    /// `KD_OPS_ISA` picks a set the CPU runs and refuses, naming itself, one it does not.
    #[test]
    fn isa_cap() {
        assert_eq!(Isa::capped(Some("portable")), Isa::Portable);
        assert_eq!(Isa::capped(None), *Isa::available().last().unwrap());
        let err = std::panic::catch_unwind(|| Isa::capped(Some("avx1024"))).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("KD_OPS_ISA=avx1024") && msg.contains("portable"),
            "{msg}"
        );
    }

    /// Every kernel this CPU runs agrees with the im2col convolution, forward and backward:
    /// channel counts off the block sizes (1, 3, 5, 17 rows), one to several images per stack
    /// and a partial last stack, non-square images, more channels than one pass takes ([`KC`]),
    /// bias, shifted planes (4×4 and 8×8 with many images per stack, 5×7 with an unaligned row
    /// stride), and stride 2 (each input phase and its `∂/∂x` pass).
    #[test]
    fn direct_matches_im2col() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for &(n, c, h, w, co, stride, bias) in &[
            (1, 1, 8, 8, 1, 1, false),
            (3, 3, 9, 12, 5, 1, true),
            (2, 17, 8, 10, 3, 1, false),
            (70, 4, 8, 8, 17, 1, false),
            (2, 2, 33, 32, 9, 1, true),
            (2, 70, 8, 9, 66, 1, true),
            (40, 70, 4, 4, 9, 1, false),
            (70, 64, 4, 4, 70, 1, true),
            (20, 66, 8, 8, 64, 1, false),
            (3, 64, 5, 7, 64, 1, false),
            (2, 3, 16, 18, 5, 2, true),
            (30, 2, 16, 16, 9, 2, false),
            (2, 70, 18, 16, 66, 2, false),
            (3, 32, 9, 12, 5, 1, true),
            (9, 64, 8, 8, 70, 1, true),
            (2, 16, 16, 18, 7, 2, false),
        ] {
            let geo = ConvGeom::new((n, c, h, w), (co, c, 3, 3), Conv2dCfg::new(stride, 1));
            assert!(applies(&geo), "{geo:?}");
            let r = Case::new(&geo, bias, &mut rng);
            for isa in Isa::available() {
                let what = format!("{isa:?} {n}x{c}x{h}x{w} -> {co} stride {stride}");
                let got = forward(isa, &geo, &r.x, &r.w, r.bias.as_deref());
                // A value sums up to 70·9 products, in another order than `gemm`'s, with partial
                // sums near 10: rounding differences reach about 1e-5.
                close(&format!("out {what}"), &got, &r.out, 5e-5);
                let mut dx = vec![0.5; r.x.len()];
                let (dw, db) = backward(isa, &geo, &r.x, &r.w, &r.dy, &mut dx, bias);
                close(&format!("dx {what}"), &dx, &r.dx, 5e-5);
                close(&format!("dw {what}"), &dw, &r.dw, 1e-4);
                close(&format!("db {what}"), &db, &r.db, 1e-5);
            }
        }
    }
}
