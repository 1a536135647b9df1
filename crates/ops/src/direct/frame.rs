//! The framed layouts of [`super`]: where each image, row and tap of a stack lies.

use super::{target_q, SHIFTED_MAX_WIDTH, SHIFTED_MIN_CHANNELS};
use crate::conv::ConvGeom;

/// The frame of a stack of `nb` images of `h × w`, side by side.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame {
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) nb: usize,
    /// Zero columns after each image row: 1 in the one-plane layout (the left and right
    /// padding), 0 in the shifted-planes layout (each plane holds its own padding).
    pub(super) sep: usize,
    /// Row stride, `nb·(w + sep)`: row `y` of every image, each followed by `sep` zeros.
    pub(super) s: usize,
    /// Output positions computed (`h·s` rounded up to a multiple of 16: the kernels' tiles
    /// are [`super::TILE`] positions, then one of 16 or 32 for the rest).
    pub(super) qpad: usize,
    /// Values per framed plane, a multiple of 16 (so that planes keep the frame's alignment).
    pub(super) len: usize,
}

impl Frame {
    pub(super) fn new(h: usize, w: usize, nb: usize, sep: usize) -> Self {
        let s = nb * (w + sep);
        let qpad = (h * s).next_multiple_of(16);
        Self {
            h,
            w,
            nb,
            sep,
            s,
            qpad,
            // The last tile's reads end below `qpad + 2s + 2·sep`.
            len: (qpad + 2 * s + 2 * sep).next_multiple_of(16),
        }
    }
    /// Images per stack for images of `h × w`: about `target` positions, and without
    /// separators a row stride that is a multiple of 16 where that stays under twice as many.
    pub(super) fn stack(h: usize, w: usize, sep: usize, target: usize) -> usize {
        let nb = target.div_ceil(h * (w + sep)).max(1);
        let aligned = nb.next_multiple_of(16 / gcd(w, 16));
        if sep == 0 && aligned * h * w <= 2 * target {
            aligned
        } else {
            nb
        }
    }
    /// The one-plane frame (a zero column after each image row) of the same stack.
    pub(super) fn one_plane(&self) -> Self {
        Self::new(self.h, self.w, self.nb, 1)
    }
    /// Frame index of pixel `(y, 0)` of image `j`.
    pub(super) fn at(&self, j: usize, y: usize) -> usize {
        self.sep + (1 + y) * self.s + j * (self.w + self.sep)
    }
    /// Output position of pixel `(y, 0)` of image `j`: the frame index of the pixel's top-left
    /// tap.
    pub(super) fn out_at(&self, j: usize, y: usize) -> usize {
        self.at(j, y) - self.s - self.sep
    }
    /// Offset of the read `ri` rows and `rj` columns on from a position, relative to the
    /// channel's first plane: within the plane, or in the shifted-planes layout in plane `rj`.
    /// Every tap of every pass is one of these (plus a stride-2 phase's plane); `(1, 1)` is the
    /// centre tap, where `∂ŷ`'s frame holds `∂/∂y` at output position 0.
    pub(super) fn shift(&self, ri: usize, rj: usize) -> usize {
        if self.sep == 0 {
            rj * self.len + ri * self.s
        } else {
            ri * self.s + rj
        }
    }
    /// Writes `planes` framed planes into `dst` (`[planes][len]`): zeros at the padding, and
    /// `row(plane, j, y, values)` writes the `w` values of row `y` of image `j`.
    pub(super) fn fill_with(
        &self,
        dst: &mut [f32],
        planes: usize,
        mut row: impl FnMut(usize, usize, usize, &mut [f32]),
    ) {
        let w = self.w;
        for (pl, d) in dst.chunks_exact_mut(self.len).take(planes).enumerate() {
            d[..self.at(0, 0)].fill(0.0);
            for y in 0..self.h {
                for j in 0..self.nb {
                    let at = self.at(j, y);
                    row(pl, j, y, &mut d[at..at + w]);
                    d[at + w..at + w + self.sep].fill(0.0);
                }
            }
            d[self.at(0, self.h)..].fill(0.0);
        }
    }
    /// Frames `c` channels of `nb` NCHW images of the frame's size.
    pub(super) fn fill(&self, src: &[f32], c: usize, dst: &mut [f32]) {
        let (w, hw) = (self.w, self.h * self.w);
        self.fill_with(dst, c, |ch, j, y, out| {
            copy_row(out, &src[(j * c + ch) * hw + y * w..][..w])
        });
    }
    /// Calls `row(ch, j, y, values)` for every output row of the stack: `values` are the `w`
    /// values of row `y` of image `j`, channel `ch`, in `o` (`[c][ld]`, output positions).
    pub(super) fn unframe(
        &self,
        o: &[f32],
        ld: usize,
        c: usize,
        mut row: impl FnMut(usize, usize, usize, &[f32]),
    ) {
        for j in 0..self.nb {
            for ch in 0..c {
                for y in 0..self.h {
                    let q = self.out_at(j, y);
                    row(ch, j, y, &o[ch * ld + q..][..self.w]);
                }
            }
        }
    }
}

/// One convolution laid out on frames: the output's frame (for stride 2 also each input
/// phase's), and the frame offsets of its taps.
pub(super) struct Plan {
    pub(super) geo: ConvGeom,
    /// Frame of a full stack (`full.nb` images).
    pub(super) full: Frame,
}

impl Plan {
    pub(super) fn new(geo: &ConvGeom, per: usize) -> Self {
        let sep = usize::from(!Self::shifted(geo));
        let nb = Frame::stack(geo.oh, geo.ow, sep, target_q(geo)).min(per);
        Self {
            geo: *geo,
            full: Frame::new(geo.oh, geo.ow, nb, sep),
        }
    }
    /// Whether a layer uses the shifted-planes layout (see [`SHIFTED_MIN_CHANNELS`]).
    pub(super) fn shifted(geo: &ConvGeom) -> bool {
        geo.s == 1 && geo.ow <= SHIFTED_MAX_WIDTH && geo.c.min(geo.co) >= SHIFTED_MIN_CHANNELS
    }
    /// Frame of a stack of `m` images.
    pub(super) fn frame(&self, m: usize) -> Frame {
        Frame::new(self.geo.oh, self.geo.ow, m, self.full.sep)
    }
    /// Framed planes per input channel: the three column shifts of the shifted-planes layout,
    /// the four phases of a stride-2 input, or the one plane of a stride-1 input.
    pub(super) fn planes(&self) -> usize {
        if self.full.sep == 0 {
            3
        } else {
            self.geo.s * self.geo.s
        }
    }
    /// Offsets of the nine taps in the input's frame, relative to the output position and to
    /// the channel's first plane: stride 1, tap `(ki, kj)` is [`Frame::shift`]`(ki, kj)`;
    /// stride 2, kernel row `k` reads phase `(k + 1) mod 2` at row shift 0 (`k = 0`, the row
    /// above) or 1, and likewise the columns.
    pub(super) fn taps(&self, fr: &Frame) -> [usize; 9] {
        std::array::from_fn(|t| {
            let (ki, kj) = (t / 3, t % 3);
            if self.geo.s == 1 {
                fr.shift(ki, kj)
            } else {
                let phase = |k: usize| ((k + 1) % 2, usize::from(k > 0));
                let ((pa, ri), (pb, rj)) = (phase(ki), phase(kj));
                (2 * pa + pb) * fr.len + fr.shift(ri, rj)
            }
        })
    }
    /// The passes of `∂/∂x`: for each input plane `(a, b)`, the taps that read it (stride 1:
    /// one plane, all nine taps).
    pub(super) fn dx_passes(&self) -> Vec<((usize, usize), Vec<usize>)> {
        let s = self.geo.s;
        let reads = |k: usize| if s == 1 { 0 } else { (k + 1) % 2 };
        let mut v = Vec::new();
        for a in 0..s {
            for b in 0..s {
                let taps = (0..9)
                    .filter(|t| reads(t / 3) == a && reads(t % 3) == b)
                    .collect();
                v.push(((a, b), taps));
            }
        }
        v
    }
    /// Offset of tap `t`'s read in the frame of `∂/∂y`, relative to the input position: the
    /// mirror of the forward read, `2 − k` rows and columns for stride 1, and for stride 2
    /// 2 for the kernel row (column) above (left of) the centre, 1 otherwise.
    pub(super) fn dx_offset(&self, fr: &Frame, t: usize) -> usize {
        let back = |k: usize| match (self.geo.s, k) {
            (1, k) => 2 - k,
            (_, 0) => 2,
            _ => 1,
        };
        fr.shift(back(t / 3), back(t % 3))
    }
    /// Frames `c` channels of `∂/∂y` (or of a stride-1 input) as `[c][planes][len]`: one plane,
    /// or three where plane `k` of row `y` holds columns `k − 1 … w + k − 2` (zeros outside).
    pub(super) fn fill_planes(&self, fr: &Frame, src: &[f32], c: usize, dst: &mut [f32]) {
        if fr.sep == 1 {
            return fr.fill(src, c, dst);
        }
        // One pass per channel writes its three planes from each source row (three passes
        // over the planes, each re-reading the row, took twice as long at 4×4).
        let (w, hw, len) = (fr.w, fr.h * fr.w, fr.len);
        let (top, bottom) = (fr.at(0, 0), fr.at(0, fr.h));
        for (ch, d) in dst.chunks_exact_mut(3 * len).take(c).enumerate() {
            let (p0, rest) = d.split_at_mut(len);
            let (p1, p2) = rest.split_at_mut(len);
            for p in [&mut *p0, &mut *p1, &mut *p2] {
                p[..top].fill(0.0);
                p[bottom..].fill(0.0);
            }
            for y in 0..fr.h {
                for j in 0..fr.nb {
                    let row = &src[(j * c + ch) * hw + y * w..][..w];
                    let at = fr.at(j, y);
                    p0[at] = 0.0;
                    copy_row(&mut p0[at + 1..at + w], &row[..w - 1]);
                    copy_row(&mut p1[at..at + w], row);
                    copy_row(&mut p2[at..at + w - 1], &row[1..]);
                    p2[at + w - 1] = 0.0;
                }
            }
        }
    }
    /// Frames `m` NCHW input images (`c` channels) as `[c][planes][len]`.
    pub(super) fn fill_input(&self, fr: &Frame, src: &[f32], dst: &mut [f32]) {
        let (c, h, w) = (self.geo.c, self.geo.h, self.geo.w);
        if self.geo.s == 1 {
            return self.fill_planes(fr, src, c, dst);
        }
        fr.fill_with(dst, 4 * c, |pl, j, y, out| {
            let (ch, a, b) = (pl / 4, pl % 4 / 2, pl % 2);
            let row = &src[((j * c + ch) * h + 2 * y + a) * w..][..w];
            for (o, v) in out.iter_mut().zip(row.iter().skip(b).step_by(2)) {
                *o = *v;
            }
        });
    }
}

/// `dst.copy_from_slice(src)` with the lengths of the CIFAR ResNets' rows (and of a row less
/// one, for a shifted plane) as constants: a `memmove` call per row of 4 or 8 values took
/// longer than the copy (5% of a 512-channel 4×4 layer's time).
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    macro_rules! fixed {
        ($($n:literal)*) => {
            match dst.len() {
                $($n => dst[..$n].copy_from_slice(&src[..$n]),)*
                _ => dst.copy_from_slice(src),
            }
        };
    }
    fixed!(3 4 7 8 15 16 31 32)
}

/// The part of `v` from its first 64-byte-aligned value on (a scratch buffer taken 15 values
/// longer than needed), so that aligned frame offsets give aligned loads.
pub(super) fn aligned(v: &mut [f32]) -> &mut [f32] {
    let skip = v.as_ptr().align_offset(64).min(v.len());
    &mut v[skip..]
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
