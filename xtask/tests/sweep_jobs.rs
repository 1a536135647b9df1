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
    kd_data::require_fashion_mnist!();
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

/// The paper grids' Slurm arrays: SCD's in two arrays (SP after its CE teachers), MFEF's in one.
#[test]
fn slurm_writes_the_paper_grids_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (grid, arrays) in [
        (
            "paper-scd-cifar100.ron",
            vec![("sweep.sbatch", 18), ("sweep-students.sbatch", 3)],
        ),
        ("paper-mfef-cifar100.ron", vec![("sweep.sbatch", 63)]),
    ] {
        let out = dir.path().join(grid);
        let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .arg("sweep")
            .arg(root.join("configs/sweeps").join(grid))
            .arg("--out")
            .arg(&out)
            .arg("--slurm")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for (file, n) in arrays {
            let s = std::fs::read_to_string(out.join(file)).unwrap();
            assert!(
                s.contains(&format!("#SBATCH --array=0-{}", n - 1)),
                "{file}: {s}"
            );
            let points = s.lines().find(|l| l.starts_with("POINTS=(")).unwrap();
            assert_eq!(points.split_whitespace().count(), n, "{points}");
        }
        if grid.starts_with("paper-scd") {
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(stdout.contains("--dependency=afterok"), "{stdout}");
            let students = std::fs::read_to_string(out.join("sweep-students.sbatch")).unwrap();
            assert!(students.contains("POINTS=(15 16 17)"), "{students}");
        }
    }
}

/// A grid's SP point distils from the CE point of its seed: with `--jobs 2` it waits for it,
/// then runs with that folder as its teacher.
#[test]
fn a_student_point_waits_for_its_teacher_point() {
    if !Path::new(FMNIST)
        .join("train-images-idx3-ubyte.gz")
        .is_file()
    {
        eprintln!("skipped: no Fashion-MNIST in {FMNIST} (apt-get install dataset-fashion-mnist)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.ron");
    std::fs::write(
        &g,
        format!(
            r#"(methods: ["ce", "sp"], datasets: ["fashion-mnist"], archs: ["resnet20"], seeds: [1],
    teachers: {{"sp": "ce"}},
    sets: ["epochs=1", "batch_size=64", "data.limit_train=256", "data.limit_test=128",
           "data.dir=\"{FMNIST}\""])"#
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = sweep(&g, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sp = out.join("sp-fashion-mnist-resnet20-s1");
    let cfg = std::fs::read_to_string(sp.join("config.ron")).unwrap();
    assert!(cfg.contains("ce-fashion-mnist-resnet20-s1"), "{cfg}");
    let log = std::fs::read_to_string(sp.join("log.txt")).unwrap();
    assert!(log.contains("done: 1 of 1 epochs"), "{log}");
}
