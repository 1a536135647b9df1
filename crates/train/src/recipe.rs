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

    /// Default step-schedule milestones.
    pub fn milestones(self) -> Vec<usize> {
        match self {
            Family::Online => vec![150, 225],
            _ => vec![100, 150],
        }
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
    /// `N` branches over a shared trunk (`NetConfig::branches`).
    Branches(usize),
    /// BYOT: an exit after every stage (`kd_models::Byot`).
    ByotExits,
    /// ONE: 3 branches and a gate (`kd_models::One`).
    OneGate,
    /// OKDDip: 3 peers + 1 leader with peer attention (`kd_models::Okddip`).
    Okddip,
    /// FFL: 2 branches and a fusion module (`kd_models::Ffl`).
    FflFusion,
    /// MFEF: FFL with multi-scale and dual-attention blocks (`kd_models::Mfef`).
    MfefFusion,
    /// `N` independent networks (`kd_models::Networks`).
    Networks(usize),
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
    /// KDCL: each network gets its own view.
    ViewPerNetwork(usize),
}

impl Batching {
    /// The sampler of `kd_data` that forms these batches.
    pub fn sampler(self) -> Sampler {
        match self {
            Batching::Plain => Sampler::Shuffled,
            Batching::ClassPairs => Sampler::ClassPairs,
            Batching::TwoViewsOneForward => Sampler::Views(2),
            Batching::ViewPerNetwork(k) => Sampler::Views(k),
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
    /// Distils from a teacher checkpoint (kd, at, sp).
    pub teacher: bool,
    /// The loss reads the stage outputs `F_1..F_L` (scd, sad, at, sp); informational: the
    /// trainer hands every output of the forward pass to the loss.
    pub features: bool,
    /// The trainer in this crate can run it (the teacher methods are declared for
    /// completeness: they need a teacher checkpoint, not loaded yet).
    pub trainable: bool,
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
            trainable: family != F::Teacher,
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
            "dml" => r("dml", F::Online, S::Networks(2), B::Plain),
            "one" => r("one", F::Online, S::OneGate, B::Plain),
            "okddip" => r("okddip", F::Online, S::Okddip, B::Plain),
            "kdcl" => r("kdcl", F::Online, S::Networks(2), B::ViewPerNetwork(2)),
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

    /// The methods the trainer can run now.
    pub fn trainable_methods() -> Vec<&'static str> {
        kd_losses::METHOD_NAMES
            .iter()
            .filter_map(|m| Recipe::of(m))
            .filter(|r| r.trainable)
            .map(|r| r.method)
            .collect()
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
        assert_eq!(
            Recipe::trainable_methods(),
            vec![
                "ce", "scd", "sad", "cskd", "ddgsd", "byot", "dml", "one", "okddip", "kdcl", "ffl",
                "mfef"
            ]
        );
    }

    #[test]
    fn families_set_the_protocol() {
        let r = Recipe::of("scd").unwrap();
        assert_eq!(
            (r.family.epochs(), r.family.milestones()),
            (200, vec![100, 150])
        );
        let r = Recipe::of("dml").unwrap();
        assert_eq!(
            (r.family.epochs(), r.family.milestones()),
            (300, vec![150, 225])
        );
        assert_eq!(r.family.arch(), "resnet32");
        assert_eq!(
            Recipe::of("cskd").unwrap().batching.sampler(),
            Sampler::ClassPairs
        );
        assert_eq!(
            Recipe::of("ddgsd").unwrap().batching.sampler(),
            Sampler::Views(2)
        );
    }
}
