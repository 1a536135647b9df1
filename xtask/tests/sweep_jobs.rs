//! `cargo xtask sweep --jobs 2`: points run as parallel child processes, each logging to
//! `<out>/logs/<point>.log`; a second run skips them; a failing point fails the sweep, named
//! (real Fashion-MNIST subset from Debian's `dataset-fashion-mnist`).

use std::path::Path;
use std::process::Command;

const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

fn grid(dir: &Path, name: &str, data_dir: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let text = format!(
        r#"(
    methods: ["ce"],
    datasets: ["fashion-mnist"],
    archs: ["resnet20"],
    seeds: [1, 2, 3],
    sets: ["epochs=1", "batch_size=64", "data.limit_train=256", "data.limit_test=128",
           "data.dir=\"{data_dir}\""],
)"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn sweep(grid: &Path, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("sweep")
        .arg(grid)
        .arg("--out")
        .arg(out)
        .args(["--jobs", "2", "--no-progress"])
        .env_remove("RAYON_NUM_THREADS")
        .output()
        .unwrap()
}

#[test]
fn jobs_run_points_side_by_side_and_name_failures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let good = grid(dir.path(), "good.ron", FMNIST);
    let o = sweep(&good, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let cores = std::thread::available_parallelism().unwrap().get();
    let each = format!(
        "3 points, 2 at a time, {} thread(s) each",
        (cores / 2).max(1)
    );
    assert!(stderr.contains(&each), "{stderr}");
    for seed in 1..=3 {
        let name = format!("ce-fashion-mnist-resnet20-s{seed}");
        let summary = std::fs::read_to_string(out.join(&name).join("summary.json")).unwrap();
        let s: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(s["epochs_done"], 1, "{name}: {summary}");
        let log = std::fs::read_to_string(out.join("logs").join(format!("{name}.log"))).unwrap();
        assert!(log.contains("epoch 1/1"), "{name}: {log}");
    }
    // Again: every point is complete and skipped.
    let o = sweep(&good, &out);
    assert!(o.status.success());
    let log = std::fs::read_to_string(out.join("logs/ce-fashion-mnist-resnet20-s2.log")).unwrap();
    assert!(log.contains("complete, skipped"), "{log}");
    // A dataset folder that does not exist: every point fails, and the sweep says which.
    let bad = grid(dir.path(), "bad.ron", "/nonexistent/fashion-mnist");
    let o = sweep(&bad, &dir.path().join("bad-out"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("3 point(s) failed"), "{stderr}");
    assert!(stderr.contains("ce-fashion-mnist-resnet20-s3"), "{stderr}");
}
