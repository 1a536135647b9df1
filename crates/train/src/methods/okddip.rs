//! `okddip` — Online Knowledge Distillation with Diverse Peers (`METHODS.md`, "okddip"):
//! `students` peers and a leader over a shared trunk with peer attention
//! ([`kd_models::Okddip`]); the peers, the leader and their ensemble (the mean of all their
//! logits) are reported; the loss is [`kd_losses::methods::okddip`].

use crate::device::TrainDevice;
use crate::method::{About, Method, Protocol};
use kd_losses::methods::okddip::Okddip as OkddipLoss;
use kd_models::Okddip as Peers;

/// Online Knowledge Distillation with Diverse Peers.
pub struct Okddip;

impl Method for Okddip {
    const ABOUT: About = About::new("okddip", Protocol::Online).students(3, 2);
    type Loss = OkddipLoss;
    type Model<D: TrainDevice> = Peers<D>;
}
