//! Safetensors round trip (PyTorch names; bit-identical outputs after loading).

mod common;

use common::input;
use dfdx::prelude::*;
use kd_models::heads::{Byot, Mfef, One};
use kd_models::{build_network, Mode, Model, NetConfig};

fn header(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    String::from_utf8(bytes[8..8 + n].to_vec()).unwrap()
}

#[test]
fn network_round_trip_bit_identical() {
    let dev = Cpu::seed_from_u64(5);
    let mut net = build_network(&dev, "resnet20", NetConfig::new(10, 1)).unwrap();
    for s in 0..2 {
        let _ = net.forward(input(&dev, 4, 1, 28, 28, s), Mode::Train); // moves running stats
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r20.safetensors");
    net.save_safetensors(&path).unwrap();
    let h = header(&path);
    for name in [
        "conv1.weight",
        "bn1.weight",
        "bn1.running_mean",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer1.2.bn2.bias",
        "layer2.0.shortcut.0.weight",
        "layer2.0.shortcut.1.running_var",
        "layer3.2.conv2.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(h.contains(&format!("\"{name}\"")), "missing {name} in {h}");
    }
    assert!(
        h.contains("\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[10,64]"),
        "{h}"
    );
    assert!(
        !h.contains("layer1.0.shortcut"),
        "identity blocks have no shortcut"
    );

    let mut other =
        build_network(&Cpu::seed_from_u64(99), "resnet20", NetConfig::new(10, 1)).unwrap();
    let x = input(&dev, 3, 1, 28, 28, 7);
    assert_ne!(
        other.forward_eval(x.clone()).heads[0].logits.as_vec(),
        net.forward_eval(x.clone()).heads[0].logits.as_vec()
    );
    other.load_safetensors(&path).unwrap();
    assert_eq!(
        other.forward_eval(x.clone()).heads[0].logits.as_vec(),
        net.forward_eval(x).heads[0].logits.as_vec()
    );
}

#[test]
fn family_names() {
    let dev = Cpu::seed_from_u64(6);
    let dir = tempfile::tempdir().unwrap();
    for (arch, names) in [
        (
            "wrn-16-2",
            &[
                "conv1.weight",
                "block1.layer.0.bn1.weight",
                "block1.layer.0.convShortcut.weight",
                "block3.layer.1.conv2.weight",
                "bn1.running_var",
                "fc.bias",
            ][..],
        ),
        (
            "resnet18-preact",
            &[
                "conv1.weight",
                "bn1.weight",
                "layer2.0.shortcut.0.weight",
                "layer4.1.bn2.weight",
                "fc.weight",
            ][..],
        ),
        (
            "vgg8",
            &[
                "block0.0.weight",
                "block0.0.bias",
                "block0.1.running_mean",
                "block4.1.weight",
                "classifier.weight",
            ][..],
        ),
    ] {
        let net = build_network(&dev, arch, NetConfig::new(10, 3)).unwrap();
        let path = dir.path().join(format!("{arch}.safetensors"));
        net.save_safetensors(&path).unwrap();
        let h = header(&path);
        for n in names {
            assert!(
                h.contains(&format!("\"{n}\"")),
                "{arch}: missing {n} in {h}"
            );
        }
        assert!(!h.contains(".."), "{arch}: {h}");
    }
}

/// Method structures save and load too, with the student under its plain names.
#[test]
fn method_models_round_trip() {
    let dev = Cpu::seed_from_u64(7);
    let dir = tempfile::tempdir().unwrap();
    let x = input(&dev, 2, 3, 32, 32, 1);

    let mut byot = Byot::new(
        &dev,
        build_network(&dev, "resnet20", NetConfig::new(10, 3)).unwrap(),
        32,
    )
    .unwrap();
    let _ = byot.forward(x.clone(), Mode::Train);
    let p = dir.path().join("byot.safetensors");
    byot.save_safetensors(&p).unwrap();
    let h = header(&p);
    assert!(
        h.contains("\"conv1.weight\"")
            && h.contains("\"exits.0.bottleneck.0.weight\"")
            && h.contains("\"exits.1.fc.bias\""),
        "{h}"
    );
    let mut b2 = Byot::new(
        &Cpu::seed_from_u64(8),
        build_network(&dev, "resnet20", NetConfig::new(10, 3)).unwrap(),
        32,
    )
    .unwrap();
    b2.load_safetensors(&p).unwrap();
    let (o1, o2) = (byot.forward_eval(x.clone()), b2.forward_eval(x.clone()));
    for (a, b) in o1.logits.iter().zip(&o2.logits) {
        assert_eq!(a.as_vec(), b.as_vec());
    }

    let one = One::new(
        &dev,
        build_network(&dev, "resnet20", NetConfig::new(10, 3).branches(3)).unwrap(),
    )
    .unwrap();
    let p = dir.path().join("one.safetensors");
    one.save_safetensors(&p).unwrap();
    let h = header(&p);
    assert!(
        h.contains("\"branches.2.layer3.0.conv1.weight\"")
            && h.contains("\"gate.bn.running_mean\"")
            && h.contains("\"gate.fc.weight\""),
        "{h}"
    );

    let nets = vec![
        build_network(&dev, "resnet20", NetConfig::new(10, 3)).unwrap(),
        build_network(&dev, "resnet32", NetConfig::new(10, 3)).unwrap(),
    ];
    let mfef = Mfef::new(&dev, nets).unwrap();
    let p = dir.path().join("mfef.safetensors");
    mfef.save_safetensors(&p).unwrap();
    let h = header(&p);
    assert!(
        h.contains("\"nets.1.layer3.4.conv1.weight\"")
            && h.contains("\"mfef.1.extract.convs.2.weight\"")
            && h.contains("\"mfef.0.attention.mlp.0.bias\"")
            && h.contains("\"fusion.dw_conv.weight\""),
        "{h}"
    );
    let mut m2 = Mfef::new(
        &Cpu::seed_from_u64(9),
        vec![
            build_network(&Cpu::seed_from_u64(9), "resnet20", NetConfig::new(10, 3)).unwrap(),
            build_network(&Cpu::seed_from_u64(9), "resnet32", NetConfig::new(10, 3)).unwrap(),
        ],
    )
    .unwrap();
    m2.load_safetensors(&p).unwrap();
    assert_eq!(
        mfef.forward_eval(x.clone()).fused_logits.unwrap().as_vec(),
        m2.forward_eval(x).fused_logits.unwrap().as_vec()
    );
}
