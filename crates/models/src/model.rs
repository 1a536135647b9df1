//! [`Model`]: the interface every trainable structure shares (a plain [`Network`], the method
//! structures of `heads/`, a group of independent networks), and what is kept at inference.

use crate::collection::List;
use crate::layers::{Map4, Mode};
use crate::network::Network;
use crate::outputs::Outputs;
use dfdx::nn::TensorCollection;
use dfdx::prelude::*;
use kd_ops::OpsDevice;

/// A trainable model: its forward pass in a [`Mode`], and the students it trains.
///
/// Training-only modules (BYOT exits, ONE's gate, OKDDip's projections, FFL's fusion, MFEF's
/// blocks) live beside the students; [`Model::students`] drops them and returns every student
/// as a plain [`Network`] with PyTorch names and the architecture's exact parameter count —
/// what is evaluated per student and exported.
pub trait Model<D: OpsDevice>: TensorCollection<f32, D> + Clone {
    /// The forward pass (train: batch statistics, running statistics updated; eval: running
    /// statistics).
    fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Outputs<D, T>;

    /// Every student, training-only modules dropped.
    fn students(&self) -> Vec<Network<D>>;

    /// Evaluation forward without modifying `self` (runs on a shallow copy: tensors are
    /// reference-counted and keep their ids).
    fn forward_eval<T: Tape<f32, D>>(&self, x: Map4<D, T>) -> Outputs<D, T> {
        self.clone().forward(x, Mode::Eval)
    }
}

/// A plain network (or its branches): logits and embeddings per head, features of head 0.
impl<D: OpsDevice> Model<D> for Network<D> {
    fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Outputs<D, T> {
        Network::forward(self, x, mode).into_outputs()
    }
    fn students(&self) -> Vec<Network<D>> {
        Network::students(self)
    }
}

/// Independent networks (DML, KDCL; possibly different architectures), saved as `0.`, `1.`,
/// ...: logits/embeddings are the students' in order (every head of every network), features
/// those of network 0's head 0. [`Model::forward`] gives every network the same input; KDCL
/// gives each its own view ([`Networks::forward_each`]).
pub type Networks<D> = List<Network<D>>;

impl<D: OpsDevice> Networks<D> {
    /// Forwards `views[k]` through network `k` (one view per network).
    ///
    /// # Panics
    /// When the counts differ.
    pub fn forward_each<T: Tape<f32, D>>(
        &mut self,
        views: Vec<Map4<D, T>>,
        mode: Mode,
    ) -> Outputs<D, T> {
        assert_eq!(
            views.len(),
            self.items.len(),
            "{} views for {} networks",
            views.len(),
            self.items.len()
        );
        let mut out = Outputs::empty();
        for (k, (net, x)) in self.items.iter_mut().zip(views).enumerate() {
            let o = net.forward(x, mode).into_outputs();
            if k == 0 {
                out.features = o.features;
            }
            out.logits.extend(o.logits);
            out.embeddings.extend(o.embeddings);
        }
        out
    }
}

impl<D: OpsDevice> Model<D> for Networks<D> {
    fn forward<T: Tape<f32, D>>(&mut self, x: Map4<D, T>, mode: Mode) -> Outputs<D, T> {
        // The same input for every network; its tape goes with the first.
        let (x, tape) = x.split_tape();
        let mut tape = Some(tape);
        let views = (0..self.items.len())
            .map(|_| x.clone().put_tape(tape.take().unwrap_or_default()))
            .collect();
        self.forward_each(views, mode)
    }
    fn students(&self) -> Vec<Network<D>> {
        self.items.iter().flat_map(|n| n.students()).collect()
    }
}
