//! The model structures of kd-models as the trainer sees them ([`Structure`]): how each is
//! built for a [`Spec`], and what its evaluation reports (BYOT's exits, ONE's gated ensemble,
//! OKDDip's leader; the students, their ensemble and any fused logits otherwise).

use crate::device::TrainDevice;
use crate::entry::Entry;
use crate::feed::students_ensemble_fused;
use crate::method::{Spec, Structure};
use anyhow::{anyhow, Result};
use dfdx::prelude::*;
use kd_losses::methods::one::gated_ensemble;
use kd_models::{Byot, Ffl, Mat, Mfef, ModelError, Network, Networks, Okddip, One, Outputs};

fn built<T>(r: Result<T, ModelError>) -> Result<T> {
    r.map_err(|e| anyhow!("{e}"))
}

/// ONE's branches, then its gated ensemble `z_e = Σ_i g_i z_i` (the teacher of its loss).
fn gated<D: TrainDevice>(out: Outputs<D>) -> Vec<(Entry, Mat<D>)> {
    let gate = out.gate.expect("ONE's forward returns its gate");
    let ensemble = gated_ensemble::<D, NoneTape>(&out.logits, &gate);
    let mut v: Vec<(Entry, Mat<D>)> = (out.logits.into_iter().enumerate())
        .map(|(i, z)| (Entry::Student(i), z))
        .collect();
    v.push((Entry::Ensemble, ensemble));
    v
}

/// OKDDip's peers, its leader (the last branch), and the ensemble of all of them.
fn peers_and_leader<D: TrainDevice>(out: Outputs<D>) -> Vec<(Entry, Mat<D>)> {
    let leader = out.logits.len() - 1;
    let mut v = students_ensemble_fused(out, Entry::Peer);
    v[leader].0 = Entry::Leader;
    v
}

macro_rules! structures {
    ($($model:ident: |$dev:ident, $spec:ident| $build:expr $(, evaluate $eval:expr)?;)*) => {
        $(impl<D: TrainDevice> Structure<D> for $model<D> {
            fn build($dev: &D, $spec: &Spec) -> Result<Self> {
                $build
            }
            $(fn evaluate(out: Outputs<D>) -> Vec<(Entry, Mat<D>)> {
                $eval(out)
            })?
        })*
    };
}

structures! {
    // One network.
    Network: |dev, spec| spec.network(dev, 1);
    // `students` independent networks (DML, KDCL).
    Networks: |dev, spec| spec.networks(dev);
    // An exit after every stage (BYOT): every exit, and their ensemble.
    Byot: |dev, spec| built(Byot::new(dev, spec.network(dev, 1)?, spec.size)),
        evaluate |out| students_ensemble_fused(out, |i| Entry::Exit(i + 1));
    // `students` branches and a gate (ONE).
    One: |dev, spec| built(One::new(dev, spec.network(dev, spec.students)?)),
        evaluate gated;
    // `students` peers and one more branch, the leader (OKDDip).
    Okddip: |dev, spec| built(Okddip::new(dev, spec.network(dev, spec.students + 1)?)),
        evaluate peers_and_leader;
    // `students` branches and the fusion module (FFL).
    Ffl: |dev, spec| built(Ffl::new(dev, vec![spec.network(dev, spec.students)?]));
    // FFL with multi-scale extraction and dual attention (MFEF).
    Mfef: |dev, spec| built(Mfef::new(dev, vec![spec.network(dev, spec.students)?]));
}
