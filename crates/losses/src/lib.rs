//! Every distillation loss of `METHODS.md` (`../shared/spec/METHODS.md`) as a pure function of
//! network outputs, returning its named, weighted terms.
//!
//! - [`LossInputs`]: the model's outputs (`kd_models::Outputs`: logits, stage features,
//!   embeddings, gate or attention weights, fused logits), a teacher's or partner's outputs,
//!   the labels and the epoch.
//! - [`methods`]: one module per method, each with its hyper-parameters (`*Params`, serde,
//!   defaults from `METHODS.md`) and its `terms` function; [`compute`] turns terms into a
//!   [`LossOutput`]: the weighted terms and their sum, on which to call `backward`. Which
//!   methods exist, by name, is kd-train's registry (`kd_train::methods`).
//! - [`helpers`]: the shared helpers of `METHODS.md`'s notation section.
//! - [`cases`]: evaluation of a reference case of `FIXTURES.md` for a given terms function.
//!
//! Generic over the dfdx device and tape; built only from dfdx and `kd-ops` ops.

pub mod cases;
pub mod helpers;
pub mod inputs;
pub mod methods;

pub use helpers::Attention;
pub use inputs::{
    Cube, Labels, LossError, LossInputs, LossOutput, Map4, Mat, Outputs, Scalar, Terms,
};

use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A loss of `METHODS.md`: its hyper-parameters and its weighted terms. Each module of
/// [`methods`] declares one ([`loss!`]).
pub trait Loss: 'static {
    /// Serde (unknown fields rejected); `Default` is `METHODS.md`'s values.
    type Params: Serialize + DeserializeOwned + Default + Clone + std::fmt::Debug + PartialEq;
    /// The weighted terms, from tape-free inputs (see [`compute`]).
    fn terms<D: OpsDevice, T: Tape<f32, D>>(
        p: &Self::Params,
        x: &LossInputs<D>,
    ) -> Result<Terms<D, T>, LossError>;
}

/// Declares a method module's [`Loss`]: `loss!(/// doc, Name, Params);` over the module's
/// `terms` function.
#[macro_export]
macro_rules! loss {
    ($(#[$doc:meta])* $name:ident, $params:ty) => {
        $(#[$doc])*
        pub struct $name;

        impl $crate::Loss for $name {
            type Params = $params;
            fn terms<D: kd_ops::OpsDevice, T: dfdx::prelude::Tape<f32, D>>(
                p: &$params,
                x: &$crate::LossInputs<D>,
            ) -> Result<$crate::Terms<D, T>, $crate::LossError> {
                terms(p, x)
            }
        }
    };
}

/// Computes a loss from `inputs` with `terms` (a method's terms function): splits the tapes of
/// every input off into one (see [`inputs`]), computes the weighted terms from tape-free
/// inputs, and returns them with their total, which carries every tape (call `backward` on
/// it).
pub fn compute<D: OpsDevice, T: Tape<f32, D>>(
    inputs: LossInputs<D, T>,
    terms: impl FnOnce(&LossInputs<D>) -> Result<Terms<D, T>, LossError>,
) -> Result<LossOutput<D, T>, LossError> {
    let (x, tape) = inputs.split_tapes();
    terms(&x)?.finish(tape)
}
