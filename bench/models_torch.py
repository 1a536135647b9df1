"""PyTorch side of `cargo xtask bench models`.

Times training steps (forward, the loss of `--method`, backward, SGD Nesterov 0.9 with weight
decay 5e-4) of the CIFAR ResNet-20 / ResNet-18 of ../shared/spec/ARCHITECTURES.md (3x3 stem, no
max-pool, 1x1 conv + BN shortcut on shape change) at a given batch on the CPU with
`torch.set_num_threads(--threads)` (or on the GPU with `--device cuda`, synchronising before the
clock is read), and prints `{"torch": version, "images_per_s", "ms_per_step",
"peak_mb", "params"}` as JSON. Peak MB is the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs before the model is built) at the end of the timed steps, as on the Rust
side; it includes libtorch itself. On the GPU it is `torch.cuda.max_memory_allocated`.

Methods: `ce` (cross-entropy) and `scd` (METHODS.md, "scd", with kd-losses' defaults: beta 30,
target `deepest`, attention `sq_mean`): CE + beta * sum over the shallower stages of
||G_l - sg(G_L)||_F^2 / b^2, G = rownorm(Q Q^T) with the row norm detached, Q = mean_c(F^2)
flattened, F the stage outputs.
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, stem, widths, depths, classes, in_ch=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, cin = [], stem
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = []
            for j in range(d):
                blocks.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
            layers.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        feats = []
        for stage in self.layers:
            x = stage(x)
            feats.append(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)), feats


def gram(f):
    q = f.pow(2).mean(1).flatten(1)
    g = q @ q.t()
    return g / g.detach().norm(dim=1, keepdim=True).clamp_min(1e-12)


def scd_loss(z, feats, y, beta=30.0):
    b = z.shape[0]
    target = gram(feats[-1].detach())
    sim = sum(((gram(f) - target) ** 2).sum() / (b * b) for f in feats[:-1])
    return F.cross_entropy(z, y) + beta * sim


def ce_loss(z, feats, y):
    return F.cross_entropy(z, y)


LOSSES = {"ce": ce_loss, "scd": scd_loss}


ARCHS = {
    "resnet20": lambda k: ResNet(16, [16, 32, 64], [3, 3, 3], k),
    "resnet32": lambda k: ResNet(16, [16, 32, 64], [5, 5, 5], k),
    "resnet18": lambda k: ResNet(64, [64, 128, 256, 512], [2, 2, 2, 2], k),
}


def proc_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return float(line.split()[1])
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet20", choices=sorted(ARCHS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--method", default="ce", choices=sorted(LOSSES))
    a = p.parse_args()
    dev = torch.device(a.device)
    if a.device == "cuda":
        # FP32 math on both sides: our cuBLAS SGEMM does not use TF32, which cuDNN's
        # convolutions would by default.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    model = ARCHS[a.arch](a.classes).to(dev)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, 32, 32, device=dev)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        z, feats = model(x)
        loss = LOSSES[a.method](z, feats, y)
        loss.backward()
        opt.step()
        return loss.item()  # read back every step, as our trainer (and torchdistill's loop) does

    for _ in range(a.warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    secs = time.perf_counter() - t
    if a.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        hwm = proc_kb("VmHWM:")
        peak = hwm / 1024.0 if hwm is not None else None
    print(json.dumps({
        "torch": torch.__version__,
        "images_per_s": a.batch * a.steps / secs,
        "ms_per_step": 1e3 * secs / a.steps,
        "peak_mb": peak,
        "params": sum(p.numel() for p in model.parameters()),
    }))


if __name__ == "__main__":
    main()
