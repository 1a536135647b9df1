//! The one place that says what each method of `METHODS.md` needs from the trainer: the model
//! structure, the batch sampler, whether it distils from a teacher checkpoint, and the
//! protocol family that sets its default epochs, milestones and architecture ("Training
//! protocol defaults").

use kd_data::Sampler;

/// The protocol family of a method (`METHODS.md`, "Training protocol defaults").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// One network distils itself (ce, scd, sad, cskd, ddgsd, byot): 200 epochs, ÷10 at 100
    /// and 150, ResNet-18.
    SelfDistillation,
    /// A student learns from a trained teacher checkpoint (kd, at, sp): as self-distillation.
    Teacher,
    /// Several students trained together (dml, one, okddip, kdcl, ffl, mfef): 300 epochs, ÷10
    /// at 150 and 225, ResNet-32 students.
    Online,
}

impl Family {
    /// Default epochs.
    pub fn epochs(self) -> usize {
        match self {
            Family::Online => 300,
            _ => 200,
        }
    }

    /// Default step-schedule milestones for a run of `epochs` epochs: after 50% and 75% of
    /// them (the protocol's 100/150 of 200 and 150/225 of 300; 7/11 of 15; none for a
    /// 1-epoch run).
    pub fn milestones(epochs: usize) -> Vec<usize> {
        let mut m: Vec<usize> = [epochs / 2, epochs * 3 / 4]
            .into_iter()
            .filter(|&m| m > 0)
            .collect();
        m.dedup();
        m
    }

    /// Default architecture.
    pub fn arch(self) -> &'static str {
        match self {
            Family::Online => "resnet32",
            _ => "resnet18",
        }
    }
}

/// The trainable structure a method is built on (`kd_models`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    /// One plain network.
    Plain,
    /// BYOT: an exit after every stage (`kd_models::Byot`).
    ByotExits,
    /// ONE: `m` branches (3) and a gate (`kd_models::One`).
    OneGate,
    /// OKDDip: `P` peers (3) + 1 leader with peer attention (`kd_models::Okddip`).
    Okddip,
    /// FFL: `N` branches (2) and a fusion module (`kd_models::Ffl`).
    FflFusion,
    /// MFEF: FFL with multi-scale and dual-attention blocks (`kd_models::Mfef`).
    MfefFusion,
    /// `N` independent networks (2; `kd_models::Networks`).
    Networks,
}

/// How the rows of a training batch are formed, and how they reach the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// Shuffled images, one forward.
    Plain,
    /// CS-KD: `b` anchors then `b` same-class partners; anchors forward with the tape,
    /// partners without (both in train mode).
    ClassPairs,
    /// DDGSD: 2 augmented views of the same images in one `2b` forward, split into
    /// `z1, z2` / `e1, e2`.
    TwoViewsOneForward,
    /// KDCL: each of the `students` networks gets its own view.
    ViewPerNetwork,
}

impl Batching {
    /// The sampler of `kd_data` that forms these batches for a model of `students` students.
    pub fn sampler(self, students: usize) -> Sampler {
        match self {
            Batching::Plain => Sampler::Shuffled,
            Batching::ClassPairs => Sampler::ClassPairs,
            Batching::TwoViewsOneForward => Sampler::Views(2),
            Batching::ViewPerNetwork => Sampler::Views(students),
        }
    }
}

/// What a method needs from the trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    pub method: &'static str,
    pub family: Family,
    pub structure: Structure,
    pub batching: Batching,
    /// Distils from a teacher checkpoint (kd, at, sp: `TrainConfig::teacher`).
    pub teacher: bool,
    /// The loss reads the stage outputs `F_1..F_L` (scd, sad, at, sp); informational: the
    /// trainer hands every output of the forward pass to the loss.
    pub features: bool,
}

impl Recipe {
    /// The recipe of `method` (a name of `kd_losses::METHOD_NAMES`).
    pub fn of(method: &str) -> Option<Recipe> {
        use Batching as B;
        use Family as F;
        use Structure as S;
        let r = |method, family, structure, batching| Recipe {
            method,
            family,
            structure,
            batching,
            teacher: family == F::Teacher,
            features: matches!(method, "scd" | "sad" | "at" | "sp"),
        };
        Some(match method {
            "ce" => r("ce", F::SelfDistillation, S::Plain, B::Plain),
            "scd" => r("scd", F::SelfDistillation, S::Plain, B::Plain),
            "sad" => r("sad", F::SelfDistillation, S::Plain, B::Plain),
            "cskd" => r("cskd", F::SelfDistillation, S::Plain, B::ClassPairs),
            "ddgsd" => r(
                "ddgsd",
                F::SelfDistillation,
                S::Plain,
                B::TwoViewsOneForward,
            ),
            "byot" => r("byot", F::SelfDistillation, S::ByotExits, B::Plain),
            "kd" => r("kd", F::Teacher, S::Plain, B::Plain),
            "at" => r("at", F::Teacher, S::Plain, B::Plain),
            "sp" => r("sp", F::Teacher, S::Plain, B::Plain),
            "dml" => r("dml", F::Online, S::Networks, B::Plain),
            "one" => r("one", F::Online, S::OneGate, B::Plain),
            "okddip" => r("okddip", F::Online, S::Okddip, B::Plain),
            "kdcl" => r("kdcl", F::Online, S::Networks, B::ViewPerNetwork),
            "ffl" => r("ffl", F::Online, S::FflFusion, B::Plain),
            "mfef" => r("mfef", F::Online, S::MfefFusion, B::Plain),
            _ => return None,
        })
    }

    /// Weight decay of the fusion module's parameters (`fusion.`), if the method has one
    /// (`METHODS.md` "ffl": 1e-5; MFEF uses FFL's fusion).
    pub fn fusion_weight_decay(&self) -> Option<f64> {
        matches!(self.structure, Structure::FflFusion | Structure::MfefFusion).then_some(1e-5)
    }

    /// The default number of students of an online method (`METHODS.md`: ONE `m = 3`
    /// branches, OKDDip 3 peers besides the leader, FFL 2 students; DML, KDCL and MFEF 2), and
    /// the fewest it can have; `None` for methods that train one network.
    pub fn students(&self) -> Option<(usize, usize)> {
        match self.structure {
            Structure::OneGate | Structure::Okddip => Some((3, 2)),
            Structure::FflFusion | Structure::MfefFusion | Structure::Networks => Some((2, 2)),
            Structure::Plain | Structure::ByotExits => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_a_recipe() {
        for m in kd_losses::METHOD_NAMES {
            let r = Recipe::of(m).unwrap_or_else(|| panic!("no recipe for {m}"));
            assert_eq!(r.method, *m);
        }
        assert!(Recipe::of("nope").is_none());
        assert_eq!(Recipe::of("one").unwrap().students(), Some((3, 2)));
        assert_eq!(Recipe::of("okddip").unwrap().students(), Some((3, 2)));
        assert_eq!(Recipe::of("kdcl").unwrap().students(), Some((2, 2)));
        assert_eq!(Recipe::of("byot").unwrap().students(), None);
        assert!(Recipe::of("kd").unwrap().teacher);
    }

    #[test]
    fn families_set_the_protocol() {
        let r = Recipe::of("scd").unwrap();
        assert_eq!(r.family.epochs(), 200);
        assert_eq!(Family::milestones(200), vec![100, 150]);
        let r = Recipe::of("dml").unwrap();
        assert_eq!(r.family.epochs(), 300);
        assert_eq!(Family::milestones(300), vec![150, 225]);
        assert_eq!(Family::milestones(15), vec![7, 11]);
        assert_eq!(Family::milestones(1), Vec::<usize>::new());
        assert_eq!(Family::milestones(2), vec![1]);
        assert_eq!(Family::milestones(3), vec![1, 2]);
        assert_eq!(r.family.arch(), "resnet32");
        assert_eq!(
            Recipe::of("cskd").unwrap().batching.sampler(1),
            Sampler::ClassPairs
        );
        assert_eq!(
            Recipe::of("ddgsd").unwrap().batching.sampler(1),
            Sampler::Views(2)
        );
        assert_eq!(
            Recipe::of("kdcl").unwrap().batching.sampler(3),
            Sampler::Views(3)
        );
    }
}
