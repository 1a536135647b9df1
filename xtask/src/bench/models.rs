//! `cargo xtask bench models`: training-step throughput (images/s) and peak memory of CIFAR
//! ResNet-20 and ResNet-18 at batch 128 (3×32×32 inputs, 100 classes) for each of `--methods`
//! (`ce`, and `scd`, the main job): the trainer's own step (`kd_train::run::time_steps`: the
//! method's feed and loss, backward, the run's SGD, the loss read back), on the CPU with a rayon
//! pool of `--threads` (2) threads and the trainer's allocator settings; and the same models,
//! losses and step in PyTorch on the same thread count (`bench/models_torch.py`). Peak memory
//! is the process's peak RSS (Linux `VmHWM`, reset through `/proc/self/clear_refs` before the
//! model is built) at the end of the timed steps, the same on both sides (PyTorch's includes
//! libtorch itself). Each row of ours runs in a fresh process (`--row`).

use anyhow::{Context, Result};
use kd_ops::dfdx::prelude::*;
use serde_json::Value;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Architectures to time.
    #[arg(long, value_delimiter = ',', default_value = "resnet20,resnet18")]
    archs: Vec<String>,
    /// Methods whose step to time on each architecture: `ce` and `scd` have a PyTorch twin;
    /// any method without a teacher runs on our side.
    #[arg(long, value_delimiter = ',', default_value = "ce,scd")]
    methods: Vec<String>,
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
    /// Measure each row this many times, alternating our side and PyTorch's, and keep each
    /// side's fastest (the machine's speed drifts by ±20% over minutes).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
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
    /// Measure one row (the first of `--archs` and `--methods`, our side only) and print it as
    /// JSON: the bench runs each row so, in a fresh process, so that no row's peak memory or
    /// allocator state carries into the next.
    #[arg(long, hide = true)]
    row: bool,
    /// Cap both sides' CPU kernels at this instruction set (`avx2` or `avx512`), to compare
    /// them as on a CPU without the wider one: ours through `KD_OPS_ISA` (the direct
    /// convolution kernels), PyTorch's through `ONEDNN_MAX_CPU_ISA` (oneDNN) and
    /// `ATEN_CPU_CAPABILITY` (its own kernels). The `gemm` crate (Winograd's products, 1×1
    /// convolutions, the convolutions left to im2col, linear layers) picks its own: build
    /// without its `x86-v4` feature for a run with no AVX-512 on our side.
    #[arg(long, value_parser = ["avx2", "avx512"])]
    isa: Option<String>,
    /// Write the table here instead of `target/bench/models[-generic|-cuda].md`.
    #[arg(long)]
    out: Option<PathBuf>,
}

const CLASSES: usize = 100;

/// The methods `bench/models_torch.py` implements.
const TORCH_METHODS: [&str; 2] = ["ce", "scd"];

struct Measured {
    images_per_s: f64,
    ms_per_step: f64,
    peak_mb: Option<f64>,
    params: usize,
    /// Host cost per timed step of the generic ops (generic path and GPU only).
    host: Option<kd_ops::generic::host::HostCost>,
}

impl Measured {
    /// The JSON a measurement travels in between processes (`bench/models_torch.py` prints the
    /// same keys, without the host cost).
    fn to_json(&self) -> Value {
        serde_json::json!({
            "images_per_s": self.images_per_s,
            "ms_per_step": self.ms_per_step,
            "peak_mb": self.peak_mb,
            "params": self.params,
            "host_ms": self.host.map(|h| h.host_ms),
            "uploaded_bytes": self.host.map(|h| h.uploaded_bytes),
        })
    }

    fn from_json(bytes: &[u8]) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes)?;
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        Ok(Measured {
            images_per_s: f("images_per_s").context("images_per_s")?,
            ms_per_step: f("ms_per_step").context("ms_per_step")?,
            peak_mb: f("peak_mb"),
            params: f("params").context("params")? as usize,
            host: f("host_ms").map(|host_ms| kd_ops::generic::host::HostCost {
                host_ms,
                uploaded_bytes: f("uploaded_bytes").unwrap_or(0.0) as u64,
            }),
        })
    }
}

/// Times `args.steps` training steps of `method` on `arch` on `dev` after `args.warmup`, through
/// the trainer's step (`kd_train::run::time_steps`).
fn run_ours<D: kd_train::device::TrainDevice>(
    dev: D,
    arch: &str,
    method: &str,
    args: &Args,
) -> Result<Measured> {
    super::reset_peak_rss();
    let cpu = D::DEVICE == kd_train::Device::Cpu;
    let gpu_base = if cpu {
        None
    } else {
        kd_train::device::gpu_used_mb()
    };
    let cfg = kd_train::TrainConfig::for_method(method)?;
    let spec = kd_train::method::Spec {
        arch: arch.to_string(),
        classes: CLASSES,
        channels: 3,
        size: 32,
        students: cfg.student_count(),
    };
    let times = kd_train::run::time_steps(
        dev,
        &cfg,
        &spec,
        args.batch,
        args.warmup,
        args.steps,
        || {
            // Only the timed steps' host cost counts.
            kd_ops::generic::host::take();
        },
    )?;
    let cost = kd_ops::generic::host::take();
    let generic = !cpu || kd_ops::generic_on_cpu();
    Ok(Measured {
        images_per_s: times.images_per_s,
        ms_per_step: times.ms_per_step,
        peak_mb: if cpu {
            super::proc_kb("VmHWM:").map(|kb| kb / 1024.0)
        } else {
            kd_train::device::gpu_used_mb()
                .zip(gpu_base)
                .map(|(now, base)| now - base)
        },
        params: times.params,
        host: generic.then(|| kd_ops::generic::host::HostCost {
            host_ms: cost.host_ms / args.steps as f64,
            uploaded_bytes: cost.uploaded_bytes / args.steps as u64,
        }),
    })
}

fn run_torch(python: &std::path::Path, arch: &str, method: &str, args: &Args) -> Result<Measured> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/models_torch.py");
    let t = args.threads.to_string();
    let out = Command::new(python)
        .arg(&script)
        .args(["--arch", arch, "--method", method, "--threads", &t])
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
        .envs(torch_isa_env(args))
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Measured::from_json(&out.stdout).context("parsing the torch script's JSON")
}

/// The variables that cap PyTorch's CPU kernels at `--isa`.
fn torch_isa_env(args: &Args) -> Vec<(&'static str, &'static str)> {
    match args.isa.as_deref() {
        Some("avx2") => vec![
            ("ONEDNN_MAX_CPU_ISA", "AVX2"),
            ("ATEN_CPU_CAPABILITY", "avx2"),
        ],
        Some(_) => vec![
            ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE"),
            ("ATEN_CPU_CAPABILITY", "avx512"),
        ],
        None => Vec::new(),
    }
}

/// Our side of one row, measured in a fresh process (`--row`).
fn ours_in_child(arch: &str, method: &str, args: &Args) -> Result<Measured> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut cmd = Command::new(&exe);
    cmd.args([
        "bench",
        "models",
        "--row",
        "--archs",
        arch,
        "--methods",
        method,
    ])
    .args(["--threads", &args.threads.to_string()])
    .args(["--batch", &args.batch.to_string()])
    .args(["--steps", &args.steps.to_string()])
    .args(["--warmup", &args.warmup.to_string()])
    .args(["--device", &args.device]);
    if args.generic {
        cmd.arg("--generic");
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{arch} {method}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Measured::from_json(&out.stdout).context("parsing a row's JSON")
}

/// The faster of two measurements (`best` may be absent).
fn faster(best: Option<Measured>, m: Measured) -> Measured {
    match best {
        Some(b) if b.images_per_s >= m.images_per_s => b,
        _ => m,
    }
}

/// Our side on the device `args` names.
fn ours(arch: &str, method: &str, args: &Args) -> Result<Measured> {
    match args.device.as_str() {
        "cpu" => {
            let pool = kd_ops::rayon::ThreadPoolBuilder::new()
                .num_threads(args.threads)
                .build()?;
            pool.install(|| {
                run_ours(
                    <Cpu as kd_train::device::TrainDevice>::create(0)?,
                    arch,
                    method,
                    args,
                )
            })
        }
        #[cfg(feature = "cuda")]
        "cuda" => run_ours(
            <Cuda as kd_train::device::TrainDevice>::create(0)?,
            arch,
            method,
            args,
        ),
        other => anyhow::bail!(kd_train::device::unavailable(other)),
    }
}

pub fn run(args: Args) -> Result<()> {
    kd_ops::keep_large_allocations();
    if let Some(isa) = &args.isa {
        // Before anything reads it; the rows' processes inherit it.
        std::env::set_var(kd_ops::ISA_ENV, isa);
    }
    anyhow::ensure!(
        !(args.generic && args.device != "cpu"),
        "--generic runs the GPU's compositions on the CPU; with --device {} they run anyway",
        args.device
    );
    kd_ops::set_generic_on_cpu(args.generic);
    if args.row {
        let (arch, method) = (args.archs.first(), args.methods.first());
        let (arch, method) = arch
            .zip(method)
            .context("--row needs an arch and a method")?;
        println!("{}", ours(arch, method, &args)?.to_json());
        return Ok(());
    }
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
        "# Models: training step (forward, loss, backward, SGD) at batch {}, {where_}\n\n\
         images/s over {} steps after {} warm-up, the fastest of {} runs per side (ours and \
         PyTorch's alternating); ratio = ours / torch images/s; {mem}.\n",
        args.batch,
        args.steps,
        args.warmup,
        args.repeat.max(1)
    );
    if !gpu {
        writeln!(
            text,
            "\nCPU: {}; our direct convolution kernels: {} (`{}` caps them).",
            super::cpu_model(),
            kd_ops::conv_isa(),
            kd_ops::ISA_ENV
        )?;
        if let Some(isa) = &args.isa {
            let caps: Vec<String> = torch_isa_env(&args)
                .iter()
                .map(|(k, v)| format!("`{k}={v}`"))
                .collect();
            writeln!(
                text,
                "`--isa {isa}`: PyTorch capped with {}; the `gemm` crate on our side (Winograd's \
                 products, 1×1 and im2col convolutions) is not capped.",
                caps.join(" and ")
            )?;
        }
    }
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
        "\n| arch | method | params | ours img/s | ours ms/step | torch img/s | torch ms/step | ratio | ours MB | torch MB |",
    );
    text.push_str(if host_cols {
        " host ms/step | uploaded B/step |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    } else {
        "\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    });
    let mb = |v: Option<f64>| v.map_or("n/a".to_string(), |m| format!("{m:.0}"));
    let rows = args
        .archs
        .iter()
        .flat_map(|a| args.methods.iter().map(move |m| (a, m)));
    for (arch, method) in rows {
        let with_torch = torch_ok && TORCH_METHODS.contains(&method.as_str());
        let (mut ours_best, mut torch_best) = (None::<Measured>, None::<Measured>);
        for _ in 0..args.repeat.max(1) {
            let o = ours_in_child(arch, method, &args)?;
            eprintln!("ours  {arch} {method}: {:.1} images/s", o.images_per_s);
            ours_best = Some(faster(ours_best, o));
            if with_torch {
                let t = run_torch(&python, arch, method, &args)?;
                eprintln!("torch {arch} {method}: {:.1} images/s", t.images_per_s);
                torch_best = Some(faster(torch_best, t));
            }
        }
        let (ours, torch) = (ours_best.expect("at least one run"), torch_best);
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
            "| {arch} | {method} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
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
