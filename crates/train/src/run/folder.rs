//! The run folder's files other than the checkpoints: `log.txt` ([`RunLog`]), `summary.json`
//! ([`Summary`]), `metrics.csv` (through [`crate::metrics`]), and files replaced atomically.

use crate::entry::Entry;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Test accuracy at one epoch (the default, epoch 0 with no accuracies: none yet).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochAcc {
    /// 1-based.
    pub epoch: usize,
    /// Per reported entry, in %.
    pub test_acc: Vec<f64>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub method: String,
    pub dataset: String,
    pub arch: String,
    pub seed: u64,
    /// The reported entries, in the order of the accuracies.
    pub students: Vec<Entry>,
    pub epochs_done: usize,
    pub epochs: usize,
    pub best: EpochAcc,
    pub last: EpochAcc,
    /// Mean training throughput over the run's epochs: network inputs (batch rows) per
    /// second (`rows_per_anchor` of the method's sampler times the epoch's samples/s).
    pub images_per_s: f64,
    /// Wall time of the run's epochs (training and evaluation), summed over invocations.
    #[serde(default)]
    pub seconds: f64,
}

impl Summary {
    /// Reads `summary.json` of a run folder.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Whether every epoch has run.
    pub fn complete(&self) -> bool {
        self.epochs_done >= self.epochs
    }
}

/// Writes to the terminal (through `log`) and to `log.txt`.
pub(crate) struct RunLog {
    file: std::fs::File,
    start: Instant,
}

impl RunLog {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            file,
            start: Instant::now(),
        })
    }

    /// `msg` to the terminal at `level` and to `log.txt`, after the time and `tag`.
    fn write(&mut self, level: log::Level, tag: &str, msg: &str) {
        log::log!(level, "{msg}");
        let t = self.start.elapsed().as_secs_f64();
        let _ = writeln!(self.file, "[{t:9.1}s] {tag}{msg}");
    }

    pub fn info(&mut self, msg: &str) {
        self.write(log::Level::Info, "", msg);
    }

    pub fn warn(&mut self, msg: &str) {
        self.write(log::Level::Warn, "WARNING ", msg);
    }

    pub fn error(&mut self, msg: &str) {
        self.write(log::Level::Error, "ERROR ", msg);
    }
}

/// Writes `text` to `<path>.tmp` and renames it over `path`, so a kill leaves the old file or
/// the new one, never a truncated one; a failed write leaves no `.tmp` behind.
pub fn write_replacing(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing {}", path.display()))
}

/// Drops the rows of `metrics.csv` after epoch `epochs_done` (written before a kill that came
/// before their checkpoint), so a resumed run's metrics have one row per epoch.
pub(crate) fn drop_metrics_after(path: &Path, epochs_done: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| {
            *i == 0
                || l.split(',')
                    .next()
                    .and_then(|e| e.parse::<usize>().ok())
                    .is_some_and(|e| e <= epochs_done)
        })
        .map(|(_, l)| l)
        .collect();
    if kept.len() != text.lines().count() {
        write_replacing(path, &(kept.join("\n") + "\n"))?;
    }
    Ok(())
}

/// UTC `YYYYMMDD-HHMMSS` (no time-zone database needed).
pub(crate) fn time_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_stamp_is_well_formed() {
        let s = time_stamp();
        assert_eq!(s.len(), 15, "{s}");
        assert_eq!(&s[8..9], "-");
        assert!(s[..8]
            .chars()
            .chain(s[9..].chars())
            .all(|c| c.is_ascii_digit()));
        assert!(s.starts_with("20"), "{s}");
    }

    #[test]
    fn a_replaced_file_is_whole_and_a_failed_write_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("summary.json");
        write_replacing(&p, "one").unwrap();
        write_replacing(&p, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        let bad = dir.path().join("no-such-folder/summary.json");
        assert!(write_replacing(&bad, "x").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["summary.json"]);
    }
}
