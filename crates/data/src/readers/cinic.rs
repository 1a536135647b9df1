//! CINIC-10: `{train,valid,test}/<class>/*.png`, class folders in alphabetical order.

use super::{decode_images, sorted_files, sorted_subdirs};
use crate::dataset::{ImageSet, Split};
use crate::error::{format_err, Result};
use std::path::Path;

pub fn read(root: &Path, split: Split) -> Result<ImageSet> {
    let dir = root.join(match split {
        Split::Train => "train",
        Split::Valid => "valid",
        Split::Test => "test",
    });
    let classes = sorted_subdirs(&dir)?;
    if classes.len() != 10 {
        return Err(format_err(
            &dir,
            format!("{} class folders, expected 10: {classes:?}", classes.len()),
        ));
    }
    let (mut paths, mut labels) = (Vec::new(), Vec::new());
    for (i, c) in classes.iter().enumerate() {
        let files = sorted_files(&dir.join(c), "png")?;
        labels.extend(std::iter::repeat_n(i as u32, files.len()));
        paths.extend(files);
    }
    let images = decode_images(&paths, 32)?;
    Ok(ImageSet {
        images,
        labels,
        channels: 3,
        height: 32,
        width: 32,
        classes,
    })
}
