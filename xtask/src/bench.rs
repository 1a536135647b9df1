//! `cargo xtask bench <what>`: benchmarks. Each writes its table to `target/bench/<what>.md` and
//! prints it.

mod data;
mod ops;

use anyhow::Result;
use std::path::PathBuf;

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
}

pub fn run(args: Args) -> Result<()> {
    match args.what {
        What::Data(a) => data::run(a),
        What::Ops(a) => ops::run(a),
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
