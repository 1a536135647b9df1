//! `cargo xtask train`, killed with SIGKILL in the middle of an epoch and continued with
//! `--resume`, ends with the same weights and optimizer state, byte for byte, as the same run
//! left alone (real Fashion-MNIST subset from Debian's `dataset-fashion-mnist`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

fn train(out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args([
        "train",
        "ce",
        "--dataset",
        "fashion-mnist",
        "--arch",
        "resnet20",
        "--epochs",
        "3",
        "--seed",
        "5",
        "--batch-size",
        "64",
        "--limit-train",
        "1024",
        "--set",
        "data.limit_test=256",
        "--set",
        &format!("data.dir=\"{FMNIST}\""),
        "--no-progress",
        "--out",
    ])
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

fn only_run(out: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.ron").is_file())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn epochs_done(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("checkpoints/last/state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["epochs_done"].as_u64()
}

#[test]
fn sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run() {
    kd_data::require_fashion_mnist!();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert!(train(&a).status().unwrap().success());
    let run_a = only_run(&a);

    // 1024 images in batches of 64: 16 steps per epoch; step 24 is the middle of epoch 2.
    // The run waits there (KD_PAUSE_AT_STEP) until it is killed.
    let mut child = train(&b).env("KD_PAUSE_AT_STEP", "24").spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let run_b = loop {
        assert!(Instant::now() < deadline, "not at step 24 after 10 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        if let Ok(entries) = std::fs::read_dir(&b) {
            let run = entries
                .map(|e| e.unwrap().path())
                .find(|p| p.join("PAUSED").is_file());
            if let Some(run) = run {
                break run;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(epochs_done(&run_b), Some(1));
    // The summary of the killed run says where it stands (`cargo xtask report` shows it as
    // incomplete).
    let summary = |run: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
    };
    let s = summary(&run_b);
    assert_eq!(
        (s["epochs_done"].as_u64(), s["epochs"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(s["last"]["epoch"].as_u64(), Some(1));

    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["train", "--no-progress", "--resume"])
        .arg(&run_b)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(epochs_done(&run_b), Some(3));
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let x = std::fs::read(run_a.join("checkpoints/last").join(f)).unwrap();
        let y = std::fs::read(run_b.join("checkpoints/last").join(f)).unwrap();
        assert!(x == y, "{f} differs after kill and resume");
    }
    // The same accuracies as the run left alone.
    let (sa, sb) = (summary(&run_a), summary(&run_b));
    assert_eq!(sb["epochs_done"].as_u64(), Some(3));
    for k in ["best", "last"] {
        assert_eq!(sa[k], sb[k], "{k}");
    }
    // One metrics row per epoch, and the plots of the finished run.
    let csv = std::fs::read_to_string(run_b.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    for f in ["loss.png", "accuracy.png", "summary.json"] {
        assert!(run_b.join(f).is_file(), "{f}");
    }
}
