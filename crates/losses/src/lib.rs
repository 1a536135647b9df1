//! Every distillation loss of `METHODS.md` (`../shared/spec/METHODS.md`) as a pure function of
//! network outputs, returning its named, weighted terms.
//!
//! - [`LossInputs`]: the network outputs (logits, stage features, embeddings, gate or attention
//!   weights, partner or teacher outputs, the epoch) and labels.
//! - [`Method`]: the registry ([`METHOD_NAMES`]); each variant carries its hyper-parameters
//!   (`methods::*::*Params`, serde, defaults from `METHODS.md`). [`Method::compute`] returns a
//!   [`LossOutput`]: the weighted terms and their sum, on which to call `backward`.
//! - [`helpers`]: the shared helpers of `METHODS.md`'s notation section.
//! - [`check_loss_case`]: evaluation of a reference case of `FIXTURES.md`.
//!
//! Generic over the dfdx device and tape; built only from dfdx and `kd-ops` ops.

pub mod cases;
pub mod helpers;
pub mod inputs;
pub mod methods;
pub mod registry;

pub use cases::check_loss_case;
pub use helpers::Attention;
pub use inputs::{Cube, Labels, LossError, LossInputs, LossOutput, Map4, Mat, Scalar, Terms};
pub use registry::{Method, METHOD_NAMES};
