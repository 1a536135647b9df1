//! `fetch-data` against a local HTTP server serving archives built here in the real formats.

mod common;

use common::*;
use kd_data::fetch::{fetch_files, mirror_url, FetchOptions, Outcome, RECORD};
use kd_data::registry::{Checksum, RemoteFile, Unpack};
use kd_data::{load, DataError, DatasetName, LoadOptions, Split};
use std::path::Path;

const CIFAR_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
const CIFAR_PATH: &str = "/~kriz/cifar-10-binary.tar.gz";

fn cifar_file(md5: &str) -> RemoteFile {
    RemoteFile {
        url: CIFAR_URL,
        checksum: Checksum::Md5(leak(md5.to_string())),
        unpack: Unpack::TarGz,
        size: None,
    }
}

fn mirrored(root: &Path, server: &Server) -> FetchOptions {
    FetchOptions {
        mirror: Some(server.base.clone()),
        ..opts(root)
    }
}

/// Only the downloads folder (empty) may remain after a failure.
fn assert_nothing_left(root: &Path) {
    let left: Vec<_> = tree(root)
        .into_iter()
        .filter(|p| p != ".downloads")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn mirror_replaces_scheme_and_host_only() {
    assert_eq!(
        mirror_url(CIFAR_URL, "http://127.0.0.1:9/"),
        "http://127.0.0.1:9/~kriz/cifar-10-binary.tar.gz"
    );
    assert_eq!(
        mirror_url(
            "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
            "http://m/data"
        ),
        "http://m/data/housenumbers/test_32x32.mat"
    );
}

#[test]
fn downloads_verifies_unpacks_and_second_run_does_nothing() {
    let archive = cifar10_archive(3);
    let server = Server::start();
    server.serve(CIFAR_PATH, archive.clone());
    let root = tempfile::tempdir().unwrap();
    let files = [cifar_file(&md5_hex(&archive))];
    let o = mirrored(root.path(), &server);
    assert_eq!(
        fetch_files(DatasetName::Cifar10, &files, &o).unwrap(),
        Outcome::Downloaded
    );
    let record = std::fs::read_to_string(root.path().join("cifar10").join(RECORD)).unwrap();
    assert!(record.contains(&md5_hex(&archive)), "{record}");
    // The archive is gone once unpacked; no staging folder or partial file remains.
    assert_eq!(tree(&root.path().join(".downloads")), Vec::<String>::new());
    assert!(!tree(root.path()).iter().any(|p| p.contains("staging")));

    let train = load(
        DatasetName::Cifar10,
        &root.path().join("cifar10"),
        Split::Train,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(train.len(), 15);
    assert_eq!(train.labels[..4], [0, 1, 2, 3]);
    assert_eq!(train.image(4)[0], 29); // (4*7 + 0 + 1)
    assert_eq!(train.image(4)[1024], 79); // G plane: (4*7 + 50 + 1)
    assert_eq!(train.image(4)[1], 255);
    let test = load(
        DatasetName::Cifar10,
        &root.path().join("cifar10"),
        Split::Test,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(test.len(), 3);
    assert_eq!(test.labels, [5, 6, 7]);

    let before = server.requests().len();
    assert_eq!(
        fetch_files(DatasetName::Cifar10, &files, &o).unwrap(),
        Outcome::AlreadyPresent
    );
    assert_eq!(
        server.requests().len(),
        before,
        "a second run must not download"
    );
}

#[test]
fn wrong_checksum_is_an_error_and_leaves_nothing() {
    let archive = cifar10_archive(2);
    let server = Server::start();
    server.serve(CIFAR_PATH, archive);
    let root = tempfile::tempdir().unwrap();
    let files = [cifar_file("00000000000000000000000000000000")];
    let err = fetch_files(
        DatasetName::Cifar10,
        &files,
        &mirrored(root.path(), &server),
    )
    .unwrap_err();
    match &err {
        DataError::Checksum { path, expected, .. } => {
            assert!(path.ends_with("cifar-10-binary.tar.gz.part"), "{err}");
            assert_eq!(expected, "00000000000000000000000000000000");
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(err.to_string().contains("md5"), "{err}");
    assert_nothing_left(root.path());
    assert_eq!(tree(&root.path().join(".downloads")), Vec::<String>::new());
}

#[test]
fn a_cut_connection_is_resumed_with_a_range_request() {
    let archive = cifar10_archive(4);
    let half = archive.len() / 2;
    let server = Server::start();
    server.serve_cut(CIFAR_PATH, archive.clone(), Some(half), 1);
    let root = tempfile::tempdir().unwrap();
    let files = [cifar_file(&md5_hex(&archive))];
    let o = mirrored(root.path(), &server);

    // One attempt: the cut is reported and the partial file is kept for the next run.
    let err = fetch_files(DatasetName::Cifar10, &files, &o).unwrap_err();
    assert!(err.to_string().contains("resumes"), "{err}");
    let part = root.path().join(".downloads/cifar-10-binary.tar.gz.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), half as u64);
    assert!(!root.path().join("cifar10").exists());

    // The next run asks only for the rest and completes.
    assert_eq!(
        fetch_files(DatasetName::Cifar10, &files, &o).unwrap(),
        Outcome::Downloaded
    );
    let reqs = server.requests();
    assert_eq!(
        reqs.last().unwrap().range.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
    let train = load(
        DatasetName::Cifar10,
        &root.path().join("cifar10"),
        Split::Train,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(train.len(), 20);
}

#[test]
fn retries_resume_within_one_run() {
    let archive = cifar10_archive(2);
    let server = Server::start();
    let q = archive.len() / 4;
    server.serve_cut(CIFAR_PATH, archive.clone(), Some(q), 2);
    let root = tempfile::tempdir().unwrap();
    let o = FetchOptions {
        attempts: 3,
        ..mirrored(root.path(), &server)
    };
    let files = [cifar_file(&md5_hex(&archive))];
    assert_eq!(
        fetch_files(DatasetName::Cifar10, &files, &o).unwrap(),
        Outcome::Downloaded
    );
    let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
    assert_eq!(
        ranges,
        [
            None,
            Some(format!("bytes={q}-")),
            Some(format!("bytes={}-", 2 * q))
        ]
    );
}

#[test]
fn not_found_is_a_clear_error() {
    let server = Server::start();
    let root = tempfile::tempdir().unwrap();
    let err = fetch_files(
        DatasetName::Cifar10,
        &[cifar_file("x")],
        &mirrored(root.path(), &server),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("404") && msg.contains(CIFAR_PATH), "{msg}");
    assert_nothing_left(root.path());
}

fn refuses(archive: Vec<u8>, unpack: Unpack, entry: &str, why: &str) {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("in").join("cifar-10-binary.tar.gz");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    std::fs::write(&src, &archive).unwrap();
    let file = RemoteFile {
        unpack,
        ..cifar_file(&md5_hex(&archive))
    };
    let datasets = root.path().join("datasets");
    let o = FetchOptions {
        from: Some(src),
        ..opts(&datasets)
    };
    let err = fetch_files(DatasetName::Cifar10, &[file], &o).unwrap_err();
    match &err {
        DataError::UnsafeEntry {
            entry: e, why: w, ..
        } => {
            assert_eq!(e, entry);
            assert!(w.contains(why), "{err}");
        }
        other => panic!("expected a refused entry, got {other}"),
    }
    assert_nothing_left(&datasets);
    assert!(!root.path().join("evil").exists() && !root.path().join("datasets/evil").exists());
}

#[test]
fn path_escaping_and_link_entries_are_refused() {
    refuses(
        tar_gz_raw_entry("../evil", tar::EntryType::Regular, None),
        Unpack::TarGz,
        "../evil",
        "..",
    );
    refuses(
        tar_gz_raw_entry("/tmp/evil", tar::EntryType::Regular, None),
        Unpack::TarGz,
        "/tmp/evil",
        "absolute",
    );
    refuses(
        tar_gz_raw_entry("a/link", tar::EntryType::Symlink, Some("/etc")),
        Unpack::TarGz,
        "a/link",
        "link",
    );
    refuses(
        tar_gz_raw_entry("a/hard", tar::EntryType::Link, Some("/etc/passwd")),
        Unpack::TarGz,
        "a/hard",
        "link",
    );
    refuses(
        zip_of(&[("ok.txt", b"1".to_vec()), ("../../evil", b"2".to_vec())]),
        Unpack::Zip,
        "../../evil",
        "..",
    );
}

#[test]
fn corrupt_gzip_archive_is_an_error_naming_it_and_leaves_nothing() {
    let mut archive = cifar10_archive(2);
    let n = archive.len();
    for b in &mut archive[n / 3..n / 3 + 64] {
        *b ^= 0x5a;
    }
    let server = Server::start();
    server.serve(CIFAR_PATH, archive.clone());
    let root = tempfile::tempdir().unwrap();
    let err = fetch_files(
        DatasetName::Cifar10,
        &[cifar_file(&md5_hex(&archive))],
        &mirrored(root.path(), &server),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("cifar-10-binary.tar.gz") && msg.contains("corrupt"),
        "{msg}"
    );
    assert_nothing_left(root.path());
}

fn fmnist_files(bodies: &[(&str, Vec<u8>)]) -> Vec<RemoteFile> {
    bodies
        .iter()
        .map(|(name, raw)| RemoteFile {
            url: leak(format!(
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}"
            )),
            checksum: Checksum::Sha256Gunzipped(leak(sha256_hex(raw))),
            unpack: Unpack::Keep,
            size: None,
        })
        .collect()
}

#[test]
fn idx_gz_files_are_verified_on_their_decompressed_bytes() {
    let (ti, tl) = idx_pair(30, 28, 28);
    let (vi, vl) = idx_pair(10, 28, 28);
    let raw = [
        ("train-images-idx3-ubyte.gz", ti),
        ("train-labels-idx1-ubyte.gz", tl),
        ("t10k-images-idx3-ubyte.gz", vi),
        ("t10k-labels-idx1-ubyte.gz", vl),
    ];
    let files = fmnist_files(&raw);
    let server = Server::start();
    // Served compressed differently from whatever produced the checksums: only content counts.
    for (name, body) in &raw {
        server.serve(&format!("/{name}"), gzip(body));
    }
    let root = tempfile::tempdir().unwrap();
    let o = mirrored(root.path(), &server);
    assert_eq!(
        fetch_files(DatasetName::FashionMnist, &files, &o).unwrap(),
        Outcome::Downloaded
    );
    let dir = root.path().join("fashion-mnist");
    let train = load(
        DatasetName::FashionMnist,
        &dir,
        Split::Train,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (train.len(), train.channels, train.height, train.width),
        (30, 1, 28, 28)
    );
    assert_eq!(train.image(3)[28 + 2], 3 + 1 + 2);
    assert_eq!(train.class_counts(), vec![3; 10]);

    // A corrupt gzip on the wire: the error names the file, nothing is installed.
    let root2 = tempfile::tempdir().unwrap();
    let mut bad = gzip(&raw[0].1);
    let n = bad.len();
    bad.truncate(n / 2);
    server.serve("/train-images-idx3-ubyte.gz", bad);
    let err = fetch_files(
        DatasetName::FashionMnist,
        &files,
        &mirrored(root2.path(), &server),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("train-images-idx3-ubyte.gz") && msg.contains("gzip"),
        "{msg}"
    );
    assert_nothing_left(root2.path());
}

#[test]
fn fashion_mnist_offline_error_says_how_to_get_it() {
    let root = tempfile::tempdir().unwrap();
    // A mirror nobody listens on: the download fails at once.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let o = FetchOptions {
        mirror: Some(format!("http://{addr}")),
        ..opts(root.path())
    };
    let err = kd_data::fetch::fetch(DatasetName::FashionMnist, &o).unwrap_err();
    assert!(
        err.to_string()
            .contains("apt-get install dataset-fashion-mnist"),
        "{err}"
    );
    let missing = load(
        DatasetName::FashionMnist,
        &root.path().join("fashion-mnist"),
        Split::Train,
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("apt-get install dataset-fashion-mnist"),
        "{missing}"
    );
}

#[test]
fn tiny_imagenet_zip_with_grayscale_and_val_annotations() {
    use image::ImageFormat::Jpeg;
    let mut files: Vec<(String, Vec<u8>)> =
        vec![("tiny-imagenet-200/wnids.txt".into(), b"n02\nn01\n".to_vec())];
    for (k, w) in ["n02", "n01"].iter().enumerate() {
        for i in 0..2 {
            let gray = k == 1 && i == 0;
            files.push((
                format!("tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG"),
                encode_image(64, 100 + 50 * k as u8, gray, Jpeg),
            ));
        }
    }
    files.push((
        "tiny-imagenet-200/val/images/val_0.JPEG".into(),
        encode_image(64, 200, true, Jpeg),
    ));
    files.push((
        "tiny-imagenet-200/val/images/val_1.JPEG".into(),
        encode_image(64, 10, false, Jpeg),
    ));
    files.push((
        "tiny-imagenet-200/val/val_annotations.txt".into(),
        b"val_0.JPEG\tn01\t0\t0\t10\t10\nval_1.JPEG\tn02\t1\t1\t5\t5\n".to_vec(),
    ));
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let archive = zip_of(&refs);
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("tiny-imagenet-200.zip");
    std::fs::write(&src, &archive).unwrap();
    let file = RemoteFile {
        url: "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        checksum: Checksum::Md5(leak(md5_hex(&archive))),
        unpack: Unpack::Zip,
        size: None,
    };
    let datasets = root.path().join("datasets");
    let o = FetchOptions {
        from: Some(src),
        ..opts(&datasets)
    };
    assert_eq!(
        fetch_files(DatasetName::TinyImagenet, &[file], &o).unwrap(),
        Outcome::Imported
    );
    let dir = datasets.join("tiny-imagenet");
    let train = load(
        DatasetName::TinyImagenet,
        &dir,
        Split::Train,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(train.labels, [0, 0, 1, 1]);
    assert_eq!(train.classes, ["n02", "n01"]);
    // The grayscale JPEG is expanded: all three planes equal, near its value (JPEG is lossy).
    let g = train.image(2);
    assert_eq!(&g[..4096], &g[4096..8192]);
    assert!((g[100] as i32 - 150).abs() <= 2, "{}", g[100]);
    let test = load(
        DatasetName::TinyImagenet,
        &dir,
        Split::Test,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(test.labels, [1, 0]);
    let small = load(
        DatasetName::TinyImagenet,
        &dir,
        Split::Test,
        &LoadOptions {
            resize: Some(32),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        (small.height, small.width, small.images.len()),
        (32, 32, 2 * 3 * 1024)
    );
    assert!((small.image(0)[500] as i32 - 200).abs() <= 2);
}

#[test]
fn cinic_png_folders_in_alphabetical_class_order() {
    use image::ImageFormat::Png;
    let classes = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    let mut files = Vec::new();
    for split in ["train", "valid", "test"] {
        // Written in reverse order: the reader must sort.
        for (k, c) in classes.iter().enumerate().rev() {
            files.push((
                format!("{split}/{c}/img{k}.png"),
                encode_image(32, k as u8 * 20, false, Png),
            ));
        }
    }
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let archive = tar_gz(&refs);
    let server = Server::start();
    server.serve(
        "/bitstream/handle/10283/3192/CINIC-10.tar.gz",
        archive.clone(),
    );
    let root = tempfile::tempdir().unwrap();
    let file = RemoteFile {
        url: "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz",
        checksum: Checksum::Md5(leak(md5_hex(&archive))),
        unpack: Unpack::TarGz,
        size: None,
    };
    fetch_files(
        DatasetName::Cinic10,
        &[file],
        &mirrored(root.path(), &server),
    )
    .unwrap();
    let valid = load(
        DatasetName::Cinic10,
        &root.path().join("cinic10"),
        Split::Valid,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(valid.classes, classes);
    assert_eq!(valid.labels, (0..10).collect::<Vec<u32>>());
    assert_eq!(valid.image(3)[0], 60); // R of class 3
    assert_eq!(valid.image(3)[2048], 255 - 60); // B
}
