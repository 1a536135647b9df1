//! `mfef` — Multi-scale Feature Extraction and Fusion (`METHODS.md`, "mfef"; reconstructed):
//! FFL with multi-scale extraction and dual attention per student before the fusion
//! ([`kd_models::Mfef`]); the students, their ensemble and the fused logits are reported; the
//! loss is FFL's form ([`kd_losses::methods::mfef`]).

use crate::device::TrainDevice;
use crate::method::{About, Method, Protocol};
use kd_losses::methods::mfef::Mfef as MfefLoss;
use kd_models::Mfef as Fused;

/// Multi-scale Feature Extraction and Fusion.
pub struct Mfef;

impl Method for Mfef {
    const ABOUT: About = About::new("mfef", Protocol::Online)
        .students(2, 2)
        .weight_decay(super::ffl::FUSION_DECAY);
    type Loss = MfefLoss;
    type Model<D: TrainDevice> = Fused<D>;
}
