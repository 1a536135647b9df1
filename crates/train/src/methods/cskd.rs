//! `cskd` — Class-wise Self-Knowledge Distillation (`METHODS.md`, "cskd"): batches of `b`
//! anchors and, for each, a random image of its class; the anchors go forward with the tape,
//! the partners without it (both in train mode, so their BatchNorm statistics are their own);
//! the loss is [`kd_losses::methods::cskd`].

use crate::device::TrainDevice;
use crate::method::{About, Fed, Method, Protocol, Tp};
use anyhow::Result;
use dfdx::prelude::*;
use kd_data::Sampler;
use kd_losses::methods::cskd::Cskd as CskdLoss;
use kd_losses::LossInputs;
use kd_models::{Mode, Model, Network};

/// Class-wise Self-Knowledge Distillation.
pub struct Cskd;

impl Method for Cskd {
    const ABOUT: About =
        About::new("cskd", Protocol::SelfDistillation).sampler(|_| Sampler::ClassPairs);
    type Loss = CskdLoss;
    type Model<D: TrainDevice> = Network<D>;

    fn feed<D: TrainDevice>(net: &mut Network<D>, fed: Fed<'_, D>) -> Result<LossInputs<D, Tp<D>>> {
        let b = fed.anchors;
        let (anchors, partners) = (fed.rows(0..b), fed.rows(b..fed.shape.0));
        let out = Model::forward(net, anchors.traced(fed.grads), Mode::Train);
        let partner = Model::forward(net, partners, Mode::Train);
        let mut inputs = LossInputs::of(fed.labels, out);
        inputs.partner = Some(partner.retaped());
        Ok(inputs)
    }
}
