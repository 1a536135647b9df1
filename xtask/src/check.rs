//! `cargo xtask check <file|dir>...`: evaluates op cases (`"op"` key, `kd_ops`) and loss cases
//! (`"method"` key, `kd_losses`), prints one line per case and fails on any mismatch.
//! `--generic` runs the op cases through the device-generic compositions on the CPU (what the
//! GPU runs), `--device cuda` on the GPU (op cases only).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Case files (.json) or folders of them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Op cases through the device-generic compositions (`kd_ops::generic`) on the CPU.
    #[arg(long)]
    generic: bool,
    /// Where op cases run: `cpu`, or `cuda` (builds with the `cuda` feature; loss cases are
    /// then refused).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// How op cases are evaluated.
#[derive(Clone, Copy)]
pub enum OpPath {
    /// The CPU kernels.
    Cpu,
    /// The device-generic compositions on the CPU.
    Generic,
    /// The GPU.
    #[cfg(feature = "cuda")]
    Cuda,
}

impl OpPath {
    fn from_args(args: &Args) -> Result<Self> {
        match (args.device.as_str(), args.generic) {
            ("cpu", false) => Ok(Self::Cpu),
            ("cpu", true) => Ok(Self::Generic),
            #[cfg(feature = "cuda")]
            ("cuda", false) => Ok(Self::Cuda),
            ("cuda", true) => bail!("--generic is the CPU running the GPU's compositions; leave it out with --device cuda"),
            (other, _) => bail!(kd_train::device::unavailable(other)),
        }
    }

    fn op_case(
        self,
        name: &str,
        case: &serde_json::Value,
    ) -> Result<kd_ops::cases::Report, String> {
        match self {
            Self::Cpu => kd_ops::check_op_case(name, case),
            Self::Generic => kd_ops::check_op_case_generic(name, case),
            #[cfg(feature = "cuda")]
            Self::Cuda => {
                use kd_train::device::TrainDevice;
                thread_local! {
                    static GPU: Result<kd_ops::dfdx::prelude::Cuda, String> =
                        kd_ops::dfdx::prelude::Cuda::create(0).map_err(|e| format!("{e:#}"));
                }
                GPU.with(|dev| match dev {
                    Ok(dev) => kd_ops::check_op_case_on(dev, name, case),
                    Err(e) => Err(e.clone()),
                })
            }
        }
    }

    /// Whether this path takes op cases only (loss cases run on the CPU kernels).
    fn ops_only(self) -> bool {
        !matches!(self, Self::Cpu)
    }
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

/// Evaluates one case file (op cases on `ops`), returning its report line and whether it passed.
fn check_file_on(path: &Path, ops: OpPath) -> (String, bool) {
    let name = path.display().to_string();
    let value: serde_json::Value = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| format!("not valid JSON: {e}")))
    {
        Ok(v) => v,
        Err(e) => return (format!("FAIL  {name}: {e}"), false),
    };
    let report = if value.get("op").is_some() {
        ops.op_case(&name, &value)
    } else if value.get("method").is_some() && ops.ops_only() {
        Err("a loss case: --generic and --device apply to op cases only".to_string())
    } else if value.get("method").is_some() {
        kd_train::methods::check_loss_case(&name, &value)
    } else {
        Err("neither an op case (`op` key) nor a loss case (`method` key)".to_string())
    };
    match report {
        Ok(r) => (r.line(), r.ok()),
        Err(e) => (format!("FAIL  {name}: {e}"), false),
    }
}

pub fn run(args: Args) -> Result<()> {
    let ops = OpPath::from_args(&args)?;
    let mut files = Vec::new();
    for p in &args.paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        bail!("no .json case files found in {:?}", args.paths);
    }
    let mut failed = 0;
    for f in &files {
        let (line, ok) = check_file_on(f, ops);
        println!("{line}");
        failed += usize::from(!ok);
    }
    println!("{} passed, {} failed", files.len() - failed, failed);
    if failed > 0 {
        bail!("{failed} of {} cases failed", files.len());
    }
    Ok(())
}
