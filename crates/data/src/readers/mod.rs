//! Readers for the six datasets' on-disk formats (`../shared/spec/DATASETS.md`, Formats).

pub mod cifar;
pub mod cinic;
pub mod idx;
pub mod mat;
pub mod svhn;
pub mod tiny_imagenet;

use crate::dataset::ImageSet;
use crate::error::{format_err, IoContext, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).at(path)
}

/// Decodes image files (JPEG/PNG) in parallel into CHW u8 buffers of `side × side`, expanding
/// grayscale to RGB. A file of another size or that does not decode is an error naming it.
pub(crate) fn decode_images(paths: &[PathBuf], side: usize) -> Result<Vec<u8>> {
    let per = 3 * side * side;
    let mut out = vec![0u8; paths.len() * per];
    out.par_chunks_mut(per)
        .zip(paths.par_iter())
        .try_for_each(|(dst, path)| -> Result<()> {
            let bytes = read_file(path)?;
            let img = image::load_from_memory(&bytes)
                .map_err(|e| format_err(path, format!("cannot decode image: {e}")))?
                .to_rgb8();
            if img.width() as usize != side || img.height() as usize != side {
                return Err(format_err(
                    path,
                    format!(
                        "image is {}x{}, expected {side}x{side}",
                        img.width(),
                        img.height()
                    ),
                ));
            }
            hwc_to_chw(img.as_raw(), 3, dst);
            Ok(())
        })?;
    Ok(out)
}

/// Interleaved HWC pixels → planar CHW.
pub(crate) fn hwc_to_chw(src: &[u8], channels: usize, dst: &mut [u8]) {
    let plane = src.len() / channels;
    for (p, px) in src.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            dst[c * plane + p] = v;
        }
    }
}

/// Resizes every image to `side × side` (bilinear, as torchvision's `Resize`).
pub(crate) fn resize_set(set: ImageSet, side: usize) -> ImageSet {
    let (c, h, w) = (set.channels, set.height, set.width);
    let per = c * side * side;
    let mut images = vec![0u8; set.len() * per];
    images.par_chunks_mut(per).enumerate().for_each(|(i, dst)| {
        let src = &set.images[i * c * h * w..(i + 1) * c * h * w];
        for ch in 0..c {
            let plane = image::GrayImage::from_raw(
                w as u32,
                h as u32,
                src[ch * h * w..(ch + 1) * h * w].to_vec(),
            )
            .expect("plane size matches");
            let r = image::imageops::resize(
                &plane,
                side as u32,
                side as u32,
                image::imageops::FilterType::Triangle,
            );
            dst[ch * side * side..(ch + 1) * side * side].copy_from_slice(r.as_raw());
        }
    });
    ImageSet {
        images,
        height: side,
        width: side,
        ..set
    }
}

/// Sorted names of the sub-folders of `dir`.
pub(crate) fn sorted_subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        if e.file_type().at(e.path())?.is_dir() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Sorted files of `dir` whose extension matches `ext` (case-insensitive).
pub(crate) fn sorted_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let p = e.at(dir)?.path();
        if p.extension()
            .is_some_and(|x| x.to_string_lossy().eq_ignore_ascii_case(ext))
        {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}
