//! Plain loops: the reference the vector kernels are tested against, and the path on CPUs
//! without AVX2.

use super::{Frame, MR};

/// [`super::conv_block`].
pub(super) fn conv_block(
    qpad: usize,
    (xf, cs, cin): (&[f32], usize, usize),
    offs: &[usize],
    wp: &[f32],
    rows: usize,
    o: &mut [f32],
    ld: usize,
) {
    let nt = offs.len();
    for r in 0..rows {
        o[r * ld..r * ld + qpad].fill(0.0);
    }
    for c in 0..cin {
        for (k, &off) in offs.iter().enumerate() {
            let xs = &xf[c * cs + off..][..qpad];
            for r in 0..rows {
                let wv = wp[(c * nt + k) * MR + r];
                for (ov, xv) in o[r * ld..r * ld + qpad].iter_mut().zip(xs) {
                    *ov += wv * xv;
                }
            }
        }
    }
}

/// [`super::weight_grad`].
pub(super) fn weight_grad(
    fr: &Frame,
    (xf, cs, cin): (&[f32], usize, usize),
    offs: &[usize; 9],
    dyf: &[f32],
    co: usize,
    dw: &mut [f32],
) {
    for o in 0..co {
        let dy = &dyf[o * fr.len + fr.s + 1..][..fr.qpad];
        for c in 0..cin {
            for (t, &off) in offs.iter().enumerate() {
                let xs = &xf[c * cs + off..][..fr.qpad];
                let sum: f32 = dy.iter().zip(xs).map(|(a, b)| a * b).sum();
                dw[(o * cin + c) * 9 + t] += sum;
            }
        }
    }
}
