"""PyTorch side of `cargo xtask bench ops`.

Reads the case list (JSON) on stdin, times forward+backward of each op on the CPU with
`torch.set_num_threads(--threads)`, and prints `{"torch": version, "results": {name: {"ms",
"peak_mb"}}}` on stdout. Each timing is the best of `--iters` runs after one warm-up; each run
calls `out.backward(g)` with a fixed output gradient and computes every input and parameter
gradient. Peak MB is the rise of the process peak RSS (VmHWM, reset through
/proc/self/clear_refs) over one run, as on the Rust side.
"""

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F


def proc_kb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def peak_mb(step):
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    base = proc_kb("VmRSS:")
    step()
    peak = proc_kb("VmHWM:")
    if base is None or peak is None:
        return None
    return max(peak - base, 0.0) / 1024.0


def make_step(case):
    n, c, h, w = case["x"]
    op = case["op"]
    x = torch.rand(n, c, h, w) * 2 - 1
    x.requires_grad_(True)
    params = [x]
    if op == "conv2d":
        k = case["k"]
        wt = (torch.rand(case["cout"], c, k, k) * 2 - 1) * 0.1
        wt.requires_grad_(True)
        params.append(wt)

        def fwd():
            return F.conv2d(x, wt, None, case["stride"], case["padding"])
    elif op == "bn_relu":
        g = torch.ones(c, requires_grad=True)
        b = torch.zeros(c, requires_grad=True)
        rm, rv = torch.zeros(c), torch.ones(c)
        params += [g, b]

        def fwd():
            return F.relu(F.batch_norm(x, rm, rv, g, b, True, 0.1, 1e-5), inplace=True)
    elif op == "max_pool2d":
        def fwd():
            return F.max_pool2d(x, case["k"], case["stride"], case["padding"])
    elif op == "avg_pool2d":
        def fwd():
            return F.avg_pool2d(x, case["k"], case["stride"], case["padding"], count_include_pad=True)
    elif op == "adaptive_avg_pool2d":
        def fwd():
            return F.adaptive_avg_pool2d(x, case["out"])
    elif op == "upsample_bilinear2x":
        def fwd():
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    elif op == "add_relu":
        y = torch.rand(n, c, h, w) * 2 - 1
        y.requires_grad_(True)
        params.append(y)

        def fwd():
            return F.relu(x + y, inplace=True)
    else:
        raise SystemExit(f"unknown op {op}")

    with torch.no_grad():
        grad_out = torch.rand_like(fwd()) * 2 - 1

    def step():
        for p in params:
            p.grad = None
        out = fwd()
        out.backward(grad_out)

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = json.load(sys.stdin)
    results = {}
    for case in cases:
        step = make_step(case)
        step()
        times = []
        for _ in range(max(args.iters, 1)):
            t = time.perf_counter()
            step()
            times.append((time.perf_counter() - t) * 1e3)
        ms = min(times)
        results[case["name"]] = {"ms": ms, "peak_mb": peak_mb(step)}
        print(f"torch {case['name']:<34} {ms:9.2f} ms", file=sys.stderr)
    json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
