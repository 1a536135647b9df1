//! kd-models: the CIFAR-style backbones of `ARCHITECTURES.md` and the extra structures of the
//! distillation methods of `METHODS.md`, on dfdx 0.13 and kd-ops.
//!
//! - Backbones ([`Network`], built by name with [`build_network`]; names in [`ARCH_NAMES`]):
//!   resnet18, resnet18-preact, resnet20/32/56/110, resnet8x4/32x4, wrn-16-2/40-2, vgg8/13.
//!   3×3 stride-1 stem, no max-pool; any class count; 1 or 3 input channels; 28×28, 32×32 and
//!   64×64 inputs (any size the strides divide, in fact). Each forward returns the stage outputs
//!   `F_1..F_L`, the pooled embedding and the logits ([`NetOutput`]).
//! - Multi-branch students: `NetConfig::branches = N` heads over a shared trunk; independent
//!   networks: [`Networks`].
//! - Method structures ([`heads`]): BYOT exits, ONE's gate, OKDDip's peer attention, FFL's
//!   fusion, MFEF's multi-scale and dual-attention blocks.
//! - [`Model`]: the common interface (`forward` in a [`Mode`] → [`Outputs`], laid out like
//!   kd-losses' `LossInputs`), and `students()` — what is kept at inference.
//!
//! Parameters, gradients, optimisers and checkpoints go through dfdx's `TensorCollection`
//! (`alloc_grads`, `Sgd`, `save_safetensors`/`load_safetensors`, `num_trainable_params`),
//! under PyTorch module paths (see [`network`]).
//!
//! Initialisation: Kaiming-normal (fan-out, ReLU) convolutions (kd-ops' layers), BatchNorm
//! weight 1 and bias 0, PyTorch's default `U(±1/√in)` for linear layers, from the device's RNG
//! (seed it with `Cpu::seed_from_u64`).

pub mod arch;
pub mod collection;
pub mod heads;
pub mod layers;
pub mod model;
pub mod network;
pub mod outputs;
pub mod preact;
pub mod resnet;
pub mod stage;
pub mod vgg;
pub mod wrn;

pub use arch::{arch_spec, build_network, ArchFamily, ArchSpec, ModelError, NetConfig, ARCH_NAMES};
pub use collection::List;
pub use heads::{Byot, Ffl, Mfef, Okddip, One};
pub use layers::{Cube, Linear, Map4, Mat, Mode};
pub use model::{Model, Networks};
pub use network::{Head, HeadOutput, LayerRow, NetOutput, Network};
pub use outputs::Outputs;

/// A CPU device seeded with `seed` (initialisation draws from the device's RNG).
pub fn dfdx_cpu(seed: u64) -> dfdx::prelude::Cpu {
    dfdx::prelude::Cpu::seed_from_u64(seed)
}
