//! Learning-rate schedules, evaluated per epoch (counted from 0): step decay at milestones (the
//! paper protocol of `METHODS.md`: ÷10 at 100 and 150, or at 150 and 225 for online methods),
//! cosine annealing, and an optional linear warm-up.

use serde::{Deserialize, Serialize};

/// The shape of the decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// `lr · gamma^(number of milestones ≤ epoch)`.
    #[default]
    Step,
    /// `min_lr + (lr − min_lr) · (1 + cos(π · t / T)) / 2`, `t` epochs after warm-up out of
    /// `T = epochs − warmup_epochs`.
    Cosine,
}

/// A schedule. `milestones` of `None` means the method family's defaults (filled in by
/// [`crate::config::TrainConfig::resolve`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// Step: epochs at which the rate is multiplied by `gamma`.
    pub milestones: Option<Vec<usize>>,
    pub gamma: f64,
    /// Cosine: the final rate.
    pub min_lr: f64,
    /// Linear warm-up: epoch `e < warmup_epochs` uses `lr · (e + 1) / warmup_epochs`.
    pub warmup_epochs: usize,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Step,
            milestones: None,
            gamma: 0.1,
            min_lr: 0.0,
            warmup_epochs: 0,
        }
    }
}

impl Schedule {
    /// The learning rate of `epoch` (0-based) for base rate `lr` over `epochs` epochs.
    pub fn lr_at(&self, lr: f64, epoch: usize, epochs: usize) -> f64 {
        if epoch < self.warmup_epochs {
            return lr * (epoch + 1) as f64 / self.warmup_epochs as f64;
        }
        match self.kind {
            ScheduleKind::Step => {
                let passed = self
                    .milestones
                    .as_deref()
                    .unwrap_or(&[])
                    .iter()
                    .filter(|&&m| m <= epoch)
                    .count();
                lr * self.gamma.powi(passed as i32)
            }
            ScheduleKind::Cosine => {
                let span = epochs.saturating_sub(self.warmup_epochs).max(1) as f64;
                let t = (epoch - self.warmup_epochs) as f64;
                self.min_lr
                    + (lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t / span).cos()) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(milestones: &[usize]) -> Schedule {
        Schedule {
            milestones: Some(milestones.to_vec()),
            ..Default::default()
        }
    }

    #[test]
    fn step_decays_exactly_at_milestones() {
        let s = step(&[100, 150]);
        assert_eq!(s.lr_at(0.1, 0, 200), 0.1);
        assert_eq!(s.lr_at(0.1, 99, 200), 0.1);
        assert_eq!(s.lr_at(0.1, 100, 200), 0.1 * 0.1);
        assert_eq!(s.lr_at(0.1, 149, 200), 0.1 * 0.1);
        assert_eq!(s.lr_at(0.1, 150, 200), 0.1 * 0.1 * 0.1);
        assert_eq!(s.lr_at(0.1, 199, 200), 0.1 * 0.1 * 0.1);
        let online = step(&[150, 225]);
        assert_eq!(online.lr_at(0.1, 149, 300), 0.1);
        assert_eq!(online.lr_at(0.1, 150, 300), 0.1 * 0.1);
        assert_eq!(online.lr_at(0.1, 225, 300), 0.1 * 0.1 * 0.1);
    }

    #[test]
    fn cosine_hits_its_ends_and_middle() {
        let s = Schedule {
            kind: ScheduleKind::Cosine,
            min_lr: 0.001,
            ..Default::default()
        };
        assert_eq!(s.lr_at(0.1, 0, 100), 0.1);
        assert!((s.lr_at(0.1, 50, 100) - (0.001 + 0.099 / 2.0)).abs() < 1e-15);
        assert!((s.lr_at(0.1, 100, 100) - 0.001).abs() < 1e-15);
        assert!(s.lr_at(0.1, 99, 100) > 0.001);
    }

    #[test]
    fn warmup_is_linear_then_hands_over() {
        let s = Schedule {
            warmup_epochs: 5,
            ..step(&[10])
        };
        assert_eq!(s.lr_at(0.1, 0, 20), 0.1 / 5.0);
        assert_eq!(s.lr_at(0.1, 4, 20), 0.1);
        assert_eq!(s.lr_at(0.1, 5, 20), 0.1);
        assert_eq!(s.lr_at(0.1, 10, 20), 0.1 * 0.1);
        let c = Schedule {
            kind: ScheduleKind::Cosine,
            warmup_epochs: 2,
            ..Default::default()
        };
        assert_eq!(c.lr_at(0.1, 1, 12), 0.1);
        assert_eq!(c.lr_at(0.1, 2, 12), 0.1);
        assert!((c.lr_at(0.1, 7, 12) - 0.05).abs() < 1e-15);
    }
}
