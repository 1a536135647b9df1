//! Helpers shared by the integration tests: seeded random data, finite differences in f64
//! accumulation, and closeness assertions.
#![allow(dead_code)]

use kd_ops::dfdx::prelude::*;
use kd_ops::Shape4;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn uniform(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

pub fn numel(s: Shape4) -> usize {
    s.0 * s.1 * s.2 * s.3
}

pub fn t4(dev: &Cpu, v: Vec<f32>, s: Shape4) -> Tensor<Shape4, f32, Cpu> {
    dev.tensor_from_vec(v, s)
}

pub fn t2(dev: &Cpu, v: Vec<f32>, s: (usize, usize)) -> Tensor<(usize, usize), f32, Cpu> {
    dev.tensor_from_vec(v, s)
}

pub fn t1(dev: &Cpu, v: Vec<f32>) -> Tensor<(usize,), f32, Cpu> {
    let n = v.len();
    dev.tensor_from_vec(v, (n,))
}

/// `Σ out · probe` in f64.
pub fn dot(out: &[f32], probe: &[f32]) -> f64 {
    assert_eq!(out.len(), probe.len());
    out.iter()
        .zip(probe)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

/// Central difference of `f` at `x[i]` with step `h`.
pub fn central_diff(f: &dyn Fn(&[f32]) -> f64, x: &[f32], i: usize, h: f32) -> f64 {
    let mut xp = x.to_vec();
    xp[i] = x[i] + h;
    let fp = f(&xp);
    xp[i] = x[i] - h;
    let fm = f(&xp);
    (fp - fm) / (2.0 * (h as f64))
}

/// Checks `analytic` against central differences of `f` at `count` random coordinates (all of
/// them when there are fewer): `|a − fd| ≤ abs + rel·|fd|`.
#[allow(clippy::too_many_arguments)]
pub fn fd_check(
    what: &str,
    f: &dyn Fn(&[f32]) -> f64,
    x: &[f32],
    analytic: &[f32],
    count: usize,
    h: f32,
    rel: f64,
    abs: f64,
    rng: &mut ChaCha8Rng,
) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let coords: Vec<usize> = if x.len() <= count {
        (0..x.len()).collect()
    } else {
        (0..count).map(|_| rng.gen_range(0..x.len())).collect()
    };
    for i in coords {
        let fd = central_diff(f, x, i, h);
        let a = analytic[i] as f64;
        assert!(
            (a - fd).abs() <= abs + rel * fd.abs(),
            "{what}[{i}]: analytic {a:.6e}, finite difference {fd:.6e}"
        );
    }
}

/// Element-wise `|a − b| ≤ abs + rel·|b|`.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32, abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= abs + rel * w.abs(),
            "{what}[{i}]: got {g:.7e}, want {w:.7e}"
        );
    }
}
