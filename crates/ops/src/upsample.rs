//! Bilinear ×2 upsampling of NCHW inputs with PyTorch's `align_corners=False` semantics
//! (`F.interpolate(x, scale_factor=2, mode="bilinear")`).

use crate::stencil::Stencil;
use crate::{OpsDevice, Shape4};
use dfdx::prelude::*;

pub(crate) fn bilinear_stencil(x: Shape4) -> Stencil {
    Stencil::bilinear2x((x.2, x.3))
}

/// Bilinear ×2 upsampling: `[N, C, H, W] → [N, C, 2H, 2W]`; output pixel `o` samples source
/// coordinate `max(0, (o + 0.5)/2 − 0.5)` along each axis, clamped at the far edge.
pub fn upsample_bilinear2x<D: OpsDevice, T: Tape<f32, D>>(
    x: Tensor<Shape4, f32, D, T>,
) -> Tensor<Shape4, f32, D, T> {
    D::upsample_bilinear2x_op(x)
}
