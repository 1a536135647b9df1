//! Evaluation of one reference loss case (`FIXTURES.md`, "Loss cases") on the CPU: the total,
//! every term and every input gradient against the expected values, within the case tolerance.
//! The method is named by the case; which terms function that is, is the caller's (kd-train's
//! registry: `kd_train::methods::check_loss_case`).

use crate::inputs::{LossInputs, LossOutput, Map4, Mat, Outputs};
use dfdx::prelude::*;
use kd_ops::cases::{JsonTensor, Report, Tolerance};
use serde::Deserialize;
use std::collections::BTreeMap;

type Traced<S> = Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>;
/// Loss inputs on the CPU whose tensors are traced (their gradients are checked).
pub type TracedInputs = LossInputs<Cpu, OwnedTape<f32, Cpu>>;
/// A loss computed on [`TracedInputs`].
pub type TracedOutput = LossOutput<Cpu, OwnedTape<f32, Cpu>>;

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
    let (mut teacher, mut partner) = (Outputs::empty(), Outputs::empty());
    for (key, v) in inputs {
        let name = key.clone();
        match key.as_str() {
            "labels" => {
                x.labels = serde_json::from_value(v.clone())
                    .map_err(|e| format!("input `labels` must be a list of class indices: {e}"))?
            }
            "epoch" => x.epoch = Some(v.as_f64().ok_or("input `epoch` must be a number")? as f32),
            "logits" => x.out.logits = b.list(key, v, Builder::mat)?,
            "embeddings" => x.out.embeddings = b.list(key, v, Builder::mat)?,
            "features" => x.out.features = b.list(key, v, Builder::map4)?,
            "fused_logits" => x.out.fused_logits = Some(b.mat(name, v)?),
            "gate" => x.out.gate = Some(b.mat(name, v)?),
            "attention" => x.out.attention = Some(b.cube(name, v)?),
            "teacher_features" => teacher.features = b.list(key, v, Builder::map4)?,
            "teacher_logits" => teacher.logits = vec![b.mat(name, v)?],
            "partner_logits" => partner.logits = vec![b.mat(name, v)?],
            other => return Err(format!("unknown input `{other}`")),
        }
    }
    let given =
        |o: &Outputs<Cpu, OwnedTape<f32, Cpu>>| !o.logits.is_empty() || !o.features.is_empty();
    x.teacher = given(&teacher).then_some(teacher);
    x.partner = given(&partner).then_some(partner);
    Ok((x, b.leaves))
}

/// Evaluates one loss case (`FIXTURES.md`) on the CPU: `compute(method, params, inputs)`
/// computes the loss the case names; the total, every expected term and every expected input
/// gradient (`x.0`, `x.1`, ... for list inputs; a single tensor input keeps its name) are
/// compared within the case's tolerance. `Err` for a malformed case, an error of `compute`
/// (an unknown method, say), a missing or unexpected term, or a gradient of no input.
pub fn check_case(
    name: &str,
    case: &serde_json::Value,
    compute: impl FnOnce(&str, &serde_json::Value, TracedInputs) -> Result<TracedOutput, String>,
) -> Result<Report, String> {
    let case: Case =
        serde_json::from_value(case.clone()).map_err(|e| format!("not a loss case: {e}"))?;
    let (inputs, leaves) = build_inputs(&case.inputs)?;
    let out = compute(&case.method, &case.params, inputs)?;

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
