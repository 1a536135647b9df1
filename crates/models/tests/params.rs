//! Exact parameter counts (ARCHITECTURES.md, 100 classes, 3 channels; trainable tensors only,
//! not running statistics) and formula-derived counts for other class/channel counts.

use dfdx::prelude::*;
use kd_models::{arch_spec, build_network, ArchFamily, NetConfig, ARCH_NAMES};

fn count(name: &str, cfg: NetConfig) -> usize {
    let dev = Cpu::seed_from_u64(0);
    build_network(&dev, name, cfg).unwrap().num_params()
}

#[test]
fn spec_counts_exact() {
    for (name, want) in [
        ("resnet18", 11_220_132),
        ("resnet18-preact", 11_217_444),
        ("resnet20", 278_324),
        ("resnet32", 472_756),
        ("resnet56", 861_620),
        ("resnet110", 1_736_564),
        ("wrn-16-2", 703_284),
        ("wrn-40-2", 2_255_156),
    ] {
        assert_eq!(count(name, NetConfig::default()), want, "{name}");
    }
}

/// "about 1.23M / 7.43M" in the spec; the exact values follow from the layout.
#[test]
fn resnet_x4_counts() {
    let r8 = count("resnet8x4", NetConfig::default());
    let r32 = count("resnet32x4", NetConfig::default());
    assert_eq!(r8, 1_233_540);
    assert_eq!(r32, 7_433_860);
    assert_eq!((r8 as f64 / 1e4).round() / 100.0, 1.23);
    assert_eq!((r32 as f64 / 1e4).round() / 100.0, 7.43);
}

/// VGG counts computed layer by layer: conv3×3 with bias + BN (2 params per channel) per unit,
/// linear 512 → K with bias.
#[test]
fn vgg_counts_by_formula() {
    fn vgg(units: &[&[usize]], k: usize, cin: usize) -> usize {
        let mut c = cin;
        let mut n = 0;
        for block in units {
            for &w in *block {
                n += c * w * 9 + w + 2 * w;
                c = w;
            }
        }
        n + c * k + k
    }
    let v8: &[&[usize]] = &[&[64], &[128], &[256], &[512], &[512]];
    let v13: &[&[usize]] = &[
        &[64, 64],
        &[128, 128],
        &[256, 256],
        &[512, 512],
        &[512, 512],
    ];
    assert_eq!(count("vgg8", NetConfig::default()), vgg(v8, 100, 3));
    assert_eq!(count("vgg8", NetConfig::default()), 3_965_028);
    assert_eq!(count("vgg13", NetConfig::default()), vgg(v13, 100, 3));
    assert_eq!(count("vgg13", NetConfig::new(10, 1)), vgg(v13, 10, 1));
}

/// Changing K changes only the classifier (`(K − 100)·(C_L + 1)`); changing the input channels
/// only the first conv (`(C_in − 3)·w·9`).
#[test]
fn other_classes_and_channels() {
    for name in ARCH_NAMES {
        let spec = arch_spec(name).unwrap();
        let base = count(name, NetConfig::default()) as i64;
        let c_l = *spec.widths.last().unwrap() as i64;
        let first = if spec.family == ArchFamily::Vgg {
            spec.widths[0]
        } else {
            spec.stem
        } as i64;
        for (k, cin) in [(10i64, 1i64), (10, 3), (200, 1)] {
            let want = base + (k - 100) * (c_l + 1) + (cin - 3) * first * 9;
            assert_eq!(
                count(name, NetConfig::new(k as usize, cin as usize)) as i64,
                want,
                "{name} K={k} C={cin}"
            );
        }
    }
    assert_eq!(count("resnet20", NetConfig::new(10, 1)), 272_186);
}

/// `branches = N` adds N − 1 copies of the last stage and the classifier; each student is the
/// plain architecture.
#[test]
fn branches_and_students() {
    let dev = Cpu::seed_from_u64(1);
    for name in ["resnet20", "wrn-16-2", "vgg8", "resnet18-preact"] {
        let plain = count(name, NetConfig::new(10, 3));
        let net = build_network(&dev, name, NetConfig::new(10, 3).branches(3)).unwrap();
        let head = {
            let h = &net.heads[0];
            use dfdx::nn::NumParams;
            h.stage.num_trainable_params()
                + h.bn.as_ref().map_or(0, |b| b.num_trainable_params())
                + h.fc.num_trainable_params()
        };
        assert_eq!(net.num_params(), plain + 2 * head, "{name}");
        for s in net.students() {
            assert_eq!(s.num_params(), plain, "{name} student");
        }
    }
}

#[test]
fn unknown_name_lists_valid_ones() {
    let dev = Cpu::default();
    let err = build_network(&dev, "resnet19", NetConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("resnet19"), "{err}");
    for n in ARCH_NAMES {
        assert!(err.contains(n), "{err} lacks {n}");
    }
}
