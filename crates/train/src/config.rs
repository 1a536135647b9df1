//! [`TrainConfig`]: everything a run needs, read from RON (`configs/<method>.ron`), overridden
//! with `--set key=value`, resolved to the method's protocol defaults (`METHODS.md`, "Training
//! protocol defaults", via the method's [`Info`]) and written in full to the run folder.
//!
//! The loss hyper-parameters are `loss`: a map of the method's parameters (e.g.
//! `loss: {"beta": 100.0, "target": "next"}`), checked against the method's parameter struct;
//! [`TrainConfig::resolve`] fills in every parameter the file leaves out, so the printed config
//! is complete. RON files may write `epochs: 10` for optional fields (`implicit_some`).

use crate::device::Device;
use crate::method::{Info, Protocol};
use crate::optim::SgdConfig;
use crate::schedule::Schedule;
use anyhow::{anyhow, bail, Context, Result};
use kd_data::Augment;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Data options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Training augmentation (`METHODS.md`: 4-pixel pad + crop + flip).
    pub augment: Augment,
    /// Loader threads (0: on the training thread).
    pub threads: usize,
    /// Batches built ahead.
    pub prefetch: usize,
    /// Train on the first `n` training images only.
    pub limit_train: Option<usize>,
    /// Evaluate on the first `n` test images only.
    pub limit_test: Option<usize>,
    /// The dataset's own folder; default `<datasets>/<name>` (fetched when missing).
    pub dir: Option<PathBuf>,
    /// Train on this many images of each class (a class-balanced subset, drawn with
    /// `data.seed`).
    pub per_class: Option<usize>,
    /// Symmetric label noise: this fraction of the training labels, each replaced by another
    /// class drawn uniformly (with `data.seed`). The test set is untouched.
    pub label_noise: Option<f64>,
    /// Hold out this many training images of each class and evaluate on them instead of the
    /// test set: for choosing hyper-parameters without looking at the test set.
    pub holdout_per_class: Option<usize>,
    /// The seed of the subset, the noise and the held-out part (kept apart from `seed`, so
    /// that every method and training seed sees the same data).
    pub seed: u64,
}

impl DataConfig {
    /// The training-set regime these options ask for.
    pub fn regime(&self) -> kd_data::Regime {
        kd_data::Regime {
            per_class: self.per_class,
            label_noise: self.label_noise,
            holdout_per_class: self.holdout_per_class,
            seed: self.seed,
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            augment: Augment::default(),
            threads: 2,
            prefetch: 4,
            limit_train: None,
            limit_test: None,
            dir: None,
            per_class: None,
            label_noise: None,
            holdout_per_class: None,
            seed: 0,
        }
    }
}

/// A training run's configuration. `None` fields take the method family's defaults in
/// [`TrainConfig::resolve`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// A method of `METHODS.md` (`kd_train::methods::NAMES`).
    pub method: String,
    /// A dataset name of `DATASETS.md`.
    pub dataset: String,
    /// An architecture of `kd_models::ARCH_NAMES` (default: resnet18, resnet32 for online
    /// methods).
    pub arch: Option<String>,
    /// Default 200 (300 for online methods).
    pub epochs: Option<usize>,
    /// Anchors per batch.
    pub batch_size: usize,
    /// Evaluation batch size.
    pub eval_batch_size: usize,
    pub optim: SgdConfig,
    /// Default milestones after 50% and 75% of the epochs (100/150 of 200, 150/225 of 300).
    pub schedule: Schedule,
    /// Online methods: how many students (DML/KDCL networks, ONE/FFL/MFEF branches, OKDDip
    /// peers besides the leader); default 3 for ONE and OKDDip, 2 for the others
    /// (`Method::STUDENTS`). Must be left out for methods that train one network.
    pub students: Option<usize>,
    /// Teacher → student methods (kd, at, sp): the run folder of a teacher trained by this
    /// project on the same dataset (`--teacher RUN_DIR`); its best checkpoint is loaded.
    pub teacher: Option<PathBuf>,
    /// The method's loss parameters (a map; missing ones take `METHODS.md`'s defaults).
    pub loss: Value,
    pub data: DataConfig,
    /// Seeds the model initialisation and the data loader.
    pub seed: u64,
    /// `cpu`, or `cuda` (builds with the `cuda` feature).
    pub device: Device,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: "ce".into(),
            dataset: "cifar100".into(),
            arch: None,
            epochs: None,
            batch_size: 128,
            eval_batch_size: 256,
            optim: SgdConfig::default(),
            schedule: Schedule::default(),
            students: None,
            teacher: None,
            loss: Value::Object(Default::default()),
            data: DataConfig::default(),
            seed: 0,
            device: Device::Cpu,
        }
    }
}

/// Rewrites numbers that are exactly f32 values (the loss parameters are f32) with their
/// shortest f32 spelling, so `0.3f32` prints as `0.3`, not `0.30000001192092896`; the f32
/// read back is the same.
fn short_floats(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().expect("f64");
            let f = x as f32;
            match format!("{f}")
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Some(short) if f as f64 == x => Value::Number(short),
                _ => Value::Number(n),
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(short_floats).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, short_floats(v))).collect())
        }
        other => other,
    }
}

fn ron_options() -> ron::Options {
    ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
}

impl TrainConfig {
    /// The defaults for `method` (resolved).
    pub fn for_method(method: &str) -> Result<Self> {
        Self {
            method: method.into(),
            ..Default::default()
        }
        .resolve()
    }

    /// Parses RON; errors give `origin`, line:column and the offending field.
    pub fn from_ron_str(text: &str, origin: &str) -> Result<Self> {
        ron_options().from_str(text).map_err(|e| {
            anyhow!(
                "{origin}:{}:{}: {}",
                e.position.line,
                e.position.col,
                e.code
            )
        })
    }

    /// Reads a RON file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_ron_str(&text, &path.display().to_string())
    }

    /// The config as pretty RON (what `config.ron` holds and the run prints).
    pub fn to_ron(&self) -> String {
        ron_options()
            .to_string_pretty(self, ron::ser::PrettyConfig::default())
            .expect("a config serializes")
    }

    /// The facts of the registered method `method`.
    pub fn info(&self) -> Result<Info> {
        crate::methods::info(&self.method)
    }

    /// Checks names and fills every `None` and missing loss parameter with the registered
    /// method's defaults.
    pub fn resolve(self) -> Result<Self> {
        let info = self.info()?;
        self.resolve_with(&info)
    }

    /// [`TrainConfig::resolve`] for the method `info` describes (registered or not).
    pub fn resolve_with(mut self, info: &Info) -> Result<Self> {
        if self.method != info.name {
            bail!("method `{}` is not `{}`", self.method, info.name);
        }
        let dataset: kd_data::DatasetName = self.dataset.parse().map_err(|_| {
            anyhow!(
                "unknown dataset `{}`; valid datasets: {}",
                self.dataset,
                kd_data::DatasetName::ALL.map(|d| d.as_str()).join(", ")
            )
        })?;
        self.dataset = dataset.as_str().into();
        let arch = self
            .arch
            .take()
            .unwrap_or_else(|| info.protocol.arch().into());
        kd_models::arch_spec(&arch).map_err(|e| anyhow!("{e}"))?;
        self.arch = Some(arch);
        let epochs = *self.epochs.get_or_insert(info.protocol.epochs());
        for (prefix, wd) in info.weight_decay_overrides() {
            let o = &mut self.optim.weight_decay_overrides;
            if !o.iter().any(|(p, _)| *p == prefix) {
                o.push((prefix, wd));
            }
        }
        self.schedule
            .milestones
            .get_or_insert_with(|| Protocol::milestones(epochs));
        match (info.students, self.students) {
            (None, Some(n)) if n != 1 => bail!(
                "students: {} trains one network; `students` is for the online methods ({})",
                self.method,
                crate::methods::names_where(|i| i.students.is_some())
            ),
            (None, _) => self.students = None,
            (Some((_, min)), Some(n)) if n < min => {
                bail!("students: {} needs at least {min}, got {n}", self.method)
            }
            (Some((default, _)), n) => self.students = Some(n.unwrap_or(default)),
        }
        if self.teacher.is_some() && !info.teacher {
            bail!(
                "teacher: {} does not distil from a teacher ({} do)",
                self.method,
                crate::methods::names_where(|i| i.teacher)
            );
        }
        self.loss = short_floats(
            info.resolve_params(&self.loss)
                .map_err(|e| anyhow!("loss: {e}"))?,
        );
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            bail!("batch_size and eval_batch_size must be at least 1");
        }
        if let Some(r) = self.data.label_noise {
            if !(0.0..=1.0).contains(&r) {
                bail!("data.label_noise = {r}: a fraction of the training labels, from 0 to 1");
            }
        }
        for (key, v) in [
            ("data.per_class", self.data.per_class),
            ("data.holdout_per_class", self.data.holdout_per_class),
        ] {
            if v == Some(0) {
                bail!("{key} = 0: at least one image per class (or leave it out)");
            }
        }
        Ok(self)
    }

    /// Applies `key=value` (dotted path, e.g. `optim.lr=0.05`, `loss.beta=300`,
    /// `schedule.milestones=[1,2]`); the value is RON (a bare word is taken as a string). An
    /// unknown key is an error listing the valid keys at that level.
    pub fn set(self, assignment: &str) -> Result<Self> {
        let (key, value) = key_value(assignment)
            .ok_or_else(|| anyhow!("--set `{assignment}`: expected key=value"))?;
        let bare_word = value.starts_with(|c: char| c.is_ascii_alphabetic())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !matches!(value, "true" | "false" | "None");
        let parsed: Value = if bare_word {
            Value::String(value.to_string())
        } else {
            ron_options()
                .from_str::<Value>(value)
                .unwrap_or_else(|_| Value::String(value.to_string()))
        };
        let mut root = serde_json::to_value(&self)?;
        let mut node = &mut root;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let at = parts[..i].join(".");
            let obj = node.as_object_mut().ok_or_else(|| {
                anyhow!("--set {key}: `{at}` is not a group of settings, so it has no `{part}`")
            })?;
            if !obj.contains_key(*part) {
                let mut valid: Vec<&String> = obj.keys().collect();
                valid.sort();
                let valid: Vec<String> = valid
                    .into_iter()
                    .map(|k| {
                        if at.is_empty() {
                            k.clone()
                        } else {
                            format!("{at}.{k}")
                        }
                    })
                    .collect();
                bail!(
                    "--set: unknown key `{key}`; valid keys here: {}",
                    valid.join(", ")
                );
            }
            node = obj.get_mut(*part).expect("checked");
        }
        *node = parsed;
        let cfg: TrainConfig =
            serde_json::from_value(root).map_err(|e| anyhow!("--set {key}={value}: {e}"))?;
        Ok(cfg)
    }

    /// Applies several `key=value` overrides in order, then resolves.
    /// Milestones at their default (50% and 75% of the epochs) follow a changed `epochs`.
    pub fn with_overrides(self, sets: &[String]) -> Result<Self> {
        let mut cfg = self.resolve()?;
        for s in sets {
            let default = Protocol::milestones(cfg.total_epochs());
            let derived = cfg.schedule.milestones.as_ref() == Some(&default)
                && !s.trim_start().starts_with("schedule");
            cfg = cfg.set(s)?;
            if derived {
                cfg.schedule.milestones = None;
            }
            cfg = cfg.resolve()?;
        }
        Ok(cfg)
    }

    /// Whether the dotted `key` names a setting of this config (`loss.beta` of a resolved
    /// `scd` config, but not of `ce`'s, whose loss has no parameters).
    pub fn has_key(&self, key: &str) -> bool {
        let Ok(mut node) = serde_json::to_value(self) else {
            return false;
        };
        for part in key.split('.') {
            match node.get_mut(part) {
                Some(next) => node = next.take(),
                None => return false,
            }
        }
        true
    }

    /// The resolved architecture name.
    pub fn arch_name(&self) -> &str {
        self.arch.as_deref().unwrap_or("resnet18")
    }

    /// The resolved number of students (1 for methods that train one network).
    pub fn student_count(&self) -> usize {
        self.students.unwrap_or(1)
    }

    /// The resolved number of epochs.
    pub fn total_epochs(&self) -> usize {
        self.epochs.unwrap_or(200)
    }

    /// A warning when the consistency ramp (`loss.ramp_epochs`, `R` of `METHODS.md`; ONE,
    /// OKDDip, FFL, MFEF) is not shorter than the run: the distillation terms then never reach
    /// their full weight. It names the weight of the last epoch and the paper's `R` (80 of 300
    /// epochs) scaled to this run.
    pub fn ramp_warning(&self, info: &Info) -> Option<String> {
        let r = self.loss.get("ramp_epochs").and_then(Value::as_f64)?;
        let epochs = self.total_epochs();
        if r < epochs as f64 {
            return None;
        }
        let paper_epochs = info.protocol.epochs() as f64;
        let scaled = (r * epochs as f64 / paper_epochs).round().max(1.0);
        let last = kd_losses::helpers::ramp(epochs.saturating_sub(1) as f32, r as f32);
        Some(format!(
            "loss.ramp_epochs = {r} is not shorter than the run ({epochs} epochs): the \
             distillation terms reach only {last:.3} of their weight (last epoch); the paper's \
             ramp ({r} of {paper_epochs} epochs) scaled to this run is loss.ramp_epochs={scaled}"
        ))
    }
}

/// `key=value` split at the first `=`, both sides trimmed; `None` without `=` or a key. The
/// form of `--set` overrides and of sweep settings.
pub fn key_value(assignment: &str) -> Option<(&str, &str)> {
    let (key, value) = assignment.split_once('=')?;
    let key = key.trim();
    (!key.is_empty()).then_some((key, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::info;

    #[test]
    fn a_ramp_longer_than_the_run_is_named_with_its_scaled_length() {
        let fifteen = |m: &str| {
            TrainConfig::for_method(m)
                .unwrap()
                .with_overrides(&["epochs=15".into()])
                .unwrap()
        };
        let w = fifteen("ffl")
            .ramp_warning(&info("ffl").unwrap())
            .expect("a warning");
        // ramp(14, 80) = exp(-5 (66/80)^2) = 0.0333; 80 * 15 / 300 = 4.
        assert!(w.contains("reach only 0.033 "), "{w}");
        assert!(w.ends_with("loss.ramp_epochs=4"), "{w}");
        let short = fifteen("one")
            .with_overrides(&["loss.ramp_epochs=4".into()])
            .unwrap();
        assert_eq!(short.ramp_warning(&info("one").unwrap()), None);
        assert_eq!(fifteen("dml").ramp_warning(&info("dml").unwrap()), None);
        let full = TrainConfig::for_method("okddip")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(full.ramp_warning(&info("okddip").unwrap()), None);
    }

    /// Run folders written before `Device` was an enum (and after) name it as a string.
    #[test]
    fn a_config_names_its_device_as_a_string() {
        let c = TrainConfig::from_ron_str("(method: \"ce\", device: \"cpu\")", "old.ron").unwrap();
        assert_eq!(c.device, Device::Cpu);
        assert!(c.to_ron().contains("device: \"cpu\""), "{}", c.to_ron());
        let e = TrainConfig::from_ron_str("(device: \"tpu\")", "bad.ron")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.ron") && e.contains("tpu"), "{e}");
    }

    #[test]
    fn defaults_follow_the_protocol() {
        let c = TrainConfig::for_method("scd").unwrap();
        assert_eq!(c.total_epochs(), 200);
        assert_eq!(c.schedule.milestones, Some(vec![100, 150]));
        assert_eq!(c.arch_name(), "resnet18");
        assert_eq!(c.dataset, "cifar100");
        assert_eq!(c.optim, SgdConfig::default());
        assert_eq!((c.optim.lr, c.optim.momentum), (0.1, 0.9));
        assert!(c.optim.nesterov);
        assert_eq!(c.optim.weight_decay, 5e-4);
        assert_eq!(c.batch_size, 128);
        assert_eq!(c.loss["beta"], 30.0);
        assert_eq!(c.loss["target"], "deepest");
        let o = TrainConfig::for_method("dml").unwrap();
        assert_eq!(o.total_epochs(), 300);
        assert_eq!(o.schedule.milestones, Some(vec![150, 225]));
        assert_eq!(o.arch_name(), "resnet32");
        let f = TrainConfig::for_method("ffl").unwrap();
        assert_eq!(
            f.optim.weight_decay_overrides,
            vec![("fusion.".to_string(), 1e-5)]
        );
        assert_eq!(f.optim.weight_decay_for("fusion.fc.weight"), 1e-5);
        assert_eq!(f.optim.weight_decay_for("fc.weight"), 5e-4);
        assert_eq!(f.students, Some(2));
        assert_eq!(TrainConfig::for_method("one").unwrap().students, Some(3));
        assert_eq!(c.students, None);
        // Milestones follow the epochs when not given: 50% and 75%.
        let short = TrainConfig::for_method("ce")
            .unwrap()
            .with_overrides(&["epochs=15".into()])
            .unwrap();
        assert_eq!(short.schedule.milestones, Some(vec![7, 11]));
    }

    #[test]
    fn students_and_teacher_are_checked() {
        let c = TrainConfig::for_method("kdcl")
            .unwrap()
            .with_overrides(&["students=3".into()])
            .unwrap();
        assert_eq!(c.student_count(), 3);
        let e = TrainConfig::for_method("scd")
            .unwrap()
            .with_overrides(&["students=2".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("students") && e.contains("online"), "{e}");
        let e = TrainConfig::for_method("okddip")
            .unwrap()
            .with_overrides(&["students=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 2"), "{e}");
        let e = TrainConfig::for_method("ce")
            .unwrap()
            .with_overrides(&["teacher=runs/x".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("teacher"), "{e}");
    }

    #[test]
    fn ron_round_trips_and_fills_loss_params() {
        let c = TrainConfig::from_ron_str(
            "(method: \"scd\", dataset: \"fashion-mnist\", epochs: 3, loss: {\"beta\": 7.0})",
            "x.ron",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(c.epochs, Some(3));
        assert_eq!(c.loss["beta"], 7.0);
        assert_eq!(c.loss["target"], "deepest");
        let text = c.to_ron();
        let back = TrainConfig::from_ron_str(&text, "printed").unwrap();
        assert_eq!(back, c, "{text}");
    }

    #[test]
    fn ron_errors_name_file_position_and_field() {
        let e = TrainConfig::from_ron_str("(\n  method: \"ce\",\n  epohcs: 3,\n)", "bad.ron")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad.ron:3:"), "{e}");
        assert!(e.contains("epohcs"), "{e}");
        let e = TrainConfig::from_ron_str("(optim: (lr: \"fast\"))", "b.ron")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("b.ron:1:"), "{e}");
        let e = TrainConfig::from_ron_str("(method: \"scd\", loss: {\"bta\": 1.0})", "l.ron")
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("bta"), "{e}");
    }

    #[test]
    fn set_overrides_dotted_keys_and_rejects_unknown_ones() {
        let sets = [
            "optim.lr=0.05",
            "loss.beta=300",
            "schedule.milestones=[1, 2]",
            "data.limit_train=256",
            "arch=resnet20",
            "epochs=4",
        ]
        .map(String::from);
        let c = TrainConfig::for_method("scd")
            .unwrap()
            .with_overrides(&sets)
            .unwrap();
        assert_eq!(c.optim.lr, 0.05);
        assert_eq!(c.loss["beta"], 300.0);
        assert_eq!(c.schedule.milestones, Some(vec![1, 2]));
        assert_eq!(c.data.limit_train, Some(256));
        assert_eq!(c.arch_name(), "resnet20");
        assert_eq!(c.epochs, Some(4));
        let e = TrainConfig::for_method("ce")
            .unwrap()
            .set("optim.learning_rate=1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("optim.learning_rate") && e.contains("optim.lr"),
            "{e}"
        );
        let e = TrainConfig::for_method("ce")
            .unwrap()
            .with_overrides(&["arch=resnet7".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("resnet20"), "{e}");
        let e = TrainConfig::for_method("nope").unwrap_err().to_string();
        assert!(e.contains("valid methods") && e.contains("cskd"), "{e}");
    }
}
