//! Reference cases (`../shared/spec/FIXTURES.md`): the JSON tensor format, the tolerance rule
//! `|got − want| ≤ abs + rel·|want|`, and a per-case report. Shared by the op cases here and the
//! loss cases of `kd-losses`, and by `cargo xtask check`.

use serde::Deserialize;

/// A row-major tensor as stored in a case file.
#[derive(Debug, Clone, Deserialize)]
pub struct JsonTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl JsonTensor {
    /// The data as f32, after checking that `data` has `prod(shape)` elements.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>, String> {
        let n: usize = self.shape.iter().product();
        if n != self.data.len() {
            return Err(format!(
                "tensor `{name}`: shape {:?} needs {n} values, found {}",
                self.shape,
                self.data.len()
            ));
        }
        Ok(self.data.iter().map(|&v| v as f32).collect())
    }
}

/// The tolerance of a case.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Tolerance {
    pub rel: f64,
    pub abs: f64,
}

/// The worst element of one compared quantity.
#[derive(Debug, Clone)]
pub struct Worst {
    pub name: String,
    pub index: usize,
    pub got: f64,
    pub want: f64,
    /// `|got − want| / (abs + rel·|want|)`: above 1 is a failure.
    pub ratio: f64,
}

/// The outcome of one case: every compared value, the worst one, and whether all are within
/// tolerance.
#[derive(Debug, Clone)]
pub struct Report {
    pub case: String,
    pub tolerance: Tolerance,
    pub compared: usize,
    pub worst: Option<Worst>,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
}

impl Report {
    pub fn new(case: impl Into<String>, tolerance: Tolerance) -> Self {
        Self {
            case: case.into(),
            tolerance,
            compared: 0,
            worst: None,
            max_abs_err: 0.0,
            max_rel_err: 0.0,
        }
    }

    /// Compares `got` against `want` element-wise (shapes must agree in element count).
    pub fn compare(&mut self, name: &str, got: &[f32], want: &JsonTensor) -> Result<(), String> {
        if got.len() != want.data.len() {
            return Err(format!(
                "{}: `{name}` has {} values, the case expects {} (shape {:?})",
                self.case,
                got.len(),
                want.data.len(),
                want.shape
            ));
        }
        for (i, (&g, &w)) in got.iter().zip(&want.data).enumerate() {
            self.compare_value(name, i, g as f64, w);
        }
        Ok(())
    }

    /// Compares one scalar.
    pub fn compare_value(&mut self, name: &str, index: usize, got: f64, want: f64) {
        let err = (got - want).abs();
        let bound = self.tolerance.abs + self.tolerance.rel * want.abs();
        // NaN compares false everywhere: make it the worst possible.
        let ratio = if err.is_nan() {
            f64::INFINITY
        } else {
            err / bound
        };
        self.compared += 1;
        self.max_abs_err = self
            .max_abs_err
            .max(if err.is_nan() { f64::INFINITY } else { err });
        if want != 0.0 {
            self.max_rel_err = self.max_rel_err.max(err / want.abs());
        }
        if self.worst.as_ref().is_none_or(|w| ratio > w.ratio) {
            self.worst = Some(Worst {
                name: name.to_string(),
                index,
                got,
                want,
                ratio,
            });
        }
    }

    /// True when every compared value is within tolerance (and at least one was compared).
    pub fn ok(&self) -> bool {
        self.compared > 0 && self.worst.as_ref().is_some_and(|w| w.ratio <= 1.0)
    }

    /// One line: `ok` or the worst error and where it is.
    pub fn line(&self) -> String {
        match (&self.worst, self.ok()) {
            (_, true) => format!(
                "ok    {} ({} values, max abs err {:.3e}, max rel err {:.3e})",
                self.case, self.compared, self.max_abs_err, self.max_rel_err
            ),
            (Some(w), false) => format!(
                "FAIL  {}: {}[{}] = {:.9e}, expected {:.9e} ({:.1}x the tolerance; max abs err {:.3e}, max rel err {:.3e})",
                self.case, w.name, w.index, w.got, w.want, w.ratio, self.max_abs_err, self.max_rel_err
            ),
            (None, false) => format!("FAIL  {}: nothing was compared", self.case),
        }
    }
}
