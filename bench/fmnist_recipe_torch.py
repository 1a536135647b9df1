"""The PyTorch peer of the trainer's Fashion-MNIST acceptance run (issue 7), on the CPU.

Recipe: ResNet-20 of ../shared/spec/ARCHITECTURES.md with 1 input channel (models_torch.py),
Fashion-MNIST normalised with 0.2860 / 0.3530, 4-pixel zero pad + random 28x28 crop + horizontal
flip, batch 128 (the last short batch dropped, as the Rust trainer does), SGD momentum 0.9,
Nesterov, weight decay 5e-4, lr 0.1 divided by 10 after 50% and 75% of the epochs (milestones
epochs // 2 and epochs * 3 // 4: 7 and 11 of 15), cross-entropy, seed 1; test accuracy on all
10,000 test images after every epoch.

Compare with:
    cargo xtask train ce --dataset fashion-mnist --arch resnet20 --epochs 15 --seed 1
    /opt/torchenv/bin/python3 bench/fmnist_recipe_torch.py --epochs 15 --threads 2

Prints one JSON line per epoch and a final summary line
(`{"best_acc", "last_acc", "seconds", "images_per_s"}`; seconds include the evaluations,
images/s counts training time only, as in the Rust run's metrics).
"""

import argparse
import gzip
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models_torch import ResNet  # noqa: E402

MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(magic & 0xFF)]
    body = bytearray(data[4 + 4 * len(dims):])
    return torch.frombuffer(body, dtype=torch.uint8).reshape(dims)


def load(root, split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))
    x = (x.float() / 255.0 - MEAN) / STD
    return x.unsqueeze(1), y.long()


def augment(x, gen):
    """4-pixel zero pad (zero in pixel space, i.e. -MEAN/STD after normalising), random crop,
    random horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4), value=-MEAN / STD)
    out = torch.empty_like(x)
    dx = torch.randint(0, 9, (n,), generator=gen)
    dy = torch.randint(0, 9, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    for i in range(n):
        crop = padded[i, :, dy[i]: dy[i] + h, dx[i]: dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit-train", type=int, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    xtr, ytr = load(a.data, "train")
    xte, yte = load(a.data, "test")
    if a.limit_train:
        xtr, ytr = xtr[: a.limit_train], ytr[: a.limit_train]
    model = ResNet(16, [16, 32, 64], [3, 3, 3], 10, in_ch=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[a.epochs // 2, a.epochs * 3 // 4], gamma=0.1
    )
    best, last, total_secs, train_total, total_images = 0.0, 0.0, 0.0, 0.0, 0
    for epoch in range(a.epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(xtr), generator=gen)
        n_batches = len(xtr) // 128
        loss_sum, correct = 0.0, 0
        for b in range(n_batches):
            idx = order[b * 128: (b + 1) * 128]
            x, y = augment(xtr[idx], gen), ytr[idx]
            z = model(x)
            loss = F.cross_entropy(z, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            correct += (z.argmax(1) == y).sum().item()
        train_secs = time.perf_counter() - t0
        lr = opt.param_groups[0]["lr"]
        sched.step()
        model.eval()
        hits = 0
        with torch.no_grad():
            for i in range(0, len(xte), 256):
                hits += (model(xte[i: i + 256]).argmax(1) == yte[i: i + 256]).sum().item()
        last = 100.0 * hits / len(xte)
        best = max(best, last)
        secs = time.perf_counter() - t0
        total_secs += secs
        train_total += train_secs
        total_images += n_batches * 128
        print(json.dumps({
            "epoch": epoch + 1, "lr": lr, "loss": loss_sum / n_batches,
            "train_acc": 100.0 * correct / (n_batches * 128), "test_acc": last,
            "images_per_s": n_batches * 128 / train_secs, "seconds": secs,
        }), flush=True)
    print(json.dumps({
        "torch": torch.__version__, "threads": a.threads, "epochs": a.epochs,
        "best_acc": best, "last_acc": last, "seconds": total_secs,
        "images_per_s": total_images / train_total,
    }), flush=True)


if __name__ == "__main__":
    main()
