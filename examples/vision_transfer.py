"""ImageNet features for small grey-image tasks with few labels: EfficientNet-Lite0 vs a
small ResNet trained from scratch or pretrained on a related task.

For one dataset (Fashion-MNIST or MNIST-5k) and one label budget (e.g. 100 = 10 per class)
this trains and scores on held-out test images (`--methods` picks the rows):

    scratch    resnet-mini from scratch on the 28 x 28 images, same label budget
    source     MNIST-5k only: resnet-mini first trained on Fashion-MNIST (cached), then a
               linear probe on its frozen features and a full fine-tune
    probe      effnet-lite0 frozen + linear probe; features cached by tl.extract_features
    finetune   effnet-lite0, every weight, discriminative learning rates from
               tl.layerwise_lr_groups (block d below the top gets lr * decay**d), AdamW
    lora       effnet-lite0, tl.apply_lora (r=8) on every expand/project 1x1 conv and the
               head conv; depthwise convs frozen; the new classifier trains in full

Grey 28 x 28 images are replicated to RGB, resized bilinearly to --size pixels (64 by
default: the network then ends on a 2 x 2 map; 224 would cost 12x more on a CPU) and
normalised as the Lite models expect, (px - 127) / 128. BatchNorm keeps its ImageNet
statistics while fine-tuning (see `fit`).

Each run adds its rows to <out>/vision_transfer_results.json and rewrites the table
<out>/vision_transfer_results.md (and vision_transfer.png, when matplotlib is installed)
from all rows gathered so far, so the work can be split into short runs. On a shared,
busy machine pin every thread pool to one thread (spinning worker threads fighting over
the cores made small GEMMs 30x slower there); from the repository root, with minitl
installed or on PYTHONPATH:

    export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
    python examples/vision_transfer.py --dataset fashion-mnist --labels 100 \\
        --methods scratch probe finetune
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import minitl as mt
import minitl.nn.functional as F
from minitl import nn
from minitl import transfer as tl
from minitl.data import load_dataset
from minitl.models import ResNet, ResNetConfig
from minitl.models.efficientnet import EfficientNetLite0, preprocess

Array = np.ndarray
METHODS = ("scratch", "source", "probe", "finetune", "lora")


# ---- data ---------------------------------------------------------------------------------

def few_labels(labels: Array, n: int, seed: int) -> Array:
    """n indices, n / 10 per class, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = n // len(classes)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False)
                                   for c in classes]))


def load(name: str, n_labels: int, n_test: int, seed: int) -> tuple[Array, Array, Array, Array]:
    """(x_train, y_train, x_test, y_test): images (N, 1, 28, 28) in [0, 1]."""
    train, test = load_dataset(name, split="train", seed=seed), load_dataset(name, split="test",
                                                                              seed=seed)
    idx = few_labels(train.labels, n_labels, seed)
    if n_test < len(test):
        test = test.subset(few_labels(test.labels, n_test, seed + 1))
    return train.images[idx], train.labels[idx], test.images, test.labels


def to_rgb(images: Array, size: int) -> Array:
    """(N, 1, 28, 28) in [0, 1] -> (N, 3, size, size), the EfficientNet input."""
    return preprocess(images[:, 0] * 255.0, size=size, crop=1.0).numpy()


def batches(x: Array, y: Array, bs: int, rng: np.random.Generator | None = None
            ) -> Iterator[tuple[mt.Tensor, mt.Tensor]]:
    order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
    for i in range(0, len(x), bs):
        j = order[i:i + bs]
        yield mt.tensor(x[j]), mt.tensor(y[j])


# ---- training -----------------------------------------------------------------------------

def fit(model: nn.Module, groups: Any, x: Array, y: Array, epochs: int, bs: int,
        weight_decay: float, seed: int, frozen_bn: bool = False) -> float:
    """AdamW on cross-entropy; returns the wall time in seconds.

    `frozen_bn` keeps every BatchNorm on its pretrained running statistics: with a few
    dozen steps of 25 images, batch statistics would train the net on one normalisation
    and evaluate it on another (the ImageNet statistics, which momentum 0.01 barely moves).
    """
    opt = mt.optim.AdamW(groups, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    model.train()
    if frozen_bn:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches(x, y, bs, rng):
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def accuracy(fn: Callable[[mt.Tensor], mt.Tensor], x: Array, y: Array, bs: int = 128) -> float:
    right = 0
    with mt.no_grad():
        for xb, yb in batches(x, y, bs):
            right += int((fn(xb).numpy().argmax(1) == yb.numpy()).sum())
    return right / len(x)


def linear_probe(train: tl.FeatureSet, test: tl.FeatureSet, steps: int = 300,
                 lr: float = 1e-2, weight_decay: float = 1e-2) -> tuple[float, int, float]:
    """Multinomial logistic regression on standardised frozen features, full batch."""
    f_train, f_test = train.features.numpy(), test.features.numpy()
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    xs, xt = mt.tensor((f_train - mu) / sd), mt.tensor((f_test - mu) / sd)
    ys, yt = train.targets[0], test.targets[0].numpy()
    head = nn.Linear(f_train.shape[1], 10)
    opt = mt.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(head(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    with mt.no_grad():
        acc = float((head(xt).numpy().argmax(1) == yt).mean())
    return acc, tl.count_parameters(head)[0], seconds


# ---- the methods --------------------------------------------------------------------------

def effnet_rows(a: argparse.Namespace, x: Array, y: Array, xt: Array, yt: Array,
                cache: tl.FeatureCache) -> list[dict[str, Any]]:
    rows = []
    rx, rxt = to_rgb(x, a.size), to_rgb(xt, a.size)

    if "probe" in a.methods:
        # Frozen backbone: features once (cached on disk across runs), then a linear probe.
        net = EfficientNetLite0.from_pretrained()
        t0 = time.perf_counter()
        f_train = tl.extract_features(net.features, batches(rx, y, 100), cache=cache)
        f_test = tl.extract_features(net.features, batches(rxt, yt, 100), cache=cache)
        t_feat = time.perf_counter() - t0
        acc, n_train, t_fit = linear_probe(f_train, f_test)
        rows.append(row(a, "effnet-lite0 frozen + linear probe", acc, n_train, t_fit,
                        f"feature pass {t_feat:.0f} s"))

    if "finetune" in a.methods:
        # Every weight trains; block d below the top gets lr * decay**d.
        mt.manual_seed(a.seed)
        net = EfficientNetLite0.from_pretrained(num_classes=10)
        groups = tl.layerwise_lr_groups(net, lr=a.lr, decay=a.decay,
                                        head_patterns=("classifier.*",))
        seconds = fit(net, groups, rx, y, a.epochs, a.batch_size, 1e-4, a.seed,
                      frozen_bn=True)
        rows.append(row(a, "effnet-lite0 fine-tune, discriminative LR",
                        accuracy(net.eval(), rxt, yt), tl.count_parameters(net)[0], seconds))

    if "lora" in a.methods:
        # LoRA on the 1x1 convolutions (depthwise convs stay frozen), new head in full.
        mt.manual_seed(a.seed)
        net = EfficientNetLite0.from_pretrained(num_classes=10)
        tl.apply_lora(net, tl.LoRAConfig(
            r=8, alpha=16, target=("*.expand_conv", "*.project_conv", "conv_head"),
            modules_to_save=("classifier",)))
        params = [p for p in net.parameters() if p.requires_grad]
        seconds = fit(net, [{"params": params, "lr": a.lora_lr}], rx, y, a.epochs,
                      a.batch_size, 0.0, a.seed, frozen_bn=True)
        rows.append(row(a, "effnet-lite0 LoRA r=8 on 1x1 convs", accuracy(net.eval(), rxt, yt),
                        tl.count_parameters(net)[0], seconds))
    return rows


def resnet_rows(a: argparse.Namespace, x: Array, y: Array, xt: Array, yt: Array,
                cache: tl.FeatureCache) -> list[dict[str, Any]]:
    rows = []
    if "scratch" in a.methods:
        mt.manual_seed(a.seed)
        net = ResNet(ResNetConfig.named("resnet-mini"))
        seconds = fit(net, [{"params": net.parameters(), "lr": 3e-3}], x, y, a.resnet_epochs,
                      a.batch_size, 1e-4, a.seed)
        rows.append(row(a, "resnet-mini from scratch", accuracy(net.eval(), xt, yt),
                        tl.count_parameters(net)[0], seconds))
    if "source" not in a.methods or a.dataset != "mnist-5k":
        return rows

    source = fashion_resnet(a)
    f_train = tl.extract_features(source.features, batches(x, y, 250), cache=cache)
    f_test = tl.extract_features(source.features, batches(xt, yt, 250), cache=cache)
    acc, n_train, t_fit = linear_probe(f_train, f_test)
    rows.append(row(a, "resnet-mini (Fashion-MNIST) frozen + linear probe", acc, n_train,
                    t_fit))
    mt.manual_seed(a.seed)
    source.fc = nn.Linear(source.feature_dim, 10)
    seconds = fit(source, [{"params": source.parameters(), "lr": 1e-3}], x, y,
                  a.resnet_epochs, a.batch_size, 1e-4, a.seed)
    rows.append(row(a, "resnet-mini (Fashion-MNIST) fine-tune", accuracy(source.eval(), xt, yt),
                    tl.count_parameters(source)[0], seconds))
    return rows


def fashion_resnet(a: argparse.Namespace) -> ResNet:
    """resnet-mini trained on `--pretrain-size` Fashion-MNIST images (cached)."""
    path = (Path(a.cache_dir)
            / f"resnet-mini-fashion-{a.pretrain_size}x{a.pretrain_epochs}.safetensors")
    net = ResNet(ResNetConfig.named("resnet-mini"))
    if path.is_file():
        net.load_state_dict(mt.load(path))
        return net.eval()
    train = load_dataset("fashion-mnist", split="train", seed=a.seed)
    idx = few_labels(train.labels, a.pretrain_size, a.seed)
    mt.manual_seed(a.seed)
    seconds = fit(net, [{"params": net.parameters(), "lr": 3e-3}], train.images[idx],
                  train.labels[idx], a.pretrain_epochs, 50, 1e-4, a.seed)
    val = load_dataset("fashion-mnist", split="validation", seed=a.seed)
    acc = accuracy(net.eval(), val.images[:1000], val.labels[:1000])
    print(f"pretrained resnet-mini on {a.pretrain_size} Fashion-MNIST images "
          f"({a.pretrain_epochs} epochs) in {seconds:.0f} s: accuracy on 1,000 validation "
          f"images {acc:.3f}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    mt.save(net.state_dict(), path)
    return net


def row(a: argparse.Namespace, method: str, acc: float, trainable: int, seconds: float,
        note: str = "") -> dict[str, Any]:
    effnet = method.startswith("effnet")
    r = {"dataset": a.dataset, "labels": a.labels, "method": method, "test_accuracy": acc,
         "test_images": None, "trainable_params": int(trainable), "train_seconds": seconds,
         "input_px": a.size if effnet else 28, "note": note,
         "epochs": None if "probe" in method else a.epochs if effnet else a.resnet_epochs,
         "batch_size": a.batch_size}
    print(f"{a.dataset:14s} {a.labels:5d}  {method:52s} acc {acc:.3f}  "
          f"trainable {trainable:>9,d}  {seconds:6.1f} s  {note}", flush=True)
    return r


# ---- report -------------------------------------------------------------------------------

def write_report(rows: list[dict[str, Any]], out: Path) -> None:
    order = ["resnet-mini from scratch", "resnet-mini (Fashion-MNIST) frozen + linear probe",
             "resnet-mini (Fashion-MNIST) fine-tune", "effnet-lite0 frozen + linear probe",
             "effnet-lite0 fine-tune, discriminative LR", "effnet-lite0 LoRA r=8 on 1x1 convs"]
    rows = sorted(rows, key=lambda r: (r["dataset"], r["labels"],
                                       order.index(r["method"]) if r["method"] in order else 99))
    lines = [("| dataset | labels | method | input | epochs | test acc. | trainable params "
              "| train time |"), "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['labels']} | {r['method']} | {r['input_px']} px | "
                     f"{r['epochs'] or '-'} | {100 * r['test_accuracy']:.1f}% "
                     f"(n={r['test_images']}) | {r['trainable_params']:,} | "
                     f"{r['train_seconds']:.0f} s |")
    (out / "vision_transfer_results.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    runs = sorted({(r["dataset"], r["labels"]) for r in rows})
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4.2), squeeze=False)
    for ax, (ds, n) in zip(axes[0], runs):
        sel = [r for r in rows if (r["dataset"], r["labels"]) == (ds, n)]
        ax.barh([r["method"].split(" (lr")[0] for r in sel],
                [100 * r["test_accuracy"] for r in sel], color="tab:blue")
        ax.set_title(f"{ds}, {n} labels")
        ax.set_xlabel("test accuracy (%)")
        ax.set_xlim(0, 100)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "vision_transfer.png", dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["fashion-mnist", "mnist-5k"], default="fashion-mnist")
    p.add_argument("--labels", type=int, default=100, help="labelled training images (10 classes)")
    p.add_argument("--test-size", type=int, default=500, help="test images (a stratified draw)")
    p.add_argument("--size", type=int, default=64, help="EfficientNet input side in pixels")
    p.add_argument("--epochs", type=int, default=None,
                   help="EfficientNet fine-tuning epochs (default: ~1,000 examples seen, "
                        "at least 3)")
    p.add_argument("--resnet-epochs", type=int, default=None,
                   help="resnet-mini epochs (default: ~4,000 examples seen)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: labels / 10, at most 25")
    p.add_argument("--lr", type=float, default=1e-3, help="top-block / head lr (fine-tune)")
    p.add_argument("--decay", type=float, default=0.8, help="lr factor per block going down")
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument("--pretrain-size", type=int, default=6000,
                   help="Fashion-MNIST images for the source resnet-mini (MNIST-5k runs)")
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--pretrain-only", action="store_true",
                   help="only train (and cache) the Fashion-MNIST resnet-mini, then exit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "minitl" / "vision"))
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="which rows to run (to split the work into shorter runs)")
    a = p.parse_args(argv)
    a.batch_size = a.batch_size or max(1, min(25, a.labels // 10))
    a.epochs = a.epochs or max(3, round(1000 / a.labels))
    a.resnet_epochs = a.resnet_epochs or max(8, round(4000 / a.labels))

    mt.manual_seed(a.seed)
    if a.pretrain_only:
        fashion_resnet(a)
        return
    x, y, xt, yt = load(a.dataset, a.labels, a.test_size, a.seed)
    cache = tl.FeatureCache(Path(a.cache_dir) / "features")
    rows = resnet_rows(a, x, y, xt, yt, cache) + effnet_rows(a, x, y, xt, yt, cache)
    for r in rows:
        r["test_images"] = len(xt)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "vision_transfer_results.json"
    old = json.loads(store.read_text()) if store.is_file() else []
    keys = {(r["dataset"], r["labels"], r["method"]) for r in rows}
    merged = [r for r in old if (r["dataset"], r["labels"], r["method"]) not in keys] + rows
    store.write_text(json.dumps(merged, indent=1) + "\n")
    write_report(merged, out)


if __name__ == "__main__":
    main()
