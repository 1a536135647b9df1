//! SVHN cropped digits: `{train,test,extra}_32x32.mat` with `X` (32×32×3×N uint8, column-major)
//! and `y` (N×1, label 10 meaning digit 0).

use super::mat::{read_mat, MatData};
use super::read_file;
use crate::dataset::{ImageSet, Split};
use crate::error::{format_err, DataError, Result};
use std::path::Path;

/// Reads one `.mat` file into CHW images; labels 10 → 0.
pub fn read_mat_file(path: &Path) -> Result<ImageSet> {
    let arrays = read_mat(path, &read_file(path)?)?;
    let get = |n: &str| {
        arrays
            .iter()
            .find(|a| a.name == n)
            .ok_or_else(|| format_err(path, format!("no `{n}` array in the file")))
    };
    let (x, y) = (get("X")?, get("y")?);
    let pixels = match &x.data {
        MatData::U8(v) => v,
        MatData::F64(_) => return Err(format_err(path, "`X` is not uint8")),
    };
    let n = match x.dims[..] {
        [32, 32, 3, n] => n,
        [32, 32, 3] => 1,
        _ => {
            return Err(format_err(
                path,
                format!("`X` has dimensions {:?}, expected 32x32x3xN", x.dims),
            ))
        }
    };
    let labels: Vec<f64> = match &y.data {
        MatData::U8(v) => v.iter().map(|&b| b as f64).collect(),
        MatData::F64(v) => v.clone(),
    };
    if labels.len() != n {
        return Err(format_err(
            path,
            format!("`y` has {} labels for {n} images", labels.len()),
        ));
    }
    let labels = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| match l as i64 {
            10 => Ok(0),
            d @ 0..=9 if l.fract() == 0.0 => Ok(d as u32),
            _ => Err(format_err(
                path,
                format!("label {l} of image {i} is not a digit 1..10"),
            )),
        })
        .collect::<Result<Vec<u32>>>()?;
    // Column-major: element (row i, col j, channel k, image l) is at i + 32j + 1024k + 3072l.
    let mut images = vec![0u8; n * 3072];
    for (src, dst) in pixels.chunks_exact(3072).zip(images.chunks_exact_mut(3072)) {
        for k in 0..3 {
            for j in 0..32 {
                for i in 0..32 {
                    dst[k * 1024 + i * 32 + j] = src[i + 32 * j + 1024 * k];
                }
            }
        }
    }
    Ok(ImageSet {
        images,
        labels,
        channels: 3,
        height: 32,
        width: 32,
        classes: (0..10).map(|d| d.to_string()).collect(),
    })
}

pub fn read(root: &Path, split: Split, extra: bool) -> Result<ImageSet> {
    let file = match split {
        Split::Train => "train_32x32.mat",
        Split::Test => "test_32x32.mat",
        Split::Valid => {
            return Err(DataError::Invalid(
                "svhn has no validation split (use train or test)".into(),
            ))
        }
    };
    let mut set = read_mat_file(&root.join(file))?;
    if extra && split == Split::Train {
        let more = read_mat_file(&root.join("extra_32x32.mat"))?;
        set.images.extend_from_slice(&more.images);
        set.labels.extend_from_slice(&more.labels);
    }
    Ok(set)
}
