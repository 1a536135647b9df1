//! Layers: an SGD step through dfdx's optimiser changes Conv2d and BatchNorm2d parameters (and
//! leaves the running statistics to the forward pass), safetensors round trips are
//! bit-identical under PyTorch's tensor names, and the Kaiming fan-out initialisation has the
//! right spread.

use kd_ops::dfdx::nn::{LoadFromSafetensors, Module, ModuleMut, SaveToSafetensors, ZeroGrads};
use kd_ops::dfdx::optim::{Optimizer, Sgd, SgdConfig};
use kd_ops::dfdx::prelude::*;
use kd_ops::{BatchNorm2d, Conv2d, Conv2dBiased, Conv2dCfg, Shape4};

type Model = (Conv2d<Cpu>, BatchNorm2d<Cpu>, Conv2dBiased<Cpu>);

fn model(dev: &Cpu) -> Model {
    (
        Conv2d::new(dev, 3, 4, 3, Conv2dCfg::new(1, 1)),
        BatchNorm2d::new(dev, 4).with_relu(),
        Conv2dBiased::new(dev, 4, 2, 1, Conv2dCfg::default()),
    )
}

fn input(dev: &Cpu) -> Tensor<Shape4, f32, Cpu> {
    let s = (2, 3, 5, 5);
    dev.tensor_from_vec(
        (0..2 * 3 * 25)
            .map(|i| ((i * 37) % 23) as f32 / 11.0 - 1.0)
            .collect(),
        s,
    )
}

#[test]
fn sgd_step_updates_parameters_but_not_buffers() {
    let dev = Cpu::seed_from_u64(1);
    let mut m = model(&dev);
    let before = m.clone();
    let grads = m.alloc_grads();
    let y = m.forward_mut(input(&dev).trace(grads));
    let rm_after_forward = m.1.running_mean.as_vec();
    assert_ne!(
        rm_after_forward,
        before.1.running_mean.as_vec(),
        "forward_mut updates running_mean"
    );
    let loss = y.square().sum::<(), _>();
    let grads = loss.backward();
    let mut opt = Sgd::new(
        &m,
        SgdConfig {
            lr: 0.1,
            ..Default::default()
        },
    );
    opt.update(&mut m, &grads)
        .expect("all parameters have gradients");
    let changed = |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).any(|(x, y)| x != y);
    assert!(
        changed(m.0.weight.as_vec(), before.0.weight.as_vec()),
        "conv weight"
    );
    assert!(
        changed(m.1.weight.as_vec(), before.1.weight.as_vec()),
        "bn weight"
    );
    assert!(
        changed(m.1.bias.as_vec(), before.1.bias.as_vec()),
        "bn bias"
    );
    assert!(
        changed(m.2.weight.as_vec(), before.2.weight.as_vec()),
        "conv2 weight"
    );
    assert!(
        changed(m.2.bias.as_vec(), before.2.bias.as_vec()),
        "conv2 bias"
    );
    assert_eq!(
        m.1.running_mean.as_vec(),
        rm_after_forward,
        "the optimiser leaves running_mean alone"
    );
    // Evaluation uses the (updated) running statistics and needs no tape.
    let e = m.forward(input(&dev));
    assert_eq!(*e.shape(), (2, 2, 5, 5));
}

#[test]
fn safetensors_round_trip_is_bit_identical_with_pytorch_names() {
    let dev = Cpu::seed_from_u64(2);
    let mut m = model(&dev);
    // Non-trivial buffers.
    let _ = m.forward_mut(input(&dev));
    let path =
        std::env::temp_dir().join(format!("kd_ops_layers_{}.safetensors", std::process::id()));
    m.save_safetensors(&path).unwrap();
    let dev2 = Cpu::seed_from_u64(99);
    let mut m2 = model(&dev2);
    assert_ne!(m2.0.weight.as_vec(), m.0.weight.as_vec());
    m2.load_safetensors(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(bits(m2.0.weight.as_vec()), bits(m.0.weight.as_vec()));
    for (a, b) in [
        (&m2.1.weight, &m.1.weight),
        (&m2.1.bias, &m.1.bias),
        (&m2.1.running_mean, &m.1.running_mean),
        (&m2.1.running_var, &m.1.running_var),
        (&m2.2.bias, &m.2.bias),
    ] {
        assert_eq!(bits(a.as_vec()), bits(b.as_vec()));
    }
    assert_eq!(bits(m2.2.weight.as_vec()), bits(m.2.weight.as_vec()));
    assert_eq!(m2.0.cfg, m.0.cfg);
    // The header names exactly PyTorch's state-dict keys.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut names: Vec<&str> = header
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "__metadata__")
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "0.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var",
            "1.weight",
            "2.bias",
            "2.weight"
        ]
    );
}

#[test]
fn kaiming_normal_fan_out_spread() {
    let dev = Cpu::seed_from_u64(3);
    let c = Conv2d::new(&dev, 64, 64, 3, Conv2dCfg::new(1, 1));
    let v = c.weight.as_vec();
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let want = (2.0f64 / (64.0 * 9.0)).sqrt();
    assert!(mean.abs() < 0.02 * want * 10.0, "mean {mean}");
    assert!((std / want - 1.0).abs() < 0.03, "std {std}, want {want}");
    // Depthwise: PyTorch's fan_out is out_channels·k·k (no division by groups).
    let d = Conv2d::new(&dev, 32, 32, 3, Conv2dCfg::new(1, 1).groups(32));
    assert_eq!(*d.weight.shape(), (32, 1, 3, 3));
}

#[test]
#[should_panic(expected = "not divisible by groups")]
fn conv_layer_rejects_bad_groups() {
    let dev = Cpu::default();
    let _ = Conv2d::new(&dev, 6, 4, 3, Conv2dCfg::default().groups(4));
}
