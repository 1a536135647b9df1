//! Plain loops: the reference the vector kernels are tested against, and the path on CPUs
//! without AVX2.

use super::MR;

/// One block of [`super::conv_rows`] (at most 8 rows; added to `o` if `add`, else written).
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_block(
    qpad: usize,
    (xf, cs, cin): (&[f32], usize, usize),
    offs: &[usize],
    wp: &[f32],
    rows: usize,
    o: &mut [f32],
    ld: usize,
    add: bool,
) {
    let nt = offs.len();
    if !add {
        for r in 0..rows {
            o[r * ld..r * ld + qpad].fill(0.0);
        }
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

/// The 27 dot products of three rows of `∂ŷ` with the nine taps of one input channel `x`
/// ([`super::weight_grad`]'s kernel).
pub(super) fn dots27(x: &[f32], offs: &[usize; 9], dy: [&[f32]; 3]) -> [[f32; 9]; 3] {
    dy.map(|d| {
        offs.map(|off| {
            d.iter()
                .zip(&x[off..off + d.len()])
                .map(|(a, b)| a * b)
                .sum()
        })
    })
}
