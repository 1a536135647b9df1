//! `cargo xtask train` resolves its flags like `--set` overrides: settings derived from a flag
//! follow it even when a config file fixed them for its own values, and bad values are named.

use std::process::Command;

fn xtask(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `text` without whitespace and trailing commas (`[\n 7,\n 11,\n]` → `[7,11]`).
fn compact(text: &str) -> String {
    let s: String = text.split_whitespace().collect();
    s.replace(",]", "]").replace(",)", ")")
}

#[test]
fn epochs_flag_moves_the_default_milestones_of_a_config_file() {
    // configs/scd.ron: 200 epochs, milestones [100, 150] (the defaults for 200).
    let (ok, text) = xtask(&[
        "train",
        "--config",
        "configs/scd.ron",
        "--epochs",
        "15",
        "--arch",
        "resnet20",
        "--dataset",
        "fashion-mnist",
        "--seed",
        "3",
        "--print-config",
    ]);
    assert!(ok, "{text}");
    let flat = compact(&text);
    assert!(
        flat.contains("epochs:Some(15)") || flat.contains("epochs:15"),
        "{text}"
    );
    assert!(
        flat.contains("milestones:Some([7,11])") || flat.contains("milestones:[7,11]"),
        "{text}"
    );
    assert!(
        flat.contains("arch:Some(\"resnet20\")") || flat.contains("arch:\"resnet20\""),
        "{text}"
    );
    assert!(flat.contains("seed:3"), "{text}");
    // Explicit milestones stay as given.
    let (ok, text) = xtask(&[
        "train",
        "scd",
        "--epochs",
        "15",
        "--set",
        "schedule.milestones=[5,10]",
        "--print-config",
    ]);
    assert!(ok, "{text}");
    let flat = compact(&text);
    assert!(flat.contains("[5,10]"), "{text}");
}

#[test]
fn print_config_warns_of_a_ramp_as_long_as_the_run() {
    // FFL's ramp is 80 epochs (METHODS.md); at 15 epochs it is warned of, with R scaled to 4.
    let (ok, text) = xtask(&["train", "ffl", "--epochs", "15", "--print-config"]);
    assert!(ok, "{text}");
    assert!(text.contains("loss.ramp_epochs=4"), "{text}");
    let (ok, text) = xtask(&["train", "ffl", "--epochs", "300", "--print-config"]);
    assert!(ok, "{text}");
    assert!(!text.contains("ramp_epochs = 80 is not shorter"), "{text}");
}

#[test]
fn unknown_names_list_the_valid_ones() {
    let (ok, text) = xtask(&["train", "scd", "--dataset", "mnist", "--print-config"]);
    assert!(!ok);
    assert!(
        text.contains("mnist") && text.contains("svhn, fashion-mnist"),
        "{text}"
    );
    let (ok, text) = xtask(&["train", "scd", "--arch", "resnet7", "--print-config"]);
    assert!(!ok);
    assert!(
        text.contains("resnet7") && text.contains("resnet20"),
        "{text}"
    );
}
