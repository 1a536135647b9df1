//! `cargo xtask check <file|dir>...`: evaluates op cases (`"op"` key, `kd_ops`) and loss cases
//! (`"method"` key, `kd_losses`), prints one line per case and fails on any mismatch.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Case files (.json) or folders of them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("reading folder {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() || p.extension().is_some_and(|e| e == "json") {
                collect(&p, out)?;
            }
        }
    } else if path.exists() {
        out.push(path.to_path_buf());
    } else {
        bail!("{}: no such file or folder", path.display());
    }
    Ok(())
}

/// Evaluates one case file, returning its report line and whether it passed.
pub fn check_file(path: &Path) -> (String, bool) {
    let name = path.display().to_string();
    let value: serde_json::Value = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| format!("not valid JSON: {e}")))
    {
        Ok(v) => v,
        Err(e) => return (format!("FAIL  {name}: {e}"), false),
    };
    let report = if value.get("op").is_some() {
        kd_ops::check_op_case(&name, &value)
    } else if value.get("method").is_some() {
        kd_losses::check_loss_case(&name, &value)
    } else {
        Err("neither an op case (`op` key) nor a loss case (`method` key)".to_string())
    };
    match report {
        Ok(r) => (r.line(), r.ok()),
        Err(e) => (format!("FAIL  {name}: {e}"), false),
    }
}

pub fn run(args: Args) -> Result<()> {
    let mut files = Vec::new();
    for p in &args.paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        bail!("no .json case files found in {:?}", args.paths);
    }
    let mut failed = 0;
    for f in &files {
        let (line, ok) = check_file(f);
        println!("{line}");
        failed += usize::from(!ok);
    }
    println!("{} passed, {} failed", files.len() - failed, failed);
    if failed > 0 {
        bail!("{failed} of {} cases failed", files.len());
    }
    Ok(())
}
