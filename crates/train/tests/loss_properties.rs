//! Properties of the losses (`METHODS.md`): consistency terms vanish at their minimum, SCD is
//! invariant to the maps' spatial size, the `/b²` normalisation of SP and SCD, and SCD's
//! `deepest` target and `channel_softmax` attention options.

#[path = "loss_common/mod.rs"]
mod common;
use common::Method;
use common::{eval, host_inputs, Host, HostMap};
use dfdx::prelude::*;
use kd_losses::helpers::{kl_t, sg};
use serde_json::json;

fn method(name: &str, params: serde_json::Value) -> Method {
    Method::from_json(name, &params).unwrap()
}

fn close(a: f32, b: f32, rel: f32) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) + 1e-7
}

#[test]
fn kl_with_identical_student_and_target_is_zero_with_zero_gradient() {
    let dev = Cpu::default();
    let z = dev.tensor_from_vec(common::values(1, 20, 6.0), (4usize, 5usize));
    let traced = z.leaky_trace();
    let kl = kl_t(traced, sg(&z), 3.0);
    let value = kl.retaped::<NoneTape>().as_vec()[0];
    let g = kl.backward();
    assert!(value.abs() < 1e-6, "{value}");
    assert!(g.get(&z).as_vec().iter().all(|v| v.abs() < 1e-6));
    // And positive otherwise.
    let other = dev.tensor_from_vec(common::values(2, 20, 6.0), (4usize, 5usize));
    let kl = kl_t(z.clone(), other, 3.0).as_vec()[0];
    assert!(kl > 1e-3, "{kl}");
}

/// Makes every student/teacher/peer/view equal to the first, then checks the method's
/// consistency term is zero (at its minimum).
#[test]
fn consistency_terms_vanish_when_student_equals_target() {
    for (name, term) in [
        ("kd", "kl"),
        ("cskd", "kl"),
        ("dml", "kl"),
        ("ddgsd", "kl"),
        ("ddgsd", "mmd"),
        ("byot", "kl"),
        ("byot", "feat"),
        ("kdcl", "kl"),
        ("one", "kl"),
        ("okddip", "kl"),
        ("ffl", "kl"),
        ("sp", "sp"),
        ("at", "at"),
        ("scd", "scd"),
    ] {
        let mut h = host_inputs(name, 4, 4.0, 1.0);
        let z0 = h.logits[0].clone();
        h.logits.iter_mut().for_each(|z| *z = z0.clone());
        h.teacher_logits = z0.clone();
        h.partner_logits = z0.clone();
        h.fused_logits = z0.clone();
        let e0 = h.embeddings[0].clone();
        h.embeddings.iter_mut().for_each(|e| *e = e0.clone());
        // KDCL's MinLogit teacher equals a student when the students agree: shift by the label
        // logit leaves the softmax unchanged.
        match name {
            "sp" | "at" => h.teacher_features = h.features.clone(),
            // Every stage the same (the attention map of a nearest-upsampled map is too).
            "scd" => {
                let (s, f) = h.features[2].clone();
                h.features = vec![(s, f.clone()), (s, f.clone()), (s, f)];
            }
            _ => {}
        }
        let e = eval(&Method::with_defaults(name).unwrap(), &h);
        let v = e.term(term);
        assert!(v.abs() < 1e-5, "{name}: term {term} = {v}");
    }
}

/// Nearest-neighbour ×2 upsampling of a `[b, c, h, w]` map.
fn nearest2x(
    shape: (usize, usize, usize, usize),
    x: &[f32],
) -> ((usize, usize, usize, usize), Vec<f32>) {
    let (b, c, h, w) = shape;
    let mut out = Vec::with_capacity(x.len() * 4);
    for bc in 0..b * c {
        for i in 0..2 * h {
            for j in 0..2 * w {
                out.push(x[bc * h * w + (i / 2) * w + j / 2]);
            }
        }
    }
    ((b, c, 2 * h, 2 * w), out)
}

#[test]
fn scd_is_invariant_to_the_spatial_size_of_the_maps() {
    for attention in ["sq_mean", "channel_softmax"] {
        for target in ["next", "deepest"] {
            let m = method("scd", json!({"attention": attention, "target": target}));
            let h = host_inputs("scd", 4, 2.0, 1.0);
            let mut up = h.clone();
            up.features = h.features.iter().map(|(s, f)| nearest2x(*s, f)).collect();
            let (a, b) = (eval(&m, &h).term("scd"), eval(&m, &up).term("scd"));
            assert!(a > 1e-3, "{attention}/{target}: {a}");
            assert!(
                close(a, b, 1e-4),
                "{attention}/{target}: {a} vs upsampled {b}"
            );
        }
    }
}

/// The batch repeated twice (labels too).
fn doubled(h: &Host) -> Host {
    let mut d = h.clone();
    d.b = 2 * h.b;
    d.labels = h.labels.iter().chain(&h.labels).cloned().collect();
    let dup = |v: &Vec<f32>| v.iter().chain(v).cloned().collect::<Vec<f32>>();
    d.logits = h.logits.iter().map(dup).collect();
    let dup4 = |(s, f): &HostMap| ((2 * s.0, s.1, s.2, s.3), dup(f));
    d.features = h.features.iter().map(dup4).collect();
    d.teacher_features = h.teacher_features.iter().map(dup4).collect();
    d.embeddings = h.embeddings.iter().map(dup).collect();
    d.teacher_logits = dup(&h.teacher_logits);
    d.partner_logits = dup(&h.partner_logits);
    d.fused_logits = dup(&h.fused_logits);
    d.gate.1 = dup(&h.gate.1);
    d.attention.1 = dup(&h.attention.1);
    d
}

/// Repeating the batch twice keeps each row of `gram` up to a factor `1/√2` and repeats it
/// 2×2: `‖ΔG‖²_F` doubles, so the `/b²` normalisation halves the term (a `/b` one would keep
/// it, no normalisation would double it). CE, a batch mean, is unchanged.
#[test]
fn sp_and_scd_are_normalised_by_b_squared() {
    for (name, term) in [("sp", "sp"), ("scd", "scd")] {
        let m = Method::with_defaults(name).unwrap();
        let h = host_inputs(name, 3, 2.0, 1.0);
        let (e1, e2) = (eval(&m, &h), eval(&m, &doubled(&h)));
        assert!(
            close(e2.term(term), e1.term(term) / 2.0, 1e-4),
            "{name}: {} vs {}",
            e2.term(term),
            e1.term(term)
        );
        assert!(close(e2.term("ce"), e1.term("ce"), 1e-5));
    }
}

// ---- Host reference of SCD (f64), for both attention variants and targets ----

fn att_host(
    shape: (usize, usize, usize, usize),
    f: &[f32],
    channel_softmax: bool,
) -> Vec<Vec<f64>> {
    let (b, c, h, w) = shape;
    let hw = h * w;
    (0..b)
        .map(|i| {
            let at = |ch: usize, p: usize| f[((i * c) + ch) * hw + p] as f64;
            if channel_softmax {
                let means: Vec<f64> = (0..c)
                    .map(|ch| (0..hw).map(|p| at(ch, p)).sum::<f64>() / hw as f64)
                    .collect();
                let mx = means.iter().cloned().fold(f64::MIN, f64::max);
                let s: f64 = means.iter().map(|m| (m - mx).exp()).sum();
                let wts: Vec<f64> = means.iter().map(|m| (m - mx).exp() / s).collect();
                (0..hw)
                    .map(|p| (0..c).map(|ch| wts[ch] * at(ch, p).abs()).sum())
                    .collect()
            } else {
                (0..hw)
                    .map(|p| (0..c).map(|ch| at(ch, p).powi(2)).sum::<f64>() / c as f64)
                    .collect()
            }
        })
        .collect()
}

fn gram_host(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter()
        .map(|r| {
            let row: Vec<f64> = a
                .iter()
                .map(|s| r.iter().zip(s).map(|(x, y)| x * y).sum())
                .collect();
            let n = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            row.iter().map(|v| v / n).collect()
        })
        .collect()
}

fn scd_host(h: &Host, beta: f64, deepest: bool, channel_softmax: bool) -> f64 {
    let gs: Vec<_> = h
        .features
        .iter()
        .map(|(s, f)| gram_host(&att_host(*s, f, channel_softmax)))
        .collect();
    let last = gs.len() - 1;
    let b = h.b as f64;
    let mut total = 0.0;
    for l in 0..last {
        let t = if deepest { &gs[last] } else { &gs[l + 1] };
        for (r, q) in gs[l].iter().zip(t) {
            total += r.iter().zip(q).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
        }
    }
    beta * total / (b * b)
}

#[test]
fn scd_targets_and_attention_options_match_a_host_reference() {
    let h = host_inputs("scd", 4, 2.0, 1.0);
    let mut seen = Vec::new();
    for attention in ["sq_mean", "channel_softmax"] {
        for target in ["next", "deepest"] {
            let m = method(
                "scd",
                json!({"beta": 100.0, "attention": attention, "target": target}),
            );
            let got = eval(&m, &h).term("scd");
            let want = scd_host(
                &h,
                100.0,
                target == "deepest",
                attention == "channel_softmax",
            ) as f32;
            assert!(
                close(got, want, 1e-4),
                "{attention}/{target}: {got} vs reference {want}"
            );
            seen.push(got);
        }
    }
    // The four configurations are really different.
    for i in 0..seen.len() {
        for j in 0..i {
            assert!(!close(seen[i], seen[j], 1e-3), "{seen:?}");
        }
    }
}

#[test]
fn scd_deepest_target_is_detached_and_decomposes_into_pairs() {
    let h = host_inputs("scd", 4, 2.0, 1.0);
    let pair = |a: usize, b: usize| {
        let mut p = h.clone();
        p.features = vec![h.features[a].clone(), h.features[b].clone()];
        eval(&method("scd", json!({})), &p).term("scd")
    };
    let deepest = eval(&method("scd", json!({"target": "deepest"})), &h);
    let next = eval(&method("scd", json!({"target": "next"})), &h);
    assert!(close(deepest.term("scd"), pair(0, 2) + pair(1, 2), 1e-4));
    assert!(close(next.term("scd"), pair(0, 1) + pair(1, 2), 1e-4));
    // The deepest stage only ever enters as a target.
    for e in [&deepest, &next] {
        assert!(e.grad("features.2").iter().all(|&g| g == 0.0));
        assert!(e.grad("features.0").iter().any(|&g| g != 0.0));
        assert!(e.grad("features.1").iter().any(|&g| g != 0.0));
    }
}

#[test]
fn params_default_to_methods_md_and_reject_unknown_fields() {
    let m = Method::with_defaults("scd").unwrap();
    assert_eq!(
        m.params(),
        &json!({"beta": 30.0, "target": "deepest", "attention": "sq_mean"})
    );
    assert_eq!(
        Method::with_defaults("kd").unwrap().params(),
        &json!({"T": 4.0, "alpha": 0.8999999761581421})
    );
    let e = Method::from_json("kd", &json!({"temperature": 2.0})).unwrap_err();
    assert!(
        e.contains("kd: bad params") && e.contains("temperature"),
        "{e}"
    );
    let kd = Method::from_json("kd", &json!({"T": 2.0})).unwrap();
    assert_eq!(kd.params()["T"], 2.0);
    assert_eq!(kd.params()["alpha"], 0.8999999761581421);
    assert!(Method::with_defaults("nope")
        .unwrap_err()
        .to_string()
        .contains("valid methods: ce"));
}

#[test]
fn a_missing_input_is_an_error_naming_it() {
    let dev = Cpu::default();
    let z = dev.tensor_from_vec(common::values(3, 10, 1.0), (2usize, 5usize));
    let inputs = kd_losses::LossInputs::<Cpu, common::Tr>::new(vec![0, 1], vec![z.leaky_trace()]);
    let err = Method::with_defaults("kd")
        .unwrap()
        .compute(inputs)
        .err()
        .unwrap();
    assert_eq!(
        err,
        kd_losses::LossError::missing("kd", "teacher_logits").to_string()
    );
}

/// 2×2 average pooling of a `[b, c, h, w]` map (what adaptive pooling to half size does).
fn avgpool2(shape: (usize, usize, usize, usize), x: &[f32]) -> HostMap {
    let (b, c, h, w) = shape;
    let (ho, wo) = (h / 2, w / 2);
    let mut out = Vec::with_capacity(b * c * ho * wo);
    for bc in 0..b * c {
        for i in 0..ho {
            for j in 0..wo {
                let at = |di: usize, dj: usize| x[bc * h * w + (2 * i + di) * w + 2 * j + dj];
                out.push((at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4.0);
            }
        }
    }
    ((b, c, ho, wo), out)
}

/// AT pools the larger *feature map* to the smaller size before `att`, on either side.
#[test]
fn at_pools_the_larger_feature_map() {
    let m = Method::with_defaults("at").unwrap();
    let h = host_inputs("at", 4, 2.0, 1.0);
    let mut big_teacher = h.clone();
    big_teacher.teacher_features = h
        .teacher_features
        .iter()
        .map(|(s, f)| nearest2x(*s, f))
        .collect();
    let mut pooled_teacher = h.clone();
    pooled_teacher.teacher_features = big_teacher
        .teacher_features
        .iter()
        .map(|(s, f)| avgpool2(*s, f))
        .collect();
    let (a, b) = (
        eval(&m, &big_teacher).term("at"),
        eval(&m, &pooled_teacher).term("at"),
    );
    assert!(a > 1e-2 && close(a, b, 1e-4), "{a} vs {b}");

    // Student larger than the teacher: the student's map is pooled (and still gets gradients).
    let mut big_student = h.clone();
    big_student.features = h.features.iter().map(|(s, f)| nearest2x(*s, f)).collect();
    let e = eval(&m, &big_student);
    assert!(close(e.term("at"), eval(&m, &h).term("at"), 1e-4));
    assert!(e.grad("features.0").iter().any(|&g| g != 0.0));
    assert!(e.grad("teacher_features.0").iter().all(|&g| g == 0.0));
}
