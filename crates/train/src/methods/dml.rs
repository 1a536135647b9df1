//! `dml` — Deep Mutual Learning (`METHODS.md`, "dml"): `students` independent networks
//! ([`kd_models::Networks`]) on the same shuffled batches; the loss is
//! [`kd_losses::methods::dml`].

use crate::device::TrainDevice;
use crate::method::{About, Method, Protocol};
use kd_losses::methods::dml::Dml as DmlLoss;
use kd_models::Networks;

/// Deep Mutual Learning.
pub struct Dml;

impl Method for Dml {
    const ABOUT: About = About::new("dml", Protocol::Online).students(2, 2);
    type Loss = DmlLoss;
    type Model<D: TrainDevice> = Networks<D>;
}
