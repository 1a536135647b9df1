//! `cargo xtask bench <what>`: benchmarks. Each writes its table to `target/bench/<what>.md` and
//! prints it.

mod data;
mod models;
mod ops;

use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Images/s of the CIFAR training transform (pad-crop, flip, normalise) at 1 and 2 threads.
    Data(data::Args),
    /// Forward+backward ms per op at batch 128 against PyTorch on the same threads.
    Ops(ops::Args),
    /// Training-step images/s and peak memory of ResNet-20/18 against PyTorch.
    Models(models::Args),
}

pub fn run(args: Args) -> Result<()> {
    match args.what {
        What::Data(a) => data::run(a),
        What::Ops(a) => ops::run(a),
        What::Models(a) => models::run(a),
    }
}

/// Writes a benchmark's markdown report to `target/bench/<name>.md` and returns the path.
pub fn write_report(name: &str, text: &str) -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.md"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The CPU's model name and its widest vector extension (from `/proc/cpuinfo`; "unknown CPU"
/// elsewhere), for the reports: the ratios to PyTorch depend on it.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let name = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let isa = if has("avx512f") {
        "AVX-512"
    } else if has("avx2") && has("fma") {
        "AVX2 + FMA"
    } else {
        "no AVX2"
    };
    format!("{name}, {isa}")
}

/// A `kB` field of `/proc/self/status` (`VmRSS:`, `VmHWM:`).
pub fn proc_kb(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS (Linux; a no-op elsewhere).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Runs `f` once and returns how far the peak RSS rose above the RSS before it, in MB (Linux:
/// the peak is reset through `/proc/self/clear_refs`).
pub fn peak_mb(f: &mut dyn FnMut()) -> Option<f64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    let base = proc_kb("VmRSS:")?;
    f();
    Some((proc_kb("VmHWM:")? - base).max(0.0) / 1024.0)
}

/// `/opt/torchenv/bin/python3` when present (where the README installs torch), else `python3`.
pub fn default_python() -> PathBuf {
    let venv = Path::new("/opt/torchenv/bin/python3");
    if venv.exists() {
        venv.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

/// Whether `python` can import torch.
pub fn has_torch(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import torch"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
