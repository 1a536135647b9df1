//! `cargo xtask describe <arch> [--classes N] [--in-channels C] [--size S] [--branches N]`:
//! prints an architecture's layer table (module path, output shape without the batch, trainable
//! parameters) and its total parameter count (BN weight and bias, not running statistics).

use anyhow::{bail, Result};
use kd_models::dfdx_cpu;
use kd_models::{build_network, NetConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Architecture name (one of kd_models::ARCH_NAMES).
    pub arch: String,
    /// Number of classes.
    #[arg(long, default_value_t = 100)]
    pub classes: usize,
    /// Input channels (1 or 3).
    #[arg(long, default_value_t = 3)]
    pub in_channels: usize,
    /// Input height and width.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Branches (heads duplicating the last stage and the classifier over the shared trunk).
    #[arg(long, default_value_t = 1)]
    pub branches: usize,
}

pub fn run(args: Args) -> Result<()> {
    if args.size == 0 {
        bail!("--size must be at least 1");
    }
    let dev = dfdx_cpu(0);
    let cfg = NetConfig::new(args.classes, args.in_channels).branches(args.branches);
    let net = build_network(&dev, &args.arch, cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rows = net.layer_table((args.size, args.size));
    let shape = |s: &[usize]| {
        format!(
            "[{}]",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let name_w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(5);
    let shape_w = rows
        .iter()
        .map(|r| shape(&r.shape).len())
        .max()
        .unwrap_or(5)
        .max(12);
    println!(
        "{} ({} classes, {} input channel(s), {}×{} input, {} branch(es))",
        args.arch, args.classes, args.in_channels, args.size, args.size, args.branches
    );
    println!(
        "{:<name_w$}  {:<shape_w$}  {:>12}",
        "layer", "output shape", "params"
    );
    println!("{}", "-".repeat(name_w + shape_w + 16));
    for r in &rows {
        println!(
            "{:<name_w$}  {:<shape_w$}  {:>12}",
            r.name,
            shape(&r.shape),
            group(r.params)
        );
    }
    println!("{}", "-".repeat(name_w + shape_w + 16));
    let total = net.num_params();
    debug_assert_eq!(total, rows.iter().map(|r| r.params).sum::<usize>());
    println!("total trainable parameters: {} ({total})", group(total));
    Ok(())
}

/// `1234567` → `1,234,567`.
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
