//! `cargo xtask report RUN_DIR...`: compares finished runs. Runs whose resolved configs differ
//! only in the seed (and in settings that do not change results: loader threads, device,
//! folders) form one group; the report gives, per group and per reported entry (student, exit,
//! ensemble, fused), the best and the last test accuracy as mean ± sample standard deviation
//! over the seeds (`METHODS.md`: "Report both the best and the last test accuracy ... and
//! mean ± std over seeds"), and draws:
//! - `<stem>-curves.png`: test accuracy per epoch of each group's headline entry (mean over
//!   seeds);
//! - `<stem>-sweep.png`, when the groups differ in exactly one numeric setting (a sweep over
//!   `loss.beta`, say): best accuracy (mean ± std) against that value, with the groups that do
//!   not have the setting (the CE baseline) as horizontal reference lines.
//!
//! The headline entry of a run is the one a user deploys: the only network (`net`), BYOT's
//! deepest exit, OKDDip's leader, or the first student of an online method.

use crate::config::TrainConfig;
use crate::metrics::Metrics;
use crate::run::Summary;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Settings that never change results, left out when grouping runs.
const IGNORED: &[&str] = &[
    "seed",
    "device",
    "eval_batch_size",
    "data.threads",
    "data.prefetch",
    "data.dir",
];

/// One finished (or stopped) run.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub dir: PathBuf,
    pub cfg: TrainConfig,
    pub summary: Summary,
    pub metrics: Option<Metrics>,
}

impl RunRecord {
    /// Reads `config.ron`, `summary.json` and `metrics.csv` of a run folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg = TrainConfig::load(&dir.join("config.ron"))?;
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (the run has not finished an epoch; resume it with \
                 `cargo xtask train --resume {}`)",
                path.display(),
                dir.display()
            )
        })?;
        let summary: Summary =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if summary.epochs_done == 0 || summary.students.is_empty() {
            bail!(
                "{} has not finished an epoch (resume it with `cargo xtask train --resume {}`)",
                dir.display(),
                dir.display()
            );
        }
        let metrics = Metrics::load(dir).ok();
        Ok(Self {
            dir: dir.to_path_buf(),
            cfg,
            summary,
            metrics,
        })
    }

    /// Index of the headline entry in `summary.students`.
    pub fn headline(&self) -> usize {
        crate::entry::headline(&self.summary.students)
    }

    /// The highest test accuracy of entry `i` over the finished epochs, from `metrics.csv`.
    /// Each entry's own: the best checkpoint (`summary.best`) is the epoch where the run's
    /// highest entry peaked, often the ensemble, not where each student did. Without the
    /// column, the best checkpoint's value (the same thing for a one-entry run).
    pub fn best_acc(&self, i: usize) -> Option<f64> {
        let entry = *self.summary.students.get(i)?;
        let curve = self.metrics.as_ref().map(|m| m.test_curve(entry));
        match curve {
            Some(c) if !c.is_empty() => c
                .into_iter()
                .filter(|(e, _)| *e <= self.summary.epochs_done as f64)
                .map(|(_, a)| a)
                .reduce(f64::max),
            _ => self.summary.best.test_acc.get(i).copied(),
        }
    }
}

/// The run folders under `paths`: a folder with a `config.ron` is a run; any other folder is
/// searched (three levels deep) for runs. In the order of `paths` (so the first path's methods
/// lead the table), sorted within each, without duplicates.
pub fn find_runs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
        if dir.join("config.ron").is_file() {
            out.push(dir.to_path_buf());
            return Ok(());
        }
        if depth == 0 {
            return Ok(());
        }
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for e in entries {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, depth - 1, out)?;
            }
        }
        Ok(())
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !p.is_dir() {
            bail!("{} is not a folder", p.display());
        }
        let mut found = Vec::new();
        walk(p, 3, &mut found)?;
        found.sort();
        for r in found {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// A config as `dotted.key → value` (values as compact JSON text).
fn flatten(cfg: &TrainConfig) -> BTreeMap<String, String> {
    fn go(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    go(&key, v, out);
                }
            }
            Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            // Unset options and empty lists are absent settings, not values that differ.
            Value::Null => {}
            Value::Array(a) if a.is_empty() => {}
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    go(
        "",
        &serde_json::to_value(cfg).unwrap_or(Value::Null),
        &mut out,
    );
    out.retain(|k, _| !IGNORED.contains(&k.as_str()));
    // A teacher counts by what it is (method and architecture), not by its folder.
    if let Some(t) = &cfg.teacher {
        let what = TrainConfig::load(&t.join("config.ron"))
            .map(|c| format!("{} {}", c.method, c.arch_name()))
            .unwrap_or_else(|_| t.display().to_string());
        out.insert("teacher".into(), what);
    }
    out
}

/// A run folder as a report names it: relative to the working directory when it lies below
/// it, so a report written into the repository names no one machine's absolute paths.
fn shown(dir: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| dir.strip_prefix(&cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| dir.to_path_buf())
}

/// `mean ± sample standard deviation` (n − 1), or just the value for one seed.
pub fn mean_std(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    if v.len() < 2 {
        return (mean, None);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Some(var.sqrt()))
}

fn fmt_ms(v: &[f64]) -> String {
    match mean_std(v) {
        (_, _) if v.is_empty() => "–".into(),
        (m, None) => format!("{m:.2}"),
        (m, Some(s)) => format!("{m:.2} ± {s:.2}"),
    }
}

/// Runs that share everything but the seed.
#[derive(Debug, Clone)]
pub struct Group {
    /// The settings this group has that some other group does not (e.g. `loss.beta=300`).
    pub settings: Vec<(String, String)>,
    pub runs: Vec<RunRecord>,
}

impl Group {
    pub fn cfg(&self) -> &TrainConfig {
        &self.runs[0].cfg
    }

    /// `method` plus the distinguishing settings, keys shortened to their last part
    /// (`scd attention=sq_mean beta=30.0`).
    pub fn label(&self) -> String {
        self.label_without("")
    }

    /// [`Group::label`] without the setting `key`.
    fn label_without(&self, key: &str) -> String {
        let mut s = self.cfg().method.clone();
        for (k, v) in self.settings.iter().filter(|(k, _)| k != key) {
            let short = k.rsplit('.').next().unwrap_or(k);
            let _ = write!(s, " {short}={v}");
        }
        s
    }

    /// Best ([`RunRecord::best_acc`]) or last test accuracy of entry `i` of every run.
    fn accs(&self, i: usize, best: bool) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| {
                if best {
                    r.best_acc(i)
                } else {
                    r.summary.last.test_acc.get(i).copied()
                }
            })
            .collect()
    }
}

/// Runs grouped for comparison.
#[derive(Debug, Clone)]
pub struct Report {
    pub groups: Vec<Group>,
    /// The settings that differ between groups.
    pub varying: Vec<String>,
    /// Run folders found but left out: no finished epoch yet (a sweep in
    /// progress), or unreadable. Listed under the table so it does not pass for complete.
    pub skipped: Vec<PathBuf>,
}

impl Report {
    /// Groups `runs` (in the order their groups first appear).
    pub fn new(runs: Vec<RunRecord>) -> Result<Self> {
        if runs.is_empty() {
            bail!("no runs to report");
        }
        let mut keyed: Vec<(BTreeMap<String, String>, Vec<RunRecord>)> = Vec::new();
        for r in runs {
            let k = flatten(&r.cfg);
            match keyed.iter_mut().find(|(g, _)| *g == k) {
                Some((_, v)) => v.push(r),
                None => keyed.push((k, vec![r])),
            }
        }
        let all_keys: std::collections::BTreeSet<&String> =
            keyed.iter().flat_map(|(k, _)| k.keys()).collect();
        let varying: Vec<String> = all_keys
            .into_iter()
            .filter(|key| {
                // Differs between two groups that both have it (a setting only some methods
                // have, like `loss.beta`, does not make the others differ).
                let mut values = keyed.iter().filter_map(|(k, _)| k.get(*key));
                let first = values.next();
                values.any(|v| Some(v) != first)
            })
            .cloned()
            .collect();
        let mut groups: Vec<Group> = keyed
            .iter()
            .map(|(k, runs)| Group {
                settings: varying
                    .iter()
                    .filter(|v| !matches!(v.as_str(), "method" | "dataset" | "arch"))
                    .filter_map(|v| Some((v.clone(), k.get(v)?.clone())))
                    .collect(),
                runs: runs.clone(),
            })
            .collect();
        // Methods in the order they first appear; within one, by settings, numbers by value
        // (beta 30 before beta 100).
        let methods: Vec<&String> = keyed.iter().filter_map(|(k, _)| k.get("method")).collect();
        let rank = |g: &Group| methods.iter().position(|m| **m == g.cfg().method);
        let by_value = |a: &str, b: &str| match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.total_cmp(&y),
            _ => a.cmp(b),
        };
        groups.sort_by(|a, b| {
            rank(a).cmp(&rank(b)).then_with(|| {
                let pairs = a.settings.iter().zip(&b.settings);
                pairs
                    .map(|((ka, va), (kb, vb))| ka.cmp(kb).then_with(|| by_value(va, vb)))
                    .find(|o| o.is_ne())
                    .unwrap_or_else(|| a.settings.len().cmp(&b.settings.len()))
            })
        });
        Ok(Self {
            groups,
            varying,
            skipped: Vec::new(),
        })
    }

    /// Loads every run under `paths` (see [`find_runs`]); runs without `summary.json` (or
    /// without a finished epoch) are skipped with a warning and kept in `skipped`.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Self> {
        let (mut runs, mut skipped) = (Vec::new(), Vec::new());
        for dir in find_runs(paths)? {
            match RunRecord::load(&dir) {
                Ok(r) => runs.push(r),
                Err(e) => {
                    log::warn!("skipping {}: {e:#}", dir.display());
                    skipped.push(dir);
                }
            }
        }
        Ok(Self {
            skipped,
            ..Self::new(runs)?
        })
    }

    /// A sentence naming the methods here that feed several rows per sample of the epoch
    /// (CS-KD's same-class partner, DDGSD's second view, KDCL's view per network), whose
    /// images/s is that many times their samples/s; empty when there are none.
    fn multi_row_note(&self) -> String {
        let mut seen: Vec<String> = Vec::new();
        for g in &self.groups {
            let cfg = g.cfg();
            let Ok(info) = cfg.info() else {
                continue;
            };
            let rows = info.sampler(cfg.student_count()).rows_per_anchor();
            let item = format!("{} ({rows})", cfg.method);
            if rows > 1 && !seen.contains(&item) {
                seen.push(item);
            }
        }
        if seen.is_empty() {
            return String::new();
        }
        format!(
            " These feed several rows per sample of the epoch, so their images/s is that many \
             times their samples/s: {}; compare their cost with the others' by minutes.",
            seen.join(", ")
        )
    }

    /// The markdown table: one row per group and entry.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| method | dataset | arch | settings | entry | seeds | best test acc (%) | last test \
             acc (%) | epochs | images/s | minutes |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for g in &self.groups {
            let r0 = &g.runs[0];
            let settings: Vec<String> = g
                .settings
                .iter()
                .map(|(k, v)| format!("`{k}={v}`"))
                .collect();
            let seeds: Vec<String> = g.runs.iter().map(|r| r.summary.seed.to_string()).collect();
            let epochs: Vec<usize> = g.runs.iter().map(|r| r.summary.epochs_done).collect();
            let complete = g
                .runs
                .iter()
                .all(|r| r.summary.epochs_done >= r.summary.epochs);
            let epochs = format!(
                "{}{}",
                epochs.iter().min().copied().unwrap_or(0),
                if complete {
                    String::new()
                } else {
                    format!(" of {} (incomplete)", r0.summary.epochs)
                }
            );
            let ips: Vec<f64> = g.runs.iter().map(|r| r.summary.images_per_s).collect();
            let (ips, _) = mean_std(&ips);
            let mins: Vec<f64> = g.runs.iter().map(|r| r.summary.seconds / 60.0).collect();
            let (mins, _) = mean_std(&mins);
            let head = r0.headline();
            for (i, entry) in r0.summary.students.iter().enumerate() {
                let name = if i == head && r0.summary.students.len() > 1 {
                    format!("**{entry}**")
                } else {
                    entry.to_string()
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {name} | {} | {} | {} | {epochs} | {ips:.0} | {mins:.1} |",
                    r0.cfg.method,
                    r0.cfg.dataset,
                    r0.cfg.arch_name(),
                    settings.join(" "),
                    seeds.join(", "),
                    fmt_ms(&g.accs(i, true)),
                    fmt_ms(&g.accs(i, false)),
                );
            }
        }
        s
    }

    /// The runs laid out as a paper's comparison table, when they span two or more
    /// architectures: one row per method (with its distinguishing settings, and the dataset
    /// when several), one column per architecture, the headline entry's best and last test
    /// accuracy as mean ± std over seeds. `None` for a single architecture.
    pub fn paper_table(&self) -> Option<String> {
        let mut archs: Vec<String> = Vec::new();
        let mut datasets: Vec<String> = Vec::new();
        for g in &self.groups {
            let (a, d) = (g.cfg().arch_name().to_string(), g.cfg().dataset.clone());
            if !archs.contains(&a) {
                archs.push(a);
            }
            if !datasets.contains(&d) {
                datasets.push(d);
            }
        }
        if archs.len() < 2 {
            return None;
        }
        let row_of = |g: &Group| {
            if datasets.len() > 1 {
                format!("{} ({})", g.label(), g.cfg().dataset)
            } else {
                g.label()
            }
        };
        let mut rows: Vec<String> = Vec::new();
        for g in &self.groups {
            let r = row_of(g);
            if !rows.contains(&r) {
                rows.push(r);
            }
        }
        let mut s = String::new();
        for best in [true, false] {
            let _ = writeln!(
                s,
                "{} test accuracy (%) of the headline entry, mean ± std over seeds (seeds in \
                 brackets; * a run not finished):\n",
                if best { "Best" } else { "Last" }
            );
            let _ = writeln!(s, "| method | {} |", archs.join(" | "));
            let _ = writeln!(s, "|---|{}", "---:|".repeat(archs.len()));
            for row in &rows {
                let cells: Vec<String> = archs
                    .iter()
                    .map(|a| {
                        let Some(g) = self
                            .groups
                            .iter()
                            .find(|g| row_of(g) == *row && g.cfg().arch_name() == a)
                        else {
                            return "–".into();
                        };
                        let head = g.runs[0].headline();
                        let done = g
                            .runs
                            .iter()
                            .all(|r| r.summary.epochs_done >= r.summary.epochs);
                        format!(
                            "{} ({}){}",
                            fmt_ms(&g.accs(head, best)),
                            g.runs.len(),
                            if done { "" } else { "*" }
                        )
                    })
                    .collect();
                let _ = writeln!(s, "| {row} | {} |", cells.join(" | "));
            }
            s.push('\n');
        }
        Some(s)
    }

    /// The one numeric setting the groups differ in (besides method), if there is exactly one;
    /// other (non-numeric) varying settings split the sweep plot into lines.
    pub fn swept(&self) -> Option<String> {
        let numeric: Vec<&String> = self
            .varying
            .iter()
            .filter(|k| k.as_str() != "method")
            .filter(|key| {
                self.groups.iter().all(|g| {
                    g.settings
                        .iter()
                        .find(|(k, _)| k == *key)
                        .is_none_or(|(_, v)| v.parse::<f64>().is_ok())
                })
            })
            .collect();
        let [key] = numeric.as_slice() else {
            return None;
        };
        Some((*key).clone())
    }

    /// Writes the markdown to `md` (with a short header naming the runs) and the plots next
    /// to it (`<stem>-curves.png`, `<stem>-sweep.png`); returns the paths written.
    pub fn write(&self, md: &Path, title: &str) -> Result<Vec<PathBuf>> {
        let dir = md.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let stem = md
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "report".into());
        let mut written = vec![md.to_path_buf()];
        let curves = dir.join(format!("{stem}-curves.png"));
        self.curves_chart(title).write_png(&curves)?;
        written.push(curves.clone());
        let mut text = format!(
            "# {title}\n\nGenerated by `cargo xtask report` from {} run(s). Best: the highest \
             test accuracy over the epochs; last: after the final epoch; mean ± sample std over \
             seeds. The headline entry of multi-entry runs is in bold. Images/s counts the \
             network inputs of a training second; minutes is the whole run, evaluation \
             included.{}\n\n",
            self.groups.iter().map(|g| g.runs.len()).sum::<usize>(),
            self.multi_row_note()
        );
        if let Some(table) = self.paper_table() {
            text.push_str(&table);
            text.push_str("Every entry:\n\n");
        }
        text.push_str(&self.markdown());
        let _ = write!(
            text,
            "\n![test accuracy per epoch]({})\n",
            curves.file_name().unwrap_or_default().to_string_lossy()
        );
        if let Some(chart) = self.sweep_chart(title) {
            let sweep = dir.join(format!("{stem}-sweep.png"));
            chart.write_png(&sweep)?;
            let _ = write!(
                text,
                "\n![best accuracy against the swept setting]({})\n",
                sweep.file_name().unwrap_or_default().to_string_lossy()
            );
            written.push(sweep);
        }
        text.push_str("\nRuns:\n\n");
        for g in &self.groups {
            for r in &g.runs {
                let _ = writeln!(text, "- `{}`", shown(&r.dir).display());
            }
        }
        if !self.skipped.is_empty() {
            text.push_str(
                "\nNot in the table (no epoch finished yet, or unreadable; see the \
                 report's warnings):\n\n",
            );
            for d in &self.skipped {
                let _ = writeln!(text, "- `{}`", shown(d).display());
            }
        }
        std::fs::write(md, text).with_context(|| format!("writing {}", md.display()))?;
        Ok(written)
    }
}

mod charts;
#[cfg(test)]
mod tests;
