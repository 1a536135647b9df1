//! Runs on a tiny real subset (Fashion-MNIST from Debian's `dataset-fashion-mnist`, installed
//! at /usr/share/datasets/fashion-mnist): exact resume, the non-finite-loss stop, every
//! trainable method end to end, and a missing dataset's error.

use dfdx::nn::LoadFromSafetensors;
use dfdx::prelude::*;
use kd_models::{build_network, NetConfig, Network};
use kd_train::optim::named_tensors;
use kd_train::{resume, train, CheckpointState, RunOptions, TrainConfig};
use std::path::Path;
use std::sync::atomic::AtomicBool;

const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

/// `method` on 256 training and 128 test images, resnet20 with 1 channel, 2 epochs.
fn tiny(method: &str, sets: &[&str]) -> TrainConfig {
    let mut all = vec![
        "dataset=fashion-mnist".to_string(),
        "arch=resnet20".into(),
        "epochs=2".into(),
        "batch_size=64".into(),
        "eval_batch_size=128".into(),
        "data.limit_train=256".into(),
        "data.limit_test=128".into(),
        "seed=3".into(),
        format!("data.dir=\"{FMNIST}\""),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    TrainConfig::for_method(method)
        .unwrap()
        .with_overrides(&all)
        .unwrap()
}

fn opts(dir: &Path) -> RunOptions {
    RunOptions {
        runs_dir: dir.to_path_buf(),
        datasets_dir: dir.join("no-datasets"),
        progress: false,
        stop_after: None,
        interrupt: None,
    }
}

fn weights(run_dir: &Path, name: &str) -> Vec<(String, Vec<f32>)> {
    let mut net: Network<Cpu> =
        build_network(&Cpu::default(), "resnet20", NetConfig::new(10, 1)).unwrap();
    net.load_safetensors(
        run_dir
            .join("checkpoints")
            .join(name)
            .join("model.safetensors"),
    )
    .unwrap();
    named_tensors(&net)
}

fn velocities(run_dir: &Path) -> Vec<(String, Vec<f32>)> {
    let mut net: Network<Cpu> =
        build_network(&Cpu::default(), "resnet20", NetConfig::new(10, 1)).unwrap();
    net.load_safetensors(run_dir.join("checkpoints/last/optimizer.safetensors"))
        .unwrap();
    named_tensors(&net)
}

fn state(run_dir: &Path) -> CheckpointState {
    let text = std::fs::read_to_string(run_dir.join("checkpoints/last/state.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A 2-epoch CE run in `<dir>/a`, and the same run stopped after epoch 1 in `<dir>/b`.
fn straight_and_stopped(dir: &Path) -> (kd_train::RunResult, kd_train::RunResult) {
    let straight = train(tiny("ce", &[]), &opts(&dir.join("a"))).unwrap();
    let stopped = train(
        tiny("ce", &[]),
        &RunOptions {
            stop_after: Some(1),
            ..opts(&dir.join("b"))
        },
    )
    .unwrap();
    (straight, stopped)
}

#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    kd_data::require_fashion_mnist!();
    let t = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (straight, stopped) = straight_and_stopped(dir.path());
    assert_eq!(straight.summary.epochs_done, 2);
    assert_eq!(stopped.summary.epochs_done, 1);
    assert_eq!(state(&stopped.run_dir).epochs_done, 1);
    let resumed = resume(&stopped.run_dir, &opts(dir.path())).unwrap();
    assert_eq!(resumed.run_dir, stopped.run_dir);
    assert_eq!(resumed.summary.epochs_done, 2);

    let (a, b) = (&straight.run_dir, &resumed.run_dir);
    assert_eq!(weights(a, "last"), weights(b, "last"), "weights differ");
    assert_eq!(velocities(a), velocities(b), "velocities differ");
    assert_eq!(state(a), state(b));
    assert_eq!(straight.summary.last, resumed.summary.last);
    assert_eq!(straight.summary.best, resumed.summary.best);
    // Evaluating the saved checkpoint reproduces the run's last test accuracy.
    let eval = kd_train::evaluate_run(b, "last", &opts(dir.path())).unwrap();
    assert_eq!(eval.summary.last.test_acc, resumed.summary.last.test_acc);
    assert!(b.join("eval-last.json").is_file());

    // The run folder has everything, and metrics.csv one row per epoch under one header.
    for f in ["config.ron", "log.txt", "metrics.csv", "summary.json"] {
        assert!(b.join(f).is_file(), "{f}");
    }
    assert!(b.join("checkpoints/best/model.safetensors").is_file());
    let csv = std::fs::read_to_string(b.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert_eq!(
        lines[0],
        "epoch,lr,loss,loss_ce,train_acc,test_acc_net,images_per_s,seconds"
    );
    assert!(lines[2].starts_with("2,"));
    let name = b.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("ce-fashion-mnist-resnet20-s3-"), "{name}");
    let log = std::fs::read_to_string(b.join("log.txt")).unwrap();
    assert!(log.contains("resuming after epoch 1"), "{log}");
    eprintln!("resume test: {:.1}s", t.elapsed().as_secs_f64());
}

#[test]
fn an_interruption_inside_an_epoch_resumes_exactly() {
    kd_data::require_fashion_mnist!();
    // A flag raised before the start (as Ctrl-C would): the run stops after its first step.
    static RAISED: AtomicBool = AtomicBool::new(true);
    let dir = tempfile::tempdir().unwrap();
    let sets = ["data.limit_train=128", "batch_size=32"];
    let straight = train(tiny("cskd", &sets), &opts(&dir.path().join("a"))).unwrap();
    let cut = train(
        tiny("cskd", &sets),
        &RunOptions {
            interrupt: Some(&RAISED),
            ..opts(&dir.path().join("b"))
        },
    )
    .unwrap();
    assert_eq!(cut.summary.epochs_done, 0);
    let st = state(&cut.run_dir);
    assert_eq!((st.epochs_done, st.steps), (0, 1));
    assert_eq!(st.partial.as_ref().unwrap().batches_done, 1);
    let resumed = resume(&cut.run_dir, &opts(dir.path())).unwrap();
    let (a, b) = (&straight.run_dir, &resumed.run_dir);
    assert_eq!(weights(a, "last"), weights(b, "last"), "weights differ");
    assert_eq!(velocities(a), velocities(b), "velocities differ");
    assert_eq!(state(a), state(b));
    // Same epoch metrics (loss terms, accuracies), apart from the timings.
    let rows = |d: &Path| -> Vec<String> {
        std::fs::read_to_string(d.join("metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplitn(3, ',').last().unwrap().to_string())
            .collect()
    };
    assert_eq!(rows(a), rows(b));
}

#[test]
fn resume_is_exact_for_an_online_method_with_a_fusion_module() {
    kd_data::require_fashion_mnist!();
    let dir = tempfile::tempdir().unwrap();
    let sets = ["data.limit_train=128", "batch_size=32"];
    let straight = train(tiny("ffl", &sets), &opts(&dir.path().join("a"))).unwrap();
    let stopped = train(
        tiny("ffl", &sets),
        &RunOptions {
            stop_after: Some(1),
            ..opts(&dir.path().join("b"))
        },
    )
    .unwrap();
    let resumed = resume(&stopped.run_dir, &opts(dir.path())).unwrap();
    let load = |run: &Path, file: &str| {
        let dev = Cpu::default();
        let net = build_network(&dev, "resnet20", NetConfig::new(10, 1).branches(2)).unwrap();
        let mut m = kd_models::Ffl::new(&dev, vec![net]).unwrap();
        m.load_safetensors(run.join("checkpoints/last").join(file))
            .unwrap();
        named_tensors(&m)
    };
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let (a, b) = (load(&straight.run_dir, file), load(&resumed.run_dir, file));
        assert!(a.iter().any(|(n, _)| n.starts_with("fusion.")));
        assert_eq!(a, b, "{file}");
    }
    assert_eq!(straight.summary.last, resumed.summary.last);
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    kd_data::require_fashion_mnist!();
    let dir = tempfile::tempdir().unwrap();
    // Epoch 1 trains normally; epoch 2 multiplies the rate by 1e30.
    let cfg = tiny("ce", &["schedule.milestones=[1]", "schedule.gamma=1e30"]);
    let err = train(cfg, &opts(dir.path())).unwrap_err().to_string();
    assert!(err.contains("non-finite loss"), "{err}");
    assert!(err.contains("epoch 2 step"), "{err}");
    assert!(err.contains("`ce`") || err.contains("`total`"), "{err}");
    let run = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.join("config.ron").is_file())
        .unwrap();
    assert!(err.contains(&run.join("checkpoints/last").display().to_string()));
    assert_eq!(state(&run).epochs_done, 1);
    assert!(weights(&run, "last")
        .iter()
        .all(|(_, v)| v.iter().all(|x| x.is_finite())));
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("ERROR non-finite loss"), "{log}");
}

#[test]
fn every_trainable_method_runs_end_to_end() {
    kd_data::require_fashion_mnist!();
    let dir = tempfile::tempdir().unwrap();
    for (method, terms) in [
        ("scd", "loss_ce,loss_scd"),
        ("sad", "loss_ce,loss_sad"),
        ("cskd", "loss_ce,loss_kl"),
        ("ddgsd", "loss_ce,loss_kl,loss_mmd"),
    ] {
        // 32 steps on 1,024 images.
        let cfg = tiny(
            method,
            &[
                "epochs=1",
                "data.limit_train=1024",
                "batch_size=32",
                "optim.lr=0.05",
            ],
        );
        let r = train(cfg, &opts(dir.path())).unwrap();
        let csv = std::fs::read_to_string(r.run_dir.join("metrics.csv")).unwrap();
        let head = csv.lines().next().unwrap();
        assert!(
            head.starts_with(&format!("epoch,lr,loss,{terms},")),
            "{method}: {head}"
        );
        assert_eq!(r.summary.last.test_acc.len(), 1);
        // It learns: the epoch's training accuracy is far above chance (10%; measured 28–32%
        // for these four methods), and its test accuracy is what evaluating the checkpoint
        // gives (its running statistics are young after 32 steps, so it is not compared with
        // chance).
        let m = kd_train::metrics::Metrics::load(&r.run_dir).unwrap();
        let train_acc = m.rows[0].train_acc;
        assert!(train_acc > 20.0, "{method}: training accuracy {train_acc}%");
        let eval = kd_train::evaluate_run(&r.run_dir, "last", &opts(dir.path())).unwrap();
        assert_eq!(
            eval.summary.last.test_acc, r.summary.last.test_acc,
            "{method}"
        );
    }
}

#[test]
fn online_branched_and_exit_methods_run_end_to_end() {
    kd_data::require_fashion_mnist!();
    let dir = tempfile::tempdir().unwrap();
    for (method, entries) in [
        (
            "byot",
            "test_acc_exit1,test_acc_exit2,test_acc_exit3,test_acc_ensemble",
        ),
        (
            "dml",
            "test_acc_student0,test_acc_student1,test_acc_ensemble",
        ),
        (
            "kdcl",
            "test_acc_student0,test_acc_student1,test_acc_ensemble",
        ),
        (
            "one",
            "test_acc_student0,test_acc_student1,test_acc_student2,test_acc_ensemble",
        ),
        (
            "okddip",
            "test_acc_peer0,test_acc_peer1,test_acc_peer2,test_acc_leader,test_acc_ensemble",
        ),
        (
            "ffl",
            "test_acc_student0,test_acc_student1,test_acc_ensemble,test_acc_fused",
        ),
        (
            "mfef",
            "test_acc_student0,test_acc_student1,test_acc_ensemble,test_acc_fused",
        ),
    ] {
        let cfg = tiny(
            method,
            &["epochs=1", "data.limit_train=64", "batch_size=32"],
        );
        let r = train(cfg, &opts(dir.path())).unwrap_or_else(|e| panic!("{method}: {e:#}"));
        let csv = std::fs::read_to_string(r.run_dir.join("metrics.csv")).unwrap();
        let head = csv.lines().next().unwrap();
        assert!(head.contains(&format!(",{entries},")), "{method}: {head}");
        let n = entries.split(',').count();
        assert_eq!(r.summary.last.test_acc.len(), n, "{method}");
        assert_eq!(r.summary.students.len(), n, "{method}");
    }
}

#[test]
fn a_missing_dataset_names_the_fetch_command() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(
        "ce",
        &[&format!(
            "data.dir=\"{}\"",
            dir.path().join("nope").display()
        )],
    );
    let err = format!("{:#}", train(cfg, &opts(dir.path())).unwrap_err());
    assert!(
        err.contains("cargo xtask fetch-data fashion-mnist"),
        "{err}"
    );
}

#[test]
fn unknown_names_list_the_valid_ones() {
    let err = TrainConfig::for_method("ce")
        .unwrap()
        .with_overrides(&["dataset=mnist".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fashion-mnist") && err.contains("cifar100"),
        "{err}"
    );
}

#[test]
fn teacher_methods_distil_from_a_teacher_run() {
    kd_data::require_fashion_mnist!();
    let dir = tempfile::tempdir().unwrap();
    // Without a teacher: a clear error before any data is read.
    let err = train(TrainConfig::for_method("kd").unwrap(), &opts(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--teacher RUN_DIR"), "{err}");
    let sets = ["epochs=1", "data.limit_train=128", "batch_size=32"];
    let teacher = train(tiny("ce", &sets), &opts(&dir.path().join("t"))).unwrap();
    let t = format!("teacher=\"{}\"", teacher.run_dir.display());
    for (method, terms) in [
        ("kd", "loss_ce,loss_kl"),
        ("at", "loss_ce,loss_at"),
        ("sp", "loss_ce,loss_sp"),
    ] {
        let mut all = sets.to_vec();
        all.push(&t);
        let r = train(tiny(method, &all), &opts(dir.path()))
            .unwrap_or_else(|e| panic!("{method}: {e:#}"));
        let m = kd_train::metrics::Metrics::load(&r.run_dir).unwrap();
        let names: Vec<String> = m.term_names().iter().map(|t| format!("loss_{t}")).collect();
        assert_eq!(names.join(","), terms, "{method}");
        // The distillation term is computed from the teacher's outputs: positive, finite.
        let term = m.rows[0].terms[1].1;
        assert!(term.is_finite() && term > 0.0, "{method}: {term}");
        let log = std::fs::read_to_string(r.run_dir.join("log.txt")).unwrap();
        assert!(log.contains("teacher: resnet20 from"), "{log}");
    }
    // A teacher trained on another dataset is refused, naming both.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let mut cfg = TrainConfig::for_method("ce").unwrap();
    cfg.dataset = "cifar10".into();
    std::fs::write(other.join("config.ron"), cfg.to_ron()).unwrap();
    let t = format!("teacher=\"{}\"", other.display());
    let mut all = sets.to_vec();
    all.push(&t);
    let err = format!(
        "{:#}",
        train(tiny("kd", &all), &opts(dir.path())).unwrap_err()
    );
    assert!(
        err.contains("cifar10") && err.contains("fashion-mnist"),
        "{err}"
    );
}

#[test]
fn student_counts_and_one_gate_weighted_ensemble() {
    kd_data::require_fashion_mnist!();
    let dir = tempfile::tempdir().unwrap();
    let sets = [
        "epochs=1",
        "data.limit_train=64",
        "batch_size=32",
        "students=2",
    ];
    let r = train(tiny("okddip", &sets), &opts(dir.path())).unwrap();
    use kd_train::Entry::*;
    assert_eq!(r.summary.students, [Peer(0), Peer(1), Leader, Ensemble]);
    let r = train(
        tiny(
            "kdcl",
            &[
                "epochs=1",
                "data.limit_train=64",
                "batch_size=32",
                "students=3",
            ],
        ),
        &opts(dir.path()),
    )
    .unwrap();
    assert_eq!(
        r.summary.students,
        [Student(0), Student(1), Student(2), Ensemble]
    );
    let r = train(tiny("one", &sets), &opts(dir.path())).unwrap();
    assert_eq!(r.summary.students, [Student(0), Student(1), Ensemble]);
    // ONE's ensemble is the gated teacher Σ g_i z_i: recompute it from the checkpoint.
    let dev = Cpu::default();
    let net = build_network(&dev, "resnet20", NetConfig::new(10, 1).branches(2)).unwrap();
    let mut one = kd_models::One::new(&dev, net).unwrap();
    one.load_safetensors(r.run_dir.join("checkpoints/last/model.safetensors"))
        .unwrap();
    let test = kd_data::load(
        kd_data::DatasetName::FashionMnist,
        Path::new(FMNIST),
        kd_data::Split::Test,
        &Default::default(),
    )
    .unwrap();
    let norm = kd_data::Normalize::of(&kd_data::DatasetName::FashionMnist.info());
    let tf = kd_data::Transform::new(kd_data::Augment::none(), &norm, 1, 28, 28);
    let (mut gated, mut mean) = (0, 0);
    for i in 0..128 {
        let mut x = vec![0f32; 784];
        tf.apply(test.image(i), &mut rand::thread_rng(), &mut x);
        let out = kd_models::Model::forward_eval(&one, dev.tensor_from_vec(x, (1, 1, 28, 28)));
        let g = out.gate.unwrap().as_vec();
        let z: Vec<Vec<f32>> = out.logits.iter().map(|z| z.as_vec()).collect();
        let argmax = |w: &[f32]| {
            (0..10)
                .map(|j| w[0] * z[0][j] + w[1] * z[1][j])
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap()
                .0
        };
        let y = test.labels[i] as usize;
        gated += usize::from(argmax(&g) == y);
        mean += usize::from(argmax(&[0.5, 0.5]) == y);
    }
    let ens = r.summary.last.test_acc[2];
    assert_eq!(
        ens,
        100.0 * gated as f64 / 128.0,
        "mean-of-logits gives {mean}/128"
    );
}

#[test]
fn shipped_configs_load_and_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut seen = 0;
    for path in [
        "ce.ron",
        "scd.ron",
        "sad.ron",
        "cskd.ron",
        "ddgsd.ron",
        "byot.ron",
        "dml.ron",
        "kdcl.ron",
        "one.ron",
        "okddip.ron",
        "ffl.ron",
        "mfef.ron",
        "kd.ron",
        "at.ron",
        "sp.ron",
        "quickstart/fashion-mnist-scd.ron",
    ] {
        let cfg = TrainConfig::load(&root.join(path))
            .unwrap()
            .resolve()
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        if !path.starts_with("quickstart") {
            assert_eq!(format!("{}.ron", cfg.method), path);
            assert_eq!(cfg, TrainConfig::for_method(&cfg.method).unwrap(), "{path}");
        }
        seen += 1;
    }
    assert_eq!(seen, 16);
}

/// A truncated `last` checkpoint is refused, naming the file and how to resume from `best`;
/// resuming from `best` then finishes the run, equal to an uninterrupted one.
#[test]
fn a_damaged_last_checkpoint_is_refused_and_best_resumes() {
    kd_data::require_fashion_mnist!();
    let dir = tempfile::tempdir().unwrap();
    let (straight, stopped) = straight_and_stopped(dir.path());
    let run = &stopped.run_dir;
    assert!(state(run).files.contains_key("model.safetensors"));
    let model = run.join("checkpoints/last/model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let e = format!("{:#}", resume(run, &opts(dir.path())).unwrap_err());
    assert!(e.contains(&model.display().to_string()), "{e}");
    assert!(e.contains("is damaged"), "{e}");
    assert!(
        e.contains(&format!("--resume {} --from best", run.display())),
        "{e}"
    );
    // After epoch 1 the best checkpoint is epoch 1's: resuming from it redoes nothing twice.
    let resumed = kd_train::resume_from(run, "best", &opts(dir.path())).unwrap();
    assert_eq!(resumed.summary.epochs_done, 2);
    assert_eq!(weights(&straight.run_dir, "last"), weights(run, "last"));
    assert!(state(run).files.contains_key("optimizer.safetensors"));
}
