//! One module per method of `METHODS.md`, each with its hyper-parameter struct (defaults from
//! `METHODS.md`) and a `terms` function computing its weighted terms from [`crate::LossInputs`].

pub mod at;
pub mod byot;
pub mod ce;
pub mod cskd;
pub mod ddgsd;
pub mod dml;
pub mod ffl;
pub mod kd;
pub mod kdcl;
pub mod mfef;
pub mod okddip;
pub mod one;
pub mod sad;
pub mod scd;
pub mod sp;
