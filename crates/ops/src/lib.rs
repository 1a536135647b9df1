//! Tensor ops dfdx 0.13 lacks on stable, with their backward passes: 2-D convolution, max /
//! average / adaptive-average pooling, bilinear ×2 upsampling, channel concat/split, fused
//! BatchNorm2d (+ReLU) and residual add+ReLU, plus layers with parameters ([`layers`]).
//!
//! All tensors are NCHW with runtime sizes ([`Shape4`]). One public API; the device picks the
//! implementation through [`OpsDevice`]: `Cpu` runs multi-threaded fused kernels (rayon +
//! `gemm`), `Cuda` (feature `cuda`) runs the compositions of dfdx ops in [`generic`], which are
//! also callable on the CPU. The tape travels with the activation; parameters are `NoneTape`
//! tensors whose gradients the backward ops write under their ids.

pub mod cases;
pub mod channels;
mod check;
pub mod conv;
mod direct;
pub mod generic;
mod im2col;
mod lanes;
pub mod layers;
mod malloc;
pub mod norm;
pub mod pool;
mod shared;
mod stencil;
pub mod upsample;
mod util;
mod winograd;

pub use dfdx;
pub use rayon;

pub use channels::{channel_sq_mean, concat_channels, split_channels};
pub use check::{check_op_case, check_op_case_generic, check_op_case_on};
pub use conv::{conv2d, Conv2dCfg};
pub use direct::{conv_isa, ISA_ENV};
pub use layers::{BatchNorm2d, Conv2d, Conv2dBiased};
pub use malloc::{keep_large_allocations, KEEP_LARGE_ALLOCATIONS_ENV};
pub use norm::{add_relu, batch_norm2d_eval, batch_norm2d_train, conv_bn2d_train, BatchNormCfg};
pub use pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d, Pool2dCfg};
pub use upsample::upsample_bilinear2x;

use dfdx::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

static GENERIC_ON_CPU: AtomicBool = AtomicBool::new(false);

/// Routes every op on `Cpu` through the device-generic compositions of [`generic`] (what `Cuda`
/// runs) instead of the CPU kernels, to check and benchmark the GPU's formulation on a machine
/// without a GPU (`cargo xtask bench models --generic`). Process-wide; off by default.
pub fn set_generic_on_cpu(on: bool) {
    GENERIC_ON_CPU.store(on, Ordering::Relaxed);
}

/// Whether [`set_generic_on_cpu`] routes `Cpu` through the generic compositions.
pub fn generic_on_cpu() -> bool {
    GENERIC_ON_CPU.load(Ordering::Relaxed)
}

/// An NCHW shape with runtime sizes.
pub type Shape4 = (usize, usize, usize, usize);

/// A device the ops run on. Each method is the device's implementation of the public function
/// of the same name without `_op` (call those instead).
pub trait OpsDevice: Device<f32> + dfdx::tensor::Synchronize {
    /// Whether dfdx's `slice` backward adds to the input's gradient. dfdx 0.13's CPU kernel
    /// assigns instead (its CUDA kernel adds), so the generic ops slice a copy there (see
    /// [`generic`]); a test checks this against dfdx.
    const SLICE_GRAD_ADDS: bool;
    fn conv2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        weight: &Tensor<Shape4, f32, Self>,
        bias: Option<&Tensor<(usize,), f32, Self>>,
        cfg: Conv2dCfg,
    ) -> Tensor<Shape4, f32, Self, T>;
    fn max_pool2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        cfg: Pool2dCfg,
    ) -> Tensor<Shape4, f32, Self, T>;
    fn avg_pool2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        cfg: Pool2dCfg,
    ) -> Tensor<Shape4, f32, Self, T>;
    fn adaptive_avg_pool2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        out: (usize, usize),
    ) -> Tensor<Shape4, f32, Self, T>;
    fn upsample_bilinear2x_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
    ) -> Tensor<Shape4, f32, Self, T>;
    fn concat_channels_op<T: Tape<f32, Self>>(
        xs: Vec<Tensor<Shape4, f32, Self, T>>,
    ) -> Tensor<Shape4, f32, Self, T>;
    fn split_channels_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        sizes: &[usize],
    ) -> Vec<Tensor<Shape4, f32, Self, T>>;
    fn batch_norm2d_train_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        weight: &Tensor<(usize,), f32, Self>,
        bias: &Tensor<(usize,), f32, Self>,
        running_mean: &mut Tensor<(usize,), f32, Self>,
        running_var: &mut Tensor<(usize,), f32, Self>,
        cfg: BatchNormCfg,
    ) -> Tensor<Shape4, f32, Self, T>;
    fn batch_norm2d_eval_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        weight: &Tensor<(usize,), f32, Self>,
        bias: &Tensor<(usize,), f32, Self>,
        running_mean: &Tensor<(usize,), f32, Self>,
        running_var: &Tensor<(usize,), f32, Self>,
        cfg: BatchNormCfg,
    ) -> Tensor<Shape4, f32, Self, T>;
    fn add_relu_op<T: Tape<f32, Self>>(
        a: Tensor<Shape4, f32, Self, T>,
        b: Tensor<Shape4, f32, Self, T>,
    ) -> Tensor<Shape4, f32, Self, T>;
    fn channel_sq_mean_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
    ) -> Tensor<(usize, usize), f32, Self, T>;
    /// By default the convolution, then the BatchNorm.
    fn conv_bn2d_train_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        conv: &Conv2d<Self>,
        bn: &mut BatchNorm2d<Self>,
    ) -> Tensor<Shape4, f32, Self, T> {
        norm::conv_then_bn(x, conv, bn)
    }
}

/// The CPU: fused multi-threaded kernels on the rayon pool.
impl OpsDevice for Cpu {
    const SLICE_GRAD_ADDS: bool = false;
    fn conv2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        weight: &Tensor<Shape4, f32, Self>,
        bias: Option<&Tensor<(usize,), f32, Self>>,
        cfg: Conv2dCfg,
    ) -> Tensor<Shape4, f32, Self, T> {
        if generic_on_cpu() {
            return generic::conv2d(x, weight, bias, cfg);
        }
        conv::conv2d_cpu(x, weight, bias, cfg)
    }
    fn max_pool2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        cfg: Pool2dCfg,
    ) -> Tensor<Shape4, f32, Self, T> {
        if generic_on_cpu() {
            return generic::max_pool2d(x, cfg);
        }
        let win = pool::Window::new(*x.shape(), cfg, "max_pool2d");
        pool::max_window_cpu(x, win)
    }
    fn avg_pool2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        cfg: Pool2dCfg,
    ) -> Tensor<Shape4, f32, Self, T> {
        if generic_on_cpu() {
            return generic::avg_pool2d(x, cfg);
        }
        let win = pool::Window::new(*x.shape(), cfg, "avg_pool2d");
        pool::avg_window_cpu(x, win)
    }
    fn adaptive_avg_pool2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        out: (usize, usize),
    ) -> Tensor<Shape4, f32, Self, T> {
        if generic_on_cpu() {
            return generic::adaptive_avg_pool2d(x, out);
        }
        let st = pool::adaptive_stencil(*x.shape(), out);
        pool::weighted_cpu(x, st)
    }
    fn upsample_bilinear2x_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
    ) -> Tensor<Shape4, f32, Self, T> {
        if generic_on_cpu() {
            return generic::upsample_bilinear2x(x);
        }
        let st = upsample::bilinear_stencil(*x.shape());
        pool::weighted_cpu(x, st)
    }
    fn concat_channels_op<T: Tape<f32, Self>>(
        xs: Vec<Tensor<Shape4, f32, Self, T>>,
    ) -> Tensor<Shape4, f32, Self, T> {
        if generic_on_cpu() {
            return generic::concat_channels(xs);
        }
        channels::concat_cpu(xs)
    }
    fn split_channels_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        sizes: &[usize],
    ) -> Vec<Tensor<Shape4, f32, Self, T>> {
        if generic_on_cpu() {
            return generic::split_channels(x, sizes);
        }
        channels::split_cpu(x, sizes)
    }
    fn batch_norm2d_train_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        weight: &Tensor<(usize,), f32, Self>,
        bias: &Tensor<(usize,), f32, Self>,
        running_mean: &mut Tensor<(usize,), f32, Self>,
        running_var: &mut Tensor<(usize,), f32, Self>,
        cfg: BatchNormCfg,
    ) -> Tensor<Shape4, f32, Self, T> {
        if generic_on_cpu() {
            return generic::batch_norm2d_train(x, weight, bias, running_mean, running_var, cfg);
        }
        norm::bn_train_cpu(x, weight, bias, running_mean, running_var, cfg)
    }
    fn batch_norm2d_eval_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        weight: &Tensor<(usize,), f32, Self>,
        bias: &Tensor<(usize,), f32, Self>,
        running_mean: &Tensor<(usize,), f32, Self>,
        running_var: &Tensor<(usize,), f32, Self>,
        cfg: BatchNormCfg,
    ) -> Tensor<Shape4, f32, Self, T> {
        if generic_on_cpu() {
            return generic::batch_norm2d_eval(x, weight, bias, running_mean, running_var, cfg);
        }
        norm::bn_eval_cpu(x, weight, bias, running_mean, running_var, cfg)
    }
    fn add_relu_op<T: Tape<f32, Self>>(
        a: Tensor<Shape4, f32, Self, T>,
        b: Tensor<Shape4, f32, Self, T>,
    ) -> Tensor<Shape4, f32, Self, T> {
        if generic_on_cpu() {
            return generic::add_relu(a, b);
        }
        norm::add_relu_cpu(a, b)
    }
    fn channel_sq_mean_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
    ) -> Tensor<(usize, usize), f32, Self, T> {
        if generic_on_cpu() {
            return generic::channel_sq_mean(x);
        }
        channels::channel_sq_mean_cpu(x)
    }
    fn conv_bn2d_train_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        conv: &Conv2d<Self>,
        bn: &mut BatchNorm2d<Self>,
    ) -> Tensor<Shape4, f32, Self, T> {
        if generic_on_cpu() {
            return norm::conv_then_bn(x, conv, bn);
        }
        norm::conv_bn_train_cpu(x, conv, bn)
    }
}

/// The GPU: compositions of dfdx ops ([`generic`]).
#[cfg(feature = "cuda")]
impl OpsDevice for Cuda {
    const SLICE_GRAD_ADDS: bool = true;
    fn conv2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        weight: &Tensor<Shape4, f32, Self>,
        bias: Option<&Tensor<(usize,), f32, Self>>,
        cfg: Conv2dCfg,
    ) -> Tensor<Shape4, f32, Self, T> {
        generic::conv2d(x, weight, bias, cfg)
    }
    fn max_pool2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        cfg: Pool2dCfg,
    ) -> Tensor<Shape4, f32, Self, T> {
        generic::max_pool2d(x, cfg)
    }
    fn avg_pool2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        cfg: Pool2dCfg,
    ) -> Tensor<Shape4, f32, Self, T> {
        generic::avg_pool2d(x, cfg)
    }
    fn adaptive_avg_pool2d_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        out: (usize, usize),
    ) -> Tensor<Shape4, f32, Self, T> {
        generic::adaptive_avg_pool2d(x, out)
    }
    fn upsample_bilinear2x_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
    ) -> Tensor<Shape4, f32, Self, T> {
        generic::upsample_bilinear2x(x)
    }
    fn concat_channels_op<T: Tape<f32, Self>>(
        xs: Vec<Tensor<Shape4, f32, Self, T>>,
    ) -> Tensor<Shape4, f32, Self, T> {
        generic::concat_channels(xs)
    }
    fn split_channels_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        sizes: &[usize],
    ) -> Vec<Tensor<Shape4, f32, Self, T>> {
        generic::split_channels(x, sizes)
    }
    fn batch_norm2d_train_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        weight: &Tensor<(usize,), f32, Self>,
        bias: &Tensor<(usize,), f32, Self>,
        running_mean: &mut Tensor<(usize,), f32, Self>,
        running_var: &mut Tensor<(usize,), f32, Self>,
        cfg: BatchNormCfg,
    ) -> Tensor<Shape4, f32, Self, T> {
        generic::batch_norm2d_train(x, weight, bias, running_mean, running_var, cfg)
    }
    fn batch_norm2d_eval_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
        weight: &Tensor<(usize,), f32, Self>,
        bias: &Tensor<(usize,), f32, Self>,
        running_mean: &Tensor<(usize,), f32, Self>,
        running_var: &Tensor<(usize,), f32, Self>,
        cfg: BatchNormCfg,
    ) -> Tensor<Shape4, f32, Self, T> {
        generic::batch_norm2d_eval(x, weight, bias, running_mean, running_var, cfg)
    }
    fn add_relu_op<T: Tape<f32, Self>>(
        a: Tensor<Shape4, f32, Self, T>,
        b: Tensor<Shape4, f32, Self, T>,
    ) -> Tensor<Shape4, f32, Self, T> {
        generic::add_relu(a, b)
    }
    fn channel_sq_mean_op<T: Tape<f32, Self>>(
        x: Tensor<Shape4, f32, Self, T>,
    ) -> Tensor<(usize, usize), f32, Self, T> {
        generic::channel_sq_mean(x)
    }
}
