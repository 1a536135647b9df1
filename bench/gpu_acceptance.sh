#!/usr/bin/env bash
# GPU acceptance (issue 20): on a GPU machine with a bundle from `cargo xtask bundle-cuda`,
#   1. the op fixtures on the GPU (`check --device cuda`),
#   2. the kd-ops GPU-against-CPU test binary, when the bundle carries it (tests/),
#   3. `bench models --device cuda` against PyTorch eager on the same GPU (FP32 both sides),
#   4. one Fashion-MNIST epoch of SCD (ResNet-20) on the GPU,
# each under its own time limit (at most 8 minutes in all), writing everything to one file.
#
# Usage (from the repository root):  bench/gpu_acceptance.sh BUNDLE OUT_DIR
# Results: one file, OUT_DIR/gpu-acceptance.md (each step's status, time and output); the logs
# and the run folder stay in a temporary folder, whose path the file gives.
# Needs: the NVIDIA driver, CUDA 13 libraries in a Python venv with torch (found as run.sh
# finds them), glibc >= 2.34. See docs/cuda.md and ../shared/gpu/RUNBOOK.md.
set -uo pipefail
BUNDLE=$(cd "${1:?usage: gpu_acceptance.sh BUNDLE OUT_DIR}" && pwd)
OUT=${2:?usage: gpu_acceptance.sh BUNDLE OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REPORT=$OUT/gpu-acceptance.md
WORK=$(mktemp -d -t kd-gpu-acceptance.XXXXXX)
PY=${KD_TORCH_PYTHON:-}
if [ -z "$PY" ]; then
  for p in /opt/torch/.venv/bin/python3 /opt/torchenv/bin/python3 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' 2>/dev/null; then PY=$p; break; fi
  done
fi
export RUST_LOG=${RUST_LOG:-info}
export KD_RUNS=$WORK/runs

note() { printf '%s\n' "$*" >> "$REPORT"; }
# step NAME LIMIT_S CMD...: runs CMD with a time limit, appends its status and output.
step() {
  local name=$1 limit=$2; shift 2
  local log="$WORK/$name.log" t0 t1 rc
  echo "== $name (limit ${limit}s)" >&2
  t0=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  note ""
  note "## $name: $([ $rc -eq 0 ] && echo passed || echo "FAILED (exit $rc$([ $rc -eq 124 ] && echo ', time limit'))") in $(( (t1 - t0) / 1000000000 )) s"
  note ""
  note '```'
  note "\$ $*"
  tail -n 60 "$log" | cut -c1-300 >> "$REPORT"
  note '```'
  return 0
}

: > "$REPORT"
note "# GPU acceptance ($(date -u '+%Y-%m-%d %H:%M UTC'))"
note ""
note '```'
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv >> "$REPORT" 2>&1 || note "nvidia-smi failed"
ldd --version 2>&1 | head -1 >> "$REPORT"
[ -n "$PY" ] && "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' >> "$REPORT" 2>&1
note "bundle: $(cat "$BUNDLE/BUNDLE.json" 2>/dev/null | tr -d '\n ' | cut -c1-300)"
note "logs and run folder: $WORK"
note '```'

step op-fixtures 90 "$BUNDLE/run.sh" check --device cuda crates/ops/tests/fixtures/ops

# The GPU-against-CPU op tests (every op, outputs and gradients), if the bundle carries them.
for t in "$BUNDLE"/tests/*; do
  [ -x "$t" ] || continue
  # run.sh has made dfdx's baked header paths; the libraries are found the same way.
  LIB=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib /opt/*/lib/python3*/site-packages/nvidia/cu13/lib 2>/dev/null | head -1)
  step "ops-gpu-vs-cpu-$(basename "$t")" 60 env LD_LIBRARY_PATH="${KD_CUDA_LIB:-$LIB}" "$t" --test-threads 1
done

# One step per network, so that a failure in one still measures the other.
for arch in resnet20 resnet18; do
  if [ -n "$PY" ]; then torch=(--python "$PY"); else torch=(--no-torch); fi
  step "bench-models-$arch" 100 "$BUNDLE/run.sh" bench models --device cuda --archs "$arch" \
    --steps 20 --warmup 5 "${torch[@]}" --out "$WORK/models-cuda-$arch.md"
done

step fashion-mnist-epoch 150 "$BUNDLE/run.sh" train scd --dataset fashion-mnist --arch resnet20 \
  --epochs 1 --device cuda --no-progress --out "$WORK/runs"
for f in "$WORK"/runs/*/summary.json; do
  [ -f "$f" ] && { note ""; note "summary.json:"; note '```'; cat "$f" >> "$REPORT"; note '```'; }
done
echo "written: $REPORT" >&2
