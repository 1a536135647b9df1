"""Where a training step's time goes, per op: `perf` samples of `cargo xtask bench models`
grouped by the innermost frame that names an op.

Usage (from the repository root, after `cargo build --release -p xtask`; needs `perf`):

    python3 bench/profile_ops.py [--binary target/release/xtask] [--arch resnet20] \
        [--method ce] [--threads 2] [--steps 10] [--out target/bench/profile-resnet20.md]

It records `perf record --call-graph dwarf` of `xtask bench models --no-torch` for one
architecture and method (its model build and warm-up steps are a small part of the samples),
then walks each sample's stack from the leaf outwards and charges the sample to the first frame
that matches a category below (so a `memmove` inside `kd_ops::util::read` counts as an input
copy, a `memset` inside dfdx's `get_or_alloc_mut` as a zeroed gradient buffer, gemm's
microkernels as gemm wherever they are called from). Prints and writes a Markdown table.
"""

import argparse
import collections
import os
import subprocess
import sys

# (category, substrings of a frame's symbol); the first category whose pattern matches the
# innermost matching frame wins.
CATEGORIES = [
    ("conv: im2col (forward and backward)", ["kd_ops::im2col::im2col", "kd_ops::conv::im2col"]),
    ("conv backward: col2im", ["kd_ops::im2col::col2im", "kd_ops::conv::col2im"]),
    ("gemm (convolutions, linear)", ["gemm_f32::", "gemm_common::", "gemm::gemm"]),
    ("conv backward: rest (dY copies and transpose, bias sums)", ["kd_ops::conv::backward_cpu"]),
    ("conv forward: rest (batched output copy)", ["kd_ops::conv::forward_cpu", "kd_ops::conv::conv2d_cpu"]),
    ("input copies (`util::read`)", ["kd_ops::util::read"]),
    ("output buffers written on the pool (`util::zeros`, `util::zip_map`)", ["kd_ops::util::filled", "kd_ops::util::zeros", "kd_ops::util::zip_map"]),
    ("zero-filled gradient buffers (dfdx `get_or_alloc_mut`)", ["get_or_alloc_mut", "try_alloc_grad"]),
    ("BatchNorm (+ReLU) backward", ["kd_ops::norm::BnSaved"]),
    ("BatchNorm (+ReLU) forward", ["kd_ops::norm::bn_", "kd_ops::norm::affine_forward", "kd_ops::norm::batch_stats"]),
    ("add + ReLU", ["kd_ops::norm::add_relu"]),
    ("pooling", ["kd_ops::pool", "kd_ops::generic::pool"]),
    ("loss (kd-losses)", ["kd_losses::"]),
    ("SGD update", ["kd_train::optim"]),
    ("other dfdx ops", ["dfdx::"]),
]


def categorize(stack):
    for frame in stack:
        for name, pats in CATEGORIES:
            if any(p in frame for p in pats):
                return name
    return "other (allocator, kernel, rayon)"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default="target/release/xtask")
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--method", default="ce")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--freq", type=int, default=499)
    p.add_argument("--out")
    p.add_argument("--extra", default="", help="more arguments for `bench models`")
    a = p.parse_args()
    data = f"/tmp/kd-profile-{os.getpid()}.data"
    cmd = [a.binary, "bench", "models", "--no-torch", "--archs", a.arch, "--threads", str(a.threads),
           "--steps", str(a.steps), "--warmup", "1", "--out", "/dev/null"]
    # The --methods and --repeat options exist since the bench timed the trainer's step.
    help_text = subprocess.run([a.binary, "bench", "models", "--help"], capture_output=True, text=True).stdout
    if "--methods" in help_text:
        cmd += ["--methods", a.method, "--repeat", "1"]
    cmd += a.extra.split()
    subprocess.run(["perf", "record", "-q", "-F", str(a.freq), "--call-graph", "dwarf,65528",
                    "-o", data, "--"] + cmd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym", "--no-inline"],
                            capture_output=True, text=True, errors="replace").stdout
    os.remove(data)
    counts = collections.Counter()
    stack = []
    for line in script.split("\n") + [""]:
        line = line.strip()
        if line:
            parts = line.split(None, 1)
            stack.append(parts[1] if len(parts) > 1 else "")
        elif stack:
            counts[categorize(stack)] += 1
            stack = []
    total = sum(counts.values())
    if not total:
        sys.exit("no samples (is perf allowed? try: sysctl kernel.perf_event_paranoid=1)")
    rows = [f"| {name} | {100.0 * n / total:.1f} |" for name, n in counts.most_common()]
    text = "\n".join([
        f"Profile of `{' '.join(cmd[1:])}` ({total} samples, perf at {a.freq} Hz, "
        f"model build and one warm-up step included)\n",
        "| where | % of samples |", "|---|---:|", *rows, ""])
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
