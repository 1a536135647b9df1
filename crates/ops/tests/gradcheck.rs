//! Finite-difference gradient checks (central differences, loss `Σ out·probe` accumulated in
//! f64) on random shapes, strides, paddings, dilations and groups, for the CPU kernels and the
//! generic path; plus a direct f64 reference of the convolution's forward pass and agreement of
//! the two paths on whole gradients.

mod common;

use common::*;
use kd_ops::dfdx::prelude::*;
use kd_ops::{generic, Conv2dCfg, Pool2dCfg, Shape4};
use rand::Rng;

type T4<Tp> = Tensor<Shape4, f32, Cpu, Tp>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Fast,
    Generic,
}
const PATHS: [Path; 2] = [Path::Fast, Path::Generic];

fn conv<Tp: Tape<f32, Cpu>>(
    p: Path,
    x: T4<Tp>,
    w: &T4<NoneTape>,
    b: Option<&Tensor<(usize,), f32, Cpu>>,
    cfg: Conv2dCfg,
) -> T4<Tp> {
    match p {
        Path::Fast => kd_ops::conv2d(x, w, b, cfg),
        Path::Generic => generic::conv2d(x, w, b, cfg),
    }
}

/// Direct f64 convolution.
fn conv_ref(
    x: &[f32],
    xs: Shape4,
    w: &[f32],
    ws: Shape4,
    b: &[f32],
    cfg: Conv2dCfg,
) -> (Vec<f64>, Shape4) {
    let (n, c, h, wd) = xs;
    let (o, cig, kh, kw) = ws;
    let (s, p, d, g) = (
        cfg.stride as isize,
        cfg.padding as isize,
        cfg.dilation as isize,
        cfg.groups,
    );
    let oh = ((h as isize + 2 * p - d * (kh as isize - 1) - 1) / s + 1) as usize;
    let ow = ((wd as isize + 2 * p - d * (kw as isize - 1) - 1) / s + 1) as usize;
    let cog = o / g;
    let mut out = vec![0.0f64; n * o * oh * ow];
    for bi in 0..n {
        for oc in 0..o {
            let gi = oc / cog;
            for y in 0..oh {
                for xx in 0..ow {
                    let mut acc = b.get(oc).copied().unwrap_or(0.0) as f64;
                    for ci in 0..cig {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = y as isize * s - p + i as isize * d;
                                let ix = xx as isize * s - p + j as isize * d;
                                if iy >= 0 && iy < h as isize && ix >= 0 && ix < wd as isize {
                                    let xv = x[((bi * c + gi * cig + ci) * h + iy as usize) * wd
                                        + ix as usize]
                                        as f64;
                                    acc += xv * w[((oc * cig + ci) * kh + i) * kw + j] as f64;
                                }
                            }
                        }
                    }
                    out[((bi * o + oc) * oh + y) * ow + xx] = acc;
                }
            }
        }
    }
    (out, (n, o, oh, ow))
}

fn random_conv_config(rng: &mut rand_chacha::ChaCha8Rng) -> (Shape4, Shape4, Conv2dCfg, bool) {
    let g = [1, 1, 2, 3][rng.gen_range(0..4)];
    let depthwise = rng.gen_bool(0.25);
    let cig = if depthwise { 1 } else { rng.gen_range(1..4) };
    let cog = if depthwise { 1 } else { rng.gen_range(1..4) };
    let k = rng.gen_range(1..4);
    let (kh, kw) = (
        k,
        if rng.gen_bool(0.8) {
            k
        } else {
            rng.gen_range(1..4)
        },
    );
    let s = rng.gen_range(1..4);
    let d = rng.gen_range(1..3);
    let p = rng.gen_range(0..3);
    let h = rng.gen_range(d * (kh.max(kw) - 1) + 1..9);
    let w = rng.gen_range(d * (kh.max(kw) - 1) + 1..9);
    let n = rng.gen_range(1..4);
    let cfg = Conv2dCfg {
        stride: s,
        padding: p,
        dilation: d,
        groups: g,
    };
    (
        (n, g * cig, h, w),
        (g * cog, cig, kh, kw),
        cfg,
        rng.gen_bool(0.5),
    )
}

#[test]
fn conv2d_matches_f64_reference_and_finite_differences() {
    let dev = Cpu::default();
    let mut rng = rng(7);
    for case in 0..14 {
        let (xs, ws, cfg, with_bias) = random_conv_config(&mut rng);
        let x = uniform(&mut rng, numel(xs));
        let w = uniform(&mut rng, numel(ws));
        let b = if with_bias {
            uniform(&mut rng, ws.0)
        } else {
            vec![]
        };
        let (want, os) = conv_ref(&x, xs, &w, ws, &b, cfg);
        let probe = uniform(&mut rng, numel(os));
        for path in PATHS {
            let what = format!("case {case} {path:?} x{xs:?} w{ws:?} {cfg:?} bias={with_bias}");
            let xt = t4(&dev, x.clone(), xs);
            let wt = t4(&dev, w.clone(), ws);
            let bt = with_bias.then(|| t1(&dev, b.clone()));
            let out = conv(path, xt.leaky_trace(), &wt, bt.as_ref(), cfg);
            assert_eq!(*out.shape(), os, "{what}: output shape");
            let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            assert_close(
                &format!("{what} output"),
                &out.as_vec(),
                &want32,
                1e-5,
                1e-5,
            );
            let grads = (out * t4(&dev, probe.clone(), os))
                .sum::<(), _>()
                .backward();

            let loss_x = |xv: &[f32]| {
                dot(
                    &conv(path, t4(&dev, xv.to_vec(), xs), &wt, bt.as_ref(), cfg).as_vec(),
                    &probe,
                )
            };
            fd_check(
                &format!("{what} dx"),
                &loss_x,
                &x,
                &grads.get(&xt).as_vec(),
                12,
                1e-2,
                2e-3,
                2e-3,
                &mut rng,
            );
            let loss_w = |wv: &[f32]| {
                dot(
                    &conv(
                        path,
                        t4(&dev, x.clone(), xs),
                        &t4(&dev, wv.to_vec(), ws),
                        bt.as_ref(),
                        cfg,
                    )
                    .as_vec(),
                    &probe,
                )
            };
            fd_check(
                &format!("{what} dw"),
                &loss_w,
                &w,
                &grads.get(&wt).as_vec(),
                12,
                1e-2,
                2e-3,
                2e-3,
                &mut rng,
            );
            if let Some(bt) = &bt {
                let loss_b = |bv: &[f32]| {
                    dot(
                        &conv(
                            path,
                            t4(&dev, x.clone(), xs),
                            &wt,
                            Some(&t1(&dev, bv.to_vec())),
                            cfg,
                        )
                        .as_vec(),
                        &probe,
                    )
                };
                fd_check(
                    &format!("{what} db"),
                    &loss_b,
                    &b,
                    &grads.get(bt).as_vec(),
                    12,
                    1e-2,
                    2e-3,
                    2e-3,
                    &mut rng,
                );
            }
        }
    }
}

#[test]
fn conv2d_paths_agree_on_whole_gradients() {
    let dev = Cpu::default();
    let mut rng = rng(11);
    for _ in 0..10 {
        let (xs, ws, cfg, with_bias) = random_conv_config(&mut rng);
        let x = t4(&dev, uniform(&mut rng, numel(xs)), xs);
        let w = t4(&dev, uniform(&mut rng, numel(ws)), ws);
        let b = with_bias.then(|| t1(&dev, uniform(&mut rng, ws.0)));
        let mut res = Vec::new();
        for path in PATHS {
            let out = conv(path, x.leaky_trace(), &w, b.as_ref(), cfg);
            let probe = t4(
                &dev,
                (0..numel(*out.shape()))
                    .map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.5)
                    .collect(),
                *out.shape(),
            );
            let ov = out.as_vec();
            let g = (out * probe).sum::<(), _>().backward();
            res.push((
                ov,
                g.get(&x).as_vec(),
                g.get(&w).as_vec(),
                b.as_ref().map(|b| g.get(b).as_vec()),
            ));
        }
        assert_close("output", &res[0].0, &res[1].0, 1e-5, 1e-5);
        assert_close("dx", &res[0].1, &res[1].1, 1e-5, 1e-5);
        assert_close("dw", &res[0].2, &res[1].2, 1e-5, 1e-5);
        if let (Some(a), Some(b)) = (&res[0].3, &res[1].3) {
            assert_close("db", a, b, 1e-5, 1e-5);
        }
    }
}

/// "Same" stride-1 convolutions (the flat-shift im2col and col2im): 3×3, 5×5, dilation 2,
/// groups and depthwise, with and without bias, on images from 6 to 40 pixels wide (one or
/// several samples per `gemm`). Outputs and whole gradients agree with the generic path.
#[test]
fn same_convolutions_agree_with_generic() {
    let dev = Cpu::default();
    let mut rng = rng(23);
    for &(n, c, hw, o, k, p, d, g, with_bias) in &[
        (5, 3, 40, 4, 3, 1, 1, 1, false),
        (3, 4, 7, 6, 5, 2, 1, 2, true),
        (2, 2, 9, 3, 3, 2, 2, 1, true),
        (4, 6, 6, 6, 3, 1, 1, 6, false),
    ] {
        let (xs, ws) = ((n, c, hw, hw + 1), (o, c / g, k, k));
        let cfg = Conv2dCfg::new(1, p).dilation(d).groups(g);
        let x = t4(&dev, uniform(&mut rng, numel(xs)), xs);
        let w = t4(&dev, uniform(&mut rng, numel(ws)), ws);
        let b = with_bias.then(|| t1(&dev, uniform(&mut rng, o)));
        let probe = uniform(&mut rng, n * o * hw * (hw + 1));
        let mut res = Vec::new();
        for path in PATHS {
            let out = conv(path, x.leaky_trace(), &w, b.as_ref(), cfg);
            assert_eq!(*out.shape(), (n, o, hw, hw + 1), "same size");
            let ov = out.as_vec();
            let pt = t4(&dev, probe.clone(), *out.shape());
            let gr = (out * pt).sum::<(), _>().backward();
            res.push((ov, gr.get(&x).as_vec(), gr.get(&w).as_vec()));
        }
        let what = format!("{xs:?} k{k} p{p} d{d} g{g}");
        assert_close(&format!("output {what}"), &res[0].0, &res[1].0, 1e-5, 1e-5);
        assert_close(&format!("dx {what}"), &res[0].1, &res[1].1, 1e-4, 1e-5);
        assert_close(&format!("dw {what}"), &res[0].2, &res[1].2, 1e-4, 1e-4);
    }
}

/// Gradient of `x` accumulates across uses: `conv(x) + conv(x)` doubles it.
#[test]
fn conv2d_gradient_accumulates_over_two_uses() {
    let dev = Cpu::default();
    let mut rng = rng(3);
    let xs = (2, 4, 6, 6);
    let x = t4(&dev, uniform(&mut rng, numel(xs)), xs);
    let w = t4(&dev, uniform(&mut rng, 4 * 4 * 9), (4, 4, 3, 3));
    let cfg = Conv2dCfg::new(1, 1);
    let once = kd_ops::conv2d(x.leaky_trace(), &w, None, cfg)
        .sum::<(), _>()
        .backward();
    let y1 = kd_ops::conv2d(x.leaky_trace(), &w, None, cfg);
    let y2 = kd_ops::conv2d(x.retaped::<OwnedTape<f32, Cpu>>(), &w, None, cfg);
    let twice = (y1 + y2).sum::<(), _>().backward();
    let doubled: Vec<f32> = once.get(&x).as_vec().iter().map(|v| 2.0 * v).collect();
    assert_close("dx", &twice.get(&x).as_vec(), &doubled, 1e-5, 1e-5);
    let doubled_w: Vec<f32> = once.get(&w).as_vec().iter().map(|v| 2.0 * v).collect();
    assert_close("dw", &twice.get(&w).as_vec(), &doubled_w, 1e-5, 1e-5);
}

enum PoolOp {
    Max(Pool2dCfg),
    Avg(Pool2dCfg),
    Adaptive((usize, usize)),
    Up,
}

fn pool<Tp: Tape<f32, Cpu>>(p: Path, op: &PoolOp, x: T4<Tp>) -> T4<Tp> {
    match (op, p) {
        (PoolOp::Max(c), Path::Fast) => kd_ops::max_pool2d(x, *c),
        (PoolOp::Max(c), Path::Generic) => generic::max_pool2d(x, *c),
        (PoolOp::Avg(c), Path::Fast) => kd_ops::avg_pool2d(x, *c),
        (PoolOp::Avg(c), Path::Generic) => generic::avg_pool2d(x, *c),
        (PoolOp::Adaptive(o), Path::Fast) => kd_ops::adaptive_avg_pool2d(x, *o),
        (PoolOp::Adaptive(o), Path::Generic) => generic::adaptive_avg_pool2d(x, *o),
        (PoolOp::Up, Path::Fast) => kd_ops::upsample_bilinear2x(x),
        (PoolOp::Up, Path::Generic) => generic::upsample_bilinear2x(x),
    }
}

#[test]
fn pooling_and_upsampling_finite_differences() {
    let dev = Cpu::default();
    let mut rng = rng(5);
    for case in 0..16 {
        let xs = (
            rng.gen_range(1..3),
            rng.gen_range(1..4),
            rng.gen_range(3..10),
            rng.gen_range(3..10),
        );
        let k = rng.gen_range(1..4);
        let cfg = Pool2dCfg::new(k, rng.gen_range(1..4), rng.gen_range(0..=k / 2));
        let op = match case % 4 {
            0 => PoolOp::Max(cfg),
            1 => PoolOp::Avg(cfg),
            2 => PoolOp::Adaptive((rng.gen_range(1..6), rng.gen_range(1..6))),
            _ => PoolOp::Up,
        };
        // Distinct values keep max pooling away from ties.
        let mut x: Vec<f32> = (0..numel(xs))
            .map(|i| i as f32 * 0.37 % 1.0 - 0.5 + 1e-3 * i as f32)
            .collect();
        for i in (1..x.len()).rev() {
            x.swap(i, rng.gen_range(0..=i));
        }
        for path in PATHS {
            let xt = t4(&dev, x.clone(), xs);
            let out = pool(path, &op, xt.leaky_trace());
            let os = *out.shape();
            let probe = uniform(&mut rng, numel(os));
            let g = (out * t4(&dev, probe.clone(), os))
                .sum::<(), _>()
                .backward();
            let f = |xv: &[f32]| dot(&pool(path, &op, t4(&dev, xv.to_vec(), xs)).as_vec(), &probe);
            fd_check(
                &format!("case {case} {path:?} {xs:?}"),
                &f,
                &x,
                &g.get(&xt).as_vec(),
                40,
                2e-4,
                5e-3,
                2e-3,
                &mut rng,
            );
        }
    }
}

#[test]
fn concat_and_split_round_trip_with_gradients() {
    let dev = Cpu::default();
    let mut rng = rng(9);
    let a = t4(&dev, uniform(&mut rng, 2 * 3 * 4 * 5), (2, 3, 4, 5));
    let b = t4(&dev, uniform(&mut rng, 2 * 2 * 4 * 5), (2, 2, 4, 5));
    for path in PATHS {
        let cat = match path {
            Path::Fast => kd_ops::concat_channels(vec![a.leaky_trace(), b.retaped()]),
            Path::Generic => generic::concat_channels(vec![a.leaky_trace(), b.retaped()]),
        };
        assert_eq!(*cat.shape(), (2, 5, 4, 5));
        let v = cat.as_vec();
        let (av, bv) = (a.as_vec(), b.as_vec());
        assert_eq!(&v[..60], &av[..60]);
        assert_eq!(&v[60..100], &bv[..40]);
        let parts = match path {
            Path::Fast => kd_ops::split_channels(cat, &[1, 4]),
            Path::Generic => generic::split_channels(cat, &[1, 4]),
        };
        assert_eq!(*parts[0].shape(), (2, 1, 4, 5));
        assert_eq!(*parts[1].shape(), (2, 4, 4, 5));
        // loss = Σ 2·part0 + Σ 3·part1 → da = 2 on channel 0 and 3 elsewhere, db = 3.
        let mut it = parts.into_iter();
        let (p0, p1) = (it.next().unwrap(), it.next().unwrap());
        let loss = (p0 * 2.0).sum::<(), _>() + (p1 * 3.0).sum::<(), _>();
        let g = loss.backward();
        let da = g.get(&a).as_vec();
        for (i, v) in da.iter().enumerate() {
            let c = (i / 20) % 3;
            assert_eq!(*v, if c == 0 { 2.0 } else { 3.0 }, "{path:?} da[{i}]");
        }
        assert!(g.get(&b).as_vec().iter().all(|&v| v == 3.0), "{path:?} db");
    }
}

/// `add_relu(x, x)`: both operands are one tensor, whose gradient gets the masked gradient
/// twice (the fast backward pass moves one operand's buffer out while it writes both). dfdx's
/// own binary ops refuse one tensor twice, so this checks the fast path against the formula.
#[test]
fn add_relu_of_one_tensor_twice() {
    let dev = Cpu::default();
    let mut rng = rng(14);
    let s = (2, 3, 4, 4);
    let a = uniform(&mut rng, numel(s));
    let probe = uniform(&mut rng, numel(s));
    let at = t4(&dev, a.clone(), s);
    let out = kd_ops::add_relu(at.leaky_trace(), at.leaky_trace());
    let g = (out * t4(&dev, probe.clone(), s)).sum::<(), _>().backward();
    let want: Vec<f32> = a
        .iter()
        .zip(&probe)
        .map(|(&x, &p)| if x + x > 0.0 { 2.0 * p } else { 0.0 })
        .collect();
    assert_close("da", &g.get(&at).as_vec(), &want, 1e-6, 1e-6);
}

#[test]
fn add_relu_gradients() {
    let dev = Cpu::default();
    let mut rng = rng(13);
    let s = (2, 3, 4, 4);
    let a = uniform(&mut rng, numel(s));
    let b = uniform(&mut rng, numel(s));
    let probe = uniform(&mut rng, numel(s));
    for path in PATHS {
        let f = |av: &[f32], bv: &[f32]| -> Vec<f32> {
            let (x, y) = (t4(&dev, av.to_vec(), s), t4(&dev, bv.to_vec(), s));
            match path {
                Path::Fast => kd_ops::add_relu(x, y).as_vec(),
                Path::Generic => generic::add_relu(x, y).as_vec(),
            }
        };
        let (at, bt) = (t4(&dev, a.clone(), s), t4(&dev, b.clone(), s));
        let out = match path {
            Path::Fast => kd_ops::add_relu(at.leaky_trace(), bt.retaped()),
            Path::Generic => generic::add_relu(at.leaky_trace(), bt.retaped()),
        };
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x + y).max(0.0)).collect();
        assert_eq!(out.as_vec(), want);
        let g = (out * t4(&dev, probe.clone(), s)).sum::<(), _>().backward();
        fd_check(
            "da",
            &|av| dot(&f(av, &b), &probe),
            &a,
            &g.get(&at).as_vec(),
            30,
            1e-3,
            1e-2,
            1e-3,
            &mut rng,
        );
        fd_check(
            "db",
            &|bv| dot(&f(&a, bv), &probe),
            &b,
            &g.get(&bt).as_vec(),
            30,
            1e-3,
            1e-2,
            1e-3,
            &mut rng,
        );
    }
}

/// A residual block, `relu(x + conv(bn_relu(conv(x))))`, traced: on the fast path every op
/// after the first reads its input from the buffer the previous op published (in place, not
/// copied), forward and backward. Outputs and every gradient agree with the generic path,
/// which shares nothing.
#[test]
fn residual_block_reading_published_buffers_matches_generic() {
    let dev = Cpu::default();
    let mut rng = rng(17);
    let xs = (3, 4, 5, 6);
    let x = t4(&dev, uniform(&mut rng, numel(xs)), xs);
    let w1 = t4(&dev, uniform(&mut rng, 4 * 4 * 9), (4, 4, 3, 3));
    let w2 = t4(&dev, uniform(&mut rng, 4 * 4 * 9), (4, 4, 3, 3));
    let (gamma, beta) = (
        t1(&dev, uniform(&mut rng, 4)),
        t1(&dev, uniform(&mut rng, 4)),
    );
    let cfg = Conv2dCfg::new(1, 1);
    let probe = t4(&dev, uniform(&mut rng, numel(xs)), xs);
    let mut res = Vec::new();
    for path in PATHS {
        let (mut rm, mut rv) = (dev.zeros_like(&(4,)), dev.ones_like(&(4,)));
        let bn = kd_ops::BatchNormCfg::with_relu(true);
        let h = conv(path, x.leaky_trace(), &w1, None, cfg);
        let h = match path {
            Path::Fast => kd_ops::batch_norm2d_train(h, &gamma, &beta, &mut rm, &mut rv, bn),
            Path::Generic => generic::batch_norm2d_train(h, &gamma, &beta, &mut rm, &mut rv, bn),
        };
        let h = conv(path, h, &w2, None, cfg);
        let out = match path {
            Path::Fast => kd_ops::add_relu(h, x.retaped()),
            Path::Generic => generic::add_relu(h, x.retaped()),
        };
        let ov = out.as_vec();
        let g = (out * probe.clone()).sum::<(), _>().backward();
        let grads = [&w1, &w2].map(|w| g.get(w).as_vec());
        res.push((
            ov,
            g.get(&x).as_vec(),
            grads,
            g.get(&gamma).as_vec(),
            rm.as_vec(),
        ));
    }
    assert_close("output", &res[0].0, &res[1].0, 1e-5, 1e-5);
    assert_close("dx", &res[0].1, &res[1].1, 1e-4, 1e-5);
    assert_close("dw1", &res[0].2[0], &res[1].2[0], 1e-4, 1e-5);
    assert_close("dw2", &res[0].2[1], &res[1].2[1], 1e-4, 1e-5);
    assert_close("dgamma", &res[0].3, &res[1].3, 1e-4, 1e-5);
    assert_close("running_mean", &res[0].4, &res[1].4, 1e-5, 1e-6);
}

/// The mean of squares over channels (the attention map) against dfdx's composition: values
/// and input gradients, on a published input (the output of a traced op) and on a plain one.
#[test]
fn channel_sq_mean_matches_generic() {
    let dev = Cpu::default();
    let mut rng = rng(29);
    for &s in &[(3, 5, 4, 6), (2, 1, 1, 3), (4, 16, 8, 8)] {
        let x = t4(&dev, uniform(&mut rng, numel(s)), s);
        let probe = t2(&dev, uniform(&mut rng, s.0 * s.2 * s.3), (s.0, s.2 * s.3));
        let mut res = Vec::new();
        for (path, published) in [
            (Path::Fast, false),
            (Path::Fast, true),
            (Path::Generic, false),
        ] {
            let xin = if published {
                // add_relu(x, 0) = relu(x): its output is published for in-place reads.
                kd_ops::add_relu(x.leaky_trace(), dev.zeros_like(&s).retaped())
            } else {
                x.leaky_trace()
            };
            let att = match path {
                Path::Fast => kd_ops::channel_sq_mean(xin),
                Path::Generic => generic::channel_sq_mean(xin),
            };
            assert_eq!(*att.shape(), (s.0, s.2 * s.3));
            let av = att.as_vec();
            let g = (att * probe.clone()).sum::<(), _>().backward();
            res.push((av, g.get(&x).as_vec()));
        }
        let relu: Vec<f32> = x.as_vec().iter().map(|v| v.max(0.0)).collect();
        let relu_att = generic::channel_sq_mean(t4(&dev, relu, s)).as_vec();
        assert_close("att", &res[0].0, &res[2].0, 1e-6, 1e-6);
        assert_close("dx", &res[0].1, &res[2].1, 1e-6, 1e-6);
        assert_close("att of relu(x)", &res[1].0, &relu_att, 1e-6, 1e-6);
    }
}

#[test]
#[should_panic(expected = "not divisible by groups")]
fn conv2d_rejects_channels_not_divisible_by_groups() {
    let dev = Cpu::default();
    let x = t4(&dev, vec![0.0; 5 * 9], (1, 5, 3, 3));
    let w = t4(&dev, vec![0.0; 4 * 2], (4, 2, 1, 1));
    let _ = kd_ops::conv2d(x, &w, None, Conv2dCfg::default().groups(2));
}

/// On one thread a whole batch of small images goes through each `gemm` side by side (several
/// samples per matrix, a short last block); it must agree with the generic path.
#[test]
fn conv2d_batched_gemm_blocks_agree_with_generic() {
    let pool = kd_ops::rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let dev = Cpu::default();
        let mut rng = rng(17);
        for (xs, ws, cfg) in [
            ((7, 4, 5, 5), (6, 2, 3, 3), Conv2dCfg::new(1, 1).groups(2)),
            ((5, 3, 4, 4), (4, 3, 1, 1), Conv2dCfg::default()),
            ((9, 2, 6, 6), (3, 2, 3, 3), Conv2dCfg::new(2, 1)),
        ] {
            let x = t4(&dev, uniform(&mut rng, numel(xs)), xs);
            let w = t4(&dev, uniform(&mut rng, numel(ws)), ws);
            let b = t1(&dev, uniform(&mut rng, ws.0));
            let mut res = Vec::new();
            for path in PATHS {
                let out = conv(path, x.leaky_trace(), &w, Some(&b), cfg);
                let n = numel(*out.shape());
                let probe = t4(
                    &dev,
                    (0..n)
                        .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5)
                        .collect(),
                    *out.shape(),
                );
                let ov = out.as_vec();
                let g = (out * probe).sum::<(), _>().backward();
                res.push([
                    ov,
                    g.get(&x).as_vec(),
                    g.get(&w).as_vec(),
                    g.get(&b).as_vec(),
                ]);
            }
            for (k, name) in ["output", "dx", "dw", "db"].iter().enumerate() {
                assert_close(
                    &format!("{xs:?} {name}"),
                    &res[0][k],
                    &res[1][k],
                    1e-5,
                    1e-5,
                );
            }
        }
    });
}

/// `OpsDevice::SLICE_GRAD_ADDS` says what dfdx's CPU slice backward does: a slice of `x` plus
/// `x` itself must give `x` the gradient of both uses when it adds.
#[test]
fn slice_grad_adds_flag_matches_dfdx_on_the_cpu() {
    use kd_ops::OpsDevice;
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(vec![1.0f32, 2.0, 3.0], (3usize,));
    let xt = x.leaky_trace();
    let part = xt.retaped::<OwnedTape<f32, Cpu>>().slice((0..2,));
    let y = part.sum::<(), _>() + xt.sum::<(), _>();
    let g = y.backward().get(&x).as_vec();
    let adds = g == [2.0, 2.0, 1.0];
    assert!(adds || g == [1.0, 1.0, 1.0], "unexpected gradient {g:?}");
    assert_eq!(
        <Cpu as OpsDevice>::SLICE_GRAD_ADDS,
        adds,
        "dfdx's CPU slice backward {} now; update Cpu's SLICE_GRAD_ADDS",
        if adds { "adds" } else { "assigns" }
    );
}
