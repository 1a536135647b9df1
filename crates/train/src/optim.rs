//! SGD with momentum, Nesterov and L2 weight decay, with PyTorch's semantics (`torch.optim.SGD`,
//! dampening 0), whose state — one velocity per parameter — can be saved and restored, so a
//! resumed run continues exactly (`METHODS.md`, "Training protocol defaults": SGD momentum 0.9,
//! Nesterov, weight decay 5e-4). dfdx's own `Sgd` keeps its velocities private, hence this one.
//!
//! Per trainable tensor `p` with gradient `g` (only tensors whose `TensorOptions` say
//! `do_gradient_update`; BatchNorm running statistics are left alone):
//!
//! ```text
//! g ← g + wd·p;   v ← μ·v + g;   step = g + μ·v (Nesterov) or v;   p ← p − lr·step
//! ```
//!
//! The velocities live in a zeroed copy of the model ([`Sgd::velocity`]), so they are walked in
//! the same `TensorCollection` order as the parameters and saved/loaded with the model's own
//! safetensors code (same names). Every update is in place (`Tensor::axpy`), keeping tensor
//! ids, so the model's gradients can be reused with `zero_grads`. Device-generic.

use dfdx::nn::{
    LoadFromSafetensors, RecursiveWalker, SaveToSafetensors, TensorCollection, TensorOptions,
    TensorVisitor, ViewTensorMut, ViewTensorName, ViewTensorRef,
};
use dfdx::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Optimizer settings (`METHODS.md` protocol defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Base learning rate (the schedule scales it per epoch).
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Per-parameter weight decay: the first entry whose prefix starts a tensor's name (e.g.
    /// `"fusion."` with 1e-5 for FFL's fusion module, `METHODS.md` "ffl") wins over
    /// `weight_decay`.
    pub weight_decay_overrides: Vec<(String, f64)>,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            weight_decay_overrides: Vec::new(),
        }
    }
}

impl SgdConfig {
    /// The weight decay of the tensor named `name`.
    pub fn weight_decay_for(&self, name: &str) -> f64 {
        self.weight_decay_overrides
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix.as_str()))
            .map_or(self.weight_decay, |(_, wd)| *wd)
    }
}

/// SGD whose velocities are an inspectable, saveable copy of the model `M`.
#[derive(Debug, Clone)]
pub struct Sgd<M> {
    pub cfg: SgdConfig,
    /// One velocity per tensor of the model, zero at the start (non-trainable tensors stay 0).
    pub velocity: M,
    /// Updates applied so far.
    pub steps: u64,
}

/// Replaces every tensor with zeros of its shape (fresh storage and id).
struct Zeroer;

impl<D: Device<f32>> TensorVisitor<f32, D> for Zeroer {
    type Viewer = ViewTensorMut;
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _opts: TensorOptions<S, f32, D>,
        t: &mut Tensor<S, f32, D>,
    ) -> Result<Option<Tensor<S, f32, D>>, D::Err> {
        *t = t.device().try_zeros_like(t.shape())?;
        Ok(None)
    }
}

/// One update over `(name, parameter, velocity)` triples.
struct Update<'a, D: Device<f32>> {
    cfg: &'a SgdConfig,
    lr: f64,
    grads: &'a mut Gradients<f32, D>,
}

impl<D: Device<f32>> TensorVisitor<f32, D> for Update<'_, D> {
    type Viewer = (ViewTensorName, ViewTensorMut, ViewTensorMut);
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (name, p, v): (String, &mut Tensor<S, f32, D>, &mut Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>, D::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        // A parameter the loss did not reach gets a zero gradient (as with PyTorch's
        // zero_grad(set_to_none=False)): decay and momentum still apply.
        self.grads.try_alloc_for(p)?;
        let mut g = self.grads.get(p);
        let wd = self.cfg.weight_decay_for(&name);
        if wd != 0.0 {
            g.try_axpy(1.0, p, wd)?;
        }
        let mu = self.cfg.momentum;
        if mu != 0.0 {
            v.try_axpy(mu, &g, 1.0)?;
            if self.cfg.nesterov {
                g.try_axpy(1.0, v, mu)?;
                p.try_axpy(1.0, &g, -self.lr)?;
            } else {
                p.try_axpy(1.0, v, -self.lr)?;
            }
        } else {
            p.try_axpy(1.0, &g, -self.lr)?;
        }
        Ok(None)
    }
}

impl<M: Clone> Sgd<M> {
    /// A fresh optimizer for `model` (zero velocities).
    pub fn new<D: Device<f32>>(model: &M, cfg: SgdConfig) -> Self
    where
        M: TensorCollection<f32, D>,
    {
        let mut velocity = model.clone();
        M::iter_tensors(&mut RecursiveWalker {
            m: &mut velocity,
            f: &mut Zeroer,
        })
        .expect("allocating velocities");
        Self {
            cfg,
            velocity,
            steps: 0,
        }
    }

    /// One step with learning rate `lr` (the scheduled value) from `grads`, which should hold
    /// the gradients of the model's trainable tensors (e.g. from `model.alloc_grads()`).
    pub fn update<D: Device<f32>>(
        &mut self,
        model: &mut M,
        grads: &mut Gradients<f32, D>,
        lr: f64,
    ) -> Result<(), D::Err>
    where
        M: TensorCollection<f32, D>,
    {
        let mut op = Update {
            cfg: &self.cfg,
            lr,
            grads,
        };
        M::iter_tensors(&mut RecursiveWalker {
            m: (String::new(), model, &mut self.velocity),
            f: &mut op,
        })?;
        self.steps += 1;
        Ok(())
    }

    /// Writes the velocities as safetensors (the model's tensor names).
    pub fn save<D: Device<f32>>(&self, path: &Path) -> anyhow::Result<()>
    where
        M: TensorCollection<f32, D>,
    {
        self.velocity
            .save_safetensors(path)
            .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))
    }

    /// Reads velocities written by [`Sgd::save`].
    pub fn load<D: Device<f32>>(&mut self, path: &Path) -> anyhow::Result<()>
    where
        M: TensorCollection<f32, D>,
    {
        self.velocity
            .load_safetensors(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e:?}", path.display()))
    }
}

/// Collects every tensor as `(name, values)`.
struct Collect(Vec<(String, Vec<f32>)>);

impl<D: Device<f32>> TensorVisitor<f32, D> for Collect {
    type Viewer = (ViewTensorName, ViewTensorRef);
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _opts: TensorOptions<S, f32, D>,
        (name, t): (String, &Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>, D::Err> {
        self.0.push((name, t.as_vec()));
        Ok(None)
    }
}

/// Every tensor of `model` (parameters and running statistics) by name, copied to the host:
/// for exact comparisons of weights (resume tests) and tooling.
pub fn named_tensors<D: Device<f32>, M: TensorCollection<f32, D>>(
    model: &M,
) -> Vec<(String, Vec<f32>)> {
    let mut c = Collect(Vec::new());
    M::iter_tensors(&mut RecursiveWalker {
        m: (String::new(), model),
        f: &mut c,
    })
    .expect("reading tensors");
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::nn::ZeroGrads;
    use dfdx::optim::{Momentum, Optimizer, WeightDecay};
    use kd_models::{build_network, Mode, NetConfig, Network};

    type Net = Network<Cpu>;

    fn cfg() -> SgdConfig {
        SgdConfig {
            lr: 0.05,
            ..Default::default()
        }
    }

    /// Cross-entropy on a fixed random batch `s` (train mode: BatchNorm statistics change).
    fn grads_of(net: &mut Net, s: u64) -> Gradients<f32, Cpu> {
        let dev: Cpu = Cpu::seed_from_u64(100 + s);
        let x: Tensor<(usize, usize, usize, usize), f32, Cpu> =
            dev.sample_normal_like(&(4, 1, 8, 8));
        let y = dev.tensor_from_vec(
            vec![
                1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.,
            ],
            (4, 4),
        );
        let g = net.alloc_grads();
        let out = kd_models::Model::forward(net, x.traced(g), Mode::Train);
        let z = out.logits.into_iter().next().unwrap();
        cross_entropy_with_logits_loss(z, y).backward()
    }

    fn net() -> Net {
        build_network(&Cpu::seed_from_u64(7), "resnet20", NetConfig::new(4, 1)).unwrap()
    }

    fn max_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
        assert_eq!(a.len(), b.len());
        let mut m = 0f32;
        for ((na, va), (nb, vb)) in a.iter().zip(b) {
            assert_eq!(na, nb);
            for (x, y) in va.iter().zip(vb) {
                m = m.max((x - y).abs());
            }
        }
        m
    }

    #[test]
    fn matches_dfdx_sgd_with_nesterov_and_l2() {
        let mut ours = net();
        let mut theirs = net();
        assert_eq!(
            max_diff(&named_tensors(&ours), &named_tensors(&theirs)),
            0.0
        );
        let mut opt = Sgd::new(&ours, cfg());
        let mut reference = dfdx::optim::Sgd::new(
            &theirs,
            dfdx::optim::SgdConfig {
                lr: 0.05,
                momentum: Some(Momentum::Nesterov(0.9)),
                weight_decay: Some(WeightDecay::L2(5e-4)),
            },
        );
        let start = named_tensors(&ours);
        for s in 0..4 {
            let mut g = grads_of(&mut ours, s);
            opt.update(&mut ours, &mut g, 0.05).unwrap();
            let mut g = grads_of(&mut theirs, s);
            reference.update(&mut theirs, &g).unwrap();
            theirs.zero_grads(&mut g);
        }
        let (a, b) = (named_tensors(&ours), named_tensors(&theirs));
        let d = max_diff(&a, &b);
        assert!(d < 1e-5, "max difference to dfdx's Sgd {d}");
        // The weights did move, and so did the running statistics (through the forward only).
        assert!(max_diff(&a, &start) > 1e-3);
        assert_eq!(opt.steps, 4);
        let v = named_tensors(&opt.velocity);
        let rm = v.iter().find(|(n, _)| n == "bn1.running_mean").unwrap();
        assert!(
            rm.1.iter().all(|&x| x == 0.0),
            "running stats get no velocity"
        );
        let w = v.iter().find(|(n, _)| n == "conv1.weight").unwrap();
        assert!(w.1.iter().any(|&x| x != 0.0));
    }

    #[test]
    fn matches_a_hand_computed_reference() {
        let dev: Cpu = Default::default();
        let c = [0.5f32, 0.25, -1.0];
        let cfgs = [(true, 0.9, 0.1), (false, 0.9, 0.0), (true, 0.0, 0.01)];
        for (nesterov, mu, wd) in cfgs {
            let mut p = dev.tensor([1.0f32, -2.0, 3.0]);
            let cfg = SgdConfig {
                lr: 0.1,
                momentum: mu,
                nesterov,
                weight_decay: wd,
                weight_decay_overrides: Vec::new(),
            };
            let mut opt = Sgd::new(&p, cfg);
            let (mut rp, mut rv) = ([1.0f64, -2.0, 3.0], [0.0f64; 3]);
            for _ in 0..3 {
                let loss = (p.clone().leaky_traced() * dev.tensor(c)).sum();
                let mut g = loss.backward();
                opt.update(&mut p, &mut g, 0.1).unwrap();
                for i in 0..3 {
                    let g = c[i] as f64 + wd * rp[i];
                    rv[i] = mu * rv[i] + g;
                    let step = if nesterov { g + mu * rv[i] } else { rv[i] };
                    rp[i] -= 0.1 * step;
                }
            }
            for (x, r) in p.as_vec().iter().zip(rp) {
                assert!(
                    (*x as f64 - r).abs() < 1e-5,
                    "{x} vs {r} ({nesterov} {mu} {wd})"
                );
            }
        }
    }

    #[test]
    fn weight_decay_overrides_match_by_prefix() {
        let c = SgdConfig {
            weight_decay_overrides: vec![("fusion.".into(), 1e-5)],
            ..Default::default()
        };
        assert_eq!(c.weight_decay_for("fusion.conv.weight"), 1e-5);
        assert_eq!(c.weight_decay_for("fc.weight"), 5e-4);
    }

    #[test]
    fn save_restore_continue_equals_uninterrupted() {
        let dir = tempfile::tempdir().unwrap();
        let mut straight = net();
        let mut opt = Sgd::new(&straight, cfg());
        for s in 0..4 {
            let mut g = grads_of(&mut straight, s);
            opt.update(&mut straight, &mut g, 0.05).unwrap();
        }

        let mut first = net();
        let mut opt = Sgd::new(&first, cfg());
        for s in 0..2 {
            let mut g = grads_of(&mut first, s);
            opt.update(&mut first, &mut g, 0.05).unwrap();
        }
        first.save_safetensors(dir.path().join("m.st")).unwrap();
        opt.save(&dir.path().join("v.st")).unwrap();
        drop((first, opt));

        let mut second = net();
        second.load_safetensors(dir.path().join("m.st")).unwrap();
        let mut opt = Sgd::new(&second, cfg());
        opt.load(&dir.path().join("v.st")).unwrap();
        for s in 2..4 {
            let mut g = grads_of(&mut second, s);
            opt.update(&mut second, &mut g, 0.05).unwrap();
        }
        assert_eq!(named_tensors(&second), named_tensors(&straight));
    }
}
