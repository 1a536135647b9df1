//! `metrics.csv`, typed: one [`EpochRow`] per epoch, written by the trainer and read back by
//! the plots and the report. Columns: `epoch`, `lr`, `loss`, `loss_<term>`..., `train_acc`,
//! `test_acc_<entry>`..., `images_per_s`, `seconds` (the entries are [`Entry`] names).

use crate::entry::Entry;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// One epoch's row.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRow {
    /// 1-based.
    pub epoch: usize,
    pub lr: f64,
    /// Epoch mean of the total loss, and of each term (the method's order).
    pub loss: f64,
    pub terms: Vec<(String, f64)>,
    /// Training accuracy (%) of the anchors.
    pub train_acc: f64,
    /// Test accuracy (%) per evaluated entry.
    pub test_acc: Vec<(Entry, f64)>,
    /// Training throughput (network inputs per second) and wall time of the epoch.
    pub images_per_s: f64,
    pub seconds: f64,
}

/// A loss (or term) for the CSV and the log: `decimals` decimals, or scientific notation with
/// `decimals − 1` significant digits below 1e-3, so a small term keeps its digits (DDGSD's MMD
/// term is ~5e-6 and would print as 0.0000).
pub fn fmt_term(v: f64, decimals: usize) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.*e}", decimals.saturating_sub(2))
    } else {
        format!("{v:.decimals$}")
    }
}

impl EpochRow {
    /// The CSV header of this row's columns.
    pub fn header(&self) -> String {
        let mut head = vec!["epoch".to_string(), "lr".into(), "loss".into()];
        head.extend(self.terms.iter().map(|(n, _)| format!("loss_{n}")));
        head.push("train_acc".into());
        head.extend(self.test_acc.iter().map(|(e, _)| format!("test_acc_{e}")));
        head.extend(["images_per_s".into(), "seconds".into()]);
        head.join(",")
    }

    /// The CSV line.
    pub fn line(&self) -> String {
        let mut row = vec![
            self.epoch.to_string(),
            format!("{:e}", self.lr as f32),
            fmt_term(self.loss, 6),
        ];
        row.extend(self.terms.iter().map(|(_, v)| fmt_term(*v, 6)));
        row.push(format!("{:.4}", self.train_acc));
        row.extend(self.test_acc.iter().map(|(_, a)| format!("{a:.4}")));
        row.extend([
            format!("{:.1}", self.images_per_s),
            format!("{:.2}", self.seconds),
        ]);
        row.join(",")
    }

    /// Test accuracy of `entry`, if evaluated.
    pub fn acc(&self, entry: Entry) -> Option<f64> {
        self.test_acc
            .iter()
            .find(|(e, _)| *e == entry)
            .map(|(_, a)| *a)
    }
}

/// Every row of a run's `metrics.csv`, in epoch order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metrics {
    pub rows: Vec<EpochRow>,
}

/// Where each kind of value sits in a header.
struct Layout {
    terms: Vec<(usize, String)>,
    tests: Vec<(usize, Entry)>,
    fixed: [usize; 6],
}

fn layout(head: &str, origin: &str) -> Result<Layout> {
    let cols: Vec<&str> = head.split(',').map(str::trim).collect();
    let at = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| anyhow!("{origin}: no column `{name}` in `{head}`"))
    };
    if cols.first() != Some(&"epoch") {
        bail!("{origin}: the first column must be `epoch`, found `{head}`");
    }
    let mut terms = Vec::new();
    let mut tests = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        if let Some(t) = c.strip_prefix("loss_") {
            terms.push((i, t.to_string()));
        } else if let Some(e) = c.strip_prefix("test_acc_") {
            tests.push((
                i,
                e.parse()
                    .with_context(|| format!("{origin}: column `{c}`"))?,
            ));
        }
    }
    Ok(Layout {
        terms,
        tests,
        fixed: [
            0,
            at("lr")?,
            at("loss")?,
            at("train_acc")?,
            at("images_per_s")?,
            at("seconds")?,
        ],
    })
}

impl Metrics {
    /// Parses the CSV text; `origin` names the file in errors. When an epoch appears twice (a
    /// run killed between its row and its checkpoint, then resumed), the later row wins.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let head = lines
            .next()
            .ok_or_else(|| anyhow!("{origin}: empty metrics file"))?;
        let lay = layout(head, origin)?;
        let width = head.split(',').count();
        let mut rows: Vec<EpochRow> = Vec::new();
        for (i, line) in lines.enumerate() {
            let v = line
                .split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<Result<Vec<f64>, _>>()
                .with_context(|| format!("{origin}:{}: not a row of numbers", i + 2))?;
            if v.len() != width {
                bail!("{origin}:{}: {} values for {width} columns", i + 2, v.len());
            }
            let [e, lr, loss, train, ips, secs] = lay.fixed.map(|k| v[k]);
            let row = EpochRow {
                epoch: e as usize,
                lr,
                loss,
                terms: lay.terms.iter().map(|(k, n)| (n.clone(), v[*k])).collect(),
                train_acc: train,
                test_acc: lay.tests.iter().map(|(k, en)| (*en, v[*k])).collect(),
                images_per_s: ips,
                seconds: secs,
            };
            rows.retain(|r| r.epoch != row.epoch);
            rows.push(row);
        }
        rows.sort_by_key(|r| r.epoch);
        Ok(Self { rows })
    }

    /// Reads `metrics.csv` of a run folder.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("metrics.csv");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Appends `row` to `metrics.csv` in `run_dir`, with the header first in a new file.
    pub fn append(run_dir: &Path, row: &EpochRow) -> Result<()> {
        let path = run_dir.join("metrics.csv");
        let new = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if new {
            writeln!(f, "{}", row.header())?;
        }
        writeln!(f, "{}", row.line()).with_context(|| format!("writing {}", path.display()))
    }

    /// The epochs (1-based).
    pub fn epochs(&self) -> Vec<f64> {
        self.rows.iter().map(|r| r.epoch as f64).collect()
    }

    /// Test accuracy of `entry` per epoch: `(epoch, accuracy)` where evaluated.
    pub fn test_curve(&self, entry: Entry) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .filter_map(|r| Some((r.epoch as f64, r.acc(entry)?)))
            .collect()
    }

    /// The evaluated entries (those of the first row).
    pub fn entries(&self) -> Vec<Entry> {
        self.rows
            .first()
            .map(|r| r.test_acc.iter().map(|(e, _)| *e).collect())
            .unwrap_or_default()
    }

    /// The loss terms (those of the first row).
    pub fn term_names(&self) -> Vec<String> {
        self.rows
            .first()
            .map(|r| r.terms.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, acc: f64) -> EpochRow {
        EpochRow {
            epoch,
            lr: 0.1,
            loss: 1.5,
            terms: vec![("ce".into(), 1.5), ("mmd".into(), 5.2e-6)],
            train_acc: 60.0,
            test_acc: vec![(Entry::Student(0), acc), (Entry::Ensemble, acc + 1.0)],
            images_per_s: 110.0,
            seconds: 9.0,
        }
    }

    #[test]
    fn rows_written_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        Metrics::append(dir.path(), &row(1, 50.0)).unwrap();
        Metrics::append(dir.path(), &row(2, 70.0)).unwrap();
        let text = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
        assert!(text.starts_with(
            "epoch,lr,loss,loss_ce,loss_mmd,train_acc,test_acc_student0,test_acc_ensemble,\
             images_per_s,seconds\n1,1e-1,1.500000,1.500000,5.2000e-6,60.0000,50.0000,51.0000,110.0,9.00\n"
        ), "{text}");
        let m = Metrics::load(dir.path()).unwrap();
        assert_eq!(m.rows.len(), 2);
        assert_eq!(m.rows[1].acc(Entry::Ensemble), Some(71.0));
        assert_eq!(m.rows[0].terms[1], ("mmd".to_string(), 5.2e-6));
        assert_eq!(m.entries(), vec![Entry::Student(0), Entry::Ensemble]);
        assert_eq!(
            m.test_curve(Entry::Student(0)),
            vec![(1.0, 50.0), (2.0, 70.0)]
        );
    }

    #[test]
    fn parses_dedups_and_names_bad_rows() {
        let m = Metrics::parse(
            "epoch,lr,loss,loss_ce,train_acc,test_acc_net,images_per_s,seconds\n\
             1,1e-1,2.0,2.0,40,50,100,10\n2,1e-1,1.5,1.5,60,70,110,9\n2,1e-1,1.4,1.4,61,71,120,8\n",
            "m.csv",
        )
        .unwrap();
        assert_eq!(m.epochs(), vec![1.0, 2.0]);
        assert_eq!(m.test_curve(Entry::Net), vec![(1.0, 50.0), (2.0, 71.0)]);
        assert_eq!(m.rows[1].terms, vec![("ce".to_string(), 1.4)]);
        let e = Metrics::parse(
            "epoch,lr,loss,train_acc,images_per_s,seconds\n1,x,1,1,1,1\n",
            "m.csv",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("m.csv:2"), "{e}");
        let e = Metrics::parse("epoch,lr,loss,train_acc,images_per_s,seconds\n1\n", "m.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 values for 6 columns"), "{e}");
        let e = Metrics::parse(
            "epoch,lr,loss,train_acc,test_acc_bogus,images_per_s,seconds\n",
            "m.csv",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("test_acc_bogus"), "{e:#}");
    }

    #[test]
    fn small_terms_keep_their_digits() {
        assert_eq!(fmt_term(0.43471, 4), "0.4347");
        assert_eq!(fmt_term(0.0, 4), "0.0000");
        assert_eq!(fmt_term(3.456e-6, 4), "3.46e-6");
        assert_eq!(fmt_term(-2.0e-4, 4), "-2.00e-4");
        assert_eq!(fmt_term(5.123456e-6, 6), "5.1235e-6");
        let back: f64 = fmt_term(5.123456e-6, 6)
            .parse()
            .expect("metrics.csv stays numeric");
        assert!((back - 5.1235e-6).abs() < 1e-12, "{back}");
    }
}
