//! A per-plane sparse linear map ("stencil"): output pixel `o` of every `(n, c)` plane reads the
//! input pixels `idx[start[o]..start[o+1]]` of the same plane with weights `wt[..]`. Adaptive
//! pooling and upsampling are stencils, which the CPU kernels run plane-parallel (the generic
//! path composes them from slices instead, `generic::pool`).

use crate::Shape4;
use rayon::prelude::*;

/// Output size of a `k×k` window with `stride` and `padding`; panics with the values when the
/// window does not fit or the padding exceeds half the kernel (PyTorch's rule).
pub(crate) fn window_out(
    in_hw: (usize, usize),
    k: usize,
    stride: usize,
    padding: usize,
    op: &str,
) -> (usize, usize) {
    let (h, w) = in_hw;
    assert!(
        k > 0 && stride > 0,
        "{op}: kernel {k} and stride {stride} must be positive"
    );
    assert!(
        padding <= k / 2,
        "{op}: padding {padding} must be at most half the kernel size {k}"
    );
    assert!(
        h + 2 * padding >= k && w + 2 * padding >= k,
        "{op}: input {h}x{w} with padding {padding} is smaller than the kernel {k}"
    );
    (
        (h + 2 * padding - k) / stride + 1,
        (w + 2 * padding - k) / stride + 1,
    )
}

#[derive(Debug, Clone)]
pub(crate) struct Stencil {
    pub in_hw: (usize, usize),
    pub out_hw: (usize, usize),
    pub start: Vec<usize>,
    pub idx: Vec<u32>,
    pub wt: Vec<f32>,
}

impl Stencil {
    fn build(
        in_hw: (usize, usize),
        out_hw: (usize, usize),
        mut f: impl FnMut(usize, usize, &mut Vec<(u32, f32)>),
    ) -> Self {
        let mut start = vec![0];
        let (mut idx, mut wt) = (Vec::new(), Vec::new());
        let mut buf = Vec::new();
        for oy in 0..out_hw.0 {
            for ox in 0..out_hw.1 {
                buf.clear();
                f(oy, ox, &mut buf);
                for &(i, w) in &buf {
                    idx.push(i);
                    wt.push(w);
                }
                start.push(idx.len());
            }
        }
        Self {
            in_hw,
            out_hw,
            start,
            idx,
            wt,
        }
    }

    /// PyTorch's adaptive average pooling windows: rows `⌊i·H/OH⌋ .. ⌈(i+1)·H/OH⌉`.
    pub fn adaptive_avg(in_hw: (usize, usize), out_hw: (usize, usize)) -> Self {
        let (h, w) = in_hw;
        assert!(
            out_hw.0 > 0 && out_hw.1 > 0 && h > 0 && w > 0,
            "adaptive_avg_pool2d: empty input {h}x{w} or output {out_hw:?}"
        );
        let range = |i: usize, n: usize, o: usize| (i * n / o, ((i + 1) * n).div_ceil(o));
        Self::build(in_hw, out_hw, |oy, ox, v| {
            let (y0, y1) = range(oy, h, out_hw.0);
            let (x0, x1) = range(ox, w, out_hw.1);
            let wt = 1.0 / ((y1 - y0) * (x1 - x0)) as f32;
            for y in y0..y1 {
                for x in x0..x1 {
                    v.push(((y * w + x) as u32, wt));
                }
            }
        })
    }

    /// Bilinear ×2 upsampling, `align_corners = false`: source coordinate
    /// `max(0, (dst + 0.5)/2 − 0.5)`, neighbours `i0 = ⌊src⌋`, `i1 = min(i0 + 1, n − 1)`.
    pub fn bilinear2x(in_hw: (usize, usize)) -> Self {
        let (h, w) = in_hw;
        assert!(h > 0 && w > 0, "upsample_bilinear2x: empty input {h}x{w}");
        let coef = |dst: usize, n: usize| {
            let src = ((dst as f32 + 0.5) * 0.5 - 0.5).max(0.0);
            let i0 = (src as usize).min(n - 1);
            let i1 = (i0 + 1).min(n - 1);
            let l1 = src - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        };
        Self::build(in_hw, (2 * h, 2 * w), |oy, ox, v| {
            let (y0, y1, ly0, ly1) = coef(oy, h);
            let (x0, x1, lx0, lx1) = coef(ox, w);
            for (y, ly) in [(y0, ly0), (y1, ly1)] {
                for (x, lx) in [(x0, lx0), (x1, lx1)] {
                    v.push(((y * w + x) as u32, ly * lx));
                }
            }
        })
    }

    pub fn in_len(&self) -> usize {
        self.in_hw.0 * self.in_hw.1
    }
    pub fn out_len(&self) -> usize {
        self.out_hw.0 * self.out_hw.1
    }
    pub fn out_shape(&self, x: Shape4) -> Shape4 {
        (x.0, x.1, self.out_hw.0, self.out_hw.1)
    }

    /// `out = Σ wt · x[idx]` for every plane.
    pub fn weighted_forward(&self, x: &[f32], out: &mut [f32]) {
        let (il, ol) = (self.in_len(), self.out_len());
        out.par_chunks_mut(ol)
            .zip(x.par_chunks(il))
            .with_min_len(8)
            .for_each(|(o, xp)| {
                for (k, v) in o.iter_mut().enumerate() {
                    let r = self.start[k]..self.start[k + 1];
                    *v = self.idx[r.clone()]
                        .iter()
                        .zip(&self.wt[r])
                        .map(|(&i, &w)| w * xp[i as usize])
                        .sum();
                }
            });
    }

    /// `dx[idx] += wt · dout` for every plane.
    pub fn weighted_backward(&self, dout: &[f32], dx: &mut [f32]) {
        let (il, ol) = (self.in_len(), self.out_len());
        dx.par_chunks_mut(il)
            .zip(dout.par_chunks(ol))
            .with_min_len(8)
            .for_each(|(dp, g)| {
                for (k, &gv) in g.iter().enumerate() {
                    let r = self.start[k]..self.start[k + 1];
                    for (&i, &w) in self.idx[r.clone()].iter().zip(&self.wt[r]) {
                        dp[i as usize] += w * gv;
                    }
                }
            });
    }
}
