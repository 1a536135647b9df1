//! The methods of `METHODS.md`, one file each, and the registry: the one list of them, by
//! name ([`NAMES`], [`visit`]). The CLI's help, config validation, sweeps, reports and the
//! tests that cover every method all read it.

use crate::method::{params_of, Info, Method, Visit};
use anyhow::{anyhow, bail, Result};
use dfdx::prelude::*;
use kd_losses::{LossInputs, LossOutput};
use kd_ops::OpsDevice;

/// Declares a method on one plain network with shuffled batches and the default feed and
/// evaluation: `plain_method!(/// doc, Type, About, loss_module);`.
macro_rules! plain_method {
    ($(#[$doc:meta])* $ty:ident, $about:expr, $loss:ident) => {
        $(#[$doc])*
        pub struct $ty;

        impl $crate::method::Method for $ty {
            const ABOUT: $crate::method::About = $about;
            type Loss = kd_losses::methods::$loss::$ty;
            type Model<D: $crate::device::TrainDevice> = kd_models::Network<D>;
        }
    };
}
use plain_method;

mod at;
mod byot;
mod ce;
mod cskd;
mod ddgsd;
mod dml;
mod ffl;
mod kd;
mod kdcl;
mod mfef;
mod okddip;
mod one;
mod sad;
mod scd;
mod sp;
pub mod structures;

pub use at::At;
pub use byot::Byot;
pub use ce::Ce;
pub use cskd::Cskd;
pub use ddgsd::Ddgsd;
pub use dml::Dml;
pub use ffl::Ffl;
pub use kd::Kd;
pub use kdcl::Kdcl;
pub use mfef::Mfef;
pub use okddip::Okddip;
pub use one::One;
pub use sad::Sad;
pub use scd::Scd;
pub use sp::Sp;

macro_rules! registry {
    ($($m:ident),* $(,)?) => {
        /// Every registered method's name, in `METHODS.md` order.
        pub const NAMES: &[&str] = &[$(<$m as Method>::ABOUT.name),*];

        /// Runs `v` for the registered method `name`; an unknown name is an error listing
        /// [`NAMES`].
        pub fn visit<V: Visit>(name: &str, v: V) -> Result<V::Out> {
            $(if name == <$m as Method>::ABOUT.name {
                return Ok(v.visit::<$m>());
            })*
            bail!("unknown method `{name}`; valid methods: {}", NAMES.join(", "))
        }
    };
}

// The registry.
registry!(Ce, Scd, Sad, Cskd, Ddgsd, Byot, Kd, At, Sp, Dml, One, Okddip, Kdcl, Ffl, Mfef);

/// The device-independent facts of the registered method `name`.
pub fn info(name: &str) -> Result<Info> {
    struct Of;
    impl Visit for Of {
        type Out = Info;
        fn visit<M: Method>(self) -> Info {
            Info::of::<M>()
        }
    }
    visit(name, Of)
}

/// The registered methods whose [`Info`] satisfies `f`, joined for a message ("dml, one, ...").
pub fn names_where(f: impl Fn(&Info) -> bool) -> String {
    NAMES
        .iter()
        .filter(|n| info(n).is_ok_and(|i| f(&i)))
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// The loss of the registered method `name` with `params` (a JSON object of overrides, or
/// null) on `inputs`: its weighted terms and their total.
pub fn loss<D: OpsDevice, T: Tape<f32, D>>(
    name: &str,
    params: &serde_json::Value,
    inputs: LossInputs<D, T>,
) -> Result<LossOutput<D, T>> {
    struct Compute<'a, D: OpsDevice, T>(&'a serde_json::Value, LossInputs<D, T>);
    impl<D: OpsDevice, T: Tape<f32, D>> Visit for Compute<'_, D, T> {
        type Out = Result<LossOutput<D, T>>;
        fn visit<M: Method>(self) -> Self::Out {
            let p = params_of::<M>(self.0)
                .map_err(|e| anyhow!("{}: bad params: {e}", M::ABOUT.name))?;
            kd_losses::compute(self.1, |x| <M::Loss as kd_losses::Loss>::terms(&p, x))
                .map_err(|e| anyhow!("{e}"))
        }
    }
    visit(name, Compute(params, inputs))?
}

/// Evaluates a reference loss case (`FIXTURES.md`) with the loss of the method it names
/// (see `kd_losses::cases::check_case`).
pub fn check_loss_case(
    name: &str,
    case: &serde_json::Value,
) -> Result<kd_ops::cases::Report, String> {
    kd_losses::cases::check_case(name, case, |method, params, inputs| {
        loss(method, params, inputs).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::Protocol;

    #[test]
    fn every_method_is_registered_once_and_known_by_name() {
        let mut names = NAMES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 15);
        for n in NAMES {
            assert_eq!(info(n).unwrap().name, *n);
        }
        let e = info("nope").unwrap_err().to_string();
        assert!(
            e.contains("unknown method `nope`") && e.contains("mfef"),
            "{e}"
        );
        assert_eq!(info("one").unwrap().students, Some((3, 2)));
        assert_eq!(info("okddip").unwrap().students, Some((3, 2)));
        assert_eq!(info("kdcl").unwrap().students, Some((2, 2)));
        assert_eq!(info("byot").unwrap().students, None);
        assert!(info("kd").unwrap().teacher);
        assert_eq!(info("dml").unwrap().protocol, Protocol::Online);
    }

    #[test]
    fn protocols_set_the_defaults() {
        assert_eq!(info("scd").unwrap().protocol.epochs(), 200);
        assert_eq!(Protocol::milestones(200), vec![100, 150]);
        assert_eq!(Protocol::Online.epochs(), 300);
        assert_eq!(Protocol::milestones(300), vec![150, 225]);
        assert_eq!(Protocol::milestones(15), vec![7, 11]);
        assert_eq!(Protocol::milestones(1), Vec::<usize>::new());
        assert_eq!(Protocol::milestones(2), vec![1]);
        assert_eq!(Protocol::milestones(3), vec![1, 2]);
        assert_eq!(Protocol::Online.arch(), "resnet32");
        use kd_data::Sampler;
        assert_eq!(info("cskd").unwrap().sampler(1), Sampler::ClassPairs);
        assert_eq!(info("ddgsd").unwrap().sampler(1), Sampler::Views(2));
        assert_eq!(info("kdcl").unwrap().sampler(3), Sampler::Views(3));
        assert_eq!(info("scd").unwrap().sampler(1), Sampler::Shuffled);
    }
}
