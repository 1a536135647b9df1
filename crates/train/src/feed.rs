//! How batches reach a model ([`Fed`]'s helpers, used by the methods' `feed`) and how an
//! evaluation forward becomes reported logits.

use crate::device::TrainDevice;
use crate::entry::Entry;
use crate::method::{Fed, Tp};
use dfdx::prelude::*;
use kd_losses::LossInputs;
use kd_models::{Map4, Mat, Mode, Model, Outputs};

impl<D: TrainDevice> Fed<'_, D> {
    /// Rows `range` of the batch as a device tensor.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Map4<D> {
        let (_, c, h, w) = self.shape;
        let per = c * h * w;
        self.dev.tensor_from_vec(
            self.images[range.start * per..range.end * per].to_vec(),
            (range.len(), c, h, w),
        )
    }

    /// Every row of the batch.
    pub fn all(&self) -> Map4<D> {
        self.rows(0..self.shape.0)
    }
}

/// One forward of every row in train mode, traced with the batch's gradients, and the
/// teacher's evaluation forward on the same rows when there is one (its outputs enter the loss
/// detached: `METHODS.md`'s `sg z_t`, `sg a_t`, `sg G_t`).
pub fn one_forward<D: TrainDevice, M: Model<D>>(
    model: &mut M,
    fed: Fed<'_, D>,
) -> LossInputs<D, Tp<D>> {
    let x = fed.all();
    let teacher = fed
        .teacher
        .map(|t| Model::forward_eval(t, x.clone()).retaped::<Tp<D>>());
    let out = model.forward(x.traced(fed.grads), Mode::Train);
    let mut inputs = LossInputs::of(fed.labels, out);
    inputs.teacher = teacher;
    inputs
}

/// A `[rows, cols]` tensor on the training tape.
type TapedMat<D> = Mat<D, Tp<D>>;

/// Rows `0..b` and `b..` of `x`; the first part keeps `x`'s tape.
pub fn split_rows<D: TrainDevice>(x: TapedMat<D>, b: usize) -> (TapedMat<D>, TapedMat<D>) {
    let n = x.shape().0;
    let (x, tape) = x.split_tape();
    let first = x.clone().put_tape(tape).slice((0..b, ..));
    let second = x.put_tape(Tp::<D>::default()).slice((b..n, ..));
    (first, second)
}

/// The mean of `zs`, accumulated in order (`Σ z_i / n` as `Σ (1/n) z_i`).
fn mean<D: TrainDevice>(zs: &[Mat<D>]) -> Mat<D> {
    let w = 1.0 / zs.len() as f32;
    let mut it = zs.iter();
    let first = it.next().expect("at least one").clone() * w;
    it.fold(first, |acc, z| acc + z.clone() * w)
}

/// The reported logits of an evaluation forward: the students' (named by `name`; `net` for a
/// single one), their mean as `ensemble` when there are several, and the fused logits as
/// `fused` when the model has them.
pub fn students_ensemble_fused<D: TrainDevice>(
    out: Outputs<D>,
    name: fn(usize) -> Entry,
) -> Vec<(Entry, Mat<D>)> {
    let n = out.logits.len();
    let mut v: Vec<(Entry, Mat<D>)> = Vec::with_capacity(n + 2);
    if n > 1 {
        v.push((Entry::Ensemble, mean(&out.logits)));
    }
    let students: Vec<(Entry, Mat<D>)> = if n == 1 {
        vec![(Entry::Net, out.logits[0].clone())]
    } else {
        out.logits
            .into_iter()
            .enumerate()
            .map(|(i, z)| (name(i), z))
            .collect()
    };
    v.splice(0..0, students);
    if let Some(f) = out.fused_logits {
        v.push((Entry::Fused, f));
    }
    v
}

/// Rows of `z` (`[n, k]`, row-major) whose arg-max is the label.
pub fn count_correct(z: &[f32], k: usize, labels: &[usize]) -> usize {
    z.chunks(k)
        .zip(labels)
        .filter(|(row, &y)| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .is_some_and(|(i, _)| i == y)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_argmax_hits() {
        let z = [0.1, 0.9, 0.0, 2.0, 1.0, 0.0];
        assert_eq!(count_correct(&z, 3, &[1, 0]), 2);
        assert_eq!(count_correct(&z, 3, &[0, 0]), 1);
    }

    #[test]
    fn reported_logits_name_students_ensemble_and_fused() {
        let dev = Cpu::default();
        let z = |v: f32| dev.tensor_from_vec(vec![v, 0.0], (1usize, 2usize));
        let mut out = Outputs::empty();
        out.logits = vec![z(1.0)];
        let one = students_ensemble_fused(out, Entry::Student);
        assert_eq!(one.iter().map(|e| e.0).collect::<Vec<_>>(), [Entry::Net]);
        let mut out = Outputs::empty();
        out.logits = vec![z(1.0), z(3.0)];
        out.fused_logits = Some(z(5.0));
        let all = students_ensemble_fused(out, Entry::Student);
        let names: Vec<Entry> = all.iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                Entry::Student(0),
                Entry::Student(1),
                Entry::Ensemble,
                Entry::Fused
            ]
        );
        assert_eq!(all[2].1.as_vec(), [2.0, 0.0]);
    }
}
