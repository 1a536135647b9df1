//! `one` — On-the-fly Native Ensemble (`METHODS.md`, "one"): `students` branches and a gate
//! ([`kd_models::One`]); its reported ensemble is the gated teacher
//! ([`kd_losses::methods::one::gated_ensemble`]); the loss is [`kd_losses::methods::one`].

use crate::device::TrainDevice;
use crate::method::{About, Method, Protocol};
use kd_losses::methods::one::One as OneLoss;
use kd_models::One as Gated;

/// On-the-fly Native Ensemble.
pub struct One;

impl Method for One {
    const ABOUT: About = About::new("one", Protocol::Online).students(3, 2);
    type Loss = OneLoss;
    type Model<D: TrainDevice> = Gated<D>;
}
