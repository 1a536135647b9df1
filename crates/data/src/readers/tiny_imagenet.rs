//! Tiny ImageNet: `tiny-imagenet-200/wnids.txt` gives the class order; training images are
//! `train/<wnid>/images/*.JPEG`; the validation split (our test set) is `val/images/*.JPEG`
//! labelled by `val/val_annotations.txt` (file, wnid, box; tab-separated). Grayscale JPEGs are
//! expanded to 3 channels.

use super::{decode_images, sorted_files};
use crate::dataset::{ImageSet, Split};
use crate::error::{format_err, DataError, IoContext, Result};
use std::collections::HashMap;
use std::path::Path;

pub fn read(root: &Path, split: Split) -> Result<ImageSet> {
    let base = root.join("tiny-imagenet-200");
    let wnids_path = base.join("wnids.txt");
    let wnids: Vec<String> = std::fs::read_to_string(&wnids_path)
        .at(&wnids_path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let index: HashMap<&str, u32> = wnids
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i as u32))
        .collect();
    let (mut paths, mut labels) = (Vec::new(), Vec::new());
    match split {
        Split::Train => {
            for (i, w) in wnids.iter().enumerate() {
                let files = sorted_files(&base.join("train").join(w).join("images"), "jpeg")?;
                labels.extend(std::iter::repeat_n(i as u32, files.len()));
                paths.extend(files);
            }
        }
        Split::Test => {
            let ann = base.join("val").join("val_annotations.txt");
            let text = std::fs::read_to_string(&ann).at(&ann)?;
            for (n, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let mut f = line.split('\t');
                let (file, wnid) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
                let label = *index.get(wnid).ok_or_else(|| {
                    format_err(
                        &ann,
                        format!("line {}: class `{wnid}` is not in wnids.txt", n + 1),
                    )
                })?;
                paths.push(base.join("val").join("images").join(file));
                labels.push(label);
            }
        }
        Split::Valid => {
            return Err(DataError::Invalid(
                "tiny-imagenet: its val split is the test set (use test)".into(),
            ))
        }
    }
    let images = decode_images(&paths, 64)?;
    Ok(ImageSet {
        images,
        labels,
        channels: 3,
        height: 64,
        width: 64,
        classes: wnids,
    })
}
