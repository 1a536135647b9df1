//! BatchNorm2d: training output and running statistics against PyTorch's formulas (computed in
//! f64 here), the eval form, and finite-difference gradients of the fused BN+ReLU, on both paths.

mod common;

use common::*;
use kd_ops::dfdx::prelude::*;
use kd_ops::{generic, BatchNormCfg, Shape4};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Fast,
    Generic,
}
const PATHS: [Path; 2] = [Path::Fast, Path::Generic];

struct Bn {
    w: Tensor<(usize,), f32, Cpu>,
    b: Tensor<(usize,), f32, Cpu>,
    rm: Tensor<(usize,), f32, Cpu>,
    rv: Tensor<(usize,), f32, Cpu>,
}

fn train<Tp: Tape<f32, Cpu>>(
    p: Path,
    x: Tensor<Shape4, f32, Cpu, Tp>,
    bn: &mut Bn,
    cfg: BatchNormCfg,
) -> Tensor<Shape4, f32, Cpu, Tp> {
    match p {
        Path::Fast => kd_ops::batch_norm2d_train(x, &bn.w, &bn.b, &mut bn.rm, &mut bn.rv, cfg),
        Path::Generic => generic::batch_norm2d_train(x, &bn.w, &bn.b, &mut bn.rm, &mut bn.rv, cfg),
    }
}

fn eval<Tp: Tape<f32, Cpu>>(
    p: Path,
    x: Tensor<Shape4, f32, Cpu, Tp>,
    bn: &Bn,
    cfg: BatchNormCfg,
) -> Tensor<Shape4, f32, Cpu, Tp> {
    match p {
        Path::Fast => kd_ops::batch_norm2d_eval(x, &bn.w, &bn.b, &bn.rm, &bn.rv, cfg),
        Path::Generic => generic::batch_norm2d_eval(x, &bn.w, &bn.b, &bn.rm, &bn.rv, cfg),
    }
}

/// Per-channel f64 mean and biased variance.
fn stats(x: &[f32], s: Shape4) -> (Vec<f64>, Vec<f64>) {
    let (n, c, h, w) = s;
    let m = (n * h * w) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|b| {
                x[(b * c + ch) * h * w..(b * c + ch + 1) * h * w]
                    .iter()
                    .map(|&v| v as f64)
            })
            .collect();
        mean[ch] = vals.iter().sum::<f64>() / m;
        var[ch] = vals.iter().map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / m;
    }
    (mean, var)
}

fn make_bn(dev: &Cpu, c: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Bn {
    Bn {
        w: t1(dev, uniform(rng, c).iter().map(|v| 1.0 + 0.5 * v).collect()),
        b: t1(dev, uniform(rng, c)),
        rm: t1(dev, uniform(rng, c)),
        rv: t1(dev, uniform(rng, c).iter().map(|v| 1.0 + 0.5 * v).collect()),
    }
}

#[test]
fn training_step_matches_pytorch_formulas() {
    let dev = Cpu::default();
    let mut rng = rng(21);
    let s = (4, 3, 5, 6);
    // An offset mean checks the variance is not computed naively.
    let x: Vec<f32> = uniform(&mut rng, numel(s))
        .iter()
        .map(|v| 3.0 + 2.0 * v)
        .collect();
    let (mean, var) = stats(&x, s);
    let m = (s.0 * s.2 * s.3) as f64;
    for path in PATHS {
        for relu in [false, true] {
            let mut bn = make_bn(&dev, s.1, &mut rng);
            let (rm0, rv0, w, b) = (bn.rm.as_vec(), bn.rv.as_vec(), bn.w.as_vec(), bn.b.as_vec());
            let out = train(
                path,
                t4(&dev, x.clone(), s),
                &mut bn,
                BatchNormCfg::with_relu(relu),
            )
            .as_vec();
            let want_rm: Vec<f32> = (0..s.1)
                .map(|c| (0.9 * rm0[c] as f64 + 0.1 * mean[c]) as f32)
                .collect();
            let want_rv: Vec<f32> = (0..s.1)
                .map(|c| (0.9 * rv0[c] as f64 + 0.1 * var[c] * m / (m - 1.0)) as f32)
                .collect();
            assert_close(
                &format!("{path:?} running_mean"),
                &bn.rm.as_vec(),
                &want_rm,
                1e-5,
                1e-6,
            );
            assert_close(
                &format!("{path:?} running_var"),
                &bn.rv.as_vec(),
                &want_rv,
                1e-5,
                1e-6,
            );
            let want: Vec<f32> = (0..numel(s))
                .map(|i| {
                    let c = (i / (s.2 * s.3)) % s.1;
                    let y = (x[i] as f64 - mean[c]) / (var[c] + 1e-5).sqrt() * w[c] as f64
                        + b[c] as f64;
                    (if relu { y.max(0.0) } else { y }) as f32
                })
                .collect();
            assert_close(
                &format!("{path:?} relu={relu} output"),
                &out,
                &want,
                1e-4,
                1e-5,
            );
        }
    }
}

#[test]
fn eval_uses_running_statistics() {
    let dev = Cpu::default();
    let mut rng = rng(22);
    let s = (2, 4, 3, 3);
    let x = uniform(&mut rng, numel(s));
    for path in PATHS {
        for relu in [false, true] {
            let bn = make_bn(&dev, s.1, &mut rng);
            let (rm, rv, w, b) = (bn.rm.as_vec(), bn.rv.as_vec(), bn.w.as_vec(), bn.b.as_vec());
            let out = eval(
                path,
                t4(&dev, x.clone(), s),
                &bn,
                BatchNormCfg::with_relu(relu),
            )
            .as_vec();
            let want: Vec<f32> = (0..numel(s))
                .map(|i| {
                    let c = (i / 9) % s.1;
                    let y = (x[i] - rm[c]) / (rv[c] + 1e-5).sqrt() * w[c] + b[c];
                    if relu {
                        y.max(0.0)
                    } else {
                        y
                    }
                })
                .collect();
            assert_close(&format!("{path:?} eval"), &out, &want, 1e-5, 1e-6);
            assert_eq!(bn.rm.as_vec(), rm, "eval must not touch running stats");
        }
    }
}

#[test]
fn fused_bn_relu_gradients_match_finite_differences() {
    let dev = Cpu::default();
    let mut rng = rng(23);
    for (case, s) in [(2usize, 3usize, 4usize, 4usize), (3, 2, 3, 5), (1, 4, 6, 2)]
        .into_iter()
        .enumerate()
    {
        let x = uniform(&mut rng, numel(s));
        let probe = uniform(&mut rng, numel(s));
        for path in PATHS {
            for (train_mode, relu) in [(true, true), (true, false), (false, true)] {
                let what = format!("case {case} {path:?} train={train_mode} relu={relu}");
                let cfg = BatchNormCfg::with_relu(relu);
                let mut bn = make_bn(&dev, s.1, &mut rng);
                let (rm, rv) = (bn.rm.clone(), bn.rv.clone());
                let xt = t4(&dev, x.clone(), s);
                let out = if train_mode {
                    train(path, xt.leaky_trace(), &mut bn, cfg)
                } else {
                    eval(path, xt.leaky_trace(), &bn, cfg)
                };
                let g = (out * t4(&dev, probe.clone(), s)).sum::<(), _>().backward();
                let (w, b) = (bn.w.clone(), bn.b.clone());
                let run = |xv: &[f32], wv: &[f32], bv: &[f32]| -> f64 {
                    let mut m = Bn {
                        w: t1(&dev, wv.to_vec()),
                        b: t1(&dev, bv.to_vec()),
                        rm: rm.clone(),
                        rv: rv.clone(),
                    };
                    let xt = t4(&dev, xv.to_vec(), s);
                    let o = if train_mode {
                        train(path, xt, &mut m, cfg)
                    } else {
                        eval(path, xt, &m, cfg)
                    };
                    dot(&o.as_vec(), &probe)
                };
                let (wv, bv) = (w.as_vec(), b.as_vec());
                fd_check(
                    &format!("{what} dx"),
                    &|xv| run(xv, &wv, &bv),
                    &x,
                    &g.get(&xt).as_vec(),
                    30,
                    1e-3,
                    1e-2,
                    2e-3,
                    &mut rng,
                );
                fd_check(
                    &format!("{what} dgamma"),
                    &|v| run(&x, v, &bv),
                    &wv,
                    &g.get(&w).as_vec(),
                    8,
                    1e-3,
                    1e-2,
                    2e-3,
                    &mut rng,
                );
                fd_check(
                    &format!("{what} dbeta"),
                    &|v| run(&x, &wv, v),
                    &bv,
                    &g.get(&b).as_vec(),
                    8,
                    1e-3,
                    1e-2,
                    2e-3,
                    &mut rng,
                );
            }
        }
    }
}

#[test]
#[should_panic(expected = "`running_var` has 2 values")]
fn mismatched_channels_panic_with_the_values() {
    let dev = Cpu::default();
    let mut bn = Bn {
        w: t1(&dev, vec![1.0; 3]),
        b: t1(&dev, vec![0.0; 3]),
        rm: t1(&dev, vec![0.0; 3]),
        rv: t1(&dev, vec![1.0; 2]),
    };
    let _ = train(
        Path::Fast,
        t4(&dev, vec![0.5; 2 * 3 * 4], (2, 3, 2, 2)),
        &mut bn,
        BatchNormCfg::default(),
    );
}

/// `conv_bn2d_train` (one op on the CPU) gives the values, gradients (input, convolution
/// weights, BN scale and shift) and running statistics of the convolution followed by
/// `batch_norm2d_train`, exactly (equal as floats): on the direct kernels (one plane, shifted planes, stride
/// 2, three input channels) and on im2col (1×1, stride 2), with and without the fused ReLU.
#[test]
fn fused_conv_bn_matches_the_two_ops_exactly() {
    let dev = Cpu::default();
    let mut rng = rng(24);
    for &(n, c, hw, co, k, stride, relu) in &[
        (3, 64, 8, 64, 3, 1, true),
        (2, 16, 12, 24, 3, 2, false),
        (2, 3, 16, 16, 3, 1, true),
        (2, 8, 9, 12, 1, 2, true),
        (2, 5, 10, 7, 3, 1, false),
    ] {
        let pad = k / 2;
        let conv = kd_ops::Conv2d {
            weight: t4(&dev, uniform(&mut rng, co * c * k * k), (co, c, k, k)),
            cfg: kd_ops::Conv2dCfg::new(stride, pad),
        };
        let mut fused = kd_ops::BatchNorm2d::new(&dev, co);
        if relu {
            fused = fused.with_relu();
        }
        let p = make_bn(&dev, co, &mut rng);
        (
            fused.weight,
            fused.bias,
            fused.running_mean,
            fused.running_var,
        ) = (p.w, p.b, p.rm, p.rv);
        let mut apart = kd_ops::BatchNorm2d {
            weight: fused.weight.clone(),
            bias: fused.bias.clone(),
            running_mean: fused.running_mean.clone(),
            running_var: fused.running_var.clone(),
            cfg: fused.cfg,
        };
        let x = t4(&dev, uniform(&mut rng, n * c * hw * hw), (n, c, hw, hw));
        let oh = (hw + 2 * pad - k) / stride + 1;
        let probe = t4(&dev, uniform(&mut rng, n * co * oh * oh), (n, co, oh, oh));
        let what = format!("{n}x{c}x{hw} -> {co}, {k}x{k} stride {stride}, relu {relu}");
        let run = |bn: &mut kd_ops::BatchNorm2d<Cpu>, one_op: bool| {
            let y = if one_op {
                kd_ops::conv_bn2d_train(x.leaky_trace(), &conv, bn)
            } else {
                let z = kd_ops::conv2d(x.leaky_trace(), &conv.weight, None, conv.cfg);
                let (rm, rv) = (&mut bn.running_mean, &mut bn.running_var);
                kd_ops::batch_norm2d_train(z, &bn.weight, &bn.bias, rm, rv, bn.cfg)
            };
            let yv = y.as_vec();
            let g = (y * probe.clone()).sum().backward();
            let grads = [
                g.get(&x).as_vec(),
                g.get(&conv.weight).as_vec(),
                g.get(&bn.weight).as_vec(),
                g.get(&bn.bias).as_vec(),
            ];
            (yv, grads, bn.running_mean.as_vec(), bn.running_var.as_vec())
        };
        let (want, got) = (run(&mut apart, false), run(&mut fused, true));
        assert_eq!(got.0, want.0, "output, {what}");
        for (i, name) in ["x", "conv weight", "bn weight", "bn bias"]
            .iter()
            .enumerate()
        {
            assert_eq!(got.1[i], want.1[i], "∂/∂{name}, {what}");
        }
        assert_eq!(
            (got.2, got.3),
            (want.2, want.3),
            "running statistics, {what}"
        );
    }
}
