//! `ddgsd` — Data-Distortion Guided Self-Distillation (`METHODS.md`, "ddgsd"): two
//! independently augmented views of each image in one `2b` forward, whose logits and
//! embeddings are split into the views' `z1, z2` and `e1, e2`; the loss is
//! [`kd_losses::methods::ddgsd`].

use crate::device::TrainDevice;
use crate::feed::split_rows;
use crate::method::{About, Fed, Method, Protocol, Tp};
use anyhow::Result;
use dfdx::prelude::*;
use kd_data::Sampler;
use kd_losses::methods::ddgsd::Ddgsd as DdgsdLoss;
use kd_losses::LossInputs;
use kd_models::{Mode, Model, Network, Outputs};

/// Data-Distortion Guided Self-Distillation.
pub struct Ddgsd;

impl Method for Ddgsd {
    const ABOUT: About =
        About::new("ddgsd", Protocol::SelfDistillation).sampler(|_| Sampler::Views(2));
    type Loss = DdgsdLoss;
    type Model<D: TrainDevice> = Network<D>;

    fn feed<D: TrainDevice>(net: &mut Network<D>, fed: Fed<'_, D>) -> Result<LossInputs<D, Tp<D>>> {
        let b = fed.anchors;
        let out = Model::forward(net, fed.all().traced(fed.grads), Mode::Train);
        let mut views = Outputs::empty();
        for z in out.logits {
            let (z1, z2) = split_rows(z, b);
            views.logits.extend([z1, z2]);
        }
        for e in out.embeddings {
            let (e1, e2) = split_rows(e, b);
            views.embeddings.extend([e1, e2]);
        }
        // The loss does not read the stage outputs; they go in so that no tape is lost.
        views.features = out.features;
        Ok(LossInputs::of(fed.labels, views))
    }
}
