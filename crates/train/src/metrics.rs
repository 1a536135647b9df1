//! Reading a run's `metrics.csv` back (plots, reports): one row per epoch, columns `epoch`, `lr`,
//! `loss`, `loss_<term>`..., `train_acc`, `test_acc_<entry>`..., `images_per_s`, `seconds`.

use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

/// The columns of `metrics.csv`, one value per epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub columns: Vec<String>,
    /// Rows in epoch order; when an epoch appears twice (a run killed between writing its row
    /// and its checkpoint, then resumed), the later row wins.
    pub rows: Vec<Vec<f64>>,
}

impl Metrics {
    /// Parses the CSV text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let head = lines
            .next()
            .ok_or_else(|| anyhow!("{origin}: empty metrics file"))?;
        let columns: Vec<String> = head.split(',').map(|c| c.trim().to_string()).collect();
        if columns.first().map(String::as_str) != Some("epoch") {
            bail!("{origin}: the first column must be `epoch`, found `{head}`");
        }
        let mut rows: Vec<Vec<f64>> = Vec::new();
        for (i, line) in lines.enumerate() {
            let row = line
                .split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<Result<Vec<f64>, _>>()
                .with_context(|| format!("{origin}:{}: not a row of numbers", i + 2))?;
            if row.len() != columns.len() {
                bail!(
                    "{origin}:{}: {} values for {} columns",
                    i + 2,
                    row.len(),
                    columns.len()
                );
            }
            rows.retain(|r| r[0] != row[0]);
            rows.push(row);
        }
        rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
        Ok(Self { columns, rows })
    }

    /// Reads `metrics.csv` of a run folder.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("metrics.csv");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The values of column `name`, if present.
    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let i = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(|r| r[i]).collect())
    }

    /// The epochs (1-based).
    pub fn epochs(&self) -> Vec<f64> {
        self.rows.iter().map(|r| r[0]).collect()
    }

    /// `(suffix, values)` of every column named `<prefix><suffix>`.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, Vec<f64>)> {
        self.columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let s = c.strip_prefix(prefix)?;
                Some((s.to_string(), self.rows.iter().map(|r| r[i]).collect()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dedups_and_names_bad_rows() {
        let m = Metrics::parse(
            "epoch,lr,loss,loss_ce,train_acc,test_acc_net,images_per_s,seconds\n\
             1,1e-1,2.0,2.0,40,50,100,10\n2,1e-1,1.5,1.5,60,70,110,9\n2,1e-1,1.4,1.4,61,71,120,8\n",
            "m.csv",
        )
        .unwrap();
        assert_eq!(m.epochs(), vec![1.0, 2.0]);
        assert_eq!(m.column("test_acc_net"), Some(vec![50.0, 71.0]));
        assert_eq!(m.with_prefix("loss_"), vec![("ce".into(), vec![2.0, 1.4])]);
        let e = Metrics::parse("epoch,lr\n1,x\n", "m.csv")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.csv:2"), "{e}");
        let e = Metrics::parse("epoch,lr\n1\n", "m.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 values for 2 columns"), "{e}");
    }
}
