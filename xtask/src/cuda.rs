//! The CUDA build: `--device cuda` from a CPU-only binary rebuilds with the `cuda` feature when
//! a toolkit is present ([`reexec_with_cuda`]), and `cargo xtask bundle-cuda --compute-cap 90
//! --out DIR` builds a relocatable GPU bundle on a machine without a GPU ([`bundle`]).
//!
//! dfdx 0.13's build script asks `nvidia-smi` for the compute capability (a shim answers it
//! here), and the binary keeps two build-machine paths for the kernels it compiles at run time:
//! `$CUDA_ROOT/include` and dfdx's build `OUT_DIR` (its `*.cuh` headers). The bundle carries the
//! headers and a `run.sh` that recreates both paths (as links) and sets the library path; see
//! `docs/cuda.md` and `../shared/gpu/RUNBOOK.md`.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
fn workspace() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// The CUDA toolkit root: `$CUDA_ROOT`, `$CUDA_PATH`, else `/usr/local/cuda`.
/// Made absolute: dfdx bakes `<root>/include` into the binary, and the bundle recreates it.
fn cuda_root(given: Option<&Path>) -> PathBuf {
    let root = given
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CUDA_ROOT").map(PathBuf::from))
        .or_else(|| std::env::var_os("CUDA_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/usr/local/cuda"));
    std::path::absolute(&root).unwrap_or(root)
}

fn on_path(exe: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(exe).is_file()))
}

/// What building the CUDA version lacks on this machine (empty: nothing).
fn missing_toolkit(root: &Path, need_smi: bool) -> Vec<String> {
    let mut missing = Vec::new();
    if !root.join("bin/nvcc").is_file() && !on_path("nvcc") {
        missing.push(format!(
            "nvcc (not in {}/bin nor on PATH; set CUDA_ROOT)",
            root.display()
        ));
    }
    if !root.join("include/cuda.h").is_file() {
        missing.push(format!("{}/include/cuda.h (CUDA headers)", root.display()));
    }
    if need_smi && !on_path("nvidia-smi") {
        missing.push(
            "nvidia-smi (dfdx's build asks it for the compute capability; `cargo xtask \
             bundle-cuda --compute-cap N` answers it itself)"
                .into(),
        );
    }
    missing
}

const SETUP_HINT: &str = "A CUDA toolkit can be assembled from PyPI wheels with `bash \
                          ../shared/gpu/setup-cuda-toolchain.sh && source \
                          ~/.cache/kd-cuda13/env.sh`";

/// Runs this command again from a build with the `cuda` feature (`target/cuda`), or says what
/// is missing to build one.
pub fn reexec_with_cuda() -> Result<()> {
    let root = cuda_root(None);
    let missing = missing_toolkit(&root, true);
    if !missing.is_empty() {
        bail!(
            "--device cuda needs the CUDA build of this runner, and building it needs: {}. {}; \
             or build a GPU bundle on any machine with `cargo xtask bundle-cuda --compute-cap 90 \
             --out DIR` (docs/cuda.md)",
            missing.join("; "),
            SETUP_HINT
        );
    }
    let target = workspace().join("target/cuda");
    log::info!(
        "this runner was built without CUDA: building and running the CUDA version \
         (--features cuda, target dir {})",
        target.display()
    );
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace())
        .env("CUDA_ROOT", &root)
        .env("CUDA_PATH", &root)
        .args(["run", "--release", "-p", "xtask", "--features", "cuda"])
        .arg("--target-dir")
        .arg(&target)
        .arg("--")
        .args(std::env::args_os().skip(1))
        .status()
        .context("running cargo")?;
    std::process::exit(status.code().unwrap_or(1));
}

#[derive(clap::Args)]
pub struct BundleArgs {
    /// The GPU's compute capability without the dot (90: H100/H200, 80: A100, 86: RTX 30xx).
    #[arg(long)]
    compute_cap: u32,
    /// The bundle folder to write (created; must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// The CUDA toolkit [default: $CUDA_ROOT, $CUDA_PATH, /usr/local/cuda].
    #[arg(long)]
    cuda_root: Option<PathBuf>,
    /// Datasets to carry (fetched folders under the datasets folder), e.g. fashion-mnist.
    #[arg(long = "data", value_name = "NAME")]
    data: Vec<String>,
    /// Skip loading the bundled binary with the toolkit's libcuda stub afterwards.
    #[arg(long)]
    no_verify: bool,
    /// Also build kd-ops's GPU-against-CPU test (`crates/ops/tests/cuda.rs`) into `tests/`
    /// (`bench/gpu_acceptance.sh` runs it).
    #[arg(long)]
    with_tests: bool,
}

/// Every occurrence in `bytes` of a path starting with `prefix`, up to the first byte that
/// cannot be part of a path.
fn baked_paths(bytes: &[u8], prefix: &str) -> Vec<String> {
    let p = prefix.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(off) = bytes[i..].windows(p.len()).position(|w| w == p) {
        let start = i + off;
        let end = bytes[start..]
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b"/._-+".contains(&b)))
            .map_or(bytes.len(), |e| start + e);
        let s = String::from_utf8_lossy(&bytes[start..end]).into_owned();
        if !out.contains(&s) {
            out.push(s);
        }
        i = end.max(start + 1);
    }
    out
}

/// `cargo xtask bundle-cuda`.
pub fn bundle(args: BundleArgs) -> Result<()> {
    let root = cuda_root(args.cuda_root.as_deref());
    let missing = missing_toolkit(&root, false);
    if !missing.is_empty() {
        bail!(
            "bundle-cuda needs a CUDA toolkit: missing {}. {SETUP_HINT}",
            missing.join("; ")
        );
    }
    if args.out.exists()
        && std::fs::read_dir(&args.out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("--out {}: exists and is not empty", args.out.display());
    }
    let ws = workspace();
    let target = ws.join("target/cuda");
    // 1. A stand-in nvidia-smi answering dfdx's build-time query.
    let shim = target.join("shim");
    std::fs::create_dir_all(&shim)?;
    let cap = format!("{}.{}", args.compute_cap / 10, args.compute_cap % 10);
    let smi = shim.join("nvidia-smi");
    std::fs::write(
        &smi,
        format!(
            "#!/bin/sh\n# build-time stand-in written by cargo xtask bundle-cuda: answers \
             `nvidia-smi --query-gpu=compute_cap --format=csv`\nprintf 'compute_cap\\n{cap}\\n'\n"
        ),
    )?;
    set_executable(&smi)?;
    // 2. The release build with the `cuda` feature.
    let path = std::env::join_paths([shim.clone(), root.join("bin")].into_iter().chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let stubs = root.join("lib64/stubs");
    let library_path =
        std::env::join_paths([stubs.clone(), root.join("lib64")].into_iter().chain(
            std::env::split_paths(&std::env::var_os("LIBRARY_PATH").unwrap_or_default()),
        ))?;
    log::info!(
        "building the CUDA runner for sm_{} with {} (target dir {})",
        args.compute_cap,
        root.display(),
        target.display()
    );
    let cap = args.compute_cap.to_string();
    let cargo = |cargo_args: &[&str]| {
        let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.current_dir(&ws)
            .env("PATH", &path)
            .env("CUDA_ROOT", &root)
            .env("CUDA_PATH", &root)
            .env("CUDA_COMPUTE_CAP", &cap)
            .env("LIBRARY_PATH", &library_path)
            .args(cargo_args)
            .arg("--target-dir")
            .arg(&target);
        c
    };
    let status = cargo(&["build", "--release", "-p", "xtask", "--features", "cuda"])
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the CUDA build failed (see cargo's output above)");
    }
    let tests = if args.with_tests {
        let out = cargo(&[
            "test",
            "--release",
            "-p",
            "kd-ops",
            "--features",
            "cuda",
            "--test",
            "cuda",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo")?;
        if !out.status.success() {
            bail!("building kd-ops's CUDA test failed (see cargo's output above)");
        }
        test_executables(&String::from_utf8_lossy(&out.stdout))
    } else {
        Vec::new()
    };
    let bin = target.join("release/xtask");
    let bytes = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    // 3. The paths dfdx baked in: its OUT_DIR (kernel headers) and the CUDA include folder.
    let build_prefix = format!("{}/release/build/dfdx-", target.display());
    let out_dirs: Vec<String> = baked_paths(&bytes, &build_prefix)
        .into_iter()
        .map(|p| match p[build_prefix.len()..].find("/out") {
            Some(i) => p[..build_prefix.len() + i + 4].to_string(),
            None => p,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|p| Path::new(p).is_dir())
        .collect();
    let [out_dir] = out_dirs.as_slice() else {
        bail!("expected one dfdx OUT_DIR under {build_prefix}* in the binary, found {out_dirs:?}");
    };
    // Baked strings can sit back to back, so the include folder is looked up as a whole.
    let wanted = format!("{}/include", root.display());
    if !bytes.windows(wanted.len()).any(|w| w == wanted.as_bytes()) {
        bail!(
            "the CUDA binary does not name {wanted}, where dfdx's run-time kernel compiler looks \
             for CUDA headers: the bundle could not restore it (did dfdx's build change?)"
        );
    }
    let include = wanted;
    // 4. The bundle.
    let out = &args.out;
    std::fs::create_dir_all(out.join("bin"))?;
    std::fs::create_dir_all(out.join("kernels"))?;
    std::fs::copy(&bin, out.join("bin/xtask"))?;
    // Without debug info the binary is about 19 MB instead of 100 (bundles travel).
    match Command::new("strip")
        .arg("--strip-debug")
        .arg(out.join("bin/xtask"))
        .status()
    {
        Ok(s) if s.success() => {}
        _ => log::warn!("`strip --strip-debug` failed: the bundle keeps the debug info"),
    }
    let mut headers = 0;
    for e in std::fs::read_dir(out_dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "cuh" || x == "h") {
            std::fs::copy(&p, out.join("kernels").join(p.file_name().expect("a file")))?;
            headers += 1;
        }
    }
    for name in &args.data {
        let src = crate::fetch::datasets_dir().join(name);
        if !src.join("VERIFIED.json").is_file() {
            bail!(
                "--data {name}: {} is not a fetched dataset (run `cargo xtask fetch-data {name}`)",
                src.display()
            );
        }
        let dst = out.join("datasets").join(name);
        std::fs::create_dir_all(&dst)?;
        for e in std::fs::read_dir(&src)? {
            let p = e?.path();
            if p.is_file() {
                std::fs::copy(&p, dst.join(p.file_name().expect("a file")))?;
            }
        }
    }
    if !tests.is_empty() {
        std::fs::create_dir_all(out.join("tests"))?;
        for t in &tests {
            let dst = out.join("tests").join(format!(
                "kd-ops-{}",
                t.file_name().and_then(|f| f.to_str()).unwrap_or("test")
            ));
            std::fs::copy(t, &dst)?;
            let _ = Command::new("strip")
                .arg("--strip-debug")
                .arg(&dst)
                .status();
        }
    }
    std::fs::write(out.join("run.sh"), run_script(out_dir, &include))?;
    set_executable(&out.join("run.sh"))?;
    std::fs::write(
        out.join("BUNDLE.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "compute_cap": args.compute_cap,
            "cuda_root": root,
            "baked_out_dir": out_dir,
            "baked_cuda_include": include,
            "kernel_headers": headers,
            "datasets": args.data,
            "needs": ["libcuda.so.1 (driver)", "libcublas.so.13", "libcublasLt.so.13",
                      "libnvrtc.so.13", "glibc >= 2.34"],
        }))?,
    )?;
    log::info!(
        "bundle written to {}: bin/xtask, {headers} kernel headers, run.sh (baked: {out_dir}, \
         {include})",
        out.display(),
    );
    if !args.no_verify {
        verify_with_stub(out, &root)?;
    }
    println!("{}", out.display());
    Ok(())
}

/// The test executables in cargo's `--message-format=json` output.
fn test_executables(json_lines: &str) -> Vec<PathBuf> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["profile"]["test"].as_bool() == Some(true))
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .collect()
}

fn set_executable(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", p.display()))
}

/// The bundle's `run.sh`: recreates the baked paths as links, finds the CUDA 13 libraries,
/// sets `KD_DATASETS`/`KD_RUNS`, runs the binary with the arguments given.
fn run_script(out_dir: &str, include: &str) -> String {
    format!(
        r#"#!/bin/sh
# kd GPU bundle (cargo xtask bundle-cuda). Usage: ./run.sh train scd --device cuda ...
# dfdx compiles some kernels at run time and looks for headers at two paths of the build
# machine, which this script recreates as links: its OUT_DIR (kernels/ here) and the CUDA
# include folder. Libraries and headers: $KD_CUDA_LIB and $KD_CUDA_INCLUDE, else a Python
# venv's nvidia/cu13 (as torch for CUDA 13 installs), else $CUDA_HOME (default /usr/local/cuda).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BAKED_OUT_DIR='{out_dir}'
BAKED_CUDA_INCLUDE='{include}'
CU=""
for d in /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13 \
         /opt/*/lib/python3*/site-packages/nvidia/cu13 "${{CUDA_HOME:-/usr/local/cuda}}"; do
  if [ -d "$d/lib" ] || [ -d "$d/lib64" ]; then CU=$d; break; fi
done
LIB=${{KD_CUDA_LIB:-$CU/lib}}
[ -d "$LIB" ] || LIB=$CU/lib64
INC=${{KD_CUDA_INCLUDE:-$CU/include}}
link() {{
  # make $2 point at $1 unless something is already there
  if [ ! -e "$2" ]; then
    mkdir -p "$(dirname "$2")" && ln -sfn "$1" "$2" || {{
      echo "run.sh: cannot create $2 (dfdx reads kernel headers there); run as a user who can" >&2
      exit 1
    }}
  fi
}}
link "$HERE/kernels" "$BAKED_OUT_DIR"
if [ -n "$BAKED_CUDA_INCLUDE" ] && [ -d "$INC" ]; then link "$INC" "$BAKED_CUDA_INCLUDE"; fi
export LD_LIBRARY_PATH="$LIB${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"
export KD_DATASETS="${{KD_DATASETS:-$HERE/datasets}}"
export KD_RUNS="${{KD_RUNS:-$PWD/runs}}"
exec "$HERE/bin/xtask" "$@"
"#
    )
}

/// Loads the bundled binary with the toolkit's link-time `libcuda` stub and asks it for a CUDA
/// run: it must get as far as creating the device and stop there with the device error (not a
/// missing library or symbol, not a panic).
fn verify_with_stub(out: &Path, root: &Path) -> Result<()> {
    let stub = root.join("lib64/stubs/libcuda.so");
    if !stub.is_file() {
        log::warn!("no libcuda stub at {}: bundle not verified", stub.display());
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    std::os::unix::fs::symlink(&stub, dir.path().join("libcuda.so.1"))?;
    let cublas = std::fs::canonicalize(root.join("lib64/libcublas.so"))
        .or_else(|_| std::fs::canonicalize(root.join("lib64/libcublas.so.13")))
        .map_err(|e| anyhow!("finding the toolkit's libcublas: {e}"))?;
    let lib = cublas.parent().expect("a folder").to_path_buf();
    let o = Command::new(out.join("run.sh"))
        .args([
            "train",
            "ce",
            "--device",
            "cuda",
            "--dataset",
            "fashion-mnist",
            "--no-progress",
        ])
        .env("KD_CUDA_LIB", &lib)
        .env("LD_LIBRARY_PATH", dir.path())
        .env("KD_RUNS", dir.path().join("runs"))
        .output()
        .context("running the bundle")?;
    let err = String::from_utf8_lossy(&o.stderr);
    let ok = !o.status.success()
        && err.contains("creating the CUDA device")
        && !err.contains("panicked")
        && !err.contains("symbol lookup error")
        && !err.contains("error while loading shared libraries");
    if !ok {
        bail!(
            "the bundled binary did not stop cleanly at device creation with the libcuda stub \
             (exit {:?}):\n{err}",
            o.status.code()
        );
    }
    let line = err
        .lines()
        .find(|l| l.contains("creating the CUDA device"))
        .unwrap_or_default();
    log::info!("verified with the libcuda stub: loads, links and stops at device creation: {line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_baked_paths() {
        let bytes = b"\0xx/t/cuda/release/build/dfdx-ab12/out/unary.cuh\0/t/cuda/release/build/dfdx-ab12/out\x01zz";
        assert_eq!(
            baked_paths(bytes, "/t/cuda/release/build/dfdx-"),
            vec![
                "/t/cuda/release/build/dfdx-ab12/out/unary.cuh".to_string(),
                "/t/cuda/release/build/dfdx-ab12/out".into()
            ]
        );
    }

    #[test]
    fn finds_test_executables_in_cargo_json() {
        let json = r#"{"reason":"compiler-artifact","profile":{"test":true},"executable":"/t/deps/cuda-1f"}
{"reason":"compiler-artifact","profile":{"test":false},"executable":null}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_executables(json),
            vec![PathBuf::from("/t/deps/cuda-1f")]
        );
    }

    #[test]
    fn run_script_restores_both_paths() {
        let s = run_script("/b/out", "/cuda/include");
        assert!(s.contains("BAKED_OUT_DIR='/b/out'"));
        assert!(s.contains("BAKED_CUDA_INCLUDE='/cuda/include'"));
        assert!(s.contains("exec \"$HERE/bin/xtask\" \"$@\""));
        assert!(s.contains("{") && !s.contains("{{"));
    }

    #[test]
    fn a_missing_toolkit_is_named() {
        let m = missing_toolkit(Path::new("/nonexistent-cuda"), false);
        assert_eq!(
            m.iter().any(|s| s.contains("nvcc")),
            !on_path("nvcc"),
            "{m:?}"
        );
        assert!(m.iter().any(|s| s.contains("cuda.h")), "{m:?}");
    }
}
