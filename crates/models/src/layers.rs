//! Small building blocks shared by every model: the train/eval [`Mode`], a runtime-sized
//! [`Linear`], BatchNorm helpers (2-d and 1-d, both on kd-ops' [`BatchNorm2d`]), global average
//! pooling and the tape-sharing helper [`fork`].

use crate::collection::{peek, runtime_options};
use dfdx::nn::{Module, ModuleMut, ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use kd_ops::layers::fill_zeros;
use kd_ops::{adaptive_avg_pool2d, conv_bn2d_train, BatchNorm2d, Conv2d, OpsDevice, Shape4};

/// A `[rows, cols]` tensor: logits `[b, K]`, embeddings `[b, C]`, ONE's gate `[b, m]`.
pub type Mat<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;
/// A `[b, C, H, W]` feature map.
pub type Map4<D, T = NoneTape> = Tensor<Shape4, f32, D, T>;
/// A `[b, P, P]` tensor (OKDDip's peer attention).
pub type Cube<D, T = NoneTape> = Tensor<(usize, usize, usize), f32, D, T>;

/// Whether a forward pass trains (BatchNorm uses batch statistics and updates its running
/// statistics) or evaluates (BatchNorm uses the running statistics; nothing is mutated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// Applies a BatchNorm2d (with its fused ReLU when configured) in `mode`.
pub fn bn<D: OpsDevice, T: Tape<f32, D>>(
    layer: &mut BatchNorm2d<D>,
    x: Map4<D, T>,
    mode: Mode,
) -> Map4<D, T> {
    match mode {
        Mode::Train => layer.forward_mut(x),
        Mode::Eval => layer.forward(x),
    }
}

/// Applies a convolution (no bias) and then a BatchNorm2d in `mode`: in training, one op
/// ([`kd_ops::conv_bn2d_train`]: the same values and gradients, without a gradient buffer for
/// the convolution's output).
pub fn conv_bn<D: OpsDevice, T: Tape<f32, D>>(
    conv: &Conv2d<D>,
    layer: &mut BatchNorm2d<D>,
    x: Map4<D, T>,
    mode: Mode,
) -> Map4<D, T> {
    match mode {
        Mode::Train => conv_bn2d_train(x, conv, layer),
        Mode::Eval => layer.forward(conv.forward(x)),
    }
}

/// BatchNorm1d (`nn.BatchNorm1d` on `[b, m]`): kd-ops' BatchNorm2d applied to the `[b, m, 1, 1]`
/// view, which normalises each feature over the batch exactly as BatchNorm1d does. Same tensor
/// names (`weight`, `bias`, `running_mean`, `running_var`).
pub fn bn1d<D: OpsDevice, T: Tape<f32, D>>(
    layer: &mut BatchNorm2d<D>,
    x: Mat<D, T>,
    mode: Mode,
) -> Mat<D, T> {
    let (b, m) = *x.shape();
    let y = bn(layer, x.reshape_like(&(b, m, 1, 1)), mode);
    y.reshape_like(&(b, m))
}

/// Global average pooling `[b, C, H, W] → [b, C]`.
pub fn gap<D: OpsDevice, T: Tape<f32, D>>(x: Map4<D, T>) -> Mat<D, T> {
    let (b, c, _, _) = *x.shape();
    adaptive_avg_pool2d(x, (1, 1)).reshape_like(&(b, c))
}

/// Global max pooling `[b, C, H, W] → [b, C]`.
pub fn global_max<D: OpsDevice, T: Tape<f32, D>>(x: Map4<D, T>) -> Mat<D, T> {
    x.max::<(usize, usize), Axes2<2, 3>>()
}

/// An activation with its tape, and an empty-tape handle on it (see [`fork`]).
pub type Forked<S, D, T> = (Tensor<S, f32, D, T>, Tensor<S, f32, D, T>);

/// Uses one activation twice: returns the activation with its tape, and a handle on the same
/// tensor (same id) with an empty tape. Backward ops recorded on the handle's tape accumulate
/// into the activation's gradient once the two tapes are merged (any binary op between the two
/// paths, or the loss, merges them). Dropping a tensor drops its tape, so never use `clone()` of
/// a taped activation for a second path.
pub fn fork<S: Shape, D: Device<f32>, T: Tape<f32, D>>(x: Tensor<S, f32, D, T>) -> Forked<S, D, T> {
    let (x, tape) = x.split_tape();
    let handle = x.retaped::<T>();
    (x.put_tape(tape), handle)
}

/// PyTorch's default for `nn.Linear.weight`: `U(±1/√in)` (kaiming_uniform with `a = √5`).
fn linear_weight_init<D: Device<f32>>(
    w: &mut Tensor<(usize, usize), f32, D>,
) -> Result<(), D::Err> {
    let bound = 1.0 / (w.shape().1.max(1) as f32).sqrt();
    w.try_fill_with_distr(rand::distributions::Uniform::new_inclusive(-bound, bound))
}

/// A fully connected layer with runtime sizes (`nn.Linear`): `weight: [out, in]`, optional
/// `bias: [out]`; `y = x Wᵀ + b` on `[b, in]`.
///
/// Construction uses PyTorch's default initialisation, `U(±1/√in)` for the weight and the bias.
/// dfdx's `reset_params` re-draws the weight the same way but zeroes the bias (a reset function
/// only sees the bias, not `in`).
#[derive(Debug, Clone)]
pub struct Linear<D: Storage<E>, E: Dtype = f32> {
    pub weight: Tensor<(usize, usize), E, D>,
    pub bias: Option<Tensor<(usize,), E, D>>,
}

impl<D: Device<f32>> Linear<D> {
    /// `in_f → out_f` with a bias.
    pub fn new(dev: &D, in_f: usize, out_f: usize) -> Self {
        let mut l = Self::without_bias(dev, in_f, out_f);
        let bound = 1.0 / (in_f.max(1) as f32).sqrt();
        l.bias = Some(dev.sample_like(
            &(out_f,),
            rand::distributions::Uniform::new_inclusive(-bound, bound),
        ));
        l
    }

    /// `in_f → out_f` without a bias (`bias=False`).
    pub fn without_bias(dev: &D, in_f: usize, out_f: usize) -> Self {
        let mut weight = dev.zeros_like(&(out_f, in_f));
        linear_weight_init(&mut weight).expect("Linear: initialising the weight");
        Self { weight, bias: None }
    }

    pub fn in_features(&self) -> usize {
        self.weight.shape().1
    }

    pub fn out_features(&self) -> usize {
        self.weight.shape().0
    }

    /// `[b, in] → [b, out]`.
    pub fn forward<T: Tape<f32, D>>(&self, x: Mat<D, T>) -> Mat<D, T> {
        let y = x.matmul(
            self.weight
                .retaped::<T>()
                .permute::<(usize, usize), Axes2<1, 0>>(),
        );
        match &self.bias {
            Some(b) => {
                let s = *y.shape();
                y + b
                    .retaped::<T>()
                    .broadcast_like::<(usize, usize), Axis<0>>(&s)
            }
            None => y,
        }
    }
}

impl<D: Device<f32>> TensorCollection<f32, D> for Linear<D> {
    type To<E2: Dtype, D2: Device<E2>> = Linear<D2, E2>;
    fn iter_tensors<V: ModuleVisitor<Self, f32, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let has_bias = peek(visitor, |s: &Self| s.bias.is_some())?.unwrap_or(true);
        let bias = has_bias.then(|| {
            Self::tensor(
                "bias",
                |s: &Self| s.bias.as_ref().expect("Linear: bias"),
                |s: &mut Self| s.bias.as_mut().expect("Linear: bias"),
                runtime_options(true, fill_zeros::<(usize,), D>),
            )
        });
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s: &Self| &s.weight,
                    |s: &mut Self| &mut s.weight,
                    runtime_options(true, linear_weight_init::<D>),
                ),
                bias.into_iter().collect::<Vec<_>>(),
            ),
            |(weight, bias)| Linear {
                weight,
                bias: bias.into_iter().next(),
            },
        )
    }
}
