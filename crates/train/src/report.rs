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
use crate::plot::{Chart, Series};
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
        headline(&self.summary.students)
    }

    /// The highest test accuracy of entry `i` over the finished epochs, from `metrics.csv`.
    /// Each entry's own: the best checkpoint (`summary.best`) is the epoch where the run's
    /// highest entry peaked, often the ensemble, not where each student did. Without the
    /// column, the best checkpoint's value (the same thing for a one-entry run).
    pub fn best_acc(&self, i: usize) -> Option<f64> {
        let name = self.summary.students.get(i)?;
        let column = self
            .metrics
            .as_ref()
            .and_then(|m| Some((m.epochs(), m.column(&format!("test_acc_{name}"))?)));
        match column {
            Some((epochs, accs)) => epochs
                .iter()
                .zip(accs)
                .filter(|(e, _)| **e <= self.summary.epochs_done as f64)
                .map(|(_, a)| a)
                .reduce(f64::max),
            None => self.summary.best.test_acc.get(i).copied(),
        }
    }
}

/// The headline entry among `students` (see the module docs).
pub fn headline(students: &[String]) -> usize {
    let find = |p: &dyn Fn(&str) -> bool| students.iter().rposition(|s| p(s));
    find(&|s| s == "net")
        .or_else(|| find(&|s| s.starts_with("exit")))
        .or_else(|| find(&|s| s == "leader"))
        .or_else(|| {
            students
                .iter()
                .position(|s| s != "ensemble" && s != "fused")
        })
        .unwrap_or(0)
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
            let Ok(recipe) = cfg.recipe() else {
                continue;
            };
            let rows = recipe
                .batching
                .sampler(cfg.student_count())
                .rows_per_anchor();
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
                    entry.clone()
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
                let _ = writeln!(text, "- `{}`", r.dir.display());
            }
        }
        if !self.skipped.is_empty() {
            text.push_str(
                "\nNot in the table (no epoch finished yet, or unreadable; see the \
                 report's warnings):\n\n",
            );
            for d in &self.skipped {
                let _ = writeln!(text, "- `{}`", d.display());
            }
        }
        std::fs::write(md, text).with_context(|| format!("writing {}", md.display()))?;
        Ok(written)
    }

    /// Test accuracy per epoch of each group's headline entry, averaged over seeds.
    pub fn curves_chart(&self, title: &str) -> Chart {
        let mut chart = Chart {
            title: format!("{title}: test accuracy"),
            x_label: "epoch".into(),
            y_label: "test accuracy (%)".into(),
            ..Default::default()
        };
        for g in &self.groups {
            let r0 = &g.runs[0];
            let col = format!("test_acc_{}", r0.summary.students[r0.headline()]);
            let curves: Vec<(Vec<f64>, Vec<f64>)> = g
                .runs
                .iter()
                .filter_map(|r| {
                    let m = r.metrics.as_ref()?;
                    Some((m.epochs(), m.column(&col)?))
                })
                .collect();
            let Some(len) = curves.iter().map(|c| c.1.len()).min() else {
                continue;
            };
            let xs = curves[0].0[..len].to_vec();
            let ys: Vec<f64> = (0..len)
                .map(|i| curves.iter().map(|c| c.1[i]).sum::<f64>() / curves.len() as f64)
                .collect();
            chart.series.push(Series::new(g.label(), &xs, &ys));
        }
        chart
    }

    /// Best accuracy against the swept setting ([`Report::swept`]): one line per method and
    /// combination of the other varying settings (`scd attention=sq_mean target=next`), and a
    /// horizontal line for each group without the setting (CE).
    pub fn sweep_chart(&self, title: &str) -> Option<Chart> {
        let key = self.swept()?;
        let mut by_line: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
        let mut references = Vec::new();
        for g in &self.groups {
            let head = g.runs[0].headline();
            let (m, s) = mean_std(&g.accs(head, true));
            let Some((_, v)) = g.settings.iter().find(|(k, _)| *k == key) else {
                let label = match s {
                    Some(_) => format!("{} (mean ± std, {} seeds)", g.label(), g.runs.len()),
                    None => g.label(),
                };
                references.push((label, m, s.unwrap_or(0.0)));
                continue;
            };
            by_line.entry(g.label_without(&key)).or_default().push((
                v.parse().ok()?,
                m,
                s.unwrap_or(0.0),
            ));
        }
        let mut series = Vec::new();
        let mut positive = true;
        let mut xs_all = Vec::new();
        for (label, mut pts) in by_line {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            positive &= pts.iter().all(|p| p.0 > 0.0);
            xs_all.extend(pts.iter().map(|p| p.0));
            series.push(Series {
                label,
                points: pts.iter().map(|p| (p.0, p.1)).collect(),
                errors: Some(pts.iter().map(|p| p.2).collect()),
            });
        }
        let (lo, hi) = xs_all
            .iter()
            .fold((f64::INFINITY, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
        Some(Chart {
            title: format!("{title}: best test accuracy against {key}"),
            x_label: key,
            y_label: "best test accuracy (%)".into(),
            series,
            references,
            log_x: positive && hi / lo >= 20.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::EpochAcc;

    fn fake_run(root: &Path, method: &str, beta: Option<f64>, seed: u64, best: f64, last: f64) {
        let loss: Vec<(&str, serde_json::Value)> = beta
            .map(|b| ("beta", serde_json::json!(b)))
            .into_iter()
            .collect();
        let tag = beta.unwrap_or(0.0).to_string();
        fake_run_with(root, method, &tag, &loss, |_| {}, seed, best, last);
    }

    /// A finished 2-epoch run of `method` with the loss settings `loss`, then `edit`, in
    /// `<root>/<method>-<tag>-s<seed>`.
    #[allow(clippy::too_many_arguments)]
    fn fake_run_with(
        root: &Path,
        method: &str,
        tag: &str,
        loss: &[(&str, serde_json::Value)],
        edit: impl Fn(&mut TrainConfig),
        seed: u64,
        best: f64,
        last: f64,
    ) {
        let mut cfg = TrainConfig::for_method(method).unwrap();
        cfg.seed = seed;
        cfg.dataset = "fashion-mnist".into();
        for (k, v) in loss {
            cfg.loss[*k] = v.clone();
        }
        edit(&mut cfg);
        let dir = root.join(format!("{method}-{tag}-s{seed}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.ron"), cfg.to_ron()).unwrap();
        let summary = Summary {
            method: method.into(),
            dataset: cfg.dataset.clone(),
            arch: cfg.arch_name().into(),
            seed,
            students: vec!["net".into()],
            epochs_done: 2,
            epochs: 2,
            best: EpochAcc {
                epoch: 1,
                test_acc: vec![best],
            },
            last: EpochAcc {
                epoch: 2,
                test_acc: vec![last],
            },
            images_per_s: 100.0,
            seconds: 120.0,
        };
        let metrics = format!(
            "epoch,lr,loss,train_acc,test_acc_net,images_per_s,seconds\n1,0.1,1,50,{best},100,1\n\
             2,0.1,1,60,{last},100,1\n"
        );
        write_results(&dir, &summary, &metrics);
    }

    /// Writes a run folder's `summary.json` and `metrics.csv`.
    fn write_results(dir: &Path, summary: &Summary, metrics: &str) {
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string(summary).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("metrics.csv"), metrics).unwrap();
    }

    #[test]
    fn several_architectures_make_a_paper_table() {
        let dir = tempfile::tempdir().unwrap();
        for (arch, seed, best) in [
            ("resnet20", 1, 90.0),
            ("resnet20", 2, 92.0),
            ("resnet32", 1, 93.0),
        ] {
            let set_arch = |c: &mut TrainConfig| c.arch = Some(arch.into());
            fake_run_with(
                dir.path(),
                "ce",
                arch,
                &[],
                set_arch,
                seed,
                best,
                best - 1.0,
            );
            fake_run_with(
                dir.path(),
                "cskd",
                arch,
                &[],
                set_arch,
                seed,
                best + 1.0,
                best,
            );
        }
        let r = Report::from_paths(&[dir.path().to_path_buf()]).unwrap();
        let t = r.paper_table().unwrap();
        assert!(t.contains("| method | resnet20 | resnet32 |"), "{t}");
        // Best: ce on resnet20 over seeds 1 and 2 is 91 ± 1.41; one seed on resnet32.
        assert!(t.contains("| ce | 91.00 ± 1.41 (2) | 93.00 (1) |"), "{t}");
        assert!(t.contains("| cskd | 92.00 ± 1.41 (2) | 94.00 (1) |"), "{t}");
        // Last, in the second table.
        assert!(t.contains("| ce | 90.00 ± 1.41 (2) | 92.00 (1) |"), "{t}");
        // One architecture: no paper table.
        let one = tempfile::tempdir().unwrap();
        fake_run(one.path(), "ce", None, 1, 90.0, 89.0);
        assert!(Report::from_paths(&[one.path().to_path_buf()])
            .unwrap()
            .paper_table()
            .is_none());
    }

    #[test]
    fn groups_by_everything_but_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        fake_run(dir.path(), "ce", None, 1, 90.0, 89.0);
        fake_run(dir.path(), "ce", None, 2, 92.0, 91.0);
        fake_run(dir.path(), "scd", Some(10.0), 1, 93.0, 93.0);
        fake_run(dir.path(), "scd", Some(1000.0), 1, 91.0, 90.5);
        // An unfinished run is skipped, not fatal.
        std::fs::create_dir_all(dir.path().join("broken")).unwrap();
        std::fs::write(dir.path().join("broken/config.ron"), "(method: \"ce\")").unwrap();
        let r = Report::from_paths(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(r.groups.len(), 3);
        assert_eq!(r.varying, vec!["loss.beta", "method"]);
        assert_eq!(r.swept().as_deref(), Some("loss.beta"));
        let md = r.markdown();
        // ce over seeds 1 and 2: best 91 ± 1.41 (sample std), last 90 ± 1.41.
        assert!(
            md.contains("| ce | fashion-mnist | resnet18 |  | net | 1, 2 | 91.00 ± 1.41 | 90.00 ± 1.41 | 2 | 100 | 2.0 |"),
            "{md}"
        );
        assert!(md.contains("`loss.beta=10.0`"), "{md}");
        assert!(md.contains("| 93.00 | 93.00 |"), "{md}");
        let chart = r.sweep_chart("t").unwrap();
        assert!(chart.log_x);
        assert_eq!(chart.series[0].points, vec![(10.0, 93.0), (1000.0, 91.0)]);
        // CE over two seeds: its mean and a band of ± one sample std.
        let ce = &chart.references;
        assert_eq!(ce.len(), 1);
        assert_eq!(ce[0].0, "ce (mean ± std, 2 seeds)");
        assert_eq!(ce[0].1, 91.0);
        assert!((ce[0].2 - 2f64.sqrt()).abs() < 1e-9, "{ce:?}");
        let curves = r.curves_chart("t");
        assert_eq!(curves.series[0].points, vec![(1.0, 91.0), (2.0, 90.0)]);
        let md_path = dir.path().join("out/cmp.md");
        let written = r.write(&md_path, "test").unwrap();
        assert_eq!(written.len(), 3);
        for p in written {
            assert!(p.is_file(), "{}", p.display());
        }
    }

    #[test]
    fn methods_that_feed_several_rows_per_sample_are_named_beside_images_per_s() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_run(root, "ce", None, 1, 90.0, 90.0);
        let only_ce = Report::from_paths(&[root.to_path_buf()]).unwrap();
        assert_eq!(only_ce.multi_row_note(), "");
        fake_run(root, "cskd", None, 1, 91.0, 91.0);
        fake_run(root, "dml", None, 1, 91.0, 91.0);
        for seed in [1, 2] {
            let three = |c: &mut TrainConfig| c.students = Some(3);
            fake_run_with(root, "kdcl", "3", &[], three, seed, 92.0, 92.0);
        }
        let r = Report::from_paths(&[root.to_path_buf()]).unwrap();
        let note = r.multi_row_note();
        assert!(
            note.ends_with(
                "samples/s: cskd (2), kdcl (3); compare their cost with the others' by minutes."
            ),
            "{note}"
        );
        let md = r.write(&root.join("out/r.md"), "t").unwrap();
        let text = std::fs::read_to_string(&md[0]).unwrap();
        assert!(text.contains(&note), "{text}");
    }

    #[test]
    fn runs_come_in_the_order_of_the_paths_given() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("b-sweep"), dir.path().join("a-extra"));
        fake_run(&a, "scd", Some(30.0), 2, 93.0, 93.0);
        fake_run(&a, "ce", None, 1, 92.0, 92.0);
        fake_run(&b, "scd", Some(100.0), 1, 91.0, 91.0);
        let runs = find_runs(&[a.clone(), b.clone(), a.join("ce-0-s1")]).unwrap();
        let names: Vec<String> = runs
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            ["b-sweep/ce-0-s1", "b-sweep/scd-30-s2", "a-extra/scd-100-s1"]
        );
        let r = Report::from_paths(&[a, b]).unwrap();
        let labels: Vec<String> = r.groups.iter().map(Group::label).collect();
        assert_eq!(labels, ["ce", "scd beta=30.0", "scd beta=100.0"]);
    }

    #[test]
    fn a_numeric_sweep_is_split_into_lines_by_the_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_run(root, "ce", None, 1, 90.0, 90.0);
        for (beta, target, best) in [
            (10.0, "next", 91.0),
            (100.0, "next", 89.0),
            (30.0, "next", 90.5),
            (10.0, "deepest", 92.0),
            (100.0, "deepest", 88.0),
        ] {
            let loss = [
                ("beta", serde_json::json!(beta)),
                ("target", serde_json::json!(target)),
            ];
            let tag = format!("{beta}-{target}");
            fake_run_with(root, "scd", &tag, &loss, |_| {}, 1, best, best);
        }
        let r = Report::from_paths(&[root.to_path_buf()]).unwrap();
        assert_eq!(r.swept().as_deref(), Some("loss.beta"));
        // Rows by method, then by setting, numbers by value (30 before 100).
        let labels: Vec<String> = r.groups.iter().map(|g| g.label()).collect();
        assert_eq!(
            labels,
            [
                "ce",
                "scd beta=10.0 target=deepest",
                "scd beta=10.0 target=next",
                "scd beta=30.0 target=next",
                "scd beta=100.0 target=deepest",
                "scd beta=100.0 target=next",
            ]
        );
        let chart = r.sweep_chart("t").unwrap();
        let lines: Vec<(&str, &[(f64, f64)])> = chart
            .series
            .iter()
            .map(|s| (s.label.as_str(), s.points.as_slice()))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("scd target=deepest", &[(10.0, 92.0), (100.0, 88.0)][..]),
                (
                    "scd target=next",
                    &[(10.0, 91.0), (30.0, 90.5), (100.0, 89.0)][..]
                ),
            ]
        );
        assert_eq!(chart.references, vec![("ce".to_string(), 90.0, 0.0)]);
        // A second numeric setting varying (the batch size): no single axis, no plot.
        let loss = [("beta", serde_json::json!(10.0))];
        fake_run_with(
            root,
            "scd",
            "b64",
            &loss,
            |c| c.batch_size = 64,
            1,
            1.0,
            1.0,
        );
        let r = Report::from_paths(&[root.to_path_buf()]).unwrap();
        assert_eq!(r.swept(), None);
        assert!(r.sweep_chart("t").is_none());
    }

    #[test]
    fn teachers_count_by_what_they_are_and_unstarted_runs_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let teachers = root.join("teachers");
        fake_run(&teachers, "ce", None, 1, 90.0, 89.0);
        fake_run(&teachers, "ce", None, 2, 91.0, 90.0);
        let students = root.join("students");
        for seed in [1, 2] {
            fake_run(&students, "kd", None, seed, 92.0, 91.0);
            let cfg_path = students.join(format!("kd-0-s{seed}/config.ron"));
            let mut cfg = TrainConfig::load(&cfg_path).unwrap();
            cfg.teacher = Some(teachers.join(format!("ce-0-s{seed}")));
            std::fs::write(&cfg_path, cfg.to_ron()).unwrap();
        }
        // Two teachers in different folders but of the same kind: one group of two seeds.
        let r = Report::from_paths(std::slice::from_ref(&students)).unwrap();
        assert_eq!(r.groups.len(), 1);
        assert_eq!(r.groups[0].runs.len(), 2);
        // A run stopped before its first evaluation has no entries: skipped, not a panic.
        fake_run(&students, "kd", None, 3, 0.0, 0.0);
        let s3 = students.join("kd-0-s3/summary.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&s3).unwrap()).unwrap();
        v["students"] = serde_json::json!([]);
        v["epochs_done"] = serde_json::json!(0);
        std::fs::write(&s3, v.to_string()).unwrap();
        let r = Report::from_paths(std::slice::from_ref(&students)).unwrap();
        assert_eq!(r.groups.len(), 1);
        assert_eq!(r.groups[0].runs.len(), 2);
        assert!(r.varying.is_empty(), "{:?}", r.varying);
        // ...and listed under the table, so a sweep in progress does not pass for complete.
        assert_eq!(r.skipped, [students.join("kd-0-s3")]);
        let md = root.join("out/report.md");
        r.write(&md, "t").unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        let tail = text.split("Not in the table").nth(1).expect(&text);
        assert!(tail.contains("kd-0-s3"), "{text}");
        assert!(!tail.contains("kd-0-s1"), "{text}");
    }

    #[test]
    fn each_entry_reports_its_own_best_epoch() {
        let dir = tempfile::tempdir().unwrap();
        fake_run(dir.path(), "dml", None, 1, 0.0, 0.0);
        let run = dir.path().join("dml-0-s1");
        let accs = |epoch, test_acc: &[f64]| EpochAcc {
            epoch,
            test_acc: test_acc.to_vec(),
        };
        let mut summary: Summary =
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap())
                .unwrap();
        summary.students = vec!["student0".into(), "student1".into(), "ensemble".into()];
        // The best checkpoint is epoch 2, where the ensemble peaked; student0 peaked at epoch 1.
        summary.best = accs(2, &[90.0, 91.0, 92.0]);
        summary.last = accs(2, &[90.0, 91.0, 92.0]);
        // Epoch 3 was logged but not checkpointed (a kill in between): not counted.
        write_results(
            &run,
            &summary,
            "epoch,lr,loss,train_acc,test_acc_student0,test_acc_student1,test_acc_ensemble,\
             images_per_s,seconds\n1,0.1,1,50,93,89,91,100,1\n2,0.1,1,60,90,91,92,100,1\n\
             3,0.1,1,60,99,99,99,100,1\n",
        );
        let md = Report::from_paths(&[dir.path().to_path_buf()])
            .unwrap()
            .markdown();
        for row in [
            "| **student0** | 1 | 93.00 | 90.00 |",
            "| student1 | 1 | 91.00 | 91.00 |",
            "| ensemble | 1 | 92.00 | 92.00 |",
        ] {
            assert!(md.contains(row), "{row} in\n{md}");
        }
    }

    #[test]
    fn headline_entries() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(headline(&v(&["net"])), 0);
        assert_eq!(headline(&v(&["exit1", "exit2", "exit3", "ensemble"])), 2);
        assert_eq!(headline(&v(&["peer0", "peer1", "leader", "ensemble"])), 2);
        assert_eq!(
            headline(&v(&["student0", "student1", "ensemble", "fused"])),
            0
        );
    }
}
