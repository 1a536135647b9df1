//! Shared test helpers.
#![allow(dead_code)]

use dfdx::prelude::*;

/// A deterministic `[b, c, h, w]` input.
pub fn input(
    dev: &Cpu,
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    seed: u64,
) -> Tensor<(usize, usize, usize, usize), f32, Cpu> {
    let n = b * c * h * w;
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect();
    dev.tensor_from_vec(v, (b, c, h, w))
}

/// Rows of a `[b, n]` tensor.
pub fn rows(t: &Tensor<(usize, usize), f32, Cpu>) -> Vec<Vec<f32>> {
    let (_, n) = *t.shape();
    t.as_vec().chunks(n).map(|r| r.to_vec()).collect()
}
