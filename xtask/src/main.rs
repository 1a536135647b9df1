//! `cargo xtask <command>`: the project's runner. Each command lives in its own module.

mod bench;
mod check;
mod cuda;
mod describe;
mod eval;
mod fetch;
mod report;
mod sweep;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "kd: knowledge-distillation toolkit runner"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download (or import with --from) and verify a dataset under datasets/<name>/.
    FetchData(fetch::Args),
    /// Evaluate reference cases (op or loss JSON files, or folders of them) against this
    /// project's implementation; exits non-zero on any mismatch or unknown op/method.
    Check(check::Args),
    /// Benchmarks: `data`, `ops`, `models`; results are printed and written under target/bench/.
    Bench(bench::Args),
    /// Print an architecture's layer table (name, output shape, parameters) and total.
    Describe(describe::Args),
    /// Train a method (`train <method> ...`) or continue a run (`train --resume RUN_DIR`).
    Train(train::Args),
    /// Reload a run's best (or last) checkpoint and print its test accuracy per student.
    Eval(eval::Args),
    /// Compare runs: markdown table (mean ± std over seeds), curves, sweep plot.
    Report(report::Args),
    /// Run a grid of runs (configs/sweeps/*.ron), skipping complete points; --slurm writes a
    /// job-array script instead.
    Sweep(sweep::Args),
    /// Build the CUDA runner on a machine without a GPU and pack a relocatable folder
    /// (binary, kernel headers, run.sh); see docs/cuda.md.
    BundleCuda(cuda::BundleArgs),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::FetchData(a) => fetch::run(a),
        Command::Check(a) => check::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Describe(a) => describe::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Report(a) => report::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::BundleCuda(a) => cuda::bundle(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
