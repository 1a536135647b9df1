//! Evaluation: test accuracy per reported entry (evaluation mode: BatchNorm running
//! statistics), each entry as the method's [`Method::evaluate`] names it (`METHODS.md`:
//! "Every student and the ensemble are evaluated and reported").

use crate::device::TrainDevice;
use crate::entry::Entry;
use crate::feed::count_correct;
use crate::method::Method;
use dfdx::prelude::*;
use indicatif::ProgressBar;
use kd_data::Loader;
use kd_models::Model;

/// The reported entries of `net` and their test accuracy (%) on `test`.
pub(crate) fn evaluate<M: Method, D: TrainDevice>(
    net: &M::Model<D>,
    dev: &D,
    test: &Loader,
    bar: &ProgressBar,
) -> (Vec<Entry>, Vec<f64>) {
    let n = test.set().len();
    let mut entries: Vec<Entry> = Vec::new();
    let mut correct: Vec<usize> = Vec::new();
    for batch in test.epoch(0) {
        let (rows, c, h, w) = batch.shape();
        let x = dev.tensor_from_vec(batch.images, (rows, c, h, w));
        let labels: Vec<usize> = batch.labels.iter().map(|&y| y as usize).collect();
        let reported = M::evaluate(Model::forward_eval(net, x));
        if entries.is_empty() {
            entries = reported.iter().map(|(e, _)| *e).collect();
            correct = vec![0; entries.len()];
        }
        for (acc, (_, z)) in correct.iter_mut().zip(&reported) {
            *acc += count_correct(&z.as_vec(), z.shape().1, &labels);
        }
        bar.inc(1);
    }
    let acc = correct
        .iter()
        .map(|&k| 100.0 * k as f64 / n.max(1) as f64)
        .collect();
    (entries, acc)
}
