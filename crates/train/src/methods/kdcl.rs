//! `kdcl` — Collaborative Learning, MinLogit (`METHODS.md`, "kdcl"): `students` independent
//! networks ([`kd_models::Networks`]), each fed its own augmentation of the same images; the
//! loss is [`kd_losses::methods::kdcl`].

use crate::device::TrainDevice;
use crate::method::{About, Fed, Method, Protocol, Tp};
use anyhow::{bail, Result};
use dfdx::prelude::*;
use kd_data::Sampler;
use kd_losses::methods::kdcl::Kdcl as KdclLoss;
use kd_losses::LossInputs;
use kd_models::{Mode, Networks};

/// Collaborative Learning (MinLogit).
pub struct Kdcl;

impl Method for Kdcl {
    const ABOUT: About = About::new("kdcl", Protocol::Online)
        .students(2, 2)
        .sampler(Sampler::Views);
    type Loss = KdclLoss;
    type Model<D: TrainDevice> = Networks<D>;

    /// View `k` (rows `k·b .. (k+1)·b`) through network `k`; the gradients trace view 0.
    fn feed<D: TrainDevice>(
        nets: &mut Networks<D>,
        fed: Fed<'_, D>,
    ) -> Result<LossInputs<D, Tp<D>>> {
        let (b, k) = (fed.anchors, nets.len());
        if fed.shape.0 != k * b {
            bail!("{} rows for {k} views of {b} images", fed.shape.0);
        }
        let mut views: Vec<_> = (1..k)
            .map(|v| fed.rows(v * b..(v + 1) * b).put_tape(Tp::<D>::default()))
            .collect();
        views.insert(0, fed.rows(0..b).traced(fed.grads));
        Ok(LossInputs::of(
            fed.labels,
            nets.forward_each(views, Mode::Train),
        ))
    }
}
