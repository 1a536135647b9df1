//! im2col and col2im: the lowering of a convolution's input to a matrix (one row per input
//! channel and kernel tap, one column per output pixel) so that the convolution is one `gemm`,
//! and the scatter-add back from such a matrix in the backward pass. Stride-1 convolutions
//! whose output is as wide as their input take one contiguous copy per tap; every other
//! geometry goes row by row.

use crate::conv::ConvGeom;

/// im2col of one group of one sample: `x` is `[cig, h, w]`; row `r` of the `[cig·kh·kw, oh·ow]`
/// matrix is written at `col[r·ld + c0 ..]` (so several samples can sit side by side).
pub(crate) fn im2col(geo: &ConvGeom, x: &[f32], col: &mut [f32], ld: usize, c0: usize) {
    if geo.flat_shift() {
        im2col_shift(geo, x, col, ld, c0)
    } else {
        im2col_rows(geo, x, col, ld, c0)
    }
}

/// One output row of one tap in the row-by-row walk.
struct RowTap {
    /// Input channel (within the group).
    c: usize,
    /// Where the output row starts in the im2col matrix.
    at: usize,
    /// The input row it reads, `None` when that row is padding.
    iy: Option<usize>,
    /// Input column minus `ox·s`.
    off: isize,
    /// Output columns `lo..hi` read inside the image.
    lo: usize,
    hi: usize,
}

/// For each kernel column `kj`: the input column minus `ox·s`, and the output columns
/// `lo..hi` that read inside the image (the same for every channel and kernel row).
fn column_ranges(geo: &ConvGeom) -> Vec<(isize, usize, usize)> {
    (0..geo.kw)
        .map(|kj| {
            let off = (kj * geo.d) as isize - geo.p as isize;
            let (lo, hi) = geo.valid_cols(off);
            (off, lo, hi)
        })
        .collect()
}

/// Calls `f` for every output row of every tap, in im2col order (any geometry).
fn for_each_row(geo: &ConvGeom, ld: usize, c0: usize, mut f: impl FnMut(RowTap)) {
    let cols = column_ranges(geo);
    for c in 0..geo.cig {
        for ki in 0..geo.kh {
            for (kj, &(off, lo, hi)) in cols.iter().enumerate() {
                let row = ((c * geo.kh + ki) * geo.kw + kj) * ld + c0;
                for oy in 0..geo.oh {
                    let iy = (oy * geo.s + ki * geo.d) as isize - geo.p as isize;
                    let iy = (0..geo.h as isize).contains(&iy).then_some(iy as usize);
                    let at = row + oy * geo.ow;
                    f(RowTap {
                        c,
                        at,
                        iy,
                        off,
                        lo,
                        hi,
                    });
                }
            }
        }
    }
}

/// [`im2col`] row by row, for any geometry.
fn im2col_rows(geo: &ConvGeom, x: &[f32], col: &mut [f32], ld: usize, c0: usize) {
    let (ow, hw) = (geo.ow, geo.h * geo.w);
    for_each_row(geo, ld, c0, |t| {
        let dst = &mut col[t.at..t.at + ow];
        let Some(iy) = t.iy else {
            dst.fill(0.0);
            return;
        };
        let src = &x[t.c * hw + iy * geo.w..t.c * hw + (iy + 1) * geo.w];
        // Loops, not `fill`: these runs are a pixel or two, too short for memset.
        for v in &mut dst[..t.lo] {
            *v = 0.0;
        }
        for v in &mut dst[t.hi..] {
            *v = 0.0;
        }
        if geo.s == 1 {
            let a = (t.lo as isize + t.off) as usize;
            dst[t.lo..t.hi].copy_from_slice(&src[a..a + t.hi - t.lo]);
        } else {
            for (ox, v) in dst.iter_mut().enumerate().take(t.hi).skip(t.lo) {
                *v = src[(ox as isize * geo.s as isize + t.off) as usize];
            }
        }
    });
}

/// col2im of one group of one sample: adds the matrix laid out as in [`im2col`] into
/// `dx` (`[cig, h, w]`). The matrix is scratch: the flat-shift path zeroes its entries that
/// read padding columns, so that each tap is one contiguous add.
pub(crate) fn col2im(geo: &ConvGeom, col: &mut [f32], ld: usize, c0: usize, dx: &mut [f32]) {
    if geo.flat_shift() {
        col2im_shift(geo, col, ld, c0, dx)
    } else {
        col2im_rows(geo, col, ld, c0, dx)
    }
}

/// [`col2im`] row by row, for any geometry.
fn col2im_rows(geo: &ConvGeom, col: &[f32], ld: usize, c0: usize, dx: &mut [f32]) {
    let (ow, hw) = (geo.ow, geo.h * geo.w);
    for_each_row(geo, ld, c0, |t| {
        let Some(iy) = t.iy else {
            return;
        };
        let src = &col[t.at..t.at + ow];
        let dst = &mut dx[t.c * hw + iy * geo.w..t.c * hw + (iy + 1) * geo.w];
        if geo.s == 1 {
            let a = (t.lo as isize + t.off) as usize;
            for (d, s) in dst[a..a + t.hi - t.lo].iter_mut().zip(&src[t.lo..t.hi]) {
                *d += s;
            }
        } else {
            for (ox, v) in src.iter().enumerate().take(t.hi).skip(t.lo) {
                dst[(ox as isize * geo.s as isize + t.off) as usize] += v;
            }
        }
    });
}

/// One tap of a stride-1 convolution whose output is as wide as its input ("same" padding):
/// its im2col row is the input plane shifted by one flat offset, so the output rows whose input
/// row exists are a single contiguous run.
struct Tap {
    /// Input channel (within the group).
    c: usize,
    /// Input index minus output index.
    shift: isize,
    /// Output rows `oy0..oy1` read inside the image.
    oy0: usize,
    oy1: usize,
    /// Output columns `lo..hi` read inside the image (the others read padding).
    lo: usize,
    hi: usize,
}

impl Tap {
    /// The contiguous run both directions move: output positions `q0..q1` (of the rows that
    /// read inside the image, clamped to the plane; the clipped ends are padding columns) and
    /// the input index `q0 + shift` it starts at. `None` when the run is empty.
    fn run(&self, ow: usize, hw: usize) -> Option<(usize, usize, usize)> {
        let q0 = ((self.oy0 * ow) as isize).max(-self.shift) as usize;
        let q1 = ((self.oy1 * ow) as isize).min(hw as isize - self.shift) as usize;
        (q1 > q0).then(|| (q0, q1, (q0 as isize + self.shift) as usize))
    }

    /// Zeroes, in a tap's im2col row, the columns that read padding on the rows `oy0..oy1`.
    /// Element loops, not `fill`: each run is a value or two, shorter than a `memset` call.
    fn zero_padding_columns(&self, row: &mut [f32], ow: usize) {
        for r in row[self.oy0 * ow..self.oy1 * ow].chunks_exact_mut(ow) {
            for v in &mut r[..self.lo] {
                *v = 0.0;
            }
            for v in &mut r[self.hi..] {
                *v = 0.0;
            }
        }
    }
}

/// Calls `f(r, tap)` for every im2col row `r` of a [`ConvGeom::flat_shift`] geometry.
fn for_each_tap(geo: &ConvGeom, mut f: impl FnMut(usize, Tap)) {
    let (h, w) = (geo.h as isize, geo.w as isize);
    let cols = column_ranges(geo);
    let mut r = 0;
    for c in 0..geo.cig {
        for ki in 0..geo.kh {
            let dy = (ki * geo.d) as isize - geo.p as isize;
            let oy0 = (-dy).clamp(0, geo.oh as isize) as usize;
            let oy1 = (h - dy).clamp(oy0 as isize, geo.oh as isize) as usize;
            for &(dx, lo, hi) in &cols {
                let shift = dy * w + dx;
                f(
                    r,
                    Tap {
                        c,
                        shift,
                        oy0,
                        oy1,
                        lo,
                        hi,
                    },
                );
                r += 1;
            }
        }
    }
}

/// [`im2col`] for [`ConvGeom::flat_shift`] geometries: one copy per tap, then the few output
/// columns that read padding are zeroed.
fn im2col_shift(geo: &ConvGeom, x: &[f32], col: &mut [f32], ld: usize, c0: usize) {
    let (ow, hw, pix) = (geo.ow, geo.h * geo.w, geo.pix());
    for_each_tap(geo, |r, t| {
        let (oy0, oy1) = (t.oy0, t.oy1);
        let plane = &x[t.c * hw..(t.c + 1) * hw];
        let dst = &mut col[r * ld + c0..r * ld + c0 + pix];
        dst[..oy0 * ow].fill(0.0);
        dst[oy1 * ow..].fill(0.0);
        if oy0 == oy1 {
            return;
        }
        // Output q reads input q + shift.
        if let Some((q0, q1, a)) = t.run(ow, hw) {
            dst[q0..q1].copy_from_slice(&plane[a..a + (q1 - q0)]);
        }
        t.zero_padding_columns(dst, ow);
    });
}

/// [`col2im`] for [`ConvGeom::flat_shift`] geometries, the mirror of [`im2col_shift`]: the
/// entries of the tap's row that read padding columns are zeroed (each would otherwise land on
/// the wrapped-around pixel of the next or previous input row), then the run of output rows
/// whose input row exists is added into the input plane as one contiguous run.
fn col2im_shift(geo: &ConvGeom, col: &mut [f32], ld: usize, c0: usize, dx: &mut [f32]) {
    let (ow, hw) = (geo.ow, geo.h * geo.w);
    for_each_tap(geo, |r, t| {
        if t.oy0 == t.oy1 {
            return;
        }
        let plane = &mut dx[t.c * hw..(t.c + 1) * hw];
        let src = &mut col[r * ld + c0..r * ld + c0 + geo.pix()];
        t.zero_padding_columns(src, ow);
        if let Some((q0, q1, a)) = t.run(ow, hw) {
            for (dv, sv) in plane[a..a + (q1 - q0)].iter_mut().zip(&src[q0..q1]) {
                *dv += sv;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::Conv2dCfg;

    /// The one-copy-per-tap im2col and its col2im agree exactly with the row-by-row versions
    /// on every "same"-width geometry (3×3 and 5×5 kernels, dilation, images narrower than
    /// the kernel's reach), including the columns and rows that read padding.
    #[test]
    fn shifted_taps_match_row_by_row() {
        for &(c, h, w, k, p, d) in &[
            (2, 5, 5, 3, 1, 1),
            (3, 4, 6, 5, 2, 1),
            (1, 7, 3, 3, 2, 2),
            (2, 1, 1, 3, 1, 1),
            (1, 2, 2, 5, 2, 1),
            (2, 3, 9, 3, 3, 3),
        ] {
            let geo = ConvGeom::new((1, c, h, w), (1, c, k, k), Conv2dCfg::new(1, p).dilation(d));
            assert!(geo.flat_shift(), "{geo:?}");
            let x: Vec<f32> = (0..c * h * w).map(|i| 1.0 + i as f32).collect();
            let (ld, c0) = (geo.pix() + 3, 2);
            let mut a = vec![f32::NAN; geo.kg() * ld];
            let mut b = a.clone();
            im2col_shift(&geo, &x, &mut a, ld, c0);
            im2col_rows(&geo, &x, &mut b, ld, c0);
            for r in 0..geo.kg() {
                let (ra, rb) = (
                    &a[r * ld + c0..][..geo.pix()],
                    &b[r * ld + c0..][..geo.pix()],
                );
                assert_eq!(ra, rb, "{geo:?} row {r}");
            }
            let dcol: Vec<f32> = (0..geo.kg() * ld).map(|i| (i % 7) as f32 - 3.0).collect();
            let (mut da, mut db) = (vec![0.5f32; x.len()], vec![0.5f32; x.len()]);
            col2im_shift(&geo, &mut dcol.clone(), ld, c0, &mut da);
            col2im_rows(&geo, &dcol, ld, c0, &mut db);
            assert_eq!(da, db, "{geo:?}");
        }
    }
}
