//! Shared test helpers: deterministic pseudo-random inputs for every method, and evaluation with
//! every input traced so that all gradients can be inspected.
#![allow(dead_code)]

use dfdx::prelude::*;
use kd_losses::{LossInputs, LossOutput, Outputs};

/// A registered method with its loss parameters, whose loss is kd-train's registry's.
#[derive(Debug, Clone, PartialEq)]
pub struct Method {
    name: String,
    params: serde_json::Value,
}

impl Method {
    /// `name` with `METHODS.md`'s defaults.
    pub fn with_defaults(name: &str) -> Result<Self, String> {
        Self::from_json(name, &serde_json::json!({}))
    }

    /// `name` with `params` (checked).
    pub fn from_json(name: &str, params: &serde_json::Value) -> Result<Self, String> {
        let info = kd_train::methods::info(name).map_err(|e| e.to_string())?;
        let params = info.resolve_params(params)?;
        Ok(Self {
            name: name.into(),
            params,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resolved parameters.
    pub fn params(&self) -> &serde_json::Value {
        &self.params
    }

    pub fn compute(&self, inputs: LossInputs<Cpu, Tr>) -> Result<LossOutput<Cpu, Tr>, String> {
        kd_train::methods::loss(&self.name, &self.params, inputs).map_err(|e| e.to_string())
    }
}

pub type Tr = OwnedTape<f32, Cpu>;

/// Deterministic values in `[-scale, scale)` (64-bit LCG).
pub fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A host feature map: its `[b, c, h, w]` shape and row-major data.
pub type HostMap = ((usize, usize, usize, usize), Vec<f32>);

/// Host data for one method's inputs (see [`host_inputs`]).
#[derive(Clone)]
pub struct Host {
    pub b: usize,
    pub k: usize,
    pub labels: Vec<usize>,
    pub logits: Vec<Vec<f32>>,
    pub embeddings: Vec<Vec<f32>>,
    /// Stage maps with their shapes `[b, c, h, w]`.
    pub features: Vec<HostMap>,
    pub teacher_features: Vec<HostMap>,
    pub teacher_logits: Vec<f32>,
    pub partner_logits: Vec<f32>,
    pub fused_logits: Vec<f32>,
    pub gate: (usize, Vec<f32>),
    pub attention: (usize, Vec<f32>),
    pub epoch: f32,
}

fn softmax_rows(x: &mut [f32], n: usize) {
    for row in x.chunks_mut(n) {
        let m = row.iter().cloned().fold(f32::MIN, f32::max);
        let s: f32 = row.iter().map(|v| (v - m).exp()).sum();
        row.iter_mut().for_each(|v| *v = (*v - m).exp() / s);
    }
}

/// Inputs every method accepts: `b` anchors, `k = 5` classes, logits of magnitude
/// `logit_scale`, three stages (8×8, 4×4, 2×2) of non-negative features (post-ReLU) of
/// magnitude `feature_scale` (0 gives zero maps).
pub fn host_inputs(method: &str, b: usize, logit_scale: f32, feature_scale: f32) -> Host {
    let k = 5;
    let n_logits = match method {
        "ce" | "scd" | "sad" | "cskd" | "kd" | "at" | "sp" => 1,
        "ddgsd" => 2,
        "okddip" | "byot" => 4,
        _ => 3,
    };
    let mut seed = 7;
    let mut next = |n: usize, scale: f32| {
        seed += 1;
        values(seed, n, scale)
    };
    let stages = |next: &mut dyn FnMut(usize, f32) -> Vec<f32>, c0: usize| {
        [(c0, 8), (c0 + 1, 4), (c0 + 2, 2)]
            .iter()
            .map(|&(c, s)| {
                let v = next(b * c * s * s, feature_scale)
                    .iter()
                    .map(|v| v.abs())
                    .collect();
                ((b, c, s, s), v)
            })
            .collect::<Vec<_>>()
    };
    let logits = (0..n_logits).map(|_| next(b * k, logit_scale)).collect();
    let embeddings = (0..n_logits)
        .map(|_| next(b * 6, 1.0).iter().map(|v| v.abs()).collect())
        .collect();
    let features = stages(&mut next, 2);
    let teacher_features = stages(&mut next, 3);
    let m = n_logits;
    let mut gate = next(b * m, 2.0);
    softmax_rows(&mut gate, m);
    let p = n_logits.saturating_sub(1).max(1);
    let mut attention = next(b * p * p, 2.0);
    softmax_rows(&mut attention, p);
    Host {
        b,
        k,
        labels: (0..b).map(|i| (i * 3 + 1) % k).collect(),
        logits,
        embeddings,
        features,
        teacher_features,
        teacher_logits: next(b * k, logit_scale),
        partner_logits: next(b * k, logit_scale),
        fused_logits: next(b * k, logit_scale),
        gate: (m, gate),
        attention: (p, attention),
        epoch: 10.0,
    }
}

/// A traced input, kept to read its gradient.
pub enum Leaf {
    Mat(Tensor<(usize, usize), f32, Cpu>),
    Map4(Tensor<(usize, usize, usize, usize), f32, Cpu>),
    Cube(Tensor<(usize, usize, usize), f32, Cpu>),
}

/// The result of one evaluation: total, terms, and every input's gradient by name.
pub struct Eval {
    pub total: f32,
    pub terms: Vec<(&'static str, f32)>,
    pub grads: Vec<(String, Vec<f32>)>,
}

impl Eval {
    pub fn term(&self, name: &str) -> f32 {
        self.terms
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no term {name}"))
            .1
    }
    pub fn grad(&self, name: &str) -> &[f32] {
        &self
            .grads
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no grad {name}"))
            .1
    }
}

/// Evaluates `method` on `host` with every input traced, and back-propagates.
pub fn eval(method: &Method, host: &Host) -> Eval {
    let dev = Cpu::default();
    let mut leaves: Vec<(String, Leaf)> = Vec::new();
    let mut mat = |name: String, data: &[f32], cols: usize| {
        let t = dev.tensor_from_vec(data.to_vec(), (data.len() / cols, cols));
        let traced: Tensor<(usize, usize), f32, Cpu, Tr> = t.leaky_trace();
        leaves.push((name, Leaf::Mat(t)));
        traced
    };
    let logits = host
        .logits
        .iter()
        .enumerate()
        .map(|(i, z)| mat(format!("logits.{i}"), z, host.k))
        .collect();
    let embeddings = host
        .embeddings
        .iter()
        .enumerate()
        .map(|(i, e)| mat(format!("embeddings.{i}"), e, 6))
        .collect();
    let teacher_logits = Some(mat("teacher_logits".into(), &host.teacher_logits, host.k));
    let partner_logits = Some(mat("partner_logits".into(), &host.partner_logits, host.k));
    let fused_logits = Some(mat("fused_logits".into(), &host.fused_logits, host.k));
    let gate = Some(mat("gate".into(), &host.gate.1, host.gate.0));
    let mut map4 = |name: String, shape: (usize, usize, usize, usize), data: &[f32]| {
        let t = dev.tensor_from_vec(data.to_vec(), shape);
        let traced: Tensor<_, f32, Cpu, Tr> = t.leaky_trace();
        leaves.push((name, Leaf::Map4(t)));
        traced
    };
    let features = host
        .features
        .iter()
        .enumerate()
        .map(|(i, (s, f))| map4(format!("features.{i}"), *s, f))
        .collect();
    let teacher_features = host
        .teacher_features
        .iter()
        .enumerate()
        .map(|(i, (s, f))| map4(format!("teacher_features.{i}"), *s, f))
        .collect();
    let p = host.attention.0;
    let att = dev.tensor_from_vec(host.attention.1.clone(), (host.b, p, p));
    let attention = Some(att.leaky_trace());
    leaves.push(("attention".into(), Leaf::Cube(att)));
    let mut out = Outputs::empty();
    (out.logits, out.features, out.embeddings) = (logits, features, embeddings);
    (out.fused_logits, out.gate, out.attention) = (fused_logits, gate, attention);
    let mut teacher = Outputs::empty();
    (teacher.logits, teacher.features) = (teacher_logits.into_iter().collect(), teacher_features);
    let mut partner = Outputs::empty();
    partner.logits = partner_logits.into_iter().collect();
    let mut inputs = LossInputs::<Cpu, Tr>::of(host.labels.clone(), out);
    (inputs.teacher, inputs.partner) = (Some(teacher), Some(partner));
    inputs.epoch = Some(host.epoch);
    let out = method
        .compute(inputs)
        .unwrap_or_else(|e| panic!("{}: {e}", method.name()));
    let total = out.total_value();
    let terms = out.term_values();
    let mut g = out.total.backward();
    let grads = leaves
        .into_iter()
        .map(|(name, leaf)| {
            let v = match &leaf {
                Leaf::Mat(t) => {
                    g.get_or_alloc_mut(t).unwrap();
                    g.get(t).as_vec()
                }
                Leaf::Map4(t) => {
                    g.get_or_alloc_mut(t).unwrap();
                    g.get(t).as_vec()
                }
                Leaf::Cube(t) => {
                    g.get_or_alloc_mut(t).unwrap();
                    g.get(t).as_vec()
                }
            };
            (name, v)
        })
        .collect();
    Eval {
        total,
        terms,
        grads,
    }
}

/// Asserts that the total, every term and every gradient are finite.
pub fn assert_finite(what: &str, e: &Eval) {
    assert!(e.total.is_finite(), "{what}: total {}", e.total);
    for (n, v) in &e.terms {
        assert!(v.is_finite(), "{what}: term {n} = {v}");
    }
    for (n, g) in &e.grads {
        assert!(
            g.iter().all(|v| v.is_finite()),
            "{what}: gradient {n} is not finite: {g:?}"
        );
    }
}
