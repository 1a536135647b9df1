//! Per-image transforms: pad-and-random-crop, horizontal flip, random-resized-crop, and
//! per-channel normalisation, writing f32 CHW straight from u8 CHW. Normalisation goes through
//! a 256-entry table per channel, so the hot loop is one load per pixel.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Random augmentation of training images (all off = the test transform).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Zero-pad each side by this many pixels, then crop back to the input size at a random
    /// offset (CIFAR's standard 4; 0 turns it off).
    pub pad_crop: usize,
    /// Flip horizontally with probability ½.
    pub hflip: bool,
    /// torchvision's `RandomResizedCrop` to the output size, instead of pad-and-crop.
    pub random_resized_crop: Option<RandomResizedCrop>,
}

impl Default for Augment {
    /// The paper protocol: 4-pixel zero pad + random crop + horizontal flip.
    fn default() -> Self {
        Self {
            pad_crop: 4,
            hflip: true,
            random_resized_crop: None,
        }
    }
}

impl Augment {
    /// No augmentation (evaluation).
    pub fn none() -> Self {
        Self {
            pad_crop: 0,
            hflip: false,
            random_resized_crop: None,
        }
    }
}

/// Crop a random area fraction in `scale` with aspect ratio in `ratio` (log-uniform), then
/// resize bilinearly to the output size (torchvision semantics, 10 tries then a centre crop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomResizedCrop {
    pub scale: (f32, f32),
    pub ratio: (f32, f32),
}

impl Default for RandomResizedCrop {
    fn default() -> Self {
        Self {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }
}

/// Per-channel `(x/255 − mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// The dataset's constants (DATASETS.md).
    pub fn of(info: &crate::DatasetInfo) -> Self {
        Self {
            mean: info.mean.to_vec(),
            std: info.std.to_vec(),
        }
    }
}

/// A ready-to-apply transform for images of a fixed `channels × height × width`.
#[derive(Debug, Clone)]
pub struct Transform {
    pub augment: Augment,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    lut: Vec<[f32; 256]>,
}

impl Transform {
    /// Panics if `normalize` does not have one mean and std per channel or a std is not > 0.
    pub fn new(
        augment: Augment,
        normalize: &Normalize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Self {
        assert!(
            normalize.mean.len() == channels && normalize.std.len() == channels,
            "normalisation has {} means and {} stds for {channels} channels",
            normalize.mean.len(),
            normalize.std.len()
        );
        let lut = (0..channels)
            .map(|c| {
                let (m, s) = (normalize.mean[c], normalize.std[c]);
                assert!(
                    s > 0.0,
                    "normalisation std of channel {c} is {s}, must be > 0"
                );
                std::array::from_fn(|v| (v as f32 / 255.0 - m) / s)
            })
            .collect();
        Self {
            augment,
            channels,
            height,
            width,
            lut,
        }
    }

    /// Output floats per image.
    pub fn out_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Transforms one u8 CHW image into `dst` (f32 CHW), drawing randomness from `rng`.
    pub fn apply<R: Rng>(&self, src: &[u8], rng: &mut R, dst: &mut [f32]) {
        let (c, h, w) = (self.channels, self.height, self.width);
        debug_assert_eq!(src.len(), c * h * w);
        debug_assert_eq!(dst.len(), c * h * w);
        if let Some(rrc) = &self.augment.random_resized_crop {
            let (y0, x0, ch, cw) = rrc_box(rrc, h, w, rng);
            let flip = self.augment.hflip && rng.gen::<bool>();
            self.resized_crop(src, (y0, x0, ch, cw), flip, dst);
            return;
        }
        let p = self.augment.pad_crop as isize;
        let (dy, dx) = if p > 0 {
            (rng.gen_range(0..=2 * p) - p, rng.gen_range(0..=2 * p) - p)
        } else {
            (0, 0)
        };
        let flip = self.augment.hflip && rng.gen::<bool>();
        let (hi, wi) = (h as isize, w as isize);
        for ch in 0..c {
            let lut = &self.lut[ch];
            let plane = &src[ch * h * w..(ch + 1) * h * w];
            let out = &mut dst[ch * h * w..(ch + 1) * h * w];
            for (y, orow) in out.chunks_exact_mut(w).enumerate() {
                let sy = y as isize + dy;
                if sy < 0 || sy >= hi {
                    orow.fill(lut[0]);
                    continue;
                }
                let srow = &plane[sy as usize * w..(sy as usize + 1) * w];
                // Output column x reads source column x + dx (x mirrored first when flipping).
                let lo = (-dx).clamp(0, wi) as usize;
                let hi_x = (wi - dx).clamp(0, wi) as usize;
                if !flip {
                    orow[..lo].fill(lut[0]);
                    for (o, &v) in orow[lo..hi_x]
                        .iter_mut()
                        .zip(&srow[(lo as isize + dx) as usize..])
                    {
                        *o = lut[v as usize];
                    }
                    orow[hi_x..].fill(lut[0]);
                } else {
                    // out[x] = crop[w-1-x] = src[w-1-x+dx]; valid for w-1-x in lo..hi_x.
                    let (a, b) = (w - hi_x, w - lo);
                    orow[..a].fill(lut[0]);
                    for (x, o) in orow[a..b].iter_mut().enumerate() {
                        let sx = (wi - 1 - (x + a) as isize + dx) as usize;
                        *o = lut[srow[sx] as usize];
                    }
                    orow[b..].fill(lut[0]);
                }
            }
        }
    }

    /// Bilinear resize (align-corners false) of the box `(y0, x0, bh, bw)` to the full output.
    fn resized_crop(
        &self,
        src: &[u8],
        (y0, x0, bh, bw): (usize, usize, usize, usize),
        flip: bool,
        dst: &mut [f32],
    ) {
        let (c, h, w) = (self.channels, self.height, self.width);
        let sy = bh as f32 / h as f32;
        let sx = bw as f32 / w as f32;
        let coord = |o: usize, scale: f32, len: usize| {
            let f = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (f as usize).min(len - 1);
            let i1 = (i0 + 1).min(len - 1);
            (i0, i1, f - i0 as f32)
        };
        let xs: Vec<_> = (0..w).map(|x| coord(x, sx, bw)).collect();
        for ch in 0..c {
            let lut = &self.lut[ch];
            let plane = &src[ch * h * w..(ch + 1) * h * w];
            for y in 0..h {
                let (ya, yb, fy) = coord(y, sy, bh);
                let ra = &plane[(y0 + ya) * w + x0..];
                let rb = &plane[(y0 + yb) * w + x0..];
                let orow = &mut dst[ch * h * w + y * w..ch * h * w + (y + 1) * w];
                for (x, o) in orow.iter_mut().enumerate() {
                    let (xa, xb, fx) = xs[if flip { w - 1 - x } else { x }];
                    let top = lut[ra[xa] as usize] * (1.0 - fx) + lut[ra[xb] as usize] * fx;
                    let bot = lut[rb[xa] as usize] * (1.0 - fx) + lut[rb[xb] as usize] * fx;
                    *o = top * (1.0 - fy) + bot * fy;
                }
            }
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params`: (top, left, height, width).
fn rrc_box<R: Rng>(
    p: &RandomResizedCrop,
    h: usize,
    w: usize,
    rng: &mut R,
) -> (usize, usize, usize, usize) {
    let area = (h * w) as f32;
    let (lr0, lr1) = (p.ratio.0.ln(), p.ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(p.scale.0..=p.scale.1);
        let aspect = rng.gen_range(lr0..=lr1).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            return (rng.gen_range(0..=h - ch), rng.gen_range(0..=w - cw), ch, cw);
        }
    }
    let in_ratio = w as f32 / h as f32;
    let (ch, cw) = if in_ratio < p.ratio.0 {
        ((w as f32 / p.ratio.0).round() as usize, w)
    } else if in_ratio > p.ratio.1 {
        (h, (h as f32 * p.ratio.1).round() as usize)
    } else {
        (h, w)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}
