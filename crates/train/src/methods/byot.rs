//! `byot` — Be Your Own Teacher (`METHODS.md`, "byot"): an exit after every stage
//! ([`kd_models::Byot`]), shuffled batches; every exit and their ensemble (the mean of the
//! exits' logits) are reported; the loss is [`kd_losses::methods::byot`].

use crate::device::TrainDevice;
use crate::method::{About, Method, Protocol};
use kd_losses::methods::byot::Byot as ByotLoss;
use kd_models::Byot as Exits;

/// Be Your Own Teacher.
pub struct Byot;

impl Method for Byot {
    const ABOUT: About = About::new("byot", Protocol::SelfDistillation);
    type Loss = ByotLoss;
    type Model<D: TrainDevice> = Exits<D>;
}
