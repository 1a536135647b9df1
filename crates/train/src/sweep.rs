//! Sweeps (`cargo xtask sweep <grid.ron>`): a grid over methods, datasets, architectures,
//! swept settings and seeds, expanded into points, each a run in a folder named after the
//! point (`<method>-<dataset>-<arch>[-<key>=<value>...]-s<seed>`) so that running the sweep
//! again skips complete points and resumes interrupted ones ([`run_point`]).
//!
//! A grid file (`configs/sweeps/*.ron`):
//! ```ron
//! (
//!     base: Some("../quickstart/fashion-mnist-scd.ron"), // relative to the grid file
//!     methods: ["ce", "scd"],
//!     archs: ["resnet20"],
//!     seeds: [1, 2],
//!     sets: ["epochs=3"],                                // every point
//!     grid: {"loss.beta": ["10", "100"], "loss.target": ["next", "deepest"]},
//! )
//! ```
//! A swept key a method does not have (`loss.beta` for `ce`) is left out for that method, so
//! `ce` above is one point per seed. `variants: [["loss.beta=10"], ["loss.beta=30",
//! "loss.attention=channel_softmax"]]` lists chosen combinations instead of a full product;
//! they are crossed with `grid`.

use crate::config::TrainConfig;
use crate::run::{resume, train_at, RunOptions, RunResult, Summary};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A sweep's grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// A base config file, relative to the grid file (default: each method's defaults).
    #[serde(default)]
    pub base: Option<PathBuf>,
    pub methods: Vec<String>,
    /// Default: the base's.
    #[serde(default)]
    pub datasets: Vec<String>,
    /// Default: the base's (or the method's).
    #[serde(default)]
    pub archs: Vec<String>,
    /// Default: the base's.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// `key=value` settings applied to every point, before the swept ones.
    #[serde(default)]
    pub sets: Vec<String>,
    /// Swept settings: dotted key → values (each written as for `--set`).
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<String>>,
    /// Chosen combinations of settings, each a list of `key=value`, crossed with `grid`: a
    /// few settings that differ in several keys, without the product of all their values.
    #[serde(default)]
    pub variants: Vec<Vec<String>>,
    /// Teacher → student methods (kd, at, sp) → the method of this grid whose run is their
    /// teacher: the point of that method with the same dataset, architecture and seed (and no
    /// swept settings). Such points run after their teacher's.
    #[serde(default)]
    pub teachers: BTreeMap<String, String>,
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The run folder's name.
    pub name: String,
    /// The swept settings of this point (key, value).
    pub swept: Vec<(String, String)>,
    pub cfg: TrainConfig,
    /// The point whose run is this point's teacher (`Grid::teachers`); its folder becomes
    /// `cfg.teacher` in [`Point::with_teacher_in`].
    pub teacher_point: Option<String>,
}

impl Point {
    /// The point with its teacher's run folder under `out` set as `cfg.teacher`, made
    /// absolute as the trainer saves it (so that a resumed point matches its `config.ron`).
    pub fn with_teacher_in(mut self, out: &Path) -> Self {
        if let Some(t) = &self.teacher_point {
            let p = out.join(t);
            let abs =
                std::fs::canonicalize(&p).unwrap_or_else(|_| std::path::absolute(&p).unwrap_or(p));
            self.cfg.teacher = Some(abs);
        }
        self
    }
}

/// What [`run_point`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The folder held a complete run.
    Skipped(Summary),
    /// Trained (from scratch or resumed).
    Ran(Summary),
}

fn ron_options() -> ron::Options {
    ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
}

/// `value` as it goes into a folder name.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Grid {
    /// Reads a grid file; errors name the file, line and column, and say so when the file is
    /// a training config instead.
    pub fn load(path: &Path) -> Result<(Self, PathBuf)> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let grid: Grid = ron_options().from_str(&text).map_err(|e| {
            if ron_options().from_str::<TrainConfig>(&text).is_ok() {
                return anyhow!(
                    "{} is a training config, not a sweep grid: run it with `cargo xtask train \
                     --config {}`, or name it as a grid's `base`",
                    path.display(),
                    path.display()
                );
            }
            anyhow!(
                "{}:{}:{}: {}",
                path.display(),
                e.position.line,
                e.position.col,
                e.code
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok((grid, dir))
    }

    /// Every point, in order: methods, datasets, architectures, swept values, seeds. `dir` is
    /// where relative `base` paths start.
    pub fn points(&self, dir: &Path) -> Result<Vec<Point>> {
        if self.methods.is_empty() {
            bail!("grid: `methods` is empty");
        }
        let base = match &self.base {
            Some(b) => Some(TrainConfig::load(&dir.join(b)).context("grid: base")?),
            None => None,
        };
        let mut points: Vec<Point> = Vec::new();
        let combos = self.combos()?;
        for method in &self.methods {
            let mut cfg = match &base {
                Some(b) => b.clone(),
                None => TrainConfig::default(),
            };
            if cfg.method != *method {
                // The base's loss parameters belong to its own method.
                cfg.loss = serde_json::Value::Object(Default::default());
                cfg.method = method.clone();
            }
            let cfg = cfg
                .with_overrides(&self.sets)
                .with_context(|| format!("grid: method {method}"))?;
            let datasets = or_one(&self.datasets, cfg.dataset.clone());
            let archs = or_one(&self.archs, cfg.arch_name().to_string());
            let seeds = or_one(&self.seeds, cfg.seed.to_string());
            for dataset in &datasets {
                for arch in &archs {
                    for combo in &combos {
                        for seed in &seeds {
                            let at = [("dataset", dataset), ("arch", arch), ("seed", seed)];
                            add_point(&mut points, point(&cfg, &at, combo)?)?;
                        }
                    }
                }
            }
        }
        for key in combos.iter().flatten().map(|(k, _)| k) {
            if !points.iter().any(|p| p.swept.iter().any(|(k, _)| k == key)) {
                bail!(
                    "grid: `{key}` is a setting of none of the methods {:?}",
                    self.methods
                );
            }
        }
        self.link_teachers(&mut points)?;
        Ok(points)
    }

    /// Sets `teacher_point` of every point whose method `teachers` names, and checks it.
    fn link_teachers(&self, points: &mut [Point]) -> Result<()> {
        for (student, teacher) in &self.teachers {
            if !self.methods.contains(student) || !self.methods.contains(teacher) {
                bail!(
                    "grid: teachers: `{student}` ← `{teacher}`: both must be among the methods {:?}",
                    self.methods
                );
            }
        }
        let names: Vec<(String, String)> = points
            .iter()
            .map(|p| (p.name.clone(), p.cfg.method.clone()))
            .collect();
        for p in points.iter_mut() {
            let Some(teacher) = self.teachers.get(&p.cfg.method) else {
                continue;
            };
            let want = format!(
                "{teacher}-{}-{}-s{}",
                p.cfg.dataset,
                p.cfg.arch_name(),
                p.cfg.seed
            );
            if !names.iter().any(|(n, m)| *n == want && m == teacher) {
                bail!(
                    "grid: point `{}` needs its teacher `{want}` (a `{teacher}` point with the same \
                     dataset, architecture and seed, without swept settings), which the grid \
                     does not have",
                    p.name
                );
            }
            p.teacher_point = Some(want);
        }
        Ok(())
    }

    /// The variants (or one empty combination) crossed with the cartesian product of the
    /// grid's values.
    fn combos(&self) -> Result<Vec<Vec<(String, String)>>> {
        let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
        if !self.variants.is_empty() {
            out = self
                .variants
                .iter()
                .map(|v| {
                    v.iter()
                        .map(|kv| match crate::config::key_value(kv) {
                            Some((k, v)) => Ok((k.to_string(), v.to_string())),
                            None => bail!("grid: variant setting `{kv}` is not `key=value`"),
                        })
                        .collect()
                })
                .collect::<Result<_>>()?;
        }
        for (k, values) in &self.grid {
            out = out
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((k.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        Ok(out)
    }
}

/// The point of `cfg` at `at` (dataset, architecture, seed) with the settings of `combo` the
/// method has.
fn point(cfg: &TrainConfig, at: &[(&str, &String)], combo: &[(String, String)]) -> Result<Point> {
    let sets: Vec<String> = at.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut c = cfg.clone().with_overrides(&sets)?;
    let mut swept = Vec::new();
    for (k, v) in combo {
        // A key this method does not have: not swept for it.
        if !c.has_key(k) {
            continue;
        }
        c = c
            .with_overrides(&[format!("{k}={v}")])
            .with_context(|| format!("grid: {} {k}={v}", cfg.method))?;
        swept.push((k.clone(), v.clone()));
    }
    let mut name = format!("{}-{}-{}", c.method, c.dataset, c.arch_name());
    for (k, v) in &swept {
        let short = k.rsplit('.').next().unwrap_or(k);
        name.push_str(&format!("-{}={}", slug(short), slug(v)));
    }
    name.push_str(&format!("-s{}", c.seed));
    Ok(Point {
        name,
        swept,
        cfg: c,
        teacher_point: None,
    })
}

/// Adds `p`, unless the same run is there already (a method without a swept key); two
/// different runs that would share a folder are an error.
fn add_point(points: &mut Vec<Point>, p: Point) -> Result<()> {
    match points.iter().find(|q| q.name == p.name) {
        Some(q) if q.cfg == p.cfg => Ok(()),
        Some(q) => bail!(
            "grid: two different points would share the folder `{}` (swept {:?} and {:?}); \
             sweep keys whose last parts differ, or values that differ after replacing \
             characters other than letters, digits, `.`, `-` and `_`",
            p.name,
            q.swept,
            p.swept
        ),
        None => {
            points.push(p);
            Ok(())
        }
    }
}

/// `v` as strings, or `[default]` when empty.
fn or_one<T: ToString>(v: &[T], default: String) -> Vec<String> {
    if v.is_empty() {
        vec![default]
    } else {
        v.iter().map(|x| x.to_string()).collect()
    }
}

/// Whether `dir` holds a finished run (its `summary.json` has every epoch).
pub fn is_complete(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Summary>(&t).ok())
        .is_some_and(|s| s.epochs_done >= s.epochs)
}

/// Runs `point` in `<out>/<name>`: skips a complete run, resumes a started one (its
/// `config.ron` must match the point's), starts a new one otherwise. A point with a teacher
/// point needs that run finished first.
pub fn run_point(point: &Point, out: &Path, opts: &RunOptions) -> Result<Outcome> {
    let point = &point.clone().with_teacher_in(out);
    if let Some(t) = &point.teacher_point {
        if !is_complete(&out.join(t)) {
            bail!(
                "point `{}` distils from the point `{t}`, which has not finished in {}: run \
                 that point first (a sweep runs the grid's teacher points first)",
                point.name,
                out.display()
            );
        }
    }
    let dir = out.join(&point.name);
    let cfg_path = dir.join("config.ron");
    if !cfg_path.is_file() {
        let RunResult { summary, .. } = train_at(point.cfg.clone(), &dir, opts)?;
        return Ok(Outcome::Ran(summary));
    }
    let existing = TrainConfig::load(&cfg_path)?.resolve()?;
    if existing.to_ron() != point.cfg.to_ron() {
        bail!(
            "{} holds a run with another config than the grid's point `{}` (the grid changed?); \
             move it away or restore the grid",
            dir.display(),
            point.name
        );
    }
    if is_complete(&dir) {
        let text = std::fs::read_to_string(dir.join("summary.json"))?;
        return Ok(Outcome::Skipped(serde_json::from_str(&text)?));
    }
    Ok(Outcome::Ran(resume(&dir, opts)?.summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_the_grid_and_drops_keys_a_method_lacks() {
        let g: Grid = ron_options()
            .from_str(
                r#"(methods: ["ce", "scd"], datasets: ["fashion-mnist"], archs: ["resnet20"],
                    seeds: [1, 2], sets: ["epochs=3"],
                    grid: {"loss.beta": ["10", "300"], "loss.target": ["next", "deepest"]})"#,
            )
            .unwrap();
        let p = g.points(Path::new(".")).unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(p.len(), 2 + 2 * 2 * 2, "{names:?}");
        assert_eq!(names[0], "ce-fashion-mnist-resnet20-s1");
        assert_eq!(names[1], "ce-fashion-mnist-resnet20-s2");
        assert_eq!(
            names[2],
            "scd-fashion-mnist-resnet20-beta=10-target=next-s1"
        );
        let last = p.last().unwrap();
        assert_eq!(last.cfg.loss["beta"], 300.0);
        assert_eq!(last.cfg.loss["target"], "deepest");
        assert_eq!(last.cfg.epochs, Some(3));
        assert_eq!(last.cfg.seed, 2);
        // A bad value is an error naming the point; a key no method has is an error too.
        let bad: Grid = ron_options()
            .from_str(r#"(methods: ["scd"], grid: {"loss.target": ["sideways"]})"#)
            .unwrap();
        let e = format!("{:#}", bad.points(Path::new(".")).unwrap_err());
        assert!(e.contains("scd loss.target=sideways"), "{e}");
        let typo: Grid = ron_options()
            .from_str(r#"(methods: ["ce", "scd"], grid: {"loss.betta": ["1"]})"#)
            .unwrap();
        let e = typo.points(Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("loss.betta"), "{e}");
        // Two settings that would share a folder name are refused, not merged.
        let clash: Grid = ron_options()
            .from_str(r#"(methods: ["ce"], grid: {"data.dir": ["d/x", "d_x"]})"#)
            .unwrap();
        let e = clash.points(Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("dir=d_x"), "{e}");
        assert!(!e.contains("  "), "{e}");
    }

    #[test]
    fn variants_are_crossed_with_the_grid() {
        let g: Grid = ron_options()
            .from_str(
                r#"(methods: ["ce", "scd"], seeds: [1],
                    variants: [["loss.beta=10"], ["loss.beta=30", "loss.attention=channel_softmax"]],
                    grid: {"loss.target": ["next", "deepest"]})"#,
            )
            .unwrap();
        let p = g.points(Path::new(".")).unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ce-cifar100-resnet18-s1",
                "scd-cifar100-resnet18-beta=10-target=next-s1",
                "scd-cifar100-resnet18-beta=10-target=deepest-s1",
                "scd-cifar100-resnet18-beta=30-attention=channel_softmax-target=next-s1",
                "scd-cifar100-resnet18-beta=30-attention=channel_softmax-target=deepest-s1",
            ]
        );
        assert_eq!(p[3].cfg.loss["beta"], 30.0);
        assert_eq!(p[3].cfg.loss["attention"], "channel_softmax");
        assert_eq!(p[1].cfg.loss["attention"], "sq_mean");
        let bad: Grid = ron_options()
            .from_str(r#"(methods: ["scd"], variants: [["loss.beta"]])"#)
            .unwrap();
        let e = bad.points(Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("`loss.beta` is not `key=value`"), "{e}");
    }

    fn shipped(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/sweeps")
            .join(name)
    }

    /// Every file in `configs/sweeps/` is a grid that expands (training configs live
    /// elsewhere).
    #[test]
    fn the_shipped_grids_expand() {
        let dir = shipped("");
        let mut grids = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let (grid, base_dir) =
                Grid::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let points = grid.points(&base_dir).unwrap();
            assert!(!points.is_empty(), "{}", path.display());
            grids += 1;
        }
        assert!(grids >= 7, "{grids} grids in {}", dir.display());
    }

    #[test]
    fn the_paper_grids_expand_to_the_papers_tables() {
        let (g, dir) = Grid::load(&shipped("paper-scd-cifar100.ron")).unwrap();
        let p = g.points(&dir).unwrap();
        assert_eq!(p.len(), 7 * 3);
        for q in &p {
            assert_eq!(
                (q.cfg.dataset.as_str(), q.cfg.arch_name()),
                ("cifar100", "resnet18")
            );
            assert_eq!(q.cfg.total_epochs(), 200, "{}", q.name);
        }
        let methods: Vec<&str> = p.iter().step_by(3).map(|q| q.cfg.method.as_str()).collect();
        assert_eq!(methods, ["ce", "cskd", "ddgsd", "sad", "byot", "sp", "scd"]);
        let sp: Vec<&Point> = p.iter().filter(|q| q.cfg.method == "sp").collect();
        assert_eq!(
            sp[1].teacher_point.as_deref(),
            Some("ce-cifar100-resnet18-s2")
        );
        let out = Path::new("/runs/x");
        assert_eq!(
            sp[1].clone().with_teacher_in(out).cfg.teacher.as_deref(),
            Some(out.join("ce-cifar100-resnet18-s2").as_path())
        );
        assert_eq!(p.iter().filter(|q| q.teacher_point.is_some()).count(), 3);

        let (g, dir) = Grid::load(&shipped("paper-mfef-cifar100.ron")).unwrap();
        let p = g.points(&dir).unwrap();
        assert_eq!(p.len(), 7 * 3 * 3);
        let archs: std::collections::BTreeSet<&str> = p.iter().map(|q| q.cfg.arch_name()).collect();
        assert_eq!(
            archs.into_iter().collect::<Vec<_>>(),
            ["resnet32", "wrn-16-2", "wrn-40-2"]
        );
        assert!(p.iter().all(|q| q.cfg.total_epochs() == 300));
        let one = p.iter().find(|q| q.cfg.method == "one").unwrap();
        assert_eq!(one.cfg.student_count(), 3);
    }

    #[test]
    fn a_teacher_missing_from_the_grid_is_an_error() {
        let g: Grid = ron_options()
            .from_str(r#"(methods: ["sp"], teachers: {"sp": "ce"})"#)
            .unwrap();
        let e = g.points(Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("`sp` ← `ce`"), "{e}");
        let g: Grid = ron_options()
            .from_str(r#"(methods: ["ce", "sp"], seeds: [1], teachers: {"sp": "ce"}, grid: {"optim.lr": ["0.1", "0.05"]})"#)
            .unwrap();
        let e = g.points(Path::new(".")).unwrap_err().to_string();
        assert!(
            e.contains("needs its teacher `ce-cifar100-resnet18-s1`"),
            "{e}"
        );
    }

    #[test]
    fn a_training_config_given_as_a_grid_is_named_as_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/recipes/fashion-mnist-15.ron");
        let e = Grid::load(&path).unwrap_err().to_string();
        assert!(e.contains("is a training config, not a sweep grid"), "{e}");
        assert!(e.contains("cargo xtask train --config"), "{e}");
    }

    #[test]
    fn grid_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("g.ron");
        std::fs::write(&f, "(\n  methods: [\"ce\"],\n  sedes: [1],\n)").unwrap();
        let e = Grid::load(&f).unwrap_err().to_string();
        assert!(e.contains("g.ron:3:") && e.contains("sedes"), "{e}");
    }
}
