//! Output shapes for 28/32/64 inputs, and train vs eval BatchNorm behaviour.

mod common;

use common::{input, rows};
use dfdx::prelude::*;
use kd_models::{arch_spec, build_network, ArchFamily, Mode, NetConfig, ARCH_NAMES};

/// Stage shapes of every architecture at 28, 32 and 64 (analytic), checked against a real
/// forward pass for the small ones.
#[test]
fn stage_shapes_every_arch() {
    let dev = Cpu::seed_from_u64(0);
    for name in ARCH_NAMES {
        let spec = arch_spec(name).unwrap();
        let net = build_network(&dev, name, NetConfig::new(10, 1)).unwrap();
        for size in [28usize, 32, 64] {
            let shapes = net.stage_shapes((size, size));
            assert_eq!(shapes.len(), spec.widths.len(), "{name}");
            let mut h = size;
            for (l, &(c, sh, sw)) in shapes.iter().enumerate() {
                let down = match spec.family {
                    ArchFamily::Vgg => (1..=3).contains(&l),
                    _ => l > 0,
                };
                if down {
                    h = match spec.family {
                        ArchFamily::Vgg => h / 2,
                        _ => (h - 1) / 2 + 1,
                    };
                }
                assert_eq!(
                    (c, sh, sw),
                    (spec.widths[l], h, h),
                    "{name} @{size} stage {l}"
                );
            }
        }
    }
    // The spec's table at 32×32.
    let s = build_network(&dev, "resnet18", NetConfig::default())
        .unwrap()
        .stage_shapes((32, 32));
    assert_eq!(
        s,
        vec![(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    );
    let s = build_network(&dev, "wrn-16-2", NetConfig::default())
        .unwrap()
        .stage_shapes((32, 32));
    assert_eq!(s, vec![(32, 32, 32), (64, 16, 16), (128, 8, 8)]);
}

#[test]
fn forward_shapes_small_archs() {
    let dev = Cpu::seed_from_u64(1);
    for (name, cin) in [
        ("resnet20", 1),
        ("wrn-16-2", 3),
        ("vgg8", 3),
        ("resnet8x4", 1),
    ] {
        let mut net = build_network(&dev, name, NetConfig::new(7, cin)).unwrap();
        for size in [28usize, 32, 64] {
            let x = input(&dev, 2, cin, size, size, 3);
            let out = net.forward(x, Mode::Train);
            let want = net.stage_shapes((size, size));
            let f = out.features(0);
            assert_eq!(f.len(), want.len());
            for (t, &(c, h, w)) in f.iter().zip(&want) {
                assert_eq!(*t.shape(), (2, c, h, w), "{name} @{size}");
            }
            let c_l = want.last().unwrap().0;
            assert_eq!(*out.heads[0].embedding.shape(), (2, c_l));
            assert_eq!(*out.heads[0].logits.shape(), (2, 7));
            assert!(out.heads[0].logits.as_vec().iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn forward_shapes_resnet18_variants() {
    let dev = Cpu::seed_from_u64(2);
    for name in ["resnet18", "resnet18-preact"] {
        let net = build_network(&dev, name, NetConfig::new(100, 3)).unwrap();
        let out = net.forward_eval(input(&dev, 1, 3, 32, 32, 4));
        let f = out.features(0);
        let got: Vec<_> = f.iter().map(|t| *t.shape()).collect();
        assert_eq!(
            got,
            vec![
                (1, 64, 32, 32),
                (1, 128, 16, 16),
                (1, 256, 8, 8),
                (1, 512, 4, 4)
            ],
            "{name}"
        );
        assert_eq!(*out.heads[0].logits.shape(), (1, 100));
    }
}

/// Eval uses the running statistics: a sample's logits do not depend on the rest of the batch
/// and repeated calls agree bit for bit; eval does not touch the running statistics. Train uses
/// batch statistics (a sample's logits change with the batch) and updates them.
#[test]
fn batchnorm_train_vs_eval() {
    let dev = Cpu::seed_from_u64(3);
    let mut net = build_network(&dev, "resnet20", NetConfig::new(10, 3)).unwrap();
    let xa = input(&dev, 4, 3, 32, 32, 10);
    let xb = input(&dev, 4, 3, 32, 32, 11);
    // A few train passes move the running statistics away from (0, 1).
    let rm0 = net.bn1.as_ref().unwrap().running_mean.as_vec();
    let rv0 = net.bn1.as_ref().unwrap().running_var.as_vec();
    for _ in 0..3 {
        let _ = net.forward(xa.clone(), Mode::Train);
    }
    let rm1 = net.bn1.as_ref().unwrap().running_mean.as_vec();
    let rv1 = net.bn1.as_ref().unwrap().running_var.as_vec();
    assert!(
        rm0.iter().zip(&rm1).any(|(a, b)| a != b),
        "train updates running_mean"
    );
    assert!(
        rv0.iter().zip(&rv1).any(|(a, b)| a != b),
        "train updates running_var"
    );
    let deep = net.heads[0].stage.blocks[0].bn2.running_mean.as_vec();
    assert!(deep.iter().any(|v| *v != 0.0), "deep BNs update too");

    // Eval: independent of batch composition, deterministic, no mutation.
    let e1 = rows(&net.forward(xa.clone(), Mode::Eval).heads[0].logits);
    let e2 = rows(&net.forward_eval(xa.clone()).heads[0].logits);
    assert_eq!(e1, e2, "eval is deterministic");
    let mixed = {
        let mut v = xa.as_vec();
        let n = 3 * 32 * 32;
        v[n..].copy_from_slice(&xb.as_vec()[n..]);
        dev.tensor_from_vec(v, (4, 3, 32, 32))
    };
    let e3 = rows(&net.forward(mixed.clone(), Mode::Eval).heads[0].logits);
    assert_eq!(e1[0], e3[0], "eval of sample 0 ignores the other samples");
    assert_eq!(
        net.bn1.as_ref().unwrap().running_mean.as_vec(),
        rm1,
        "eval leaves running stats alone"
    );

    // Train: sample 0's logits depend on its batch.
    let t1 = rows(&net.forward(xa, Mode::Train).heads[0].logits);
    let t3 = rows(&net.forward(mixed, Mode::Train).heads[0].logits);
    assert_ne!(t1[0], t3[0], "train uses batch statistics");
    assert_ne!(t1[0], e1[0]);
}
