//! Evaluation of the op cases of `FIXTURES.md` (`{"op", "params", "inputs", "probe",
//! "expected": {"output", "grads"}, "tolerance"}`): the op runs on a device (the CPU unless
//! [`check_op_case_on`] names another), its gradients are those of `sum(output · probe)`, and
//! every value is compared with [`Report`].

use crate::cases::{JsonTensor, Report, Tolerance};
use crate::{generic, Conv2dCfg, OpsDevice, Pool2dCfg, Shape4};
use dfdx::prelude::*;
use serde_json::Value;

/// The ops a case may name.
pub const KNOWN_OPS: &[&str] = &[
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "upsample_bilinear2x",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The public API: the device's own implementation.
    Device,
    /// The device-generic compositions of [`generic`], called directly.
    Generic,
}

/// Evaluates one op case through the public API on `Cpu` (the fast kernels) and returns the
/// comparison report; `Err` for a malformed case or an unknown op (naming the known ones).
pub fn check_op_case(name: &str, case: &Value) -> Result<Report, String> {
    run_case(&Cpu::default(), name, case, Path::Device)
}

/// Like [`check_op_case`], through the device-generic compositions of [`generic`] on `Cpu`.
pub fn check_op_case_generic(name: &str, case: &Value) -> Result<Report, String> {
    run_case(&Cpu::default(), name, case, Path::Generic)
}

/// Like [`check_op_case`], through the public API on `dev` (e.g. `Cuda`: the GPU).
pub fn check_op_case_on<D: OpsDevice>(dev: &D, name: &str, case: &Value) -> Result<Report, String> {
    run_case(dev, name, case, Path::Device)
}

fn tensor(v: Option<&Value>, what: &str) -> Result<JsonTensor, String> {
    let v = v.ok_or_else(|| format!("missing tensor `{what}`"))?;
    serde_json::from_value(v.clone()).map_err(|e| format!("tensor `{what}`: {e}"))
}

fn shape4(t: &JsonTensor, what: &str) -> Result<Shape4, String> {
    match t.shape[..] {
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => Err(format!(
            "tensor `{what}` has shape {:?}, expected 4 dimensions",
            t.shape
        )),
    }
}

fn uparam(params: &Value, key: &str) -> Result<usize, String> {
    params
        .get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| format!("params.{key} is missing or not a non-negative integer"))
}

fn pair_param(params: &Value, key: &str) -> Result<(usize, usize), String> {
    match params.get(key) {
        Some(Value::Array(a)) if a.len() == 2 => {
            let g = |v: &Value| {
                v.as_u64()
                    .map(|v| v as usize)
                    .ok_or_else(|| format!("params.{key}: {a:?} is not two integers"))
            };
            Ok((g(&a[0])?, g(&a[1])?))
        }
        _ => uparam(params, key).map(|v| (v, v)),
    }
}

type GradOf<D> = Box<dyn Fn(&Gradients<f32, D>) -> Vec<f32>>;
type Traced<D> = Tensor<Shape4, f32, D, OwnedTape<f32, D>>;

fn run_case<D: OpsDevice>(dev: &D, name: &str, case: &Value, path: Path) -> Result<Report, String> {
    let op = case
        .get("op")
        .and_then(Value::as_str)
        .ok_or("the case has no string `op`")?;
    if !KNOWN_OPS.contains(&op) {
        return Err(format!(
            "unknown op `{op}`; known ops: {}",
            KNOWN_OPS.join(", ")
        ));
    }
    let tolerance: Tolerance = serde_json::from_value(
        case.get("tolerance")
            .cloned()
            .ok_or("missing `tolerance`")?,
    )
    .map_err(|e| format!("`tolerance`: {e}"))?;
    let empty = Value::Object(Default::default());
    let params = case.get("params").unwrap_or(&empty);
    let inputs = case.get("inputs").ok_or("missing `inputs`")?;
    let expected = case.get("expected").ok_or("missing `expected`")?;
    let want_out = tensor(expected.get("output"), "expected.output")?;
    let probe = tensor(case.get("probe"), "probe")?;

    let xj = tensor(inputs.get("x"), "inputs.x")?;
    let x = dev.tensor_from_vec(xj.to_f32("x")?, shape4(&xj, "inputs.x")?);
    let fast = path == Path::Device;
    let mut grads_of: Vec<(&str, GradOf<D>)> = Vec::new();
    let xg = x.clone();
    grads_of.push(("x", Box::new(move |g| g.get(&xg).as_vec())));

    let out: Traced<D> = match op {
        "conv2d" => {
            let wj = tensor(inputs.get("weight"), "inputs.weight")?;
            let w = dev.tensor_from_vec(wj.to_f32("weight")?, shape4(&wj, "inputs.weight")?);
            let b = match inputs.get("bias") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    let bj = tensor(Some(v), "inputs.bias")?;
                    Some(dev.tensor_from_vec(bj.to_f32("bias")?, (bj.data.len(),)))
                }
            };
            let (kh, kw) = pair_param(params, "k")?;
            if (kh, kw) != (w.shape().2, w.shape().3) {
                return Err(format!(
                    "params.k = {kh}x{kw} but the weight is {:?}",
                    w.shape()
                ));
            }
            let cfg = Conv2dCfg {
                stride: uparam(params, "stride")?,
                padding: uparam(params, "padding")?,
                dilation: uparam(params, "dilation")?,
                groups: uparam(params, "groups")?,
            };
            let wg = w.clone();
            grads_of.push(("weight", Box::new(move |g| g.get(&wg).as_vec())));
            if let Some(b) = &b {
                let bg = b.clone();
                grads_of.push(("bias", Box::new(move |g| g.get(&bg).as_vec())));
            }
            if fast {
                crate::conv2d(x.leaky_trace(), &w, b.as_ref(), cfg)
            } else {
                generic::conv2d(x.leaky_trace(), &w, b.as_ref(), cfg)
            }
        }
        "max_pool2d" | "avg_pool2d" => {
            let cfg = Pool2dCfg::new(
                uparam(params, "k")?,
                uparam(params, "stride")?,
                uparam(params, "padding")?,
            );
            match (op, fast) {
                ("max_pool2d", true) => crate::max_pool2d(x.leaky_trace(), cfg),
                ("max_pool2d", false) => generic::max_pool2d(x.leaky_trace(), cfg),
                (_, true) => crate::avg_pool2d(x.leaky_trace(), cfg),
                (_, false) => generic::avg_pool2d(x.leaky_trace(), cfg),
            }
        }
        "adaptive_avg_pool2d" => {
            let o = pair_param(params, "out")?;
            if fast {
                crate::adaptive_avg_pool2d(x.leaky_trace(), o)
            } else {
                generic::adaptive_avg_pool2d(x.leaky_trace(), o)
            }
        }
        "upsample_bilinear2x" => {
            if fast {
                crate::upsample_bilinear2x(x.leaky_trace())
            } else {
                generic::upsample_bilinear2x(x.leaky_trace())
            }
        }
        _ => unreachable!("checked against KNOWN_OPS"),
    };

    let out_shape = *out.shape();
    if want_out.shape != [out_shape.0, out_shape.1, out_shape.2, out_shape.3] {
        return Err(format!(
            "output has shape {out_shape:?}, the case expects {:?}",
            want_out.shape
        ));
    }
    if probe.shape != want_out.shape {
        return Err(format!(
            "probe has shape {:?}, the output {:?}",
            probe.shape, want_out.shape
        ));
    }
    let out_vals = out.as_vec();
    let p = dev.tensor_from_vec(probe.to_f32("probe")?, out_shape);
    let grads = (out * p).sum::<(), _>().backward();

    let mut report = Report::new(name, tolerance);
    report.compare("output", &out_vals, &want_out)?;
    let want_grads = expected
        .get("grads")
        .and_then(Value::as_object)
        .ok_or("missing `expected.grads`")?;
    for (gname, gval) in want_grads {
        let want = tensor(Some(gval), &format!("expected.grads.{gname}"))?;
        let (_, f) = grads_of.iter().find(|(n, _)| *n == gname).ok_or_else(|| {
            format!("the case expects a gradient of `{gname}`, which op `{op}` has no input for")
        })?;
        report.compare(&format!("grad.{gname}"), &f(&grads), &want)?;
    }
    Ok(report)
}
