//! The reductions of BatchNorm's passes, in 8 partial sums ("lanes", element `i` of a chunk
//! into lane `i`), written with SSE on x86-64 and as plain loops elsewhere. The compiler does
//! not vectorise these loops across lanes by itself: it pairs the two sums of one lane in a
//! register and stays scalar, at 3–5 instructions per value, which made these passes
//! compute-bound. Both versions do the same operations in the same order, lane by lane, so
//! their results are identical.

/// Values per chunk, and partial sums per reduction.
pub(crate) const LANES: usize = 8;

/// Lane sums of `v − k` and `(v − k)²`.
pub(crate) fn shifted(chunks: &[[f32; LANES]], k: f32) -> ([f32; LANES], [f32; LANES]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline.
    unsafe {
        sse::shifted(chunks, k)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        portable::shifted(chunks, k)
    }
}

/// Lane sums of `g` and `g·(x − μ)·invstd`, where `g` is `dy`, zeroed where `x·a + b ≤ 0`
/// when `RELU` (the fused ReLU's output was not positive).
pub(crate) fn masked_grad<const RELU: bool>(
    x: &[[f32; LANES]],
    dy: &[[f32; LANES]],
    [a, b, mu, is]: [f32; 4],
) -> ([f32; LANES], [f32; LANES]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline.
    unsafe {
        sse::masked_grad::<RELU>(x, dy, [a, b, mu, is])
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        portable::masked_grad::<RELU>(x, dy, [a, b, mu, is])
    }
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
mod portable {
    use super::LANES;

    pub(super) fn shifted(chunks: &[[f32; LANES]], k: f32) -> ([f32; LANES], [f32; LANES]) {
        let (mut s, mut q) = ([0.0f32; LANES], [0.0f32; LANES]);
        for c in chunks {
            for l in 0..LANES {
                let d = c[l] - k;
                s[l] += d;
                q[l] += d * d;
            }
        }
        (s, q)
    }

    pub(super) fn masked_grad<const RELU: bool>(
        x: &[[f32; LANES]],
        dy: &[[f32; LANES]],
        [a, b, mu, is]: [f32; 4],
    ) -> ([f32; LANES], [f32; LANES]) {
        let (mut p1, mut p2) = ([0.0f32; LANES], [0.0f32; LANES]);
        for (xc, gc) in x.iter().zip(dy) {
            for l in 0..LANES {
                let g = if RELU && xc[l] * a + b <= 0.0 {
                    0.0
                } else {
                    gc[l]
                };
                p1[l] += g;
                p2[l] += g * (xc[l] - mu) * is;
            }
        }
        (p1, p2)
    }
}

#[cfg(target_arch = "x86_64")]
mod sse {
    use super::LANES;
    use std::arch::x86_64::*;

    /// Two registers of four lanes each, loaded from one chunk.
    #[inline]
    #[target_feature(enable = "sse")]
    fn load(c: &[f32; LANES]) -> [__m128; 2] {
        // SAFETY: both loads read four floats inside the 8-float array (SSE is part of
        // x86-64, and unaligned loads accept any address).
        unsafe { [_mm_loadu_ps(c.as_ptr()), _mm_loadu_ps(c.as_ptr().add(4))] }
    }

    #[inline]
    #[target_feature(enable = "sse")]
    fn store(v: [__m128; 2]) -> [f32; LANES] {
        let mut out = [0.0f32; LANES];
        // SAFETY: both stores write four floats inside the 8-float array.
        unsafe {
            _mm_storeu_ps(out.as_mut_ptr(), v[0]);
            _mm_storeu_ps(out.as_mut_ptr().add(4), v[1]);
        }
        out
    }

    #[target_feature(enable = "sse")]
    pub(super) fn shifted(chunks: &[[f32; LANES]], k: f32) -> ([f32; LANES], [f32; LANES]) {
        let kv = _mm_set1_ps(k);
        let (mut s, mut q) = ([_mm_setzero_ps(); 2], [_mm_setzero_ps(); 2]);
        for c in chunks {
            let v = load(c);
            for h in 0..2 {
                let d = _mm_sub_ps(v[h], kv);
                s[h] = _mm_add_ps(s[h], d);
                q[h] = _mm_add_ps(q[h], _mm_mul_ps(d, d));
            }
        }
        (store(s), store(q))
    }

    #[target_feature(enable = "sse")]
    pub(super) fn masked_grad<const RELU: bool>(
        x: &[[f32; LANES]],
        dy: &[[f32; LANES]],
        [a, b, mu, is]: [f32; 4],
    ) -> ([f32; LANES], [f32; LANES]) {
        let (av, bv, muv, isv) = (
            _mm_set1_ps(a),
            _mm_set1_ps(b),
            _mm_set1_ps(mu),
            _mm_set1_ps(is),
        );
        let zero = _mm_setzero_ps();
        let (mut p1, mut p2) = ([zero; 2], [zero; 2]);
        for (xc, gc) in x.iter().zip(dy) {
            let (xv, gv) = (load(xc), load(gc));
            for h in 0..2 {
                let g = if RELU {
                    // `x·a + b ≤ 0` (false for NaN, as the scalar test) clears the lane.
                    let y = _mm_add_ps(_mm_mul_ps(xv[h], av), bv);
                    _mm_andnot_ps(_mm_cmple_ps(y, zero), gv[h])
                } else {
                    gv[h]
                };
                p1[h] = _mm_add_ps(p1[h], g);
                let t = _mm_mul_ps(_mm_mul_ps(g, _mm_sub_ps(xv[h], muv)), isv);
                p2[h] = _mm_add_ps(p2[h], t);
            }
        }
        (store(p1), store(p2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised reductions equal the plain loops bit for bit, ReLU masking included.
    #[test]
    fn vectorised_lanes_equal_the_plain_loops() {
        let chunks = |seed: u32, n: usize| -> Vec<[f32; LANES]> {
            (0..n)
                .map(|i| {
                    std::array::from_fn(|l| {
                        let v = ((i * LANES + l) as u32).wrapping_mul(2654435761) ^ seed;
                        (v % 2001) as f32 / 250.0 - 4.0
                    })
                })
                .collect()
        };
        let (x, dy) = (chunks(7, 37), chunks(11, 37));
        assert_eq!(shifted(&x, 0.3), portable::shifted(&x, 0.3));
        let p = [1.7, -0.4, 0.25, 1.3];
        assert_eq!(
            masked_grad::<true>(&x, &dy, p),
            portable::masked_grad::<true>(&x, &dy, p)
        );
        assert_eq!(
            masked_grad::<false>(&x, &dy, p),
            portable::masked_grad::<false>(&x, &dy, p)
        );
        // The mask clears some lanes and keeps others.
        let (kept, _) = masked_grad::<true>(&x, &dy, p);
        let (all, _) = masked_grad::<false>(&x, &dy, p);
        assert_ne!(kept, all);
    }
}
