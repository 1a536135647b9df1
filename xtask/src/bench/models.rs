//! `cargo xtask bench models`: training-step throughput (images/s) and peak memory of CIFAR
//! ResNet-20 and ResNet-18 at batch 128 (3×32×32 inputs, 100 classes): forward in train mode,
//! cross-entropy (kd-losses' `ce`), backward and an SGD step (Nesterov 0.9, weight decay 5e-4),
//! on the CPU with a rayon pool of `--threads` (2) threads; and the same models and step in
//! PyTorch on the same thread count (`bench/models_torch.py`). Peak memory is the process's
//! peak RSS (Linux `VmHWM`, reset through `/proc/self/clear_refs` before the model is built)
//! at the end of the timed steps, the same on both sides (PyTorch's includes libtorch itself).

use anyhow::{Context, Result};
use kd_losses::LossInputs;
use kd_models::{build_network, Mode, NetConfig};
use kd_ops::dfdx::nn::ZeroGrads;
use kd_ops::dfdx::prelude::*;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Architectures to time.
    #[arg(long, value_delimiter = ',', default_value = "resnet20,resnet18")]
    archs: Vec<String>,
    /// Python interpreter with torch (default: /opt/torchenv/bin/python3 if present, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Threads for both sides (CPU).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed steps per model, after `--warmup` steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Skip PyTorch.
    #[arg(long)]
    no_torch: bool,
    /// Run our side on the CPU through the device-generic compositions (what `cuda` runs)
    /// instead of the CPU kernels, and report their host-side cost per step.
    #[arg(long)]
    generic: bool,
    /// `cpu`, or `cuda` (a build with the `cuda` feature; PyTorch then runs on the GPU too).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write the table here instead of `target/bench/models[-generic|-cuda].md`.
    #[arg(long)]
    out: Option<PathBuf>,
}

const CLASSES: usize = 100;

struct Measured {
    images_per_s: f64,
    ms_per_step: f64,
    peak_mb: Option<f64>,
    params: usize,
    /// Host cost per timed step of the generic ops (generic path and GPU only).
    host: Option<kd_ops::generic::host::HostCost>,
}

/// Times `args.steps` training steps of `arch` on `dev` after `args.warmup`, as the trainer
/// runs them: forward in train mode, CE, backward, the trainer's SGD, and the loss read back
/// (the trainer logs it every step, which also waits for the GPU).
fn run_ours<D: kd_train::device::TrainDevice>(dev: D, arch: &str, args: &Args) -> Result<Measured> {
    super::reset_peak_rss();
    let cpu = D::DEVICE == kd_train::Device::Cpu;
    let gpu_base = if cpu {
        None
    } else {
        kd_train::device::gpu_used_mb()
    };
    let mut net = build_network(&dev, arch, NetConfig::new(CLASSES, 3))?;
    let params = net.num_params();
    let mut opt = kd_train::Sgd::new(&net, kd_train::SgdConfig::default());
    let b = args.batch;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x: Vec<f32> = (0..b * 3 * 32 * 32)
        .map(|_| rng.gen_range(-2.0..2.0))
        .collect();
    let y: Vec<usize> = (0..b).map(|_| rng.gen_range(0..CLASSES)).collect();
    let ce = kd_losses::methods::ce::CeParams::default();
    let mut grads = Some(net.alloc_grads());
    let mut step = || -> Result<f32> {
        let input = dev.tensor_from_vec(x.clone(), (b, 3, 32, 32));
        let out = net.forward(input.traced(grads.take().expect("grads")), Mode::Train);
        let logits = out.into_outputs().logits;
        let loss = kd_losses::compute(LossInputs::new(y.clone(), logits), |x| {
            kd_losses::methods::ce::terms(&ce, x)
        })?;
        let value = loss.total_value();
        let mut g = loss.total.backward();
        opt.update(&mut net, &mut g, 0.1)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        net.zero_grads(&mut g);
        grads = Some(g);
        Ok(value)
    };
    for _ in 0..args.warmup {
        step()?;
    }
    kd_ops::generic::host::take();
    let t = Instant::now();
    for _ in 0..args.steps {
        step()?;
    }
    let secs = t.elapsed().as_secs_f64();
    let cost = kd_ops::generic::host::take();
    let generic = !cpu || kd_ops::generic_on_cpu();
    Ok(Measured {
        images_per_s: (b * args.steps) as f64 / secs,
        ms_per_step: 1e3 * secs / args.steps as f64,
        peak_mb: if cpu {
            super::proc_kb("VmHWM:").map(|kb| kb / 1024.0)
        } else {
            kd_train::device::gpu_used_mb()
                .zip(gpu_base)
                .map(|(now, base)| now - base)
        },
        params,
        host: generic.then(|| kd_ops::generic::host::HostCost {
            host_ms: cost.host_ms / args.steps as f64,
            uploaded_bytes: cost.uploaded_bytes / args.steps as u64,
        }),
    })
}

fn run_torch(python: &std::path::Path, arch: &str, args: &Args) -> Result<Measured> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/models_torch.py");
    let t = args.threads.to_string();
    let out = Command::new(python)
        .arg(&script)
        .args(["--arch", arch, "--threads", &t])
        .args([
            "--batch",
            &args.batch.to_string(),
            "--classes",
            &CLASSES.to_string(),
        ])
        .args([
            "--steps",
            &args.steps.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .args(["--device", &args.device])
        .env("OMP_NUM_THREADS", &t)
        .env("MKL_NUM_THREADS", &t)
        .envs(kd_ops::KEEP_LARGE_ALLOCATIONS_ENV.iter().copied())
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value =
        serde_json::from_slice(&out.stdout).context("parsing the torch script's JSON")?;
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    Ok(Measured {
        images_per_s: f("images_per_s").context("images_per_s")?,
        ms_per_step: f("ms_per_step").context("ms_per_step")?,
        peak_mb: f("peak_mb"),
        params: f("params").unwrap_or(0.0) as usize,
        host: None,
    })
}

/// Our side on the device `args` names.
fn ours(arch: &str, args: &Args) -> Result<Measured> {
    match args.device.as_str() {
        "cpu" => {
            let pool = kd_ops::rayon::ThreadPoolBuilder::new()
                .num_threads(args.threads)
                .build()?;
            pool.install(|| {
                run_ours(
                    <Cpu as kd_train::device::TrainDevice>::create(0)?,
                    arch,
                    args,
                )
            })
        }
        #[cfg(feature = "cuda")]
        "cuda" => run_ours(
            <Cuda as kd_train::device::TrainDevice>::create(0)?,
            arch,
            args,
        ),
        other => anyhow::bail!(kd_train::device::unavailable(other)),
    }
}

pub fn run(args: Args) -> Result<()> {
    kd_ops::keep_large_allocations();
    anyhow::ensure!(
        !(args.generic && args.device != "cpu"),
        "--generic runs the GPU's compositions on the CPU; with --device {} they run anyway",
        args.device
    );
    kd_ops::set_generic_on_cpu(args.generic);
    let python = args.python.clone().unwrap_or_else(super::default_python);
    let torch_ok = !args.no_torch && super::has_torch(&python);
    let gpu = args.device != "cpu";
    let (where_, mem) = if gpu {
        (
            format!("{} (PyTorch on the same GPU)", args.device),
            "GPU MB = device memory in use after the timed steps (ours: driver's used memory \
             less that before the model was built, dfdx's allocation cache included; PyTorch: \
             `torch.cuda.max_memory_allocated`)",
        )
    } else {
        (
            format!(
                "CPU, {} threads{}",
                args.threads,
                if args.generic {
                    ", ours through the device-generic compositions (`--generic`)"
                } else {
                    ""
                }
            ),
            "peak MB = whole-process peak RSS from model construction to the last step \
             (PyTorch's includes libtorch)",
        )
    };
    let host_cols = gpu || args.generic;
    let mut text = format!(
        "# Models: training step (forward, CE, backward, SGD) at batch {}, {where_}\n\n\
         images/s over {} steps after {} warm-up; ratio = ours / torch images/s; {mem}.\n",
        args.batch, args.steps, args.warmup
    );
    if host_cols {
        text.push_str(
            "host ms = time per step our generic ops spend on the host preparing calls \
             (shapes, table lookups) outside dfdx's kernels; uploaded = bytes per step they \
             upload (gather tables, once per geometry, so 0 after the warm-up). Not counted: \
             dfdx's kernels copy their dims and strides (< 200 bytes a launch), and each step \
             uploads its batch.\n",
        );
    }
    text.push_str(
        "\n| arch | params | ours img/s | ours ms/step | torch img/s | torch ms/step | ratio | ours MB | torch MB |",
    );
    text.push_str(if host_cols {
        " host ms/step | uploaded B/step |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    } else {
        "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    });
    let mb = |v: Option<f64>| v.map_or("n/a".to_string(), |m| format!("{m:.0}"));
    for arch in &args.archs {
        let ours = ours(arch, &args)?;
        eprintln!("ours  {arch}: {:.1} images/s", ours.images_per_s);
        let torch = if torch_ok {
            Some(run_torch(&python, arch, &args)?)
        } else {
            None
        };
        if let Some(t) = &torch {
            anyhow::ensure!(
                t.params == ours.params,
                "{arch}: PyTorch model has {} parameters, ours {}",
                t.params,
                ours.params
            );
        }
        let cell = |f: &dyn Fn(&Measured) -> String| torch.as_ref().map_or("n/a".into(), f);
        write!(
            text,
            "| {arch} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
            ours.params,
            ours.images_per_s,
            ours.ms_per_step,
            cell(&|t| format!("{:.1}", t.images_per_s)),
            cell(&|t| format!("{:.1}", t.ms_per_step)),
            cell(&|t| format!("{:.2}", ours.images_per_s / t.images_per_s)),
            mb(ours.peak_mb),
            cell(&|t| mb(t.peak_mb)),
        )?;
        if let Some(h) = ours.host.filter(|_| host_cols) {
            write!(text, " {:.3} | {} |", h.host_ms, h.uploaded_bytes)?;
        }
        text.push('\n');
    }
    if !torch_ok {
        writeln!(
            text,
            "\nPyTorch not run (`--no-torch`, or no torch for `{}`: `python3 -m venv /opt/torchenv && /opt/torchenv/bin/pip install torch`).",
            python.display()
        )?;
    }
    println!("{text}");
    let path = match &args.out {
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
            p.clone()
        }
        None => super::write_report(
            match (gpu, args.generic) {
                (true, _) => "models-cuda",
                (false, true) => "models-generic",
                _ => "models",
            },
            &text,
        )?,
    };
    println!("written to {}", path.display());
    Ok(())
}
