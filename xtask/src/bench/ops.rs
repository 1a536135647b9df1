//! `cargo xtask bench ops`: forward+backward milliseconds per op at batch 128 for the conv
//! shapes of CIFAR ResNet-20/ResNet-18, pooling, upsampling, fused BatchNorm+ReLU and the
//! residual add+ReLU, on a rayon pool of `--threads` (2) threads, against the same ops in
//! PyTorch on the same thread count (`bench/ops_torch.py`, given the case list as JSON on
//! stdin). Each run feeds a
//! fixed output gradient (`out.backward(g)` in PyTorch) and computes every input and parameter
//! gradient; the best of the runs is reported on both sides. Peak memory is the growth of the process's peak RSS over one run (Linux
//! `VmHWM`, reset through `/proc/self/clear_refs`), measured the same way on both sides.

use super::{default_python, has_torch, peak_mb};
use anyhow::{Context, Result};
use kd_ops::dfdx::prelude::*;
use kd_ops::{BatchNormCfg, Conv2dCfg, Pool2dCfg, Shape4};
use serde_json::{json, Value};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Python interpreter with torch (default: /opt/torchenv/bin/python3 if present, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Threads for both sides (rayon pool here, torch.set_num_threads there).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed runs per op (the best is reported), after one warm-up run.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Only cases whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Skip PyTorch.
    #[arg(long)]
    no_torch: bool,
    /// Leave glibc's malloc at its defaults (by default both sides keep large blocks on the
    /// heap instead of fresh `mmap`s, which would page-fault on every step; see
    /// `kd_ops::keep_large_allocations`).
    #[arg(long)]
    default_malloc: bool,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Conv {
        cin: usize,
        cout: usize,
        hw: usize,
        k: usize,
        stride: usize,
        padding: usize,
    },
    BnRelu {
        c: usize,
        hw: usize,
    },
    MaxPool {
        c: usize,
        hw: usize,
        k: usize,
        stride: usize,
        padding: usize,
    },
    AvgPool {
        c: usize,
        hw: usize,
        k: usize,
        stride: usize,
        padding: usize,
    },
    Adaptive {
        c: usize,
        hw: usize,
        out: usize,
    },
    Upsample {
        c: usize,
        hw: usize,
    },
    AddRelu {
        c: usize,
        hw: usize,
    },
}

fn cases() -> Vec<(String, Op)> {
    let conv = |cin, cout, hw, k, stride, padding| Op::Conv {
        cin,
        cout,
        hw,
        k,
        stride,
        padding,
    };
    let mut v = vec![
        ("conv3x3 16→16 @32".to_string(), conv(16, 16, 32, 3, 1, 1)),
        ("conv3x3 16→32 s2 @32".into(), conv(16, 32, 32, 3, 2, 1)),
        (
            "conv1x1 16→32 s2 @32 (proj)".into(),
            conv(16, 32, 32, 1, 2, 0),
        ),
        ("conv3x3 32→32 @16".into(), conv(32, 32, 16, 3, 1, 1)),
        ("conv3x3 64→64 @8".into(), conv(64, 64, 8, 3, 1, 1)),
        ("conv3x3 64→64 @32".into(), conv(64, 64, 32, 3, 1, 1)),
        ("conv3x3 64→128 s2 @32".into(), conv(64, 128, 32, 3, 2, 1)),
        ("conv3x3 128→128 @16".into(), conv(128, 128, 16, 3, 1, 1)),
        ("conv3x3 128→256 s2 @16".into(), conv(128, 256, 16, 3, 2, 1)),
        ("conv3x3 256→256 @8".into(), conv(256, 256, 8, 3, 1, 1)),
        ("conv3x3 256→512 s2 @8".into(), conv(256, 512, 8, 3, 2, 1)),
        (
            "conv1x1 128→256 s2 @16 (proj)".into(),
            conv(128, 256, 16, 1, 2, 0),
        ),
        ("conv3x3 512→512 @4".into(), conv(512, 512, 4, 3, 1, 1)),
        ("conv1x1 64→64 @32".into(), conv(64, 64, 32, 1, 1, 0)),
    ];
    v.extend([
        (
            "max_pool 3x3 s2 p1 64@32".into(),
            Op::MaxPool {
                c: 64,
                hw: 32,
                k: 3,
                stride: 2,
                padding: 1,
            },
        ),
        (
            "avg_pool 2x2 s2 64@32".into(),
            Op::AvgPool {
                c: 64,
                hw: 32,
                k: 2,
                stride: 2,
                padding: 0,
            },
        ),
        (
            "adaptive_avg →1x1 64@8".into(),
            Op::Adaptive {
                c: 64,
                hw: 8,
                out: 1,
            },
        ),
        (
            "adaptive_avg →1x1 512@4".into(),
            Op::Adaptive {
                c: 512,
                hw: 4,
                out: 1,
            },
        ),
        (
            "upsample_bilinear2x 64@16".into(),
            Op::Upsample { c: 64, hw: 16 },
        ),
        ("bn+relu 16@32".into(), Op::BnRelu { c: 16, hw: 32 }),
        ("bn+relu 64@32".into(), Op::BnRelu { c: 64, hw: 32 }),
        ("bn+relu 64@8".into(), Op::BnRelu { c: 64, hw: 8 }),
        ("bn+relu 512@4".into(), Op::BnRelu { c: 512, hw: 4 }),
        ("add+relu 64@32".into(), Op::AddRelu { c: 64, hw: 32 }),
    ]);
    v
}

impl Op {
    fn spec(&self, name: &str, n: usize) -> Value {
        match *self {
            Op::Conv {
                cin,
                cout,
                hw,
                k,
                stride,
                padding,
            } => {
                json!({"name": name, "op": "conv2d", "x": [n, cin, hw, hw], "cout": cout, "k": k, "stride": stride, "padding": padding})
            }
            Op::BnRelu { c, hw } => json!({"name": name, "op": "bn_relu", "x": [n, c, hw, hw]}),
            Op::MaxPool {
                c,
                hw,
                k,
                stride,
                padding,
            } => {
                json!({"name": name, "op": "max_pool2d", "x": [n, c, hw, hw], "k": k, "stride": stride, "padding": padding})
            }
            Op::AvgPool {
                c,
                hw,
                k,
                stride,
                padding,
            } => {
                json!({"name": name, "op": "avg_pool2d", "x": [n, c, hw, hw], "k": k, "stride": stride, "padding": padding})
            }
            Op::Adaptive { c, hw, out } => {
                json!({"name": name, "op": "adaptive_avg_pool2d", "x": [n, c, hw, hw], "out": out})
            }
            Op::Upsample { c, hw } => {
                json!({"name": name, "op": "upsample_bilinear2x", "x": [n, c, hw, hw]})
            }
            Op::AddRelu { c, hw } => json!({"name": name, "op": "add_relu", "x": [n, c, hw, hw]}),
        }
    }
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

type Traced = Tensor<Shape4, f32, Cpu, OwnedTape<f32, Cpu>>;

/// A scalar whose backward writes `g` as the gradient of `out` (PyTorch's `out.backward(g)`).
fn seed_grad(out: Traced, g: Arc<Vec<f32>>) -> Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>> {
    let (out, mut tape) = out.split_tape();
    let scalar = out.device().zeros::<Rank0>();
    tape.add_backward_op(move |grads| {
        grads.get_or_alloc_mut(&out)?.copy_from_slice(&g);
        Ok(())
    });
    scalar.put_tape(tape)
}

/// Best (minimum) ms of `iters` runs after one warm-up — robust to other processes on a shared
/// machine — and the peak memory of one more run.
fn time(iters: usize, f: &mut dyn FnMut()) -> (f64, Option<f64>) {
    f();
    let mut ms: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let mem = peak_mb(f);
    (ms[0], mem)
}

fn run_ours(op: Op, n: usize, iters: usize) -> (f64, Option<f64>) {
    let dev = Cpu::default();
    let x4 = |c: usize, hw: usize, seed: u64| {
        dev.tensor_from_vec(values(n * c * hw * hw, seed), (n, c, hw, hw))
    };
    // The output gradient is made once per shape, outside the timed runs.
    let g_cache: std::cell::RefCell<Option<Arc<Vec<f32>>>> = Default::default();
    let run = |f: &mut dyn FnMut() -> Traced| {
        let out = f();
        let len = out.shape().num_elements();
        let g = g_cache
            .borrow_mut()
            .get_or_insert_with(|| Arc::new(values(len, 99)))
            .clone();
        let grads = seed_grad(out, g).backward();
        std::hint::black_box(grads);
    };
    match op {
        Op::Conv {
            cin,
            cout,
            hw,
            k,
            stride,
            padding,
        } => {
            let x = x4(cin, hw, 1);
            let w = dev.tensor_from_vec(
                values(cout * cin * k * k, 2)
                    .iter()
                    .map(|v| v * 0.1)
                    .collect(),
                (cout, cin, k, k),
            );
            let cfg = Conv2dCfg::new(stride, padding);
            time(iters, &mut || {
                run(&mut || kd_ops::conv2d(x.leaky_trace(), &w, None, cfg))
            })
        }
        Op::BnRelu { c, hw } => {
            let x = x4(c, hw, 1);
            let (w, b) = (
                dev.tensor_from_vec(vec![1.0; c], (c,)),
                dev.tensor_from_vec(vec![0.0; c], (c,)),
            );
            let (mut rm, mut rv) = (
                dev.tensor_from_vec(vec![0.0; c], (c,)),
                dev.tensor_from_vec(vec![1.0; c], (c,)),
            );
            let cfg = BatchNormCfg::with_relu(true);
            time(iters, &mut || {
                run(&mut || {
                    kd_ops::batch_norm2d_train(x.leaky_trace(), &w, &b, &mut rm, &mut rv, cfg)
                })
            })
        }
        Op::MaxPool {
            c,
            hw,
            k,
            stride,
            padding,
        } => {
            let x = x4(c, hw, 1);
            let cfg = Pool2dCfg::new(k, stride, padding);
            time(iters, &mut || {
                run(&mut || kd_ops::max_pool2d(x.leaky_trace(), cfg))
            })
        }
        Op::AvgPool {
            c,
            hw,
            k,
            stride,
            padding,
        } => {
            let x = x4(c, hw, 1);
            let cfg = Pool2dCfg::new(k, stride, padding);
            time(iters, &mut || {
                run(&mut || kd_ops::avg_pool2d(x.leaky_trace(), cfg))
            })
        }
        Op::Adaptive { c, hw, out } => {
            let x = x4(c, hw, 1);
            time(iters, &mut || {
                run(&mut || kd_ops::adaptive_avg_pool2d(x.leaky_trace(), (out, out)))
            })
        }
        Op::Upsample { c, hw } => {
            let x = x4(c, hw, 1);
            time(iters, &mut || {
                run(&mut || kd_ops::upsample_bilinear2x(x.leaky_trace()))
            })
        }
        Op::AddRelu { c, hw } => {
            let (a, b) = (x4(c, hw, 1), x4(c, hw, 2));
            time(iters, &mut || {
                run(&mut || {
                    let ta = a.leaky_trace();
                    let tb = b.retaped::<OwnedTape<f32, Cpu>>();
                    kd_ops::add_relu(ta, tb)
                })
            })
        }
    }
}

/// Runs `bench/ops_torch.py` on the case list; returns `name → (ms, peak MB)`.
fn run_torch(
    python: &Path,
    specs: &[Value],
    args: &Args,
) -> Result<serde_json::Map<String, Value>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/ops_torch.py");
    let t = args.threads.to_string();
    let mut child = Command::new(python)
        .arg(&script)
        .args(["--threads", &t, "--iters", &args.iters.to_string()])
        .env("OMP_NUM_THREADS", &t)
        .env("MKL_NUM_THREADS", &t)
        .envs(
            kd_ops::KEEP_LARGE_ALLOCATIONS_ENV
                .iter()
                .copied()
                .filter(|_| !args.default_malloc),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().context("torch stdin")?;
        stdin.write_all(serde_json::to_string(specs)?.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed ({})",
        script.display(),
        out.status
    );
    let v: Value =
        serde_json::from_slice(&out.stdout).context("parsing the torch script's JSON output")?;
    Ok(v.get("results")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default())
}

pub fn run(args: Args) -> Result<()> {
    let n = args.batch;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "n/a".into());
    let malloc_note = if args.default_malloc {
        "glibc malloc at its defaults on both sides."
    } else if kd_ops::keep_large_allocations() {
        "Both processes keep large blocks on the heap (glibc `M_MMAP_MAX=0`, `M_TRIM_THRESHOLD=2^31-1`; `--default-malloc` turns this off)."
    } else {
        "glibc malloc tuning unavailable here; allocator defaults."
    };
    let selected: Vec<(String, Op)> = cases()
        .into_iter()
        .filter(|(name, _)| {
            args.filter
                .as_ref()
                .is_none_or(|f| name.contains(f.as_str()))
        })
        .collect();
    let pool = kd_ops::rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let mut ours = Vec::new();
    for (name, op) in &selected {
        let (ms, mem) = pool.install(|| run_ours(*op, n, args.iters));
        eprintln!("ours  {name:<34} {ms:9.2} ms");
        ours.push((ms, mem));
    }

    let python = args.python.clone().unwrap_or_else(default_python);
    let mut torch = serde_json::Map::new();
    let mut torch_note = String::new();
    if args.no_torch {
        torch_note = "PyTorch skipped (--no-torch).".into();
    } else if !has_torch(&python) {
        torch_note = format!(
            "PyTorch not found for `{}`; install it with `python3 -m venv /opt/torchenv && /opt/torchenv/bin/pip install torch` (or pass --python).",
            python.display()
        );
    } else {
        let specs: Vec<Value> = selected.iter().map(|(name, op)| op.spec(name, n)).collect();
        torch = run_torch(&python, &specs, &args)?;
    }

    let mut text = format!(
        "# Ops: forward+backward at batch {n}, {} threads\n\nms per op (best of {} runs; 1-min load average before the run: {load}); ratio = torch ms / ours ms (≥ 1: we are faster). \
         Peak MB: rise of the process peak RSS over one run (with the heap kept, reused memory does not show; run with `--default-malloc` to see fresh allocations). {malloc_note}\n\n\
         | op | ours ms | torch ms | ratio | ours peak MB | torch peak MB |\n|---|---:|---:|---:|---:|---:|\n",
        args.threads, args.iters
    );
    let fmt_mb = |v: Option<f64>| v.map_or("n/a".to_string(), |m| format!("{m:.0}"));
    for ((name, _), (ms, mem)) in selected.iter().zip(&ours) {
        let t = torch.get(name);
        let tms = t.and_then(|t| t.get("ms")).and_then(Value::as_f64);
        let tmem = t.and_then(|t| t.get("peak_mb")).and_then(Value::as_f64);
        let ratio = tms.map_or("n/a".to_string(), |t| format!("{:.2}", t / ms));
        let tms = tms.map_or("n/a".to_string(), |t| format!("{t:.2}"));
        writeln!(
            text,
            "| {name} | {ms:.2} | {tms} | {ratio} | {} | {} |",
            fmt_mb(*mem),
            fmt_mb(tmem)
        )?;
    }
    if !torch_note.is_empty() {
        writeln!(text, "\n{torch_note}")?;
    }
    println!("{text}");
    let path = super::write_report("ops", &text)?;
    println!("written to {}", path.display());
    Ok(())
}
