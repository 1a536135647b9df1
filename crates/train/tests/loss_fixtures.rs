//! Every reference case of `FIXTURES.md` (copied to `crates/losses/tests/fixtures/losses/`)
//! through the registry's `check_loss_case`: total, terms and input gradients within the case
//! tolerance.

use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../losses/tests/fixtures/losses")
}

/// Checks one case file, printing its report line; panics if it fails.
fn check(method: &str) {
    let path = dir().join(format!("{method}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let case: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(
        case["method"],
        method,
        "{} holds another method",
        path.display()
    );
    let report = kd_train::methods::check_loss_case(&path.display().to_string(), &case)
        .unwrap_or_else(|e| panic!("{method}: {e}"));
    let ratio = report.worst.as_ref().map_or(f64::NAN, |w| w.ratio);
    println!("{} (worst {ratio:.3} of the tolerance)", report.line());
    assert!(report.ok(), "{}", report.line());
}

macro_rules! cases {
    ($($m:ident),* $(,)?) => {
        $(#[test] fn $m() { check(stringify!($m)); })*

        /// Every method has a case file, and every case file is tested above.
        #[test]
        fn every_method_has_a_case() {
            let tested = [$(stringify!($m)),*];
            for name in kd_train::methods::NAMES {
                assert!(tested.contains(name), "no fixture test for `{name}`");
            }
            let mut files: Vec<String> = std::fs::read_dir(dir())
                .expect("fixture folder")
                .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let mut names: Vec<&str> = tested.to_vec();
            names.sort();
            assert_eq!(files, names);
        }
    };
}

cases!(ce, scd, sad, cskd, ddgsd, byot, kd, at, sp, dml, one, okddip, kdcl, ffl, mfef);

#[test]
fn unknown_method_is_an_error_listing_the_valid_ones() {
    let case = serde_json::json!({
        "method": "nope", "params": {}, "inputs": {},
        "expected": {"total": 0.0, "terms": {}, "grads": {}},
        "tolerance": {"rel": 1e-4, "abs": 1e-6}
    });
    let err = kd_train::methods::check_loss_case("nope", &case).unwrap_err();
    assert!(err.contains("nope"), "{err}");
    for name in kd_train::methods::NAMES {
        assert!(err.contains(name), "{err} does not list {name}");
    }
}
