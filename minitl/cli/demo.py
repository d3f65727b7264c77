"""`minitl demo`: train an MLP on 3-class spirals end to end and print its test accuracy."""

from __future__ import annotations

import argparse
import time

import numpy as np


def make_spirals(n_per_class: int, classes: int, noise: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved 2-D spirals: a classic task no linear model can solve."""
    xs, ys = [], []
    for c in range(classes):
        r = np.linspace(0.05, 1.0, n_per_class)
        theta = np.linspace(c * 2 * np.pi / classes, c * 2 * np.pi / classes + 3.5, n_per_class)
        theta = theta + rng.normal(0.0, noise, n_per_class)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ys.append(np.full(n_per_class, c))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def run(args: argparse.Namespace) -> int:
    import minitl as mt
    import minitl.nn as nn
    import minitl.nn.functional as F

    mt.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x, y = make_spirals(400, 3, 0.15, rng)
    perm = rng.permutation(len(x))
    split = int(0.8 * len(x))
    tr, te = perm[:split], perm[split:]
    model = nn.Sequential(nn.Linear(2, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(),
                          nn.Linear(64, 3))
    opt = mt.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    sched = mt.optim.lr_scheduler.get_cosine_schedule_with_warmup(opt, 20, args.steps)
    print(f"minitl demo: 3-class spirals, {len(tr)} train / {len(te)} test points, "
          f"MLP with {sum(p.numel() for p in model.parameters())} parameters")
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = rng.choice(tr, size=64, replace=False)
        loss = F.cross_entropy(model(mt.tensor(x[idx])), mt.tensor(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % max(args.steps // 5, 1) == 0:
            print(f"  step {step:4d}  loss {loss.item():.4f}", flush=True)
    model.eval()
    with mt.no_grad():
        pred = model(mt.tensor(x[te])).argmax(dim=1).numpy()
    acc = float((pred == y[te]).mean())
    print(f"test accuracy {acc:.3f} after {args.steps} steps in {time.perf_counter() - t0:.1f} s")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=600, help="optimizer steps")
    p.add_argument("--seed", type=int, default=0, help="random seed")
