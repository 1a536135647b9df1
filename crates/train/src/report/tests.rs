//! The report's tests (fake run folders).
use super::*;
use crate::run::EpochAcc;

fn fake_run(root: &Path, method: &str, beta: Option<f64>, seed: u64, best: f64, last: f64) {
    let loss: Vec<(&str, serde_json::Value)> = beta
        .map(|b| ("beta", serde_json::json!(b)))
        .into_iter()
        .collect();
    let tag = beta.unwrap_or(0.0).to_string();
    fake_run_with(root, method, &tag, &loss, |_| {}, seed, best, last);
}

/// A finished 2-epoch run of `method` with the loss settings `loss`, then `edit`, in
/// `<root>/<method>-<tag>-s<seed>`.
#[allow(clippy::too_many_arguments)]
fn fake_run_with(
    root: &Path,
    method: &str,
    tag: &str,
    loss: &[(&str, serde_json::Value)],
    edit: impl Fn(&mut TrainConfig),
    seed: u64,
    best: f64,
    last: f64,
) {
    let mut cfg = TrainConfig::for_method(method).unwrap();
    cfg.seed = seed;
    cfg.dataset = "fashion-mnist".into();
    for (k, v) in loss {
        cfg.loss[*k] = v.clone();
    }
    edit(&mut cfg);
    let dir = root.join(format!("{method}-{tag}-s{seed}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.ron"), cfg.to_ron()).unwrap();
    let summary = Summary {
        method: method.into(),
        dataset: cfg.dataset.clone(),
        arch: cfg.arch_name().into(),
        seed,
        students: vec![crate::entry::Entry::Net],
        epochs_done: 2,
        epochs: 2,
        best: EpochAcc {
            epoch: 1,
            test_acc: vec![best],
        },
        last: EpochAcc {
            epoch: 2,
            test_acc: vec![last],
        },
        images_per_s: 100.0,
        seconds: 120.0,
    };
    let metrics = format!(
        "epoch,lr,loss,train_acc,test_acc_net,images_per_s,seconds\n1,0.1,1,50,{best},100,1\n\
         2,0.1,1,60,{last},100,1\n"
    );
    write_results(&dir, &summary, &metrics);
}

/// Writes a run folder's `summary.json` and `metrics.csv`.
fn write_results(dir: &Path, summary: &Summary, metrics: &str) {
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string(summary).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("metrics.csv"), metrics).unwrap();
}

#[test]
fn several_architectures_make_a_paper_table() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, seed, best) in [
        ("resnet20", 1, 90.0),
        ("resnet20", 2, 92.0),
        ("resnet32", 1, 93.0),
    ] {
        let set_arch = |c: &mut TrainConfig| c.arch = Some(arch.into());
        fake_run_with(
            dir.path(),
            "ce",
            arch,
            &[],
            set_arch,
            seed,
            best,
            best - 1.0,
        );
        fake_run_with(
            dir.path(),
            "cskd",
            arch,
            &[],
            set_arch,
            seed,
            best + 1.0,
            best,
        );
    }
    let r = Report::from_paths(&[dir.path().to_path_buf()]).unwrap();
    let t = r.paper_table().unwrap();
    assert!(t.contains("| method | resnet20 | resnet32 |"), "{t}");
    // Best: ce on resnet20 over seeds 1 and 2 is 91 ± 1.41; one seed on resnet32.
    assert!(t.contains("| ce | 91.00 ± 1.41 (2) | 93.00 (1) |"), "{t}");
    assert!(t.contains("| cskd | 92.00 ± 1.41 (2) | 94.00 (1) |"), "{t}");
    // Last, in the second table.
    assert!(t.contains("| ce | 90.00 ± 1.41 (2) | 92.00 (1) |"), "{t}");
    // One architecture: no paper table.
    let one = tempfile::tempdir().unwrap();
    fake_run(one.path(), "ce", None, 1, 90.0, 89.0);
    assert!(Report::from_paths(&[one.path().to_path_buf()])
        .unwrap()
        .paper_table()
        .is_none());
}

#[test]
fn groups_by_everything_but_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    fake_run(dir.path(), "ce", None, 1, 90.0, 89.0);
    fake_run(dir.path(), "ce", None, 2, 92.0, 91.0);
    fake_run(dir.path(), "scd", Some(10.0), 1, 93.0, 93.0);
    fake_run(dir.path(), "scd", Some(1000.0), 1, 91.0, 90.5);
    // An unfinished run is skipped, not fatal.
    std::fs::create_dir_all(dir.path().join("broken")).unwrap();
    std::fs::write(dir.path().join("broken/config.ron"), "(method: \"ce\")").unwrap();
    let r = Report::from_paths(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(r.groups.len(), 3);
    assert_eq!(r.varying, vec!["loss.beta", "method"]);
    assert_eq!(r.swept().as_deref(), Some("loss.beta"));
    let md = r.markdown();
    // ce over seeds 1 and 2: best 91 ± 1.41 (sample std), last 90 ± 1.41.
    assert!(
        md.contains("| ce | fashion-mnist | resnet18 |  | net | 1, 2 | 91.00 ± 1.41 | 90.00 ± 1.41 | 2 | 100 | 2.0 |"),
        "{md}"
    );
    assert!(md.contains("`loss.beta=10.0`"), "{md}");
    assert!(md.contains("| 93.00 | 93.00 |"), "{md}");
    let chart = r.sweep_chart("t").unwrap();
    assert!(chart.log_x);
    assert_eq!(chart.series[0].points, vec![(10.0, 93.0), (1000.0, 91.0)]);
    // CE over two seeds: its mean and a band of ± one sample std.
    let ce = &chart.references;
    assert_eq!(ce.len(), 1);
    assert_eq!(ce[0].0, "ce (mean ± std, 2 seeds)");
    assert_eq!(ce[0].1, 91.0);
    assert!((ce[0].2 - 2f64.sqrt()).abs() < 1e-9, "{ce:?}");
    let curves = r.curves_chart("t");
    assert_eq!(curves.series[0].points, vec![(1.0, 91.0), (2.0, 90.0)]);
    let md_path = dir.path().join("out/cmp.md");
    let written = r.write(&md_path, "test").unwrap();
    assert_eq!(written.len(), 3);
    for p in written {
        assert!(p.is_file(), "{}", p.display());
    }
}

#[test]
fn methods_that_feed_several_rows_per_sample_are_named_beside_images_per_s() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fake_run(root, "ce", None, 1, 90.0, 90.0);
    let only_ce = Report::from_paths(&[root.to_path_buf()]).unwrap();
    assert_eq!(only_ce.multi_row_note(), "");
    fake_run(root, "cskd", None, 1, 91.0, 91.0);
    fake_run(root, "dml", None, 1, 91.0, 91.0);
    for seed in [1, 2] {
        let three = |c: &mut TrainConfig| c.students = Some(3);
        fake_run_with(root, "kdcl", "3", &[], three, seed, 92.0, 92.0);
    }
    let r = Report::from_paths(&[root.to_path_buf()]).unwrap();
    let note = r.multi_row_note();
    assert!(
        note.ends_with(
            "samples/s: cskd (2), kdcl (3); compare their cost with the others' by minutes."
        ),
        "{note}"
    );
    let md = r.write(&root.join("out/r.md"), "t").unwrap();
    let text = std::fs::read_to_string(&md[0]).unwrap();
    assert!(text.contains(&note), "{text}");
}

#[test]
fn runs_come_in_the_order_of_the_paths_given() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("b-sweep"), dir.path().join("a-extra"));
    fake_run(&a, "scd", Some(30.0), 2, 93.0, 93.0);
    fake_run(&a, "ce", None, 1, 92.0, 92.0);
    fake_run(&b, "scd", Some(100.0), 1, 91.0, 91.0);
    let runs = find_runs(&[a.clone(), b.clone(), a.join("ce-0-s1")]).unwrap();
    let names: Vec<String> = runs
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        ["b-sweep/ce-0-s1", "b-sweep/scd-30-s2", "a-extra/scd-100-s1"]
    );
    let r = Report::from_paths(&[a, b]).unwrap();
    let labels: Vec<String> = r.groups.iter().map(Group::label).collect();
    assert_eq!(labels, ["ce", "scd beta=30.0", "scd beta=100.0"]);
}

#[test]
fn a_numeric_sweep_is_split_into_lines_by_the_other_settings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fake_run(root, "ce", None, 1, 90.0, 90.0);
    for (beta, target, best) in [
        (10.0, "next", 91.0),
        (100.0, "next", 89.0),
        (30.0, "next", 90.5),
        (10.0, "deepest", 92.0),
        (100.0, "deepest", 88.0),
    ] {
        let loss = [
            ("beta", serde_json::json!(beta)),
            ("target", serde_json::json!(target)),
        ];
        let tag = format!("{beta}-{target}");
        fake_run_with(root, "scd", &tag, &loss, |_| {}, 1, best, best);
    }
    let r = Report::from_paths(&[root.to_path_buf()]).unwrap();
    assert_eq!(r.swept().as_deref(), Some("loss.beta"));
    // Rows by method, then by setting, numbers by value (30 before 100).
    let labels: Vec<String> = r.groups.iter().map(|g| g.label()).collect();
    assert_eq!(
        labels,
        [
            "ce",
            "scd beta=10.0 target=deepest",
            "scd beta=10.0 target=next",
            "scd beta=30.0 target=next",
            "scd beta=100.0 target=deepest",
            "scd beta=100.0 target=next",
        ]
    );
    let chart = r.sweep_chart("t").unwrap();
    let lines: Vec<(&str, &[(f64, f64)])> = chart
        .series
        .iter()
        .map(|s| (s.label.as_str(), s.points.as_slice()))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("scd target=deepest", &[(10.0, 92.0), (100.0, 88.0)][..]),
            (
                "scd target=next",
                &[(10.0, 91.0), (30.0, 90.5), (100.0, 89.0)][..]
            ),
        ]
    );
    assert_eq!(chart.references, vec![("ce".to_string(), 90.0, 0.0)]);
    // A second numeric setting varying (the batch size): no single axis, no plot.
    let loss = [("beta", serde_json::json!(10.0))];
    fake_run_with(
        root,
        "scd",
        "b64",
        &loss,
        |c| c.batch_size = 64,
        1,
        1.0,
        1.0,
    );
    let r = Report::from_paths(&[root.to_path_buf()]).unwrap();
    assert_eq!(r.swept(), None);
    assert!(r.sweep_chart("t").is_none());
}

#[test]
fn teachers_count_by_what_they_are_and_unstarted_runs_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let teachers = root.join("teachers");
    fake_run(&teachers, "ce", None, 1, 90.0, 89.0);
    fake_run(&teachers, "ce", None, 2, 91.0, 90.0);
    let students = root.join("students");
    for seed in [1, 2] {
        fake_run(&students, "kd", None, seed, 92.0, 91.0);
        let cfg_path = students.join(format!("kd-0-s{seed}/config.ron"));
        let mut cfg = TrainConfig::load(&cfg_path).unwrap();
        cfg.teacher = Some(teachers.join(format!("ce-0-s{seed}")));
        std::fs::write(&cfg_path, cfg.to_ron()).unwrap();
    }
    // Two teachers in different folders but of the same kind: one group of two seeds.
    let r = Report::from_paths(std::slice::from_ref(&students)).unwrap();
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].runs.len(), 2);
    // A run stopped before its first evaluation has no entries: skipped, not a panic.
    fake_run(&students, "kd", None, 3, 0.0, 0.0);
    let s3 = students.join("kd-0-s3/summary.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&s3).unwrap()).unwrap();
    v["students"] = serde_json::json!([]);
    v["epochs_done"] = serde_json::json!(0);
    std::fs::write(&s3, v.to_string()).unwrap();
    let r = Report::from_paths(std::slice::from_ref(&students)).unwrap();
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].runs.len(), 2);
    assert!(r.varying.is_empty(), "{:?}", r.varying);
    // ...and listed under the table, so a sweep in progress does not pass for complete.
    assert_eq!(r.skipped, [students.join("kd-0-s3")]);
    let md = root.join("out/report.md");
    r.write(&md, "t").unwrap();
    let text = std::fs::read_to_string(&md).unwrap();
    let tail = text.split("Not in the table").nth(1).expect(&text);
    assert!(tail.contains("kd-0-s3"), "{text}");
    assert!(!tail.contains("kd-0-s1"), "{text}");
}

#[test]
fn each_entry_reports_its_own_best_epoch() {
    let dir = tempfile::tempdir().unwrap();
    fake_run(dir.path(), "dml", None, 1, 0.0, 0.0);
    let run = dir.path().join("dml-0-s1");
    let accs = |epoch, test_acc: &[f64]| EpochAcc {
        epoch,
        test_acc: test_acc.to_vec(),
    };
    let mut summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    summary.students = vec![
        crate::entry::Entry::Student(0),
        crate::entry::Entry::Student(1),
        crate::entry::Entry::Ensemble,
    ];
    // The best checkpoint is epoch 2, where the ensemble peaked; student0 peaked at epoch 1.
    summary.best = accs(2, &[90.0, 91.0, 92.0]);
    summary.last = accs(2, &[90.0, 91.0, 92.0]);
    // Epoch 3 was logged but not checkpointed (a kill in between): not counted.
    write_results(
        &run,
        &summary,
        "epoch,lr,loss,train_acc,test_acc_student0,test_acc_student1,test_acc_ensemble,\
         images_per_s,seconds\n1,0.1,1,50,93,89,91,100,1\n2,0.1,1,60,90,91,92,100,1\n\
         3,0.1,1,60,99,99,99,100,1\n",
    );
    let md = Report::from_paths(&[dir.path().to_path_buf()])
        .unwrap()
        .markdown();
    for row in [
        "| **student0** | 1 | 93.00 | 90.00 |",
        "| student1 | 1 | 91.00 | 91.00 |",
        "| ensemble | 1 | 92.00 | 92.00 |",
    ] {
        assert!(md.contains(row), "{row} in\n{md}");
    }
}

#[test]
fn run_folders_below_the_working_directory_are_named_relative_to_it() {
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        super::shown(&cwd.join("runs/sweeps/x/ce-s1")),
        std::path::PathBuf::from("runs/sweeps/x/ce-s1")
    );
    let outside = std::path::Path::new("/nonexistent-kd/runs/ce-s1");
    assert_eq!(super::shown(outside), outside.to_path_buf());
}
