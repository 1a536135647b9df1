//! Checkpoints you can trust: `checkpoints/<name>/` holds `model.safetensors`,
//! `optimizer.safetensors` and `state.json` ([`CheckpointState`]), which records the sha256 of
//! the other two. A checkpoint is written into `<name>.tmp/` and renamed into place, so a kill
//! or a failed write (a full disk) leaves the previous checkpoint as it was and no `.tmp`
//! behind; reading one checks the hashes, and a damaged `last` is refused with the way to
//! resume from `best` instead.

use crate::entry::Entry;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a checkpoint records besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Epochs completed (the next epoch to run).
    pub epochs_done: usize,
    pub seed: u64,
    /// Optimizer updates so far.
    pub steps: u64,
    /// Best test accuracy (%) of any reported entry so far (-1 before the first evaluation),
    /// and its epoch (1-based).
    pub best_acc: f64,
    pub best_epoch: usize,
    /// Test accuracy per reported entry at the best epoch.
    pub best_test_acc: Vec<f64>,
    /// Test accuracy per reported entry at the end of the last completed epoch.
    pub last_acc: Vec<f64>,
    /// The reported entries.
    pub students: Vec<Entry>,
    /// How the random state is restored.
    pub rng: String,
    /// Set when the run was interrupted inside epoch `epochs_done` (Ctrl-C): where it stopped.
    #[serde(default)]
    pub partial: Option<PartialEpoch>,
    /// The sha256 (hex) of every other file of the checkpoint, by file name (absent in
    /// checkpoints written before they were recorded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// The position and running sums of an interrupted epoch, so that resuming it continues with
/// the next batch and reports the same epoch metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Batches of the epoch already trained on.
    pub batches_done: usize,
    /// Sum over those batches of each loss term.
    pub term_sums: Vec<(String, f64)>,
    pub total_sum: f64,
    /// Correctly classified anchors, anchors, and rows seen.
    pub correct: usize,
    pub seen: usize,
    pub images: usize,
}

impl CheckpointState {
    /// The state of a run before its first epoch.
    pub fn fresh(seed: u64) -> Self {
        Self {
            epochs_done: 0,
            seed,
            steps: 0,
            best_acc: -1.0,
            best_epoch: 0,
            best_test_acc: Vec::new(),
            last_acc: Vec::new(),
            students: Vec::new(),
            partial: None,
            rng: "none kept: initialisation from a Cpu seeded with `seed`, batches from streams \
                  seeded by (seed, epoch, batch)"
                .into(),
            files: BTreeMap::new(),
        }
    }
}

/// The sha256 of a file, hex.
fn sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// Writes `checkpoints/<name>/` of `run_dir`: `write` puts the tensor files into the folder it
/// is given; their hashes go into `state.json`. On any failure the partial `<name>.tmp/` is
/// removed and the previous `<name>/` is left as it was.
pub fn save(
    run_dir: &Path,
    name: &str,
    state: &CheckpointState,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let dir = run_dir.join("checkpoints");
    let tmp = dir.join(format!("{name}.tmp"));
    let result = (|| -> Result<()> {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        write(&tmp)?;
        let mut state = state.clone();
        state.files.clear();
        for e in std::fs::read_dir(&tmp)? {
            let p = e?.path();
            let file = p
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            state.files.insert(file, sha256(&p)?);
        }
        std::fs::write(
            tmp.join("state.json"),
            serde_json::to_string_pretty(&state)?,
        )?;
        replace_dir(&tmp, &dir.join(name))
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        e.context(format!(
            "writing checkpoint {} (the previous one is kept)",
            dir.join(name).display()
        ))
    })
}

/// Renames `src` over the folder `dst`, through `<dst>.old`; if the last rename fails, the old
/// folder is put back.
fn replace_dir(src: &Path, dst: &Path) -> Result<()> {
    let mut old = dst.as_os_str().to_owned();
    old.push(".old");
    let old = PathBuf::from(old);
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    let had = dst.exists();
    if had {
        std::fs::rename(dst, &old)?;
    }
    if let Err(e) = std::fs::rename(src, dst) {
        if had {
            let _ = std::fs::rename(&old, dst);
        }
        return Err(e.into());
    }
    if had {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// How to continue a run from its `best` checkpoint, for errors about `last`.
fn from_best_hint(run_dir: &Path, name: &str) -> String {
    if name == "last" && run_dir.join("checkpoints/best/state.json").is_file() {
        format!(
            "; resume from the best checkpoint instead: cargo xtask train --resume {} --from best",
            run_dir.display()
        )
    } else {
        String::new()
    }
}

/// Reads `checkpoints/<name>/state.json` and checks the recorded hashes of the other files;
/// returns the state and the folder. A missing or damaged file is an error naming it.
pub fn load(run_dir: &Path, name: &str) -> Result<(CheckpointState, PathBuf)> {
    let dir = run_dir.join("checkpoints").join(name);
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no checkpoint `{name}`: reading {}", path.display()))?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{} is damaged: {e}{}",
            path.display(),
            from_best_hint(run_dir, name)
        )
    })?;
    for (file, want) in &state.files {
        let p = dir.join(file);
        let got = sha256(&p).map_err(|e| anyhow!("{e:#}{}", from_best_hint(run_dir, name)))?;
        if got != *want {
            bail!(
                "{} is damaged: its sha256 is {got}, {} recorded {want}{}",
                p.display(),
                path.display(),
                from_best_hint(run_dir, name)
            );
        }
    }
    Ok((state, dir))
}

/// An error reading a checkpoint's tensor file `file` (a checkpoint written before hashes
/// were recorded can still be truncated), with the way to resume from `best`.
pub fn damaged(run_dir: &Path, name: &str, file: &Path, e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!(
        "{} could not be read ({e:?}): the checkpoint is damaged{}",
        file.display(),
        from_best_hint(run_dir, name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_two(dir: &Path) -> Result<()> {
        std::fs::write(dir.join("model.safetensors"), b"weights")?;
        std::fs::write(dir.join("optimizer.safetensors"), b"velocities")?;
        Ok(())
    }

    #[test]
    fn hashes_are_recorded_and_checked() {
        let run = tempfile::tempdir().unwrap();
        let mut s = CheckpointState::fresh(1);
        s.epochs_done = 3;
        save(run.path(), "best", &s, write_two).unwrap();
        save(run.path(), "last", &s, write_two).unwrap();
        let (back, dir) = load(run.path(), "last").unwrap();
        assert_eq!(back.epochs_done, 3);
        assert_eq!(back.files.len(), 2);
        assert_eq!(
            back.files["model.safetensors"],
            hex::encode(Sha256::digest(b"weights"))
        );
        // Truncate the model: refused, naming the file and how to resume from best.
        std::fs::write(dir.join("model.safetensors"), b"weig").unwrap();
        let e = load(run.path(), "last").unwrap_err().to_string();
        assert!(e.contains("last/model.safetensors is damaged"), "{e}");
        assert!(e.contains("--resume") && e.contains("--from best"), "{e}");
        std::fs::remove_file(dir.join("optimizer.safetensors")).unwrap();
        std::fs::write(dir.join("model.safetensors"), b"weights").unwrap();
        let e = format!("{:#}", load(run.path(), "last").unwrap_err());
        assert!(e.contains("optimizer.safetensors"), "{e}");
        assert!(load(run.path(), "best").is_ok());
    }

    #[test]
    fn a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_tmp() {
        let run = tempfile::tempdir().unwrap();
        let s = CheckpointState::fresh(1);
        save(run.path(), "last", &s, write_two).unwrap();
        let e = save(run.path(), "last", &s, |dir| {
            std::fs::write(dir.join("model.safetensors"), b"half")?;
            Err(
                std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device")
                    .into(),
            )
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("No space left"), "{e:#}");
        assert!(
            format!("{e:#}").contains("the previous one is kept"),
            "{e:#}"
        );
        let names: Vec<String> = std::fs::read_dir(run.path().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["last"]);
        let (back, dir) = load(run.path(), "last").unwrap();
        assert_eq!(back.files.len(), 2);
        assert_eq!(
            std::fs::read(dir.join("model.safetensors")).unwrap(),
            b"weights"
        );
    }
}
