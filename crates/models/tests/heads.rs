//! Method structures: output shapes, gate/attention rows summing to 1, a backward pass through
//! every structure reaching both the students and the training-only modules, and students whose
//! parameter count is the plain architecture's.

mod common;

use common::{input, rows};
use dfdx::nn::{NumParams, ZeroGrads};
use dfdx::prelude::*;
use kd_models::heads::{Byot, Ffl, Mfef, Okddip, One};
use kd_models::{build_network, Mode, Model, NetConfig, Networks, Outputs};

const K: usize = 10;

fn net(name: &str, branches: usize) -> kd_models::Network<Cpu> {
    build_network(
        &Cpu::seed_from_u64(11),
        name,
        NetConfig::new(K, 3).branches(branches),
    )
    .unwrap()
}

fn plain(name: &str) -> usize {
    net(name, 1).num_params()
}

fn assert_rows_sum_to_one(v: &[f32], n: usize) {
    for r in v.chunks(n) {
        let s: f32 = r.iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "row {r:?} sums to {s}");
        assert!(r.iter().all(|p| *p >= 0.0));
    }
}

/// Sums every output into one scalar (merging all tapes, as the losses do) and backpropagates.
fn backward_all(out: Outputs<Cpu, OwnedTape<f32, Cpu>>) -> Gradients<f32, Cpu> {
    let mut total: Option<Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>> = None;
    let mut add = |t: Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>>| {
        total = Some(match total.take() {
            None => t,
            Some(a) => a + t,
        })
    };
    for z in out.logits {
        add(z.square().mean());
    }
    for e in out.embeddings {
        add(e.square().mean());
    }
    for f in out.features {
        add(f.square().mean());
    }
    if let Some(g) = out.gate {
        add(g.square().mean());
    }
    if let Some(a) = out.attention {
        add(a.square().mean());
    }
    if let Some(f) = out.fused_logits {
        add(f.square().mean());
    }
    total.unwrap().backward()
}

fn nonzero(g: &Gradients<f32, Cpu>, t: &Tensor<impl Shape, f32, Cpu>) -> bool {
    g.get(t).as_vec().iter().any(|v| *v != 0.0)
}

#[test]
fn byot_exits() {
    let dev = Cpu::seed_from_u64(12);
    let mut m = Byot::new(&dev, net("resnet20", 1), 32).unwrap();
    let x = input(&dev, 2, 3, 32, 32, 1);
    let out = m.forward(x.leaky_trace(), Mode::Train);
    assert_eq!(out.logits.len(), 3);
    assert!(out.logits.iter().all(|z| *z.shape() == (2, K)));
    assert!(
        out.embeddings.iter().all(|e| *e.shape() == (2, 64)),
        "exits reach the final width"
    );
    assert_eq!(out.features.len(), 3);
    let g = backward_all(out);
    assert!(
        nonzero(&g, &m.exits.items[0].conv2.weight) && nonzero(&g, &m.exits.items[1].fc.weight)
    );
    assert!(nonzero(&g, &m.net.conv1.as_ref().unwrap().weight));
    // 28×28: the exits' k×k stride-k convs still land on the final resolution.
    let mut m28 = Byot::new(&dev, net("resnet20", 1), 28).unwrap();
    let o = m28.forward(input(&dev, 2, 3, 28, 28, 2), Mode::Eval);
    assert!(o.embeddings.iter().all(|e| *e.shape() == (2, 64)));
    let students = m.students();
    assert_eq!(students.len(), 1);
    assert_eq!(students[0].num_params(), plain("resnet20"));
    assert!(m.num_trainable_params() > plain("resnet20"));
}

#[test]
fn one_gate() {
    let dev = Cpu::seed_from_u64(13);
    let mut m = One::new(&dev, net("resnet20", 3)).unwrap();
    let out = m.forward(input(&dev, 4, 3, 32, 32, 3).leaky_trace(), Mode::Train);
    assert_eq!(out.logits.len(), 3);
    let gate = out.gate.as_ref().unwrap();
    assert_eq!(*gate.shape(), (4, 3));
    assert_rows_sum_to_one(&gate.as_vec(), 3);
    let g = backward_all(out);
    assert!(
        nonzero(&g, &m.gate.fc.weight)
            && nonzero(&g, &m.net.heads[2].fc.weight)
            && nonzero(&g, &m.net.conv1.as_ref().unwrap().weight)
    );
    let ev = m.forward_eval(input(&dev, 4, 3, 32, 32, 3));
    assert_rows_sum_to_one(&ev.gate.unwrap().as_vec(), 3);
    let students = m.students();
    assert_eq!(students.len(), 3);
    assert!(students.iter().all(|s| s.num_params() == plain("resnet20")));
}

#[test]
fn okddip_attention() {
    let dev = Cpu::seed_from_u64(14);
    let mut m = Okddip::new(&dev, net("resnet20", 4)).unwrap();
    assert_eq!(*m.attention.query.weight.shape(), (8, 64), "C/8, no bias");
    assert!(m.attention.query.bias.is_none() && m.attention.key.bias.is_none());
    let out = m.forward(input(&dev, 3, 3, 32, 32, 4).leaky_trace(), Mode::Train);
    assert_eq!(out.logits.len(), 4, "3 peers + leader");
    let a = out.attention.as_ref().unwrap();
    assert_eq!(*a.shape(), (3, 3, 3));
    assert_rows_sum_to_one(&a.as_vec(), 3);
    let g = backward_all(out);
    assert!(nonzero(&g, &m.attention.query.weight) && nonzero(&g, &m.attention.key.weight));
    assert!(m
        .students()
        .iter()
        .all(|s| s.num_params() == plain("resnet20")));
}

#[test]
fn ffl_fusion_branches_and_networks() {
    let dev = Cpu::seed_from_u64(15);
    let mut m = Ffl::new(&dev, vec![net("resnet20", 2)]).unwrap();
    let out = m.forward(input(&dev, 2, 3, 32, 32, 5).leaky_trace(), Mode::Train);
    assert_eq!(out.logits.len(), 2);
    assert_eq!(*out.fused_logits.as_ref().unwrap().shape(), (2, K));
    let g = backward_all(out);
    assert!(nonzero(&g, &m.fusion.dw_conv.weight) && nonzero(&g, &m.fusion.fc.weight));
    assert_eq!(
        *m.fusion.dw_conv.weight.shape(),
        (128, 1, 3, 3),
        "depthwise over N·C"
    );
    assert!(m
        .students()
        .iter()
        .all(|s| s.num_params() == plain("resnet20")));

    let mut m = Ffl::new(&dev, vec![net("resnet20", 1), net("resnet32", 1)]).unwrap();
    let out = m.forward(input(&dev, 2, 3, 32, 32, 6).leaky_trace(), Mode::Train);
    assert_eq!(out.logits.len(), 2);
    let g = backward_all(out);
    assert!(nonzero(&g, &m.nets.items[1].conv1.as_ref().unwrap().weight));
    let s = m.students();
    assert_eq!(
        (s[0].num_params(), s[1].num_params()),
        (plain("resnet20"), plain("resnet32"))
    );
    assert!(
        Ffl::new(&dev, vec![net("resnet20", 1), net("wrn-16-2", 1)]).is_err(),
        "widths differ"
    );
}

#[test]
fn mfef_blocks() {
    let dev = Cpu::seed_from_u64(16);
    let mut m = Mfef::new(&dev, vec![net("resnet20", 2)]).unwrap();
    let b = &m.blocks.items[0];
    assert_eq!(
        *b.extract.convs.items[0].weight.shape(),
        (16, 16, 3, 3),
        "K_i at C/4"
    );
    assert_eq!(*b.attention.mlp1.weight.shape(), (4, 64), "C/16");
    assert_eq!(*b.attention.spatial.weight.shape(), (1, 2, 7, 7));
    let mut blk = b.clone();
    let f = input(&dev, 2, 64, 8, 8, 9);
    assert_eq!(*blk.forward(f, Mode::Train).shape(), (2, 64, 8, 8));
    let out = m.forward(input(&dev, 2, 3, 32, 32, 7).leaky_trace(), Mode::Train);
    assert_eq!(*out.fused_logits.as_ref().unwrap().shape(), (2, K));
    let g = backward_all(out);
    let b = &m.blocks.items[1];
    assert!(
        nonzero(&g, &b.extract.convs.items[2].weight)
            && nonzero(&g, &b.attention.spatial.weight)
            && nonzero(&g, &b.attention.mlp1.weight)
    );
    let s = m.students();
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|s| s.num_params() == plain("resnet20")));
    let mut grads = m.alloc_grads();
    m.zero_grads(&mut grads);
}

#[test]
fn independent_networks() {
    let dev = Cpu::seed_from_u64(17);
    let mut m: Networks<Cpu> =
        kd_models::List::new(vec![net("resnet20", 1), net("wrn-16-2", 1), net("vgg8", 1)]);
    let out = m.forward(input(&dev, 2, 3, 32, 32, 8), Mode::Eval);
    assert_eq!(out.logits.len(), 3);
    assert_eq!(rows(&out.logits[2]).len(), 2);
    assert_eq!(m.students().len(), 3);
}
