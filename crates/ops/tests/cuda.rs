//! With feature `cuda` (and a GPU): every op on `Cuda` (the dfdx compositions) against the CPU
//! kernels, outputs and gradients. `cargo check -p kd-ops --features ci-check --tests`
//! type-checks this without a GPU.
#![cfg(feature = "cuda")]

mod common;

use common::*;
use kd_ops::dfdx::prelude::*;
use kd_ops::{BatchNormCfg, Conv2dCfg, OpsDevice, Pool2dCfg, Shape4};

type Run<D> = fn(
    &D,
    Tensor<Shape4, f32, D, OwnedTape<f32, D>>,
    &[Tensor<(usize,), f32, D>],
) -> Tensor<Shape4, f32, D, OwnedTape<f32, D>>;

/// Output, `∂/∂x` and the gradients of the 1-D parameters of `sum(op(x) · probe)`.
fn eval<D: OpsDevice>(
    dev: &D,
    f: Run<D>,
    x: &[f32],
    xs: Shape4,
    params: &[Vec<f32>],
) -> Vec<Vec<f32>> {
    let xt = dev.tensor_from_vec(x.to_vec(), xs);
    let ps: Vec<Tensor<(usize,), f32, D>> = params
        .iter()
        .map(|p| dev.tensor_from_vec(p.clone(), (p.len(),)))
        .collect();
    let out = f(dev, xt.leaky_trace(), &ps);
    let os = *out.shape();
    let probe = dev.tensor_from_vec(
        (0..numel(os))
            .map(|i| ((i * 13) % 7) as f32 / 7.0 - 0.4)
            .collect(),
        os,
    );
    let ov = out.as_vec();
    let g = (out * probe).sum::<(), _>().backward();
    let mut res = vec![ov, g.get(&xt).as_vec()];
    res.extend(ps.iter().map(|p| g.get(p).as_vec()));
    res
}

fn compare(name: &str, cpu_f: Run<Cpu>, gpu_f: Run<Cuda>, xs: Shape4, params: Vec<Vec<f32>>) {
    let mut rng = rng(1);
    let x = uniform(&mut rng, numel(xs));
    let a = eval(&Cpu::default(), cpu_f, &x, xs, &params);
    let b = eval(&Cuda::default(), gpu_f, &x, xs, &params);
    for (i, (a, b)) in a.iter().zip(&b).enumerate() {
        assert_close(&format!("{name} #{i}"), b, a, 1e-4, 1e-4);
    }
}

macro_rules! both {
    ($name:expr, $xs:expr, $params:expr, |$dev:ident, $x:ident, $p:ident| $body:expr) => {{
        fn cpu(
            $dev: &Cpu,
            $x: Tensor<Shape4, f32, Cpu, OwnedTape<f32, Cpu>>,
            $p: &[Tensor<(usize,), f32, Cpu>],
        ) -> Tensor<Shape4, f32, Cpu, OwnedTape<f32, Cpu>> {
            let _ = ($dev, $p);
            $body
        }
        fn gpu(
            $dev: &Cuda,
            $x: Tensor<Shape4, f32, Cuda, OwnedTape<f32, Cuda>>,
            $p: &[Tensor<(usize,), f32, Cuda>],
        ) -> Tensor<Shape4, f32, Cuda, OwnedTape<f32, Cuda>> {
            let _ = ($dev, $p);
            $body
        }
        compare($name, cpu, gpu, $xs, $params);
    }};
}

#[test]
fn cuda_matches_cpu() {
    both!(
        "conv",
        (3, 4, 7, 6),
        vec![vec![0.1, -0.2, 0.3, 0.05, 0.0, 0.4]],
        |dev, x, p| {
            let w = dev.tensor_from_vec(
                (0..6 * 2 * 9)
                    .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.5)
                    .collect(),
                (6, 2, 3, 3),
            );
            kd_ops::conv2d(x, &w, Some(&p[0]), Conv2dCfg::new(2, 1).groups(2))
        }
    );
    both!("max_pool", (2, 3, 7, 7), vec![], |dev, x, p| {
        kd_ops::max_pool2d(x, Pool2dCfg::new(3, 2, 1))
    });
    both!("avg_pool", (2, 3, 6, 6), vec![], |dev, x, p| {
        kd_ops::avg_pool2d(x, Pool2dCfg::new(2, 2, 1))
    });
    both!("adaptive", (2, 3, 7, 5), vec![], |dev, x, p| {
        kd_ops::adaptive_avg_pool2d(x, (3, 2))
    });
    both!("upsample", (2, 3, 3, 4), vec![], |dev, x, p| {
        kd_ops::upsample_bilinear2x(x)
    });
    both!(
        "bn_train",
        (4, 3, 3, 3),
        vec![vec![1.0, 0.5, 2.0], vec![0.1, 0.0, -0.3]],
        |dev, x, p| {
            let (mut rm, mut rv) = (dev.zeros_like(&(3,)), dev.ones_like(&(3,)));
            kd_ops::batch_norm2d_train(
                x,
                &p[0],
                &p[1],
                &mut rm,
                &mut rv,
                BatchNormCfg::with_relu(true),
            )
        }
    );
    both!(
        "bn_eval",
        (2, 3, 3, 3),
        vec![vec![1.0, 0.5, 2.0], vec![0.1, 0.0, -0.3]],
        |dev, x, p| {
            let (rm, rv) = (
                dev.tensor_from_vec(vec![0.1, -0.2, 0.0], (3,)),
                dev.tensor_from_vec(vec![1.5, 0.5, 1.0], (3,)),
            );
            kd_ops::batch_norm2d_eval(x, &p[0], &p[1], &rm, &rv, BatchNormCfg::with_relu(true))
        }
    );
    both!(
        "add_relu+concat+split",
        (2, 4, 3, 3),
        vec![],
        |dev, x, p| {
            let parts = kd_ops::split_channels(x, &[1, 3]);
            let mut it = parts.into_iter();
            let (a, b) = (it.next().unwrap(), it.next().unwrap());
            let cat = kd_ops::concat_channels(vec![b, a]);
            // Two different tensors: dfdx's binary ops cannot take one tensor twice (see
            // `generic::add_relu`).
            let skip = cat.retaped() * 0.5;
            kd_ops::add_relu(cat, skip)
        }
    );
}
