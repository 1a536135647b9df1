//! The AVX-512 and AVX2 + FMA kernels of [`super`].

use super::MR;
use std::arch::x86_64::*;

/// One block of [`super::conv_rows`] (at most 8 rows, over at most one pass of input channels;
/// added to `o` if `add`, else written) with AVX-512 (`avx512`) or AVX2 + FMA.
///
/// # Safety
/// The CPU runs the chosen set; the frame holds every value `offs` and `qpad` reach, `wp` every
/// packed weight and `o` every row (`super::conv_rows` asserts this).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn conv_block(
    avx512: bool,
    qpad: usize,
    (xf, cs, cin): (&[f32], usize, usize),
    offs: &[usize],
    wp: &[f32],
    rows: usize,
    o: &mut [f32],
    ld: usize,
    add: bool,
) {
    let (x, op) = (xf.as_ptr(), o.as_mut_ptr());
    macro_rules! go {
        ($nt:literal) => {{
            let offs: &[usize; $nt] = offs.try_into().expect("tap count");
            if avx512 {
                // Tiles of three vectors (48 positions), then one of two or one for the rest.
                let (w, main) = (wp.as_ptr(), qpad / super::TILE * super::TILE);
                conv_block_avx512::<$nt, 3>(main, x, cs, cin, offs, w, rows, op, ld, add);
                let (x, op) = (x.add(main), op.add(main));
                match qpad - main {
                    0 => {}
                    16 => conv_block_avx512::<$nt, 1>(16, x, cs, cin, offs, w, rows, op, ld, add),
                    32 => conv_block_avx512::<$nt, 2>(32, x, cs, cin, offs, w, rows, op, ld, add),
                    n => unreachable!("{n} positions left: qpad is a multiple of 16"),
                }
            } else {
                // Four rows × 16 positions: with 12 accumulators (4 × 24) the compiler spilled
                // one in the inner loop, which ran 1.4–1.8× slower.
                for r0 in (0..rows).step_by(4) {
                    let (w, n) = (wp.as_ptr().add(r0), (rows - r0).min(4));
                    let o = op.add(r0 * ld);
                    conv_block_avx2::<$nt, 2>(qpad, x, cs, cin, offs, w, n, o, ld, add)
                }
            }
        }};
    }
    match offs.len() {
        1 => go!(1),
        2 => go!(2),
        4 => go!(4),
        9 => go!(9),
        n => unreachable!("no kernel for {n} taps"),
    }
}

/// The taps of one input channel in a [`tile_kernel`]: for each tap `t < nt`, `v` loads of the
/// frame at `xc + offs[t]`, each multiplied by the `acc.len()` broadcast weights of `wc`'s tap.
macro_rules! tile_taps {
    ($nt:ident, $xc:ident, $wc:ident, $offs:ident, $acc:ident, $lanes:literal, $v:ident,
     $load:ident, $set1:ident, $fma:ident; $($t:literal)*) => {$(
        if $t < $nt {
            let a = $xc.add(*$offs.get_unchecked($t));
            let v: [_; $v] = std::array::from_fn(|k| $load(a.add($lanes * k)));
            let wt = $wc.add($t * MR);
            for (r, ar) in $acc.iter_mut().enumerate() {
                let b = $set1(*wt.add(r));
                for (k, a) in ar.iter_mut().enumerate() {
                    *a = $fma(v[k], b, *a);
                }
            }
        }
    )*};
}

/// Defines a tile kernel of [`conv_block`]: `$r` output rows (of the 8 of a packed block,
/// starting at `wp`) × `V` vectors of `$lanes` positions, in `$r·V` accumulators; per input
/// channel and tap, `V` loads of the frame and `$r` broadcast weights, over all of the pass's
/// input channels. `qpad` is a multiple of `V·$lanes`. The AVX-512 and AVX2 kernels are this
/// one loop with their own vector type, intrinsics and rows.
macro_rules! tile_kernel {
    ($(#[$doc:meta])* $name:ident, $feature:literal, $lanes:literal, $r:literal,
     $zero:ident, $load:ident, $store:ident, $set1:ident, $fma:ident) => {
        $(#[$doc])*
        #[target_feature(enable = $feature)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<const NT: usize, const V: usize>(
            qpad: usize,
            xf: *const f32,
            cs: usize,
            cin: usize,
            offs: &[usize; NT],
            wp: *const f32,
            rows: usize,
            op: *mut f32,
            ld: usize,
            add: bool,
        ) {
            let mut q = 0;
            while q < qpad {
                let mut acc = [[$zero(); V]; $r];
                if add {
                    for (r, ar) in acc.iter_mut().enumerate().take(rows) {
                        for (k, a) in ar.iter_mut().enumerate() {
                            *a = $load(op.add(r * ld + q + $lanes * k));
                        }
                    }
                }
                for c in 0..cin {
                    let xc = xf.add(c * cs + q);
                    let wc = wp.add(c * NT * MR);
                    // The taps written out (those past `NT` compile away): a loop of nine
                    // mispredicts its exit.
                    tile_taps!(NT, xc, wc, offs, acc, $lanes, V, $load, $set1, $fma;
                        0 1 2 3 4 5 6 7 8);
                }
                for (r, ar) in acc.iter().enumerate().take(rows) {
                    for (k, a) in ar.iter().enumerate() {
                        $store(op.add(r * ld + q + $lanes * k), *a);
                    }
                }
                q += $lanes * V;
            }
        }
    };
}

tile_kernel!(
    /// AVX-512 tile: 8 output rows × `V` vectors (three, 48 positions, in 24 accumulators;
    /// two or one for the last positions of a stack).
    conv_block_avx512, "avx512f", 16, 8,
    _mm512_setzero_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps
);

tile_kernel!(
    /// AVX2 tile: 4 output rows × two vectors (16 positions) in 8 accumulators.
    conv_block_avx2, "avx2,fma", 8, 4,
    _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps
);

/// One step of [`dots27`]: for each tap `(t, a, b, c)`, one load of the frame at `q + offs[t]`
/// and its products with the three rows of `∂y` into `a`, `b`, `c`. Written out (not a loop
/// over arrays) so that all 27 sums stay in registers.
macro_rules! taps {
    ($x:ident, $q:ident, $offs:ident, $y0:ident, $y1:ident, $y2:ident, [$(($t:literal, $a:ident, $b:ident, $c:ident)),*]) => {
        $(
            let v = _mm512_loadu_ps($x.add($q + $offs[$t]));
            $a = _mm512_fmadd_ps($y0, v, $a);
            $b = _mm512_fmadd_ps($y1, v, $b);
            $c = _mm512_fmadd_ps($y2, v, $c);
        )*
    };
}

/// The 27 dot products of three rows of `∂ŷ` with the nine taps of one input channel `x`
/// ([`super::weight_grad`]'s kernel), in 27 AVX-512 registers.
///
/// # Safety
/// The CPU runs AVX-512 F; `x` holds `offs[t] + dy[r].len()` values for every tap and row, and
/// the rows of `dy` have one length, a multiple of 16.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dots27_avx512(x: &[f32], offs: &[usize; 9], dy: [&[f32]; 3]) -> [[f32; 9]; 3] {
    let (qpad, x) = (dy[0].len(), x.as_ptr());
    let [dy, d1, d2] = dy.map(|d| d.as_ptr());
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
            offs,
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
    let mut sums = [0.0f32; 32];
    let lo = hsum16([
        a0, a1, a2, a3, a4, a5, a6, a7, a8, b0, b1, b2, b3, b4, b5, b6,
    ]);
    let hi = hsum16([b7, b8, c0, c1, c2, c3, c4, c5, c6, c7, c8, z, z, z, z, z]);
    _mm512_storeu_ps(sums.as_mut_ptr(), lo);
    _mm512_storeu_ps(sums.as_mut_ptr().add(16), hi);
    std::array::from_fn(|r| std::array::from_fn(|t| sums[9 * r + t]))
}

/// The lane sums of 16 vectors as one vector (`[Σ v[0], …, Σ v[15]]`): a tree that adds pairs
/// of interleaved vectors, 15 additions and 30 shuffles where 16 separate reductions take 64
/// shuffles and additions.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn hsum16(v: [__m512; 16]) -> __m512 {
    // Per 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3] for each pair (a, b).
    let l1: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
    });
    // Per 128-bit lane: the lane's sum of each of four vectors.
    let l2: [__m512; 4] = std::array::from_fn(|i| {
        let (s, t) = (l1[2 * i], l1[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(s, t),
            _mm512_shuffle_ps::<0b11_10_11_10>(s, t),
        )
    });
    // Lanes 0 + 1 and 2 + 3 of two groups of four, then the two halves added.
    let fold = |u: __m512, w: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(u, w),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(u, w),
        )
    };
    fold(fold(l2[0], l2[1]), fold(l2[2], l2[3]))
}

/// [`dots27_avx512`] with AVX2 + FMA, one kernel row (three taps) at a time: 9 sums in
/// registers, 3 + 3 loads per 9 FMAs (AVX2 has 16 registers, too few for all 27).
///
/// # Safety
/// As [`dots27_avx512`] with AVX2 + FMA and a multiple of 8.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dots27_avx2(x: &[f32], offs: &[usize; 9], dy: [&[f32]; 3]) -> [[f32; 9]; 3] {
    let mut out = [[0.0f32; 9]; 3];
    for ki in 0..3 {
        let sums = dots9_avx2(x, &offs[3 * ki..3 * ki + 3], dy);
        for (o, s) in out.iter_mut().zip(sums) {
            o[3 * ki..3 * ki + 3].copy_from_slice(&s);
        }
    }
    out
}

/// Three rows of `∂ŷ` against three taps of `x`.
#[target_feature(enable = "avx2,fma")]
unsafe fn dots9_avx2(x: &[f32], offs: &[usize], dy: [&[f32]; 3]) -> [[f32; 3]; 3] {
    let (qpad, x) = (dy[0].len(), x.as_ptr());
    let [dy, d1, d2] = dy.map(|d| d.as_ptr());
    let z = _mm256_setzero_ps();
    let ([mut a0, mut a1, mut a2], [mut b0, mut b1, mut b2], [mut c0, mut c1, mut c2]) =
        ([z; 3], [z; 3], [z; 3]);
    let (o0, o1, o2) = (offs[0], offs[1], offs[2]);
    let mut q = 0;
    while q < qpad {
        let (y0, y1, y2) = (
            _mm256_loadu_ps(dy.add(q)),
            _mm256_loadu_ps(d1.add(q)),
            _mm256_loadu_ps(d2.add(q)),
        );
        let v = _mm256_loadu_ps(x.add(q + o0));
        (a0, b0, c0) = (
            _mm256_fmadd_ps(y0, v, a0),
            _mm256_fmadd_ps(y1, v, b0),
            _mm256_fmadd_ps(y2, v, c0),
        );
        let v = _mm256_loadu_ps(x.add(q + o1));
        (a1, b1, c1) = (
            _mm256_fmadd_ps(y0, v, a1),
            _mm256_fmadd_ps(y1, v, b1),
            _mm256_fmadd_ps(y2, v, c1),
        );
        let v = _mm256_loadu_ps(x.add(q + o2));
        (a2, b2, c2) = (
            _mm256_fmadd_ps(y0, v, a2),
            _mm256_fmadd_ps(y1, v, b2),
            _mm256_fmadd_ps(y2, v, c2),
        );
        q += 8;
    }
    let h = |v: __m256| {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    };
    [
        [h(a0), h(a1), h(a2)],
        [h(b0), h(b1), h(b2)],
        [h(c0), h(c1), h(c2)],
    ]
}

/// Defines a kernel of blocked `∂/∂w` (`super::weight_grad16`) for `$rows` output channels,
/// `$taps` taps and one block of 16 input channels, vectorised over the input channels:
/// `acc[r][k] += Σ_q ∂ŷ[r][q] · x̃[q + offs[k]]`, where `x̃` is the block's channel-interleaved
/// frame (`[position][16]`, so every load is aligned and no lane is summed across; with 8
/// lanes, each position is two halves) and `dy[r]` holds `∂/∂y` at each output position `q`.
/// Only the positions `q` with `q mod period < run` are visited (each image row of the frame,
/// not the zero column after it). The accumulators (`$rows·$taps·16/$lanes`, all in registers)
/// are added to `out[r][k]` (16 values, rows `9·ld` and taps `ld` apart) for `r < rows`.
///
/// Safety of the kernels: the CPU runs `$feature`; `xb` holds `16·(n + offs[k])` values for
/// every tap, where `n` is the length of every row of `dy`; `out` holds
/// `((rows − 1)·9 + $taps − 1)·ld + 16` values.
macro_rules! dw_kernel {
    ($(#[$doc:meta])* $name:ident, $feature:literal, $lanes:literal, $rows:literal, $taps:literal,
     $zero:ident, $load:ident, $loadu:ident, $storeu:ident, $set1:ident, $fma:ident, $add:ident) => {
        $(#[$doc])*
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn $name(
            xb: &[f32],
            offs: [usize; $taps],
            dy: [&[f32]; $rows],
            (run, period): (usize, usize),
            rows: usize,
            out: &mut [f32],
            ld: usize,
        ) {
            const HALVES: usize = 16 / $lanes;
            let n = dy[0].len();
            let x = xb.as_ptr();
            let p: [*const f32; $taps] = std::array::from_fn(|k| x.add(16 * offs[k]));
            let d: [*const f32; $rows] = std::array::from_fn(|r| dy[r].as_ptr());
            let mut acc = [[[$zero(); HALVES]; $taps]; $rows];
            let mut row = 0;
            while row < n {
                for q in row..(row + run).min(n) {
                    let y: [_; $rows] = std::array::from_fn(|r| $set1(*d[r].add(q)));
                    for (k, pk) in p.iter().enumerate() {
                        for h in 0..HALVES {
                            let v = $load(pk.add(16 * q + $lanes * h));
                            for (ar, yr) in acc.iter_mut().zip(&y) {
                                ar[k][h] = $fma(*yr, v, ar[k][h]);
                            }
                        }
                    }
                }
                row += period;
            }
            let o = out.as_mut_ptr();
            for (r, ar) in acc.iter().enumerate().take(rows) {
                for (k, ak) in ar.iter().enumerate() {
                    for (h, v) in ak.iter().enumerate() {
                        let at = o.add((r * 9 + k) * ld + $lanes * h);
                        $storeu(at, $add($loadu(at), *v));
                    }
                }
            }
        }
    };
}

dw_kernel!(
    /// Three output channels × all nine taps: 27 accumulators.
    dw_block16_avx512, "avx512f", 16, 3, 9,
    _mm512_setzero_ps, _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps,
    _mm512_fmadd_ps, _mm512_add_ps
);

dw_kernel!(
    /// Two output channels × three taps (one kernel row) × two 8-lane halves: 12 accumulators
    /// (AVX2 has 16 registers).
    dw_block16_avx2, "avx2,fma", 8, 2, 3,
    _mm256_setzero_ps, _mm256_load_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps,
    _mm256_fmadd_ps, _mm256_add_ps
);
