//! Layers with parameters and runtime channel counts, implementing dfdx's module traits:
//! [`TensorCollection`] (so `Sgd`/`Adam`, `alloc_grads`, `save_safetensors`/`load_safetensors`
//! see them, under PyTorch's names), [`Module`] and, for BatchNorm, [`ModuleMut`] (training).
//!
//! Hyper-parameters (stride, momentum, ...) are plain fields, not saved tensors; conversions
//! through dfdx visitors (`to_device`, `to_dtype`) carry them over.

use crate::{
    batch_norm2d_eval, batch_norm2d_train, conv2d, BatchNormCfg, Conv2dCfg, OpsDevice, Shape4,
};
use dfdx::nn::{
    Module, ModuleMut, ModuleVisitor, NonMutableModule, TensorCollection, TensorOptions,
};
use dfdx::prelude::*;
use rand::distributions::Distribution;
use std::cell::Cell;
use std::mem::MaybeUninit;

/// How a tensor is re-initialised by dfdx's `reset_params`.
pub type Reset<S, D> = fn(&mut Tensor<S, f32, D>) -> Result<(), <D as HasErr>::Err>;

/// A [`TensorOptions`] for a runtime-shaped tensor. dfdx 0.13 only constructs them for
/// compile-time shapes (`ConstShape`) and marks the struct `#[non_exhaustive]`; its `shape` is
/// only read by `BuildModule` (building from nothing), which these layers do not use. Shared
/// with kd-models, whose runtime-sized layers need the same.
pub fn runtime_options<S: Shape + Default, D: Device<f32>>(
    do_gradient_update: bool,
    reset: Reset<S, D>,
) -> TensorOptions<S, f32, D> {
    let mut o = MaybeUninit::<TensorOptions<S, f32, D>>::uninit();
    let p = o.as_mut_ptr();
    // SAFETY: dfdx 0.13.0's `TensorOptions` has exactly the three public fields written here
    // (checked by the size assertion below); each is initialised exactly once.
    unsafe {
        std::ptr::addr_of_mut!((*p).do_gradient_update).write(do_gradient_update);
        std::ptr::addr_of_mut!((*p).reset).write(reset);
        std::ptr::addr_of_mut!((*p).shape).write(S::default());
        o.assume_init()
    }
}

// dfdx is pinned to exactly 0.13.0 (the workspace's `=0.13.0`), and these check at compile
// time that `TensorOptions` is still its three public fields and nothing else: each field's
// place inside the struct, and a size that leaves no room for a fourth.
const _: () = {
    type O = TensorOptions<Shape4, f32, Cpu>;
    let fields = std::mem::size_of::<bool>()
        + std::mem::size_of::<Reset<Shape4, Cpu>>()
        + std::mem::size_of::<Shape4>();
    let size = std::mem::size_of::<O>();
    assert!(
        size >= fields && size - fields < std::mem::align_of::<O>(),
        "dfdx's TensorOptions has fields besides do_gradient_update, reset and shape: revisit \
         `runtime_options`"
    );
    assert!(std::mem::offset_of!(O, do_gradient_update) < size);
    assert!(std::mem::offset_of!(O, reset) + std::mem::size_of::<Reset<Shape4, Cpu>>() <= size);
    assert!(std::mem::offset_of!(O, shape) + std::mem::size_of::<Shape4>() <= size);
};

/// Fills with zeros (a [`Reset`] for biases and running means).
pub fn fill_zeros<S: Shape, D: Device<f32>>(t: &mut Tensor<S, f32, D>) -> Result<(), D::Err> {
    t.try_fill_with_zeros()
}

/// Fills with ones (a [`Reset`] for BatchNorm weights and running variances).
pub fn fill_ones<S: Shape, D: Device<f32>>(t: &mut Tensor<S, f32, D>) -> Result<(), D::Err> {
    t.try_fill_with_ones()
}

/// A normal distribution with mean 0 (Box–Muller), for initialisation.
#[derive(Debug, Clone, Copy)]
pub struct Normal0 {
    pub std: f32,
}

impl Distribution<f32> for Normal0 {
    fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> f32 {
        let u1: f64 = 1.0 - rng.gen::<f64>();
        let u2: f64 = rng.gen::<f64>();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * self.std
    }
}

/// PyTorch's `kaiming_normal_(w, mode="fan_out", nonlinearity="relu")`: `N(0, 2/fan_out)` with
/// `fan_out = w.size(0)·kh·kw = out_channels·kh·kw` (PyTorch's fan does not divide by groups).
pub fn kaiming_normal_fan_out<D: Device<f32>>(
    w: &mut Tensor<Shape4, f32, D>,
) -> Result<(), D::Err> {
    let (o, _, kh, kw) = *w.shape();
    let fan_out = (o * kh * kw).max(1) as f32;
    w.try_fill_with_distr(Normal0 {
        std: (2.0 / fan_out).sqrt(),
    })
}

/// A bias-free 2-D convolution (`nn.Conv2d(.., bias=False)`): parameter `weight: [O, C/groups, k, k]`.
#[derive(Debug, Clone)]
pub struct Conv2d<D: Storage<E>, E: Dtype = f32> {
    pub weight: Tensor<Shape4, E, D>,
    pub cfg: Conv2dCfg,
}

impl<D: Device<f32>> Conv2d<D> {
    /// `in_ch → out_ch` with a `k×k` kernel, Kaiming-normal (fan-out, ReLU) weights from the
    /// device's RNG. Panics when channel counts are not divisible by `cfg.groups`.
    pub fn new(dev: &D, in_ch: usize, out_ch: usize, k: usize, cfg: Conv2dCfg) -> Self {
        assert!(
            cfg.groups > 0 && in_ch.is_multiple_of(cfg.groups) && out_ch.is_multiple_of(cfg.groups),
            "Conv2d: channels {in_ch} → {out_ch} are not divisible by groups {}",
            cfg.groups
        );
        let mut weight = dev.zeros_like(&(out_ch, in_ch / cfg.groups, k, k));
        kaiming_normal_fan_out(&mut weight).expect("Conv2d: initialising the weight");
        Self { weight, cfg }
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Conv2d<D> {
    type To<E2: Dtype, D2: Device<E2>> = Conv2d<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let cfg = Cell::new(None);
        visitor.visit_fields(
            Self::tensor(
                "weight",
                |s: &Self| {
                    cfg.set(Some(s.cfg));
                    &s.weight
                },
                |s: &mut Self| {
                    cfg.set(Some(s.cfg));
                    &mut s.weight
                },
                runtime_options(true, kaiming_normal_fan_out::<D>),
            ),
            |weight| Conv2d {
                weight,
                cfg: cfg.get().unwrap_or_default(),
            },
        )
    }
}

impl<D: OpsDevice, T: Tape<f32, D>> Module<Tensor<Shape4, f32, D, T>> for Conv2d<D> {
    type Output = Tensor<Shape4, f32, D, T>;
    type Error = D::Err;
    fn try_forward(&self, x: Tensor<Shape4, f32, D, T>) -> Result<Self::Output, D::Err> {
        Ok(conv2d(x, &self.weight, None, self.cfg))
    }
}

impl<D: OpsDevice> NonMutableModule for Conv2d<D> {}

/// A 2-D convolution with bias (`nn.Conv2d(.., bias=True)`): `weight: [O, C/groups, k, k]`,
/// `bias: [O]`.
#[derive(Debug, Clone)]
pub struct Conv2dBiased<D: Storage<E>, E: Dtype = f32> {
    pub weight: Tensor<Shape4, E, D>,
    pub bias: Tensor<(usize,), E, D>,
    pub cfg: Conv2dCfg,
}

impl<D: Device<f32>> Conv2dBiased<D> {
    /// Like [`Conv2d::new`], with a zero bias.
    pub fn new(dev: &D, in_ch: usize, out_ch: usize, k: usize, cfg: Conv2dCfg) -> Self {
        let Conv2d { weight, cfg } = Conv2d::new(dev, in_ch, out_ch, k, cfg);
        Self {
            weight,
            bias: dev.zeros_like(&(out_ch,)),
            cfg,
        }
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Conv2dBiased<D> {
    type To<E2: Dtype, D2: Device<E2>> = Conv2dBiased<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let cfg = Cell::new(None);
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s: &Self| {
                        cfg.set(Some(s.cfg));
                        &s.weight
                    },
                    |s: &mut Self| {
                        cfg.set(Some(s.cfg));
                        &mut s.weight
                    },
                    runtime_options(true, kaiming_normal_fan_out::<D>),
                ),
                Self::tensor(
                    "bias",
                    |s: &Self| &s.bias,
                    |s: &mut Self| &mut s.bias,
                    runtime_options(true, fill_zeros::<(usize,), D>),
                ),
            ),
            |(weight, bias)| Conv2dBiased {
                weight,
                bias,
                cfg: cfg.get().unwrap_or_default(),
            },
        )
    }
}

impl<D: OpsDevice, T: Tape<f32, D>> Module<Tensor<Shape4, f32, D, T>> for Conv2dBiased<D> {
    type Output = Tensor<Shape4, f32, D, T>;
    type Error = D::Err;
    fn try_forward(&self, x: Tensor<Shape4, f32, D, T>) -> Result<Self::Output, D::Err> {
        Ok(conv2d(x, &self.weight, Some(&self.bias), self.cfg))
    }
}

impl<D: OpsDevice> NonMutableModule for Conv2dBiased<D> {}

/// BatchNorm2d (`nn.BatchNorm2d`, optionally fused with the ReLU that follows it): parameters
/// `weight` (γ, init 1) and `bias` (β, init 0), buffers `running_mean` (init 0) and
/// `running_var` (init 1), which optimisers leave alone. `forward_mut` trains (batch statistics,
/// updates the buffers); `forward` evaluates with the running statistics.
#[derive(Debug, Clone)]
pub struct BatchNorm2d<D: Storage<E>, E: Dtype = f32> {
    pub weight: Tensor<(usize,), E, D>,
    pub bias: Tensor<(usize,), E, D>,
    pub running_mean: Tensor<(usize,), E, D>,
    pub running_var: Tensor<(usize,), E, D>,
    pub cfg: BatchNormCfg,
}

impl<D: Device<f32>> BatchNorm2d<D> {
    /// `channels` features, momentum 0.1, eps 1e-5, no ReLU.
    pub fn new(dev: &D, channels: usize) -> Self {
        Self {
            weight: dev.ones_like(&(channels,)),
            bias: dev.zeros_like(&(channels,)),
            running_mean: dev.zeros_like(&(channels,)),
            running_var: dev.ones_like(&(channels,)),
            cfg: BatchNormCfg::default(),
        }
    }
    /// The same layer followed by a fused ReLU.
    pub fn with_relu(mut self) -> Self {
        self.cfg.relu = true;
        self
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for BatchNorm2d<D> {
    type To<E2: Dtype, D2: Device<E2>> = BatchNorm2d<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let cfg = Cell::new(None);
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s: &Self| {
                        cfg.set(Some(s.cfg));
                        &s.weight
                    },
                    |s: &mut Self| {
                        cfg.set(Some(s.cfg));
                        &mut s.weight
                    },
                    runtime_options(true, fill_ones::<(usize,), D>),
                ),
                Self::tensor(
                    "bias",
                    |s: &Self| &s.bias,
                    |s: &mut Self| &mut s.bias,
                    runtime_options(true, fill_zeros::<(usize,), D>),
                ),
                Self::tensor(
                    "running_mean",
                    |s: &Self| &s.running_mean,
                    |s: &mut Self| &mut s.running_mean,
                    runtime_options(false, fill_zeros::<(usize,), D>),
                ),
                Self::tensor(
                    "running_var",
                    |s: &Self| &s.running_var,
                    |s: &mut Self| &mut s.running_var,
                    runtime_options(false, fill_ones::<(usize,), D>),
                ),
            ),
            |(weight, bias, running_mean, running_var)| BatchNorm2d {
                weight,
                bias,
                running_mean,
                running_var,
                cfg: cfg.get().unwrap_or_default(),
            },
        )
    }
}

/// Evaluation: normalise with the running statistics.
impl<D: OpsDevice, T: Tape<f32, D>> Module<Tensor<Shape4, f32, D, T>> for BatchNorm2d<D> {
    type Output = Tensor<Shape4, f32, D, T>;
    type Error = D::Err;
    fn try_forward(&self, x: Tensor<Shape4, f32, D, T>) -> Result<Self::Output, D::Err> {
        Ok(batch_norm2d_eval(
            x,
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
            self.cfg,
        ))
    }
}

/// Training: normalise with the batch statistics and update the running ones.
impl<D: OpsDevice, T: Tape<f32, D>> ModuleMut<Tensor<Shape4, f32, D, T>> for BatchNorm2d<D> {
    type Output = Tensor<Shape4, f32, D, T>;
    type Error = D::Err;
    fn try_forward_mut(&mut self, x: Tensor<Shape4, f32, D, T>) -> Result<Self::Output, D::Err> {
        Ok(batch_norm2d_train(
            x,
            &self.weight,
            &self.bias,
            &mut self.running_mean,
            &mut self.running_var,
            self.cfg,
        ))
    }
}
