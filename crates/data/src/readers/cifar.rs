//! CIFAR-10 / CIFAR-100 binary format: fixed-size records of label byte(s) then 3072 pixel
//! bytes (R plane, G plane, B plane, each 32×32 row-major).

use super::read_file;
use crate::dataset::{ImageSet, Split};
use crate::error::{format_err, DataError, Result};
use std::path::Path;

const PIXELS: usize = 3 * 32 * 32;

pub const CIFAR10_CLASSES: [&str; 10] = [
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

/// Appends the records of one file. `label_bytes` is 1 (CIFAR-10) or 2 (CIFAR-100: coarse,
/// fine; the fine label, the last byte, is kept). The file must hold a whole, non-zero number
/// of records; a count other than the published `official` one is logged (the archive's
/// checksum already pins the published files).
pub fn read_records(
    path: &Path,
    label_bytes: usize,
    classes: usize,
    official: usize,
    set: &mut ImageSet,
) -> Result<()> {
    let bytes = read_file(path)?;
    let rec = label_bytes + PIXELS;
    if bytes.is_empty() || bytes.len() % rec != 0 {
        return Err(format_err(
            path,
            format!(
                "{} bytes is not a whole number of {rec}-byte records (truncated, or not a CIFAR \
                 binary file; the published file has {official} records = {} bytes)",
                bytes.len(),
                official * rec
            ),
        ));
    }
    let expected = bytes.len() / rec;
    if expected != official {
        log::warn!(
            "{}: {expected} records, the published file has {official}",
            path.display()
        );
    }
    set.images.reserve(expected * PIXELS);
    set.labels.reserve(expected);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let label = r[label_bytes - 1] as u32;
        if label as usize >= classes {
            return Err(format_err(
                path,
                format!("record {i} has label {label}, expected 0..{classes}"),
            ));
        }
        set.labels.push(label);
        set.images.extend_from_slice(&r[label_bytes..]);
    }
    Ok(())
}

fn empty(classes: Vec<String>) -> ImageSet {
    ImageSet {
        images: Vec::new(),
        labels: Vec::new(),
        channels: 3,
        height: 32,
        width: 32,
        classes,
    }
}

fn no_valid(name: &str) -> DataError {
    DataError::Invalid(format!(
        "{name} has no validation split (use train or test)"
    ))
}

/// `cifar-10-batches-bin/data_batch_{1..5}.bin` (10,000 each) or `test_batch.bin`.
pub fn read_cifar10(root: &Path, split: Split) -> Result<ImageSet> {
    let dir = root.join("cifar-10-batches-bin");
    let mut set = empty(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect());
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
        Split::Valid => return Err(no_valid("cifar10")),
    };
    for f in files {
        read_records(&dir.join(f), 1, 10, 10_000, &mut set)?;
    }
    Ok(set)
}

/// `cifar-100-binary/{train,test}.bin` (50,000 / 10,000 records), fine labels; class names
/// from `fine_label_names.txt` when present.
pub fn read_cifar100(root: &Path, split: Split) -> Result<ImageSet> {
    let dir = root.join("cifar-100-binary");
    let names_path = dir.join("fine_label_names.txt");
    let classes: Vec<String> = match std::fs::read_to_string(&names_path) {
        Ok(s) => s
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        Err(_) => (0..100).map(|i| format!("class{i}")).collect(),
    };
    if classes.len() != 100 {
        return Err(format_err(
            &names_path,
            format!("{} class names, expected 100", classes.len()),
        ));
    }
    let mut set = empty(classes);
    let (file, n) = match split {
        Split::Train => ("train.bin", 50_000),
        Split::Test => ("test.bin", 10_000),
        Split::Valid => return Err(no_valid("cifar100")),
    };
    read_records(&dir.join(file), 2, 100, n, &mut set)?;
    Ok(set)
}
