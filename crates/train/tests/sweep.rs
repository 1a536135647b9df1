//! A sweep on a tiny real subset (Debian's Fashion-MNIST): every point runs once, a second pass
//! skips complete points and resumes stopped ones, a changed grid is refused, and the report
//! groups the points by the swept value.

use kd_train::sweep::{run_point, Grid, Outcome};
use kd_train::{Report, RunOptions};
use std::path::Path;

#[test]
fn sweeps_skip_complete_points_and_resume_stopped_ones() {
    kd_data::require_fashion_mnist!();
    let dir = tempfile::tempdir().unwrap();
    let grid_file = dir.path().join("g.ron");
    std::fs::write(
        &grid_file,
        r#"(
            methods: ["ce", "scd"],
            datasets: ["fashion-mnist"],
            archs: ["resnet20"],
            seeds: [4],
            sets: ["epochs=2", "batch_size=32", "data.limit_train=64", "data.limit_test=64",
                   "data.dir=\"/usr/share/datasets/fashion-mnist\""],
            grid: {"loss.beta": ["10", "1000"]},
        )"#,
    )
    .unwrap();
    let (grid, base) = Grid::load(&grid_file).unwrap();
    let points = grid.points(&base).unwrap();
    let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ce-fashion-mnist-resnet20-s4",
            "scd-fashion-mnist-resnet20-beta=10-s4",
            "scd-fashion-mnist-resnet20-beta=1000-s4"
        ]
    );
    let out = dir.path().join("out");
    let opts = |stop_after| RunOptions {
        runs_dir: out.clone(),
        datasets_dir: dir.path().join("none"),
        progress: false,
        stop_after,
        interrupt: None,
    };
    // First pass, cut short after one epoch (as an interrupted sweep would be).
    for p in &points {
        match run_point(p, &out, &opts(Some(1))).unwrap() {
            Outcome::Ran(s) => assert_eq!(s.epochs_done, 1, "{}", p.name),
            o => panic!("{}: {o:?}", p.name),
        }
    }
    // Second pass: each point resumes and finishes.
    for p in &points {
        match run_point(p, &out, &opts(None)).unwrap() {
            Outcome::Ran(s) => assert_eq!(s.epochs_done, 2, "{}", p.name),
            o => panic!("{}: {o:?}", p.name),
        }
        let log = std::fs::read_to_string(out.join(&p.name).join("log.txt")).unwrap();
        assert!(log.contains("resuming after epoch 1"), "{log}");
    }
    // Third pass: nothing to do.
    for p in &points {
        assert!(matches!(
            run_point(p, &out, &opts(None)).unwrap(),
            Outcome::Skipped(_)
        ));
    }
    // A point whose folder holds another config is refused, naming it.
    let mut changed = points[1].clone();
    changed.cfg.optim.lr = 0.5;
    let e = run_point(&changed, &out, &opts(None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("beta=10") && e.contains("another config"), "{e}");
    // The report groups by the swept value and plots accuracy against it.
    let r = Report::from_paths(std::slice::from_ref(&out)).unwrap();
    assert_eq!(r.groups.len(), 3);
    assert_eq!(r.swept().as_deref(), Some("loss.beta"));
    let written = r.write(&out.join("report.md"), "sweep").unwrap();
    assert!(written.iter().any(|p| p.ends_with("report-sweep.png")));
    assert!(Path::new(&out.join("report-curves.png")).is_file());
}
