//! Training steps of a registered method timed on synthetic data, through the same
//! [`Model::step`] every run takes (feed, loss, backward, the run's SGD, the loss read back),
//! for `cargo xtask bench models --methods`.

use super::trainer::Model;
use crate::config::TrainConfig;
use crate::device::TrainDevice;
use crate::method::{params_of, Fed, Info, Method, Spec, Visit};
use anyhow::{anyhow, bail, Result};
use dfdx::nn::{NumParams, ZeroGrads};
use std::time::Instant;

/// What [`time_steps`] measured.
#[derive(Debug, Clone, Copy)]
pub struct StepTimes {
    /// Anchor images (the batch size) per second.
    pub images_per_s: f64,
    pub ms_per_step: f64,
    /// Trainable parameters of the method's model.
    pub params: usize,
}

/// Times `steps` training steps, after `warmup`, of `cfg.method` on `spec.arch` with batches of
/// `batch` random images `[channels, size, size]` and random labels over `classes` (rows per
/// sample as the method's sampler feeds them: CS-KD's partners, DDGSD's views). Methods that
/// need a trained teacher are refused. `after_warmup` runs just before the clock starts.
pub fn time_steps<D: TrainDevice>(
    dev: D,
    cfg: &TrainConfig,
    spec: &Spec,
    batch: usize,
    warmup: usize,
    steps: usize,
    after_warmup: impl FnOnce(),
) -> Result<StepTimes> {
    crate::methods::visit(
        &cfg.method,
        Timed {
            dev,
            cfg,
            spec,
            batch,
            warmup,
            steps,
            after_warmup,
        },
    )?
}

struct Timed<'a, D, F> {
    dev: D,
    cfg: &'a TrainConfig,
    spec: &'a Spec,
    batch: usize,
    warmup: usize,
    steps: usize,
    after_warmup: F,
}

impl<D: TrainDevice, F: FnOnce()> Visit for Timed<'_, D, F> {
    type Out = Result<StepTimes>;
    fn visit<M: Method>(self) -> Result<StepTimes> {
        let info = Info::of::<M>();
        if info.teacher {
            bail!(
                "{}: timing needs no teacher, and this method distils from one",
                info.name
            );
        }
        let params = params_of::<M>(&self.cfg.loss).map_err(|e| anyhow!("loss: {e}"))?;
        let mut model = Model::<M, D>::build_spec(self.dev.clone(), self.cfg, self.spec)?;
        let n_params = model.net.num_trainable_params();
        let (b, c, s) = (self.batch, self.spec.channels, self.spec.size);
        let rows = b * info.sampler(self.spec.students).rows_per_anchor();
        // Fixed pseudo-random pixels in [-2, 2) and labels (a multiplicative hash of the index).
        let hash = |i: usize| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        let images: Vec<f32> = (0..rows * c * s * s)
            .map(|i| hash(i) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0)
            .collect();
        let labels: Vec<usize> = (0..b)
            .map(|i| hash(i + 1) as usize % self.spec.classes)
            .collect();
        let lr = self.cfg.optim.lr;
        let mut grads = Some(model.net.alloc_grads());
        let mut step = |i: usize| -> Result<()> {
            let fed = Fed {
                dev: self.dev.clone(),
                images: images.clone(),
                shape: (rows, c, s, s),
                anchors: b,
                labels: labels.clone(),
                grads: grads.take().expect("gradients"),
                teacher: None,
            };
            let stepped = model.step(&params, fed, 0, i, lr, |_, _, _, _| Ok(()))?;
            grads = Some(stepped.grads);
            Ok(())
        };
        for i in 0..self.warmup {
            step(i)?;
        }
        (self.after_warmup)();
        let t = Instant::now();
        for i in 0..self.steps {
            step(i)?;
        }
        let secs = t.elapsed().as_secs_f64();
        Ok(StepTimes {
            images_per_s: (b * self.steps) as f64 / secs,
            ms_per_step: 1e3 * secs / self.steps as f64,
            params: n_params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::prelude::Cpu;

    fn spec(students: usize) -> Spec {
        Spec {
            arch: "resnet20".into(),
            classes: 100,
            channels: 3,
            size: 32,
            students,
        }
    }

    /// The timed step is the trainer's: CE and SCD run on the CIFAR ResNet-20 (278,324
    /// parameters at 100 classes, as `ARCHITECTURES.md` counts), DDGSD feeds its two views,
    /// and a method that distils from a trained teacher is refused by name.
    #[test]
    fn times_the_trainers_step_and_refuses_teacher_methods() {
        for method in ["ce", "scd", "ddgsd"] {
            let cfg = TrainConfig::for_method(method).unwrap();
            let t = time_steps(Cpu::default(), &cfg, &spec(1), 4, 1, 1, || {}).unwrap();
            assert_eq!(t.params, 278_324, "{method}");
            assert!(
                t.images_per_s > 0.0 && t.ms_per_step > 0.0,
                "{method}: {t:?}"
            );
        }
        let cfg = TrainConfig::for_method("kd").unwrap();
        let err = time_steps(Cpu::default(), &cfg, &spec(1), 4, 1, 1, || {}).unwrap_err();
        assert!(
            err.to_string().contains("kd: timing needs no teacher"),
            "{err}"
        );
    }
}
