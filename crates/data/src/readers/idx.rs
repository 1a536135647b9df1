//! IDX files (MNIST family), gzip-compressed: a big-endian header (magic `0x00000803` for
//! images, `0x00000801` for labels, then the dimensions) followed by raw bytes.

use super::read_file;
use crate::dataset::{ImageSet, Split};
use crate::error::{format_err, DataError, Result};
use std::io::Read;
use std::path::Path;

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Decompresses a `.gz` file (or reads it as is when it has no gzip header), naming the file in
/// errors (a corrupt or truncated gzip stream is reported as such).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = read_file(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| format_err(path, format!("corrupt or truncated gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses an IDX image file: returns (count, rows, cols, pixels).
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>)> {
    if bytes.len() < 16 {
        return Err(format_err(
            path,
            format!("{} bytes: too short for an IDX image header", bytes.len()),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != 0x0000_0803 {
        return Err(format_err(
            path,
            format!("bad magic number 0x{magic:08x}, expected 0x00000803 (IDX images)"),
        ));
    }
    let (n, r, c) = (
        be_u32(bytes, 4) as usize,
        be_u32(bytes, 8) as usize,
        be_u32(bytes, 12) as usize,
    );
    let want = 16 + n * r * c;
    if bytes.len() != want {
        return Err(format_err(
            path,
            format!(
                "{} bytes, the header ({n} images of {r}x{c}) needs {want}",
                bytes.len()
            ),
        ));
    }
    Ok((n, r, c, bytes[16..].to_vec()))
}

/// Parses an IDX label file.
pub fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u32>> {
    if bytes.len() < 8 {
        return Err(format_err(
            path,
            format!("{} bytes: too short for an IDX label header", bytes.len()),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != 0x0000_0801 {
        return Err(format_err(
            path,
            format!("bad magic number 0x{magic:08x}, expected 0x00000801 (IDX labels)"),
        ));
    }
    let n = be_u32(bytes, 4) as usize;
    if bytes.len() != 8 + n {
        return Err(format_err(
            path,
            format!(
                "{} bytes, the header ({n} labels) needs {}",
                bytes.len(),
                8 + n
            ),
        ));
    }
    Ok(bytes[8..].iter().map(|&b| b as u32).collect())
}

/// `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` under `root` (plain files accepted too).
pub fn read_fashion_mnist(root: &Path, split: Split) -> Result<ImageSet> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
        Split::Valid => {
            return Err(DataError::Invalid(
                "fashion-mnist has no validation split (use train or test)".into(),
            ))
        }
    };
    let find = |stem: String| {
        let gz = root.join(format!("{stem}.gz"));
        if gz.exists() {
            gz
        } else {
            root.join(stem)
        }
    };
    let img_path = find(format!("{prefix}-images-idx3-ubyte"));
    let lbl_path = find(format!("{prefix}-labels-idx1-ubyte"));
    let (n, r, c, images) = parse_images(&img_path, &read_maybe_gz(&img_path)?)?;
    let labels = parse_labels(&lbl_path, &read_maybe_gz(&lbl_path)?)?;
    if labels.len() != n {
        return Err(format_err(
            &lbl_path,
            format!(
                "{} labels but {} has {n} images",
                labels.len(),
                img_path.display()
            ),
        ));
    }
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l >= 10) {
        return Err(format_err(
            &lbl_path,
            format!("label {l} of image {i} is not in 0..10"),
        ));
    }
    Ok(ImageSet {
        images,
        labels,
        channels: 1,
        height: r,
        width: c,
        classes: FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    })
}
