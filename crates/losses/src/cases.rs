//! Evaluation of one reference loss case (`FIXTURES.md`, "Loss cases") on the CPU: the total,
//! every term and every input gradient against the expected values, within the case tolerance.

use crate::inputs::{LossInputs, Map4, Mat};
use crate::registry::{Method, METHOD_NAMES};
use dfdx::prelude::*;
use kd_ops::cases::{JsonTensor, Report, Tolerance};
use serde::Deserialize;
use std::collections::BTreeMap;

type Traced<S> = Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>;
type TracedInputs = LossInputs<Cpu, OwnedTape<f32, Cpu>>;

/// A loss case as stored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    method: String,
    #[serde(default)]
    params: serde_json::Value,
    inputs: BTreeMap<String, serde_json::Value>,
    expected: Expected,
    tolerance: Tolerance,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    total: f64,
    terms: BTreeMap<String, f64>,
    #[serde(default)]
    grads: BTreeMap<String, JsonTensor>,
}

/// A leaf input whose gradient the case may check, by its gradient name.
enum Leaf {
    Mat(Mat<Cpu>),
    Map4(Map4<Cpu>),
    Cube(Tensor<(usize, usize, usize), f32, Cpu>),
}

fn tensor(name: &str, v: &serde_json::Value) -> Result<(Vec<usize>, Vec<f32>), String> {
    let t: JsonTensor =
        serde_json::from_value(v.clone()).map_err(|e| format!("input `{name}`: {e}"))?;
    let data = t.to_f32(name)?;
    Ok((t.shape, data))
}

struct Builder {
    dev: Cpu,
    leaves: Vec<(String, Leaf)>,
}

impl Builder {
    fn mat(
        &mut self,
        name: String,
        v: &serde_json::Value,
    ) -> Result<Traced<(usize, usize)>, String> {
        let (shape, data) = tensor(&name, v)?;
        let [a, b] = shape[..] else {
            return Err(format!("input `{name}` must be 2-d, has shape {shape:?}"));
        };
        let t = self.dev.tensor_from_vec(data, (a, b));
        let traced = t.leaky_trace();
        self.leaves.push((name, Leaf::Mat(t)));
        Ok(traced)
    }

    fn map4(
        &mut self,
        name: String,
        v: &serde_json::Value,
    ) -> Result<Traced<(usize, usize, usize, usize)>, String> {
        let (shape, data) = tensor(&name, v)?;
        let [b, c, h, w] = shape[..] else {
            return Err(format!("input `{name}` must be 4-d, has shape {shape:?}"));
        };
        let t = self.dev.tensor_from_vec(data, (b, c, h, w));
        let traced = t.leaky_trace();
        self.leaves.push((name, Leaf::Map4(t)));
        Ok(traced)
    }

    fn cube(
        &mut self,
        name: String,
        v: &serde_json::Value,
    ) -> Result<Traced<(usize, usize, usize)>, String> {
        let (shape, data) = tensor(&name, v)?;
        let [a, b, c] = shape[..] else {
            return Err(format!("input `{name}` must be 3-d, has shape {shape:?}"));
        };
        let t = self.dev.tensor_from_vec(data, (a, b, c));
        let traced = t.leaky_trace();
        self.leaves.push((name, Leaf::Cube(t)));
        Ok(traced)
    }

    fn list<X>(
        &mut self,
        name: &str,
        v: &serde_json::Value,
        mut one: impl FnMut(&mut Self, String, &serde_json::Value) -> Result<X, String>,
    ) -> Result<Vec<X>, String> {
        let items = v
            .as_array()
            .ok_or(format!("input `{name}` must be a list of tensors"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, t)| one(self, format!("{name}.{i}"), t))
            .collect()
    }
}

/// Builds traced inputs from a case's `inputs` object, keeping the leaves by gradient name.
fn build_inputs(
    inputs: &BTreeMap<String, serde_json::Value>,
) -> Result<(TracedInputs, Vec<(String, Leaf)>), String> {
    let mut b = Builder {
        dev: Cpu::default(),
        leaves: Vec::new(),
    };
    let mut x = LossInputs::new(Vec::new(), Vec::new());
    for (key, v) in inputs {
        let name = key.clone();
        match key.as_str() {
            "labels" => {
                x.labels = serde_json::from_value(v.clone())
                    .map_err(|e| format!("input `labels` must be a list of class indices: {e}"))?
            }
            "epoch" => x.epoch = Some(v.as_f64().ok_or("input `epoch` must be a number")? as f32),
            "logits" => x.logits = b.list(key, v, Builder::mat)?,
            "embeddings" => x.embeddings = b.list(key, v, Builder::mat)?,
            "features" => x.features = b.list(key, v, Builder::map4)?,
            "teacher_features" => x.teacher_features = b.list(key, v, Builder::map4)?,
            "teacher_logits" => x.teacher_logits = Some(b.mat(name, v)?),
            "partner_logits" => x.partner_logits = Some(b.mat(name, v)?),
            "fused_logits" => x.fused_logits = Some(b.mat(name, v)?),
            "gate" => x.gate = Some(b.mat(name, v)?),
            "attention" => x.attention = Some(b.cube(name, v)?),
            other => return Err(format!("unknown input `{other}`")),
        }
    }
    Ok((x, b.leaves))
}

/// Evaluates one loss case (`FIXTURES.md`) on the CPU: compares the total, every expected term
/// and every expected input gradient (`x.0`, `x.1`, ... for list inputs; a single tensor input
/// keeps its name) within the case's tolerance. `Err` for a malformed case, an unknown method
/// (listing the valid ones), a missing or unexpected term, or a gradient of no input.
pub fn check_loss_case(name: &str, case: &serde_json::Value) -> Result<Report, String> {
    let case: Case =
        serde_json::from_value(case.clone()).map_err(|e| format!("not a loss case: {e}"))?;
    if !METHOD_NAMES.contains(&case.method.as_str()) {
        return Err(format!(
            "unknown method `{}`; valid methods: {}",
            case.method,
            METHOD_NAMES.join(", ")
        ));
    }
    let method = Method::from_json(&case.method, &case.params).map_err(|e| e.to_string())?;
    let (inputs, leaves) = build_inputs(&case.inputs)?;
    let out = method.compute(inputs).map_err(|e| e.to_string())?;

    let mut report = Report::new(name, case.tolerance);
    report.compare_value("total", 0, out.total_value() as f64, case.expected.total);
    let got_terms = out.term_values();
    for (term, &want) in &case.expected.terms {
        let got = got_terms.iter().find(|(n, _)| n == term).ok_or(format!(
            "{}: no term `{term}` (it reports {got_terms:?})",
            case.method
        ))?;
        report.compare_value(&format!("terms.{term}"), 0, got.1 as f64, want);
    }
    if let Some((extra, _)) = got_terms
        .iter()
        .find(|(n, _)| !case.expected.terms.contains_key(*n))
    {
        return Err(format!(
            "{}: term `{extra}` is not in the case",
            case.method
        ));
    }

    let mut grads = out.total.backward();
    for (gname, want) in &case.expected.grads {
        let (_, leaf) = leaves
            .iter()
            .find(|(n, _)| n == gname)
            .ok_or(format!("gradient `{gname}` names no input"))?;
        // An input that enters only detached has no gradient entry: it is zero.
        let got = match leaf {
            Leaf::Mat(t) => {
                grads.get_or_alloc_mut(t).map_err(|e| format!("{e:?}"))?;
                grads.get(t).as_vec()
            }
            Leaf::Map4(t) => {
                grads.get_or_alloc_mut(t).map_err(|e| format!("{e:?}"))?;
                grads.get(t).as_vec()
            }
            Leaf::Cube(t) => {
                grads.get_or_alloc_mut(t).map_err(|e| format!("{e:?}"))?;
                grads.get(t).as_vec()
            }
        };
        report.compare(&format!("grad {gname}"), &got, want)?;
    }
    Ok(report)
}
