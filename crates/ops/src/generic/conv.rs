//! Convolution as one gather and one matrix product.
//!
//! The input is made NHWC with a zero row appended to every image (one copy): rows
//! `[N·(H·W + W), C]`. A gather of rows with the geometry's table ([`super::tables`]: for every
//! image, output pixel and tap, the input row it reads, or the image's zero row in the padding)
//! builds the im2col matrix `[N·oh·ow, kh·kw·C]` in one kernel, and one SGEMM with the weight laid out
//! `[kh·kw·C, Co]` gives the output NHWC; one copy makes it NCHW. Groups batch the product over
//! the groups (the columns regrouped by one more copy). Backward is dfdx's: the SGEMM's two
//! products and the gather's scatter-add into the input's gradient (each input element
//! receives at most `kh·kw` additions, from output pixels far apart).
//!
//! Device memory: the im2col matrix (`kh·kw` times the input) lives until the backward pass,
//! as in any im2col convolution; the table is `oh·ow·kh·kw` indices, shared by the batch.

use super::tables::{self, Geometry};
use crate::conv::{Conv2dCfg, ConvGeom};
use crate::{OpsDevice, Shape4};
use dfdx::prelude::*;

/// Convolution (see [`crate::conv2d`]).
pub fn conv2d<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
    weight: &Tensor<Shape4, f32, D>,
    bias: Option<&Tensor<(usize,), f32, D>>,
    cfg: Conv2dCfg,
) -> Tensor<Shape4, f32, D, T> {
    let dev = x.device().clone();
    let (geo, table) = super::host::plan(|| {
        let geo = ConvGeom::new(*x.shape(), *weight.shape(), cfg);
        geo.check_bias(bias.map(|b| b.shape().0));
        let spatial = Geometry {
            n: geo.n,
            hw: (geo.h, geo.w),
            k: (geo.kh, geo.kw),
            stride: geo.s,
            pad: geo.p,
            dilation: geo.d,
            out: (geo.oh, geo.ow),
        };
        (geo, tables::table(&dev, spatial))
    });
    let ConvGeom {
        n,
        c,
        h,
        w,
        co,
        kh,
        kw,
        g,
        cig,
        cog,
        oh,
        ow,
        ..
    } = geo;
    let (t, np) = (kh * kw, n * oh * ow);
    // [N·(H·W + W), C]: NHWC and a zero row per image.
    let xs = (
        x.permute::<Shape4, Axes4<0, 2, 3, 1>>(),
        dev.zeros_like(&(n, 1, w, c)),
    )
        .concat_along(Axis::<1>)
        .reshape_like(&(n * (h + 1) * w, c));
    // [N·oh·ow·T, C] = the im2col matrix [N·oh·ow, T·C], columns tap-major.
    let cols: Tensor<(usize, usize), f32, D, T> = xs.gather(table);
    let wt = weight.retaped::<T>();
    let y: Tensor<(usize, usize), f32, D, T> = if g == 1 {
        let wt = wt
            .permute::<Shape4, Axes4<2, 3, 1, 0>>()
            .reshape_like(&(t * c, co));
        cols.reshape_like(&(np, t * c)).matmul(wt)
    } else {
        // [G, N·oh·ow, T·C/G] against [G, T·C/G, Co/G].
        let cols = cols
            .reshape_like(&(np, t, g, cig))
            .permute::<Shape4, Axes4<2, 0, 1, 3>>()
            .reshape_like(&(g, np, t * cig));
        let wt = wt
            .reshape_like(&(g, cog, cig, t))
            .permute::<Shape4, Axes4<0, 3, 2, 1>>()
            .reshape_like(&(g, t * cig, cog));
        let y: Tensor<(usize, usize, usize), f32, D, T> = cols.matmul(wt);
        y.permute::<(usize, usize, usize), Axes3<1, 0, 2>>()
            .reshape_like(&(np, co))
    };
    let out = y
        .reshape_like(&(n, oh, ow, co))
        .permute::<Shape4, Axes4<0, 3, 1, 2>>()
        .contiguous();
    match bias {
        Some(b) => {
            let shape = *out.shape();
            out + b
                .retaped::<T>()
                .broadcast_like::<Shape4, Axes3<0, 2, 3>>(&shape)
        }
        None => out,
    }
}
