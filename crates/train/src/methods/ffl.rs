//! `ffl` — Feature Fusion Learning (`METHODS.md`, "ffl"): `students` branches and a fusion
//! module on their last-stage maps ([`kd_models::Ffl`]), whose parameters have weight decay
//! 1e-5; the students, their ensemble and the fused logits are reported; the loss is
//! [`kd_losses::methods::ffl`].

use crate::device::TrainDevice;
use crate::method::{About, Method, Protocol};
use kd_losses::methods::ffl::Ffl as FflLoss;
use kd_models::Ffl as Fused;

/// Feature Fusion Learning.
pub struct Ffl;

/// The fusion module's weight decay (`METHODS.md`, "ffl"; MFEF uses FFL's fusion).
pub(crate) const FUSION_DECAY: &[(&str, f64)] = &[("fusion.", 1e-5)];

impl Method for Ffl {
    const ABOUT: About = About::new("ffl", Protocol::Online)
        .students(2, 2)
        .weight_decay(FUSION_DECAY);
    type Loss = FflLoss;
    type Model<D: TrainDevice> = Fused<D>;
}
