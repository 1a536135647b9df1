//! The structures the methods of `METHODS.md` add around the students. Every module here is
//! training-only: [`crate::Model::students`] drops it.
//!
//! Each structure is a checkpoint root: its student network's tensors keep their plain
//! PyTorch names (the network is visited under the empty name) and the extra modules live
//! under their own prefix (`exits.`, `gate.`, `attention.`, `fusion.`, `mfef.`).

pub mod byot;
pub mod ffl;
pub mod mfef;
pub mod okddip;
pub mod one;

pub use byot::{Byot, Exit};
pub use ffl::{Ffl, Fusion};
pub use mfef::{DualAttention, Mfef, MfefBlock, MultiScale};
pub use okddip::{Okddip, PeerAttention};
pub use one::{Gate, One};
