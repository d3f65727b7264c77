"""Which pretraining objective gives a ViT the features that transfer best to a task with
100 labels? A ViT (`--model`, vit-mini by default) pretrained on Fashion-MNIST (60k images)
with objectives of `minitl pretrain` — supervised, MAE, SimCLR — then moved to MNIST-5k with
10 labelled images per class, against the same ViT from random weights.

For each backbone and seed two transfers are scored on the MNIST-5k test split (500 images):

    probe      the backbone frozen; an L2-regularised softmax regression on one of its
               features (standardised with the 100 training images' statistics): the class
               token, the mean patch token, the mean patch tokens of every block side by
               side, or the grid of output patch tokens
    finetune   every weight trained with a new head, AdamW, batch 32, layer-wise lr decay;
               the head reads the class token, the mean patch token or the token grid

Every choice is made on the MNIST-5k validation split (500 images): the probe's features (4)
and L2 strength (4 values); the fine-tune's head, learning rate, layer decay and stopping
step (evaluated every `--eval-every` steps). The seed draws the 100 labelled images, the
head's init and the batch order; the pretrained backbones are trained once (seed 0) and
shared by the three seeds, so the spread is that of the transfer, not of pretraining. Images
are normalised with the Fashion-MNIST training statistics the backbones saw. Each row also
keeps every feature's and every fine-tuning setting's best (validation, test), so ablations
(a protocol restricted to pooled features, say) are read off the same run.

Results go to <out>/results.json (one row per backbone, method and seed) and a table on
stdout. Pretrained backbones are cached in <out> and reused by later runs. Pin the thread
pools to one thread on a shared machine:

    export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    python examples/vision_pretraining.py --quick      # a few minutes: quick backbones, 1 seed
    python examples/vision_pretraining.py --objectives mae --out runs/vitpt   # MAE vs scratch
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import minitl as mt
import minitl.nn.functional as F
from minitl import nn
from minitl.cli.pretrain_vit import load_pretrained_vit, prepare_vit
from minitl.data import load_dataset
from minitl.models import ViT, ViTConfig
from minitl.models.vit import init_vit_weights
from minitl.optim import AdamW
from minitl.recipes.pretrain_config import PretrainConfig

OBJECTIVES = ("supervised", "mae", "simclr")
POOLS = ("cls", "mean", "blocks", "tokens")  # the probe's features, see `features`
# MAE's pretraining steps unless --pretrain-steps or --quick says otherwise: its transfer kept
# improving up to 24,000 steps of 128 (57 epochs, ~30 min on one core; docs/vision_pretraining.md);
# the other objectives keep `minitl pretrain`'s 2 epochs.
PRETRAIN_STEPS = {"mae": 24_000}


def pretrained(a: argparse.Namespace, objective: str) -> Path:
    """The weights file of `a.model` pretrained with `objective` (trained unless cached)."""
    steps = {**({} if a.quick else PRETRAIN_STEPS), **(a.pretrain_steps or {})}.get(objective)
    tag = f"{a.model}-{objective}{f'-{steps}' if steps else ''}{'-quick' if a.quick else ''}"
    out = Path(a.out) / f"{tag}.safetensors"
    if not out.with_suffix(".config.json").is_file():
        t0 = time.perf_counter()
        cfg = PretrainConfig(model=a.model, objective=objective, data="fashion-mnist",
                             out=str(out), steps=steps, seed=0, progress=False)
        result = prepare_vit(cfg, quick=a.quick).train()
        print(f"pretrained {objective}: {result.steps} steps in {result.train_seconds:.0f} s; "
              + ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
              + f" ({time.perf_counter() - t0:.0f} s with evaluation)", flush=True)
    return out


def features(net: ViT, x: np.ndarray) -> dict[str, np.ndarray]:
    """The class token and the mean patch token of the encoder's output, (N, D) each; the
    mean patch tokens of every block side by side, (N, depth * D); and the output's patch
    tokens in grid order, (N, P * D). MAE trains no class token, its most linearly separable
    features need not sit in the last block, and a mean over patches forgets where a stroke
    is."""
    net.eval()
    outs: list[list[np.ndarray]] = []
    with mt.no_grad():
        for i in range(0, len(x), 250):
            blocks = net.forward_blocks(mt.tensor(x[i:i + 250]))  # depth x (n, 1 + P, D)
            outs.append([b.numpy() for b in blocks])
    h = [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
    return {"cls": h[-1][:, 0], "mean": h[-1][:, 1:].mean(1),
            "blocks": np.concatenate([b[:, 1:].mean(1) for b in h], axis=1),
            "tokens": h[-1][:, 1:].reshape(len(x), -1)}


def accuracy(net: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    net.eval()
    with mt.no_grad():
        pred = np.concatenate([net(mt.tensor(x[i:i + 250])).numpy().argmax(1)
                               for i in range(0, len(x), 250)])
    return float((pred == y).mean())


def softmax_regression(z: np.ndarray, y: np.ndarray, l2: float, steps: int = 500
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch gradient descent on mean cross entropy + l2/2 |W|^2 (convex: the step
    count only has to be enough)."""
    n, d = z.shape
    w, b = np.zeros((d, 10)), np.zeros(10)
    onehot = np.eye(10)[y]
    for _ in range(steps):
        s = z @ w + b
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / n
        w -= 0.5 * (z.T @ g + l2 * w)
        b -= 0.5 * g.sum(0)
    return w, b


def probe(net: ViT, data: dict[str, Any], pools: list[str]) -> dict[str, Any]:
    pooled = {k: features(net, data[k][0]) for k in ("train", "val", "test")}
    per_pool: dict[str, dict[str, Any]] = {}
    for pool in pools:
        z = {k: v[pool] for k, v in pooled.items()}
        mean, std = z["train"].mean(0), z["train"].std(0) + 1e-6
        z = {k: (v - mean) / std for k, v in z.items()}
        for l2 in (1e-3, 1e-2, 1e-1, 1.0):
            w, b = softmax_regression(z["train"], data["train"][1], l2)
            val = float(((z["val"] @ w + b).argmax(1) == data["val"][1]).mean())
            if val > per_pool.get(pool, {"val": -1.0})["val"]:
                test = float(((z["test"] @ w + b).argmax(1) == data["test"][1]).mean())
                per_pool[pool] = {"val": val, "test": test, "choice": {"pool": pool, "l2": l2}}
    best = max(per_pool.values(), key=lambda r: r["val"])  # the first of equals
    # Every pooling's own best, for the ablation; the row's figures are `best`'s alone.
    return {**best, "by_pool": {k: [r["val"], r["test"]] for k, r in per_pool.items()}}


class GridHead(nn.Module):
    """A ViT whose new head reads all its output patch tokens in grid order, (N, P * D),
    rather than one pooled token: the fine-tuning counterpart of the probe's "tokens"."""

    def __init__(self, vit: ViT, num_classes: int) -> None:
        super().__init__()
        self.vit = vit
        self.head = nn.Linear(vit.num_patches * vit.feature_dim, num_classes)
        init_vit_weights(self.head, vit.config.initializer_range)

    def forward(self, x: mt.Tensor) -> mt.Tensor:
        h = self.vit.forward_features(x)[:, 1:]  # (N, P, D)
        return self.head(h.reshape(h.shape[0], -1))


def layer_groups(net: nn.Module, lr: float, decay: float) -> list[dict[str, Any]]:
    """AdamW groups with layer-wise lr decay (BEiT, arXiv:2106.08254; MAE fine-tunes with
    it): the head and final norm at `lr`, block i at lr * decay^(depth - i), the embeddings
    at lr * decay^(depth + 1), so the pretrained lower layers move least. Weight decay on
    matrices and kernels only."""
    depth = len(net.vit.blocks if isinstance(net, GridHead) else net.blocks)
    groups: list[dict[str, Any]] = []
    for name, p in net.named_parameters():
        name = name.removeprefix("vit.")
        if name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        elif name.startswith(("head.", "norm.")):
            layer = depth + 1
        else:  # patch_embed, cls_token, pos_embed
            layer = 0
        groups.append({"params": [p], "lr": lr * decay ** (depth + 1 - layer),
                       "weight_decay": 0.05 if p.ndim in (2, 4) else 0.0})
    return groups


def finetune(make: Any, data: dict[str, Any], seed: int, a: argparse.Namespace
             ) -> dict[str, Any]:
    x, y = data["train"]
    runs: list[dict[str, Any]] = []  # each setting's best (val, test), for the ablation
    for lr, pool, decay in itertools.product(a.lrs, a.ft_pools, a.layer_decays):
        run: dict[str, Any] = {"val": -1.0}
        mt.manual_seed(seed)
        net: nn.Module
        if pool == "tokens":
            net = GridHead(make(), 10)
        else:
            net = make()
            net.config = net.config.replace(pool=pool)
            net.reset_classifier(10)
        opt = AdamW(layer_groups(net, lr, decay), lr=lr, betas=(0.9, 0.95))
        peak = [g["lr"] for g in opt.param_groups]
        rng = np.random.default_rng([seed, 2])
        order = np.concatenate([rng.permutation(len(x)) for _ in range(a.ft_steps)])
        for step in range(1, a.ft_steps + 1):
            net.train()
            for g, top in zip(opt.param_groups, peak):
                g["lr"] = top * min(1.0, step / max(1, a.warmup))
            idx = order[(step - 1) * 32:step * 32]
            opt.zero_grad()
            F.cross_entropy(net(mt.tensor(x[idx])), mt.tensor(y[idx])).backward()
            opt.step()
            if step % a.eval_every == 0:
                val = accuracy(net, *data["val"])
                if val > run["val"]:
                    run = {"val": val, "test": accuracy(net, *data["test"]),
                           "choice": {"lr": lr, "pool": pool, "layer_decay": decay,
                                      "step": step}}
        runs.append(run)
    best = max(runs, key=lambda r: r["val"])  # the first of equals
    return {**best, "by_setting": [[r["choice"], r["val"], r["test"]] for r in runs]}


def transfer_data(seed: int, mean: float, std: float, labels: int) -> dict[str, Any]:
    splits = load_dataset("mnist-5k", seed=0)  # fixed val/test; the seed draws the labels
    tr = splits["train"]
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.choice(np.flatnonzero(tr.labels == c), labels // 10,
                                      replace=False) for c in range(10)])

    def norm(x: np.ndarray) -> np.ndarray:
        return ((x - mean) / std).astype(np.float32)

    return {"train": (norm(tr.images[pick]), tr.labels[pick]),
            "val": (norm(splits["validation"].images), splits["validation"].labels),
            "test": (norm(splits["test"].images), splits["test"].labels)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/vision_pretraining")
    p.add_argument("--quick", action="store_true",
                   help="backbones from `minitl pretrain --quick`, seed 0 only, 60 steps "
                   "of fine-tuning at lr 1e-3")
    p.add_argument("--model", default="vit-mini", help="the ViT size, pretrained and scratch")
    p.add_argument("--objectives", nargs="*", default=list(OBJECTIVES), choices=OBJECTIVES)
    p.add_argument("--backbone", action="append", default=[], metavar="NAME=PATH",
                   help="also transfer this pretrained ViT (a `minitl pretrain` weights file)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--labels", type=int, default=100, help="labelled MNIST images (10 classes)")
    p.add_argument("--ft-steps", type=int, default=None, help="fine-tuning steps (default 300)")
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--lrs", type=float, nargs="+", default=None,
                   help="fine-tuning learning rates to choose from (default 3e-4 1e-3; "
                   "--quick: 1e-3)")
    p.add_argument("--probe-pools", nargs="+", choices=POOLS, default=list(POOLS),
                   help="features the probe chooses from on validation")
    p.add_argument("--ft-pools", nargs="+", default=["cls", "mean", "tokens"],
                   choices=["cls", "mean", "tokens"],
                   help="poolings the fine-tune chooses from on validation")
    p.add_argument("--layer-decays", type=float, nargs="+", default=[1.0, 0.75],
                   help="layer-wise lr decays the fine-tune chooses from (1: none)")
    p.add_argument("--warmup", type=int, default=0, help="linear lr warmup steps")
    p.add_argument("--pretrain-steps", type=json.loads, default=None,
                   help='steps per objective, e.g. \'{"mae": 8000}\' (default: PRETRAIN_STEPS, '
                   'else 2 epochs)')
    p.add_argument("--no-scratch", action="store_true", help="skip the random-weights ViT")
    p.add_argument("--methods", nargs="+", default=["probe", "finetune"],
                   choices=["probe", "finetune"])
    a = p.parse_args()
    a.seeds = a.seeds or ([0] if a.quick else [0, 1, 2])
    a.ft_steps = a.ft_steps or (60 if a.quick else 300)
    a.lrs = a.lrs or ([1e-3] if a.quick else [3e-4, 1e-3])
    Path(a.out).mkdir(parents=True, exist_ok=True)
    paths = {o: pretrained(a, o) for o in a.objectives}
    for spec in a.backbone:
        name, _, path = spec.partition("=")
        paths[name] = Path(path)
    backbones: dict[str, Any] = {}
    norm = None
    for name, path in paths.items():
        _, meta = load_pretrained_vit(path)
        norm = (meta["normalize"]["mean"], meta["normalize"]["std"])
        backbones[name] = (lambda p=path: load_pretrained_vit(p)[0])
    if not a.no_scratch:
        backbones["scratch"] = lambda: ViT(ViTConfig.named(a.model))
    if norm is None:  # scratch alone: the Fashion-MNIST training statistics
        x = load_dataset("fashion-mnist", seed=0)["train"].images
        norm = (float(x.mean()), float(x.std()))
    rows = []
    for seed in a.seeds:
        data = transfer_data(seed, *norm, a.labels)
        for name, make in backbones.items():
            for method in a.methods:
                t0 = time.perf_counter()
                mt.manual_seed(seed)
                r = (probe(make(), data, a.probe_pools) if method == "probe"
                     else finetune(make, data, seed, a))
                rows.append({"backbone": name, "method": method, "seed": seed,
                             "seconds": round(time.perf_counter() - t0, 1), **r})
                print(json.dumps(rows[-1]), flush=True)
    results = Path(a.out) / f"results{'-quick' if a.quick else ''}.json"
    results.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\n| backbone | method | test accuracy (mean ± std over seeds {a.seeds}) | "
          "validation |\n|---|---|---|---|")
    for name in backbones:
        for method in a.methods:
            t = [r["test"] for r in rows if r["backbone"] == name and r["method"] == method]
            v = [r["val"] for r in rows if r["backbone"] == name and r["method"] == method]
            print(f"| {name} | {method} | {100 * np.mean(t):.1f} ± {100 * np.std(t):.1f} | "
                  f"{100 * np.mean(v):.1f} |")


if __name__ == "__main__":
    main()
