//! A method from outside kd-train, in this one file: a loss (cross-entropy with label
//! smoothing, its own parameter struct) and a method that trains it on one plain network. It is
//! trained without registering it (`kd_train::train_method`), on real Fashion-MNIST, through
//! the same loop, evaluation, checkpoints and metrics as the registered methods.

use dfdx::prelude::*;
use kd_losses::helpers::{attach, ce};
use kd_losses::{Loss, LossError, LossInputs, Terms};
use kd_models::Network;
use kd_ops::OpsDevice;
use kd_train::device::TrainDevice;
use kd_train::method::{About, Method, Protocol};
use kd_train::{Entry, RunOptions, TrainConfig};
use serde::{Deserialize, Serialize};

/// `ε` of the smoothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SmoothParams {
    epsilon: f32,
}

impl Default for SmoothParams {
    fn default() -> Self {
        Self { epsilon: 0.1 }
    }
}

/// `L = (1 − ε) CE(z, y) + ε · mean_k(−log softmax(z)_k)`, as terms `ce` and `smooth`.
struct SmoothLoss;

impl Loss for SmoothLoss {
    type Params = SmoothParams;
    fn terms<D: OpsDevice, T: Tape<f32, D>>(
        p: &SmoothParams,
        x: &LossInputs<D>,
    ) -> Result<Terms<D, T>, LossError> {
        let z = &x.logits_list("toy", 1)?[0];
        let y = x.labels_for("toy", z)?;
        let uniform = attach::<_, _, T>(z)
            .log_softmax::<Axis<1>>()
            .mean::<(), _>()
            .negate();
        let mut terms = Terms::new();
        terms.add("ce", ce(attach::<_, _, T>(z), &y) * (1.0 - p.epsilon));
        terms.add("smooth", uniform * p.epsilon);
        Ok(terms)
    }
}

struct Toy;

impl Method for Toy {
    const ABOUT: About = About::new("toy", Protocol::SelfDistillation);
    type Loss = SmoothLoss;
    type Model<D: TrainDevice> = Network<D>;
}

#[test]
fn a_method_defined_outside_the_crate_trains_on_real_data() {
    let fashion = kd_data::require_fashion_mnist!();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig {
        method: "toy".into(),
        dataset: "fashion-mnist".into(),
        arch: Some("resnet20".into()),
        epochs: Some(2),
        batch_size: 32,
        seed: 1,
        loss: serde_json::json!({"epsilon": 0.2}),
        ..Default::default()
    };
    cfg.optim.lr = 0.03;
    cfg.schedule.milestones = Some(vec![1]);
    cfg.data.augment = kd_data::Augment::none();
    (cfg.data.limit_train, cfg.data.limit_test) = (Some(3000), Some(1000));
    cfg.data.dir = Some(fashion);
    let opts = RunOptions {
        runs_dir: dir.path().to_path_buf(),
        progress: false,
        ..Default::default()
    };
    let run = dir.path().join("toy-run");
    let r = kd_train::train_method::<Toy>(cfg, &run, &opts).unwrap();
    assert_eq!(r.summary.students, [Entry::Net]);
    assert_eq!(r.summary.epochs_done, 2);
    let acc = r.summary.last.test_acc[0];
    assert!(acc > 70.0, "test accuracy {acc}%");
    // Its parameters were resolved and saved; its terms are in the metrics.
    let saved = std::fs::read_to_string(run.join("config.ron")).unwrap();
    assert!(saved.contains("\"epsilon\": 0.2"), "{saved}");
    let m = kd_train::metrics::Metrics::load(&run).unwrap();
    assert_eq!(m.term_names(), ["ce", "smooth"]);
    assert!(m.rows[1].terms[1].1 > 0.0);
    // An unknown parameter is refused, naming it.
    let mut bad = TrainConfig {
        method: "toy".into(),
        ..Default::default()
    };
    bad.loss = serde_json::json!({"epsilon": 0.1, "temperature": 2.0});
    let e = kd_train::train_method::<Toy>(bad, &dir.path().join("bad"), &opts).unwrap_err();
    assert!(format!("{e:#}").contains("temperature"), "{e:#}");
}
