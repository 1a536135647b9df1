//! Real data: SGD with momentum on Fashion-MNIST drives cross-entropy down, and one repeated
//! batch is overfitted to ≥ 95% accuracy.

use dfdx::nn::ZeroGrads;
use dfdx::optim::{Momentum, Optimizer, Sgd, SgdConfig};
use dfdx::prelude::*;
use kd_data::readers::idx::read_fashion_mnist;
use kd_data::Split;
use kd_models::{build_network, Mode, NetConfig, Network};
use std::path::Path;

const B: usize = 32;

type Image4 = Tensor<(usize, usize, usize, usize), f32, Cpu>;

fn batch(dev: &Cpu, set: &kd_data::ImageSet, start: usize) -> (Image4, Vec<usize>) {
    let mut v = Vec::with_capacity(B * 784);
    let mut y = Vec::with_capacity(B);
    for i in start..start + B {
        v.extend(
            set.image(i)
                .iter()
                .map(|&p| (p as f32 / 255.0 - 0.2860) / 0.3530),
        );
        y.push(set.labels[i] as usize);
    }
    (dev.tensor_from_vec(v, (B, 1, 28, 28)), y)
}

fn one_hot(dev: &Cpu, y: &[usize]) -> Tensor<(usize, usize), f32, Cpu> {
    let mut v = vec![0.0; y.len() * 10];
    for (i, &c) in y.iter().enumerate() {
        v[i * 10 + c] = 1.0;
    }
    dev.tensor_from_vec(v, (y.len(), 10))
}

/// One SGD step; returns the loss and the batch accuracy (train-mode logits).
fn step(
    net: &mut Network<Cpu>,
    opt: &mut Sgd<Network<Cpu>, f32, Cpu>,
    grads: &mut Option<Gradients<f32, Cpu>>,
    x: Tensor<(usize, usize, usize, usize), f32, Cpu>,
    y: &[usize],
) -> (f32, f32) {
    let dev = x.device().clone();
    let g = grads.take().unwrap();
    let out = net.forward(x.traced(g), Mode::Train);
    let z = out.heads.into_iter().next().unwrap().logits;
    let zv = z.retaped::<NoneTape>().as_vec();
    let correct = zv
        .chunks(10)
        .zip(y)
        .filter(|(r, &c)| {
            r.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0
                == c
        })
        .count();
    let loss = cross_entropy_with_logits_loss(z, one_hot(&dev, y));
    let lv = loss.array();
    let mut g = loss.backward();
    opt.update(net, &g).expect("every parameter has a gradient");
    net.zero_grads(&mut g);
    *grads = Some(g);
    (lv, correct as f32 / y.len() as f32)
}

#[test]
fn sgd_on_fashion_mnist() {
    kd_data::require_fashion_mnist!();
    let set = read_fashion_mnist(Path::new("/usr/share/datasets/fashion-mnist"), Split::Train)
        .expect("Fashion-MNIST is installed");
    assert_eq!((set.channels, set.height, set.width), (1, 28, 28));
    let dev = Cpu::seed_from_u64(42);
    let cfg = SgdConfig {
        lr: 0.05,
        momentum: Some(Momentum::Nesterov(0.9)),
        weight_decay: None,
    };

    // A few dozen steps over fresh batches drive the CE down.
    let mut net = build_network(&dev, "resnet20", NetConfig::new(10, 1)).unwrap();
    let mut opt = Sgd::new(&net, cfg);
    let mut grads = Some(net.alloc_grads());
    let mut losses = Vec::new();
    for s in 0..40 {
        let (x, y) = batch(&dev, &set, s * B);
        losses.push(step(&mut net, &mut opt, &mut grads, x, &y).0);
    }
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[35..].iter().sum::<f32>() / 5.0;
    eprintln!("CE first 5 steps {first:.3}, last 5 steps {last:.3}");
    assert!(first > 1.5, "starts near ln 10: {first}");
    assert!(last < 0.75 * first, "CE went from {first} to {last}");

    // Overfit one repeated batch.
    let mut net = build_network(&dev, "resnet20", NetConfig::new(10, 1)).unwrap();
    let mut opt = Sgd::new(&net, cfg);
    let mut grads = Some(net.alloc_grads());
    let (x, y) = batch(&dev, &set, 50_000);
    let mut acc = 0.0;
    for s in 0..30 {
        let (l, a) = step(&mut net, &mut opt, &mut grads, x.clone(), &y);
        acc = a;
        if s % 10 == 9 {
            eprintln!("overfit step {s}: CE {l:.4}, acc {a}");
        }
    }
    let out = net.forward(x, Mode::Train);
    let zv = out.heads[0].logits.as_vec();
    let final_acc = zv
        .chunks(10)
        .zip(&y)
        .filter(|(r, &c)| {
            r.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0
                == c
        })
        .count() as f32
        / B as f32;
    eprintln!("overfit accuracy: last step {acc}, after training {final_acc}");
    assert!(final_acc >= 0.95, "overfit accuracy {final_acc}");
}
