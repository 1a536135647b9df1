//! The registry: the one place that lists the methods of `METHODS.md`, mapping each name to its
//! parameter struct and its terms function.

use crate::inputs::{LossError, LossInputs, LossOutput};
use crate::methods;
use dfdx::prelude::*;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

macro_rules! registry {
    ($($name:literal => $variant:ident($module:ident :: $params:ident)),* $(,)?) => {
        /// Every method name, in `METHODS.md` order.
        pub const METHOD_NAMES: &[&str] = &[$($name),*];

        /// A method of `METHODS.md` with its hyper-parameters.
        ///
        /// Serialized adjacently tagged, as the fixtures and configs write it:
        /// `{"method": "scd", "params": {"beta": 100.0}}` (params may omit fields: each
        /// struct's `Default` is `METHODS.md`'s values; unknown fields are rejected).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "method", content = "params", rename_all = "lowercase")]
        pub enum Method {
            $(
                #[doc = concat!("`", $name, "`: see [`methods::", stringify!($module), "`].")]
                $variant(methods::$module::$params),
            )*
        }

        impl Method {
            /// The method `name` with `METHODS.md`'s default hyper-parameters.
            pub fn with_defaults(name: &str) -> Result<Self, LossError> {
                match name {
                    $($name => Ok(Self::$variant(Default::default())),)*
                    _ => Err(LossError::UnknownMethod(name.to_string())),
                }
            }

            /// The method `name` with `params` (a JSON object of overrides; `null` for none).
            pub fn from_json(name: &str, params: &serde_json::Value) -> Result<Self, LossError> {
                let params = if params.is_null() {
                    serde_json::Value::Object(Default::default())
                } else {
                    params.clone()
                };
                let bad = |e: serde_json::Error| LossError::Params {
                    method: name.to_string(),
                    message: e.to_string(),
                };
                match name {
                    $($name => Ok(Self::$variant(serde_json::from_value(params).map_err(bad)?)),)*
                    _ => Err(LossError::UnknownMethod(name.to_string())),
                }
            }

            /// The method's name, as in `METHODS.md`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)*
                }
            }

            /// Computes the loss: its weighted terms and their sum, the total, which carries the
            /// tapes of all inputs (call `backward` on it).
            pub fn compute<D: OpsDevice, T: Tape<f32, D>>(
                &self,
                inputs: LossInputs<D, T>,
            ) -> Result<LossOutput<D, T>, LossError> {
                let (x, tape) = inputs.split_tapes();
                let terms = match self {
                    $(Self::$variant(p) => methods::$module::terms::<D, T>(p, &x)?,)*
                };
                terms.finish(tape)
            }
        }
    };
}

registry! {
    "ce" => Ce(ce::CeParams),
    "scd" => Scd(scd::ScdParams),
    "sad" => Sad(sad::SadParams),
    "cskd" => Cskd(cskd::CskdParams),
    "ddgsd" => Ddgsd(ddgsd::DdgsdParams),
    "byot" => Byot(byot::ByotParams),
    "kd" => Kd(kd::KdParams),
    "at" => At(at::AtParams),
    "sp" => Sp(sp::SpParams),
    "dml" => Dml(dml::DmlParams),
    "one" => One(one::OneParams),
    "okddip" => Okddip(okddip::OkddipParams),
    "kdcl" => Kdcl(kdcl::KdclParams),
    "ffl" => Ffl(ffl::FflParams),
    "mfef" => Mfef(mfef::MfefParams),
}
