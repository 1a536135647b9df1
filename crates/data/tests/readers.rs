//! Readers: real Fashion-MNIST (Debian's package), SVHN `.mat` files written by scipy, and the
//! errors for wrong sizes, magic numbers, truncation and labels.

mod common;

use common::*;
use kd_data::fetch::{fetch, FetchOptions, Outcome};
use kd_data::readers::{cifar, idx, svhn};
use kd_data::{load, DatasetName, LoadOptions, Split};
use std::path::{Path, PathBuf};

const DEBIAN: &str = "/usr/share/datasets/fashion-mnist";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn real_fashion_mnist_imported_from_debian_and_read() {
    assert!(
        Path::new(DEBIAN)
            .join("train-images-idx3-ubyte.gz")
            .is_file(),
        "the real Fashion-MNIST is needed: apt-get install dataset-fashion-mnist (.ci/run does)"
    );
    let root = tempfile::tempdir().unwrap();
    let o = FetchOptions {
        from: Some(DEBIAN.into()),
        ..opts(root.path())
    };
    assert_eq!(
        fetch(DatasetName::FashionMnist, &o).unwrap(),
        Outcome::Imported
    );
    assert_eq!(
        fetch(DatasetName::FashionMnist, &o).unwrap(),
        Outcome::AlreadyPresent
    );
    let dir = root.path().join("fashion-mnist");
    let train = load(
        DatasetName::FashionMnist,
        &dir,
        Split::Train,
        &LoadOptions::default(),
    )
    .unwrap();
    let test = load(
        DatasetName::FashionMnist,
        &dir,
        Split::Test,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!((train.channels, train.height, train.width), (1, 28, 28));
    assert_eq!(train.class_counts(), vec![6_000; 10]);
    assert_eq!(test.class_counts(), vec![1_000; 10]);
    assert_eq!(train.classes[9], "Ankle boot");
    // The first training image is an ankle boot; the mean pixel matches the published constant.
    assert_eq!(train.labels[0], 9);
    let mean =
        train.images.iter().map(|&v| v as f64).sum::<f64>() / train.images.len() as f64 / 255.0;
    assert!((mean - 0.2860).abs() < 5e-4, "mean {mean}");
}

#[test]
fn svhn_mat_files_from_scipy_compressed_and_plain() {
    let want = std::fs::read(fixture("svhn_small_expected_chw.u8")).unwrap();
    for f in ["svhn_small_compressed.mat", "svhn_small_plain.mat"] {
        let set = svhn::read_mat_file(&fixture(f)).unwrap();
        assert_eq!(set.len(), 5, "{f}");
        assert_eq!(set.labels, [0, 1, 9, 3, 0], "{f}: label 10 means digit 0");
        assert_eq!(set.images, want, "{f}: column-major X must become CHW");
    }
}

#[test]
fn truncated_svhn_mat_is_an_error_naming_the_file() {
    let bytes = std::fs::read(fixture("svhn_small_plain.mat")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train_32x32.mat");
    std::fs::write(&p, &bytes[..bytes.len() - 5000]).unwrap();
    let err = svhn::read_mat_file(&p).unwrap_err().to_string();
    assert!(
        err.contains("train_32x32.mat") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn cifar_record_of_the_wrong_size_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&base).unwrap();
    let mut rec = cifar10_records(3, 0);
    rec.push(7); // one stray byte
    std::fs::write(base.join("test_batch.bin"), &rec).unwrap();
    let err = load(
        DatasetName::Cifar10,
        dir.path(),
        Split::Test,
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("test_batch.bin")
            && err.contains("9220 bytes")
            && err.contains("3073-byte records"),
        "{err}"
    );

    let mut bad = cifar10_records(2, 0);
    bad[3073] = 10; // label out of range
    std::fs::write(base.join("test_batch.bin"), &bad).unwrap();
    let err = load(
        DatasetName::Cifar10,
        dir.path(),
        Split::Test,
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("record 1 has label 10"), "{err}");
}

#[test]
fn cifar100_uses_the_fine_label() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("cifar-100-binary");
    std::fs::create_dir_all(&base).unwrap();
    let mut rec = Vec::new();
    for i in 0..4u8 {
        rec.extend_from_slice(&[i, 90 + i]);
        rec.extend(std::iter::repeat_n(i, 3072));
    }
    std::fs::write(base.join("test.bin"), &rec).unwrap();
    let set = load(
        DatasetName::Cifar100,
        dir.path(),
        Split::Test,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(set.labels, [90, 91, 92, 93]);
    assert_eq!(set.classes.len(), 100);
}

#[test]
fn idx_bad_magic_truncation_and_corrupt_gzip() {
    let (img, lbl) = idx_pair(4, 28, 28);
    let p = Path::new("x-images");
    let mut bad = img.clone();
    bad[3] = 1;
    let err = idx::parse_images(p, &bad).unwrap_err().to_string();
    assert!(
        err.contains("x-images") && err.contains("bad magic number 0x00000801"),
        "{err}"
    );
    let err = idx::parse_images(p, &img[..img.len() - 1])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs 3152"), "{err}");
    let err = idx::parse_labels(Path::new("y"), &lbl[..lbl.len() - 2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs 12"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let gz = gzip(&img);
    std::fs::write(
        dir.path().join("t10k-images-idx3-ubyte.gz"),
        &gz[..gz.len() - 10],
    )
    .unwrap();
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), gzip(&lbl)).unwrap();
    let err = idx::read_fashion_mnist(dir.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t10k-images-idx3-ubyte.gz") && err.contains("gzip"),
        "{err}"
    );

    // Label count disagreeing with the image count.
    let (_, lbl3) = idx_pair(3, 28, 28);
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte.gz"), gzip(&img)).unwrap();
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), gzip(&lbl3)).unwrap();
    let err = idx::read_fashion_mnist(dir.path(), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3 labels") && err.contains("4 images"),
        "{err}"
    );
}

#[test]
fn missing_dataset_and_unknown_name_are_clear() {
    let err = load(
        DatasetName::Cifar10,
        Path::new("/nonexistent/cifar10"),
        Split::Train,
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cargo xtask fetch-data cifar10"), "{err}");
    let err = "imagenet".parse::<DatasetName>().unwrap_err().to_string();
    assert!(
        err.contains("imagenet") && err.contains("fashion-mnist"),
        "{err}"
    );
    assert_eq!(
        "CIFAR-100".parse::<DatasetName>().unwrap(),
        DatasetName::Cifar100
    );
    let _ = cifar::CIFAR10_CLASSES;
}
