//! `cargo xtask report PATH... [--out FILE.md] [--title T]`: compares finished runs (run
//! folders, or folders holding them): a markdown table of best and last test accuracy per
//! student / exit / ensemble (mean ± std over seeds), test-accuracy curves and, for a sweep over
//! one setting, accuracy against that setting (`kd_train::report`).

use anyhow::Result;
use kd_train::Report;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run folders, or folders searched for run folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The markdown file to write; plots go next to it as <stem>-curves.png and
    /// <stem>-sweep.png [default: report.md in the first path].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The report's title.
    #[arg(long, default_value = "Results")]
    title: String,
}

pub fn run(args: Args) -> Result<()> {
    let report = Report::from_paths(&args.paths)?;
    let out = args.out.unwrap_or_else(|| args.paths[0].join("report.md"));
    print!("{}", report.markdown());
    for p in report.write(&out, &args.title)? {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
