//! Every reference case in `tests/fixtures/ops` (computed by PyTorch in float64) through
//! `check_op_case` (CPU kernels) and `check_op_case_generic` (dfdx compositions on the CPU).

use std::path::PathBuf;

fn cases() -> Vec<(String, serde_json::Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ops");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the 10 op fixtures in {}",
        dir.display()
    );
    files
        .into_iter()
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

#[test]
fn fixtures_pass_on_cpu_kernels() {
    let mut failed = Vec::new();
    for (name, case) in cases() {
        let r = kd_ops::check_op_case(&name, &case).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{}", r.line());
        if !r.ok() {
            failed.push(r.line());
        }
    }
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

#[test]
fn fixtures_pass_on_generic_path() {
    let mut failed = Vec::new();
    for (name, case) in cases() {
        let r =
            kd_ops::check_op_case_generic(&name, &case).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{}", r.line());
        if !r.ok() {
            failed.push(r.line());
        }
    }
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

#[test]
fn a_perturbed_expectation_fails() {
    let (name, mut case) = cases()
        .into_iter()
        .find(|(n, _)| n.contains("conv2d_3x3_s1_p1"))
        .unwrap();
    let v = &mut case["expected"]["grads"]["weight"]["data"][5];
    *v = serde_json::json!(v.as_f64().unwrap() + 1e-2);
    let r = kd_ops::check_op_case(&name, &case).unwrap();
    assert!(
        !r.ok(),
        "a wrong expected weight gradient must fail: {}",
        r.line()
    );
    assert!(r.line().contains("grad.weight[5]"), "{}", r.line());
}

#[test]
fn unknown_op_is_an_error_listing_known_ops() {
    let case = serde_json::json!({"op": "conv3d", "params": {}, "inputs": {}, "tolerance": {"rel": 1e-4, "abs": 1e-5}});
    let e = kd_ops::check_op_case("x", &case).unwrap_err();
    assert!(
        e.contains("conv3d") && e.contains("conv2d") && e.contains("upsample_bilinear2x"),
        "{e}"
    );
}
