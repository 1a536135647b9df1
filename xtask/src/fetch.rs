//! `cargo xtask fetch-data <name>|all [--dir DIR] [--from PATH] [--mirror URL]`.

use anyhow::{bail, Result};
use kd_data::fetch::{fetch, FetchOptions, Outcome};
use kd_data::DatasetName;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// cifar10, cifar100, tiny-imagenet, cinic10, svhn, fashion-mnist, or all.
    name: String,
    /// The datasets folder [default: $KD_DATASETS, else <workspace>/datasets].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Import a local archive/file, or a folder holding the published files (for example
    /// /usr/share/datasets/fashion-mnist), verified like a download.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Replace the scheme and host of the official addresses (the path is kept).
    #[arg(long)]
    mirror: Option<String>,
    /// Download attempts per file (each resumes the last).
    #[arg(long, default_value_t = 3)]
    attempts: usize,
    /// SVHN: also fetch the 531,131-image `extra` split (1.3 GB).
    #[arg(long)]
    extra: bool,
}

/// `$KD_DATASETS`, else `datasets/` at the workspace root.
pub fn datasets_dir() -> PathBuf {
    std::env::var_os("KD_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let xtask = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            xtask.parent().unwrap_or(xtask).join("datasets")
        })
}

pub fn run(args: Args) -> Result<()> {
    let names: Vec<DatasetName> = if args.name == "all" {
        DatasetName::ALL.to_vec()
    } else {
        vec![args.name.parse()?]
    };
    if names.len() > 1 && args.from.is_some() {
        bail!("--from imports one dataset: name it instead of `all`");
    }
    let opts = FetchOptions {
        root: args.dir.unwrap_or_else(datasets_dir),
        from: args.from,
        mirror: args.mirror,
        attempts: args.attempts,
        svhn_extra: args.extra,
        progress: true,
        ..Default::default()
    };
    let mut failed = Vec::new();
    for name in names {
        match fetch(name, &opts) {
            Ok(Outcome::AlreadyPresent) => println!("{name}: already present"),
            Ok(Outcome::Downloaded) => println!("{name}: downloaded and verified"),
            Ok(Outcome::Imported) => println!("{name}: imported and verified"),
            Err(e) => {
                eprintln!("{name}: {e}");
                failed.push(name.to_string());
            }
        }
    }
    if !failed.is_empty() {
        bail!("could not fetch: {}", failed.join(", "));
    }
    Ok(())
}
