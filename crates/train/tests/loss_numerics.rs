//! Numerical safety: no NaN or infinity in any total, term or gradient for very large logits,
//! zero feature maps, or a batch of one.

#[path = "loss_common/mod.rs"]
mod common;
use common::Method;
use common::{assert_finite, eval, host_inputs};
use kd_train::methods::NAMES as METHOD_NAMES;

#[test]
fn very_large_logits_stay_finite() {
    for name in METHOD_NAMES {
        for scale in [1e4f32, -1e4] {
            let method = Method::with_defaults(name).unwrap();
            let host = host_inputs(name, 4, scale, 1.0);
            let e = eval(&method, &host);
            assert_finite(&format!("{name} with logits of magnitude {scale}"), &e);
        }
    }
}

#[test]
fn zero_feature_maps_stay_finite() {
    for name in ["scd", "sad", "at", "sp"] {
        let method = Method::with_defaults(name).unwrap();
        let host = host_inputs(name, 4, 3.0, 0.0);
        let e = eval(&method, &host);
        assert_finite(&format!("{name} with zero feature maps"), &e);
        // Zero maps carry no similarity/attention signal: the distillation term is zero.
        let term = e.terms.iter().find(|(n, _)| *n != "ce").unwrap();
        assert!(term.1.abs() < 1e-6, "{name}: {term:?}");
    }
    // SCD's channel-softmax attention too.
    let method =
        Method::from_json("scd", &serde_json::json!({"attention": "channel_softmax"})).unwrap();
    assert_finite(
        "scd channel_softmax, zero maps",
        &eval(&method, &host_inputs("scd", 4, 3.0, 0.0)),
    );
}

#[test]
fn batch_of_one_stays_finite() {
    for name in METHOD_NAMES {
        let method = Method::with_defaults(name).unwrap();
        let host = host_inputs(name, 1, 3.0, 1.0);
        let e = eval(&method, &host);
        assert_finite(&format!("{name} with a batch of one"), &e);
        assert!(e.total > 0.0, "{name}: total {}", e.total);
    }
}
