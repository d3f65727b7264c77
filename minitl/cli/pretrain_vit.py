"""The recipe behind `minitl pretrain --model vit-*`: a Vision Transformer pretrained on
images with one of three objectives, on the same backbone, data and optimiser.

  supervised  cross entropy on the labels; judged by validation and test accuracy.
  mae         masked autoencoding (arXiv:2111.06377): 75% of each image's patches hidden, a
              one-block decoder of half the encoder's width regresses their per-patch
              normalised pixels; no labels.
  simclr      NT-Xent between two augmented views (arXiv:2002.05709) through a projection
              MLP, the augmentations of the contrastive resnet; no labels.

Every objective ends with the k-NN accuracy of the frozen pooled features (validation and
test, neighbours from the training images), a label-free judge that compares them. All three
train with AdamW (betas 0.9, 0.95; weight decay on matrices only), linear warmup and cosine
decay: ViTs are not trained with plain SGD in any of the three papers.

Writes OUT (the ViT's weights; for mae and simclr the `head` is untrained) and OUT's stem +
.config.json in the layout `minitl.recipes.pretraining.save_pretrained` uses (family "vit");
`load_pretrained_vit` reads them back. `--quick` shrinks the run to about a minute of one core.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from minitl import creation, io, nn
from minitl.models import ViT, ViTConfig
from minitl.optim import AdamW, lr_scheduler
from minitl.pretrain import (
    ImageAugment,
    MaskedAutoencoder,
    ObjectiveTrainer,
    SimCLR,
    contrastive_objective,
    supervised_objective,
)
from minitl.recipes.pretrain_config import ConfigError, PretrainConfig
from minitl.recipes.pretraining import PretrainResult, RoundLoader, knn_accuracy, spread
from minitl.tensor import Tensor
from minitl.train import Checkpoint, Trainer
from minitl.train.paths import check_output_dir, check_output_file

__all__ = ["OBJECTIVES", "QUICK", "ViTRun", "load_pretrained_vit", "prepare_vit", "resolve"]

OBJECTIVES = ("supervised", "mae", "simclr")
DEFAULTS: dict[str, Any] = {"data": "fashion-mnist", "batch_size": 128, "lr": 1e-3,
                            "weight_decay": 0.05, "epochs": 2.0, "grad_clip": 1.0}
# vit-mini: 32-76 s per command on one shared core, data and k-NN evaluation included
# (docs/vision_pretraining.md).
QUICK: dict[str, Any] = {"train_limit": 10_000, "steps": 120, "eval_batches": 8}
FROM_DATA = ("in_channels", "num_classes", "image_size")
_NEVER = 1 << 62  # a Checkpoint interval that never fires


def resolve(cfg: PretrainConfig, quick: bool = False) -> PretrainConfig:
    """`cfg` with the ViT defaults (and the --quick ones) filled in; ConfigError for an
    objective, tokenizer or --set field that a ViT run cannot use."""
    objective = "simclr" if cfg.objective == "contrastive" else (cfg.objective or "supervised")
    if objective not in OBJECTIVES:
        raise ConfigError(f"{cfg.model} trains with --objective {', '.join(OBJECTIVES)}, not "
                          f"{cfg.objective!r}")
    for name in ("tokenizer", "tokenizer_file", "vocab_size", "seq_len"):
        if getattr(cfg, name) is not None:
            raise ConfigError(f"--{name.replace('_', '-')} is for text models, not {cfg.model}")
    fill = {**DEFAULTS, **(QUICK if quick else {})}
    cfg = dataclasses.replace(cfg, objective=objective, **{
        k: v for k, v in fill.items() if getattr(cfg, k) is None
        and not (k == "epochs" and cfg.steps) and not (k == "steps" and cfg.epochs)})
    fields = [f.name for f in dataclasses.fields(ViTConfig)]
    for key in cfg.overrides:
        if key not in fields:
            raise ConfigError(f"--set {key}: ViTConfig has no field {key!r}; its fields: "
                              f"{', '.join(fields)}")
        if key in FROM_DATA:
            raise ConfigError(f"--set {key}: {key} is decided by the images")
    try:
        ViTConfig.named(cfg.model, **cfg.overrides)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--set: {e}") from None
    return cfg


def _check_paths(cfg: PretrainConfig) -> None:
    from minitl.data import list_datasets

    if cfg.data not in list_datasets():
        raise ConfigError(f"--data {cfg.data!r} is not a dataset name "
                          f"({', '.join(list_datasets())})")
    for name in ("data_root", "resume"):
        path = getattr(cfg, name)
        if path is not None and not os.path.exists(path):
            raise ConfigError(f"--{name.replace('_', '-')} {os.fspath(path)!r} does not exist")
    check_output_file(cfg.out, "--out")
    check_output_file(cfg.stem + ".config.json", "--out's companion file")
    if cfg.checkpoint_every:
        check_output_dir(cfg.checkpoint_dir or cfg.stem + ".checkpoints", "--checkpoint-dir")
    if cfg.log_dir is not None:
        check_output_dir(cfg.log_dir, "--log-dir")


# ---- objectives -------------------------------------------------------------------------------

def mae_objective(model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Any, Any]:
    # Evaluation masks come from a fixed stream: evaluating must not move the training one,
    # and every evaluation then scores the same patches.
    loss, _, _ = model(batch[0], rng=None if model.training else 0)
    return loss, None, None


# ---- the run -----------------------------------------------------------------------------------

@dataclass
class ViTRun:
    """Everything built before the first step; `train()` trains, judges and saves."""

    cfg: PretrainConfig
    net: ViT  # the backbone that is saved
    trainer: Trainer
    final: Callable[[], dict[str, float]]
    baselines: dict[str, float]
    extra: dict[str, Any]

    def train(self) -> PretrainResult:
        t0 = time.perf_counter()
        self.trainer.fit()
        seconds = time.perf_counter() - t0
        last = self.trainer.eval_history[-1] if self.trainer.eval_history else {}
        metrics = ({k: v for k, v in last.items() if k.startswith("eval_")}
                   if last.get("step") == self.trainer.step else self.trainer.evaluate())
        metrics.update(self.final())
        paths = save_vit(self.cfg, self.net, metrics, self.baselines, self.extra,
                         self.trainer.step, seconds)
        return PretrainResult(self.net, None, metrics, self.baselines, paths, self.trainer.step,
                              seconds, self.trainer)


def prepare_vit(cfg: PretrainConfig, quick: bool = False,
                stream: TextIO | None = None) -> ViTRun:
    """Check the settings (ConfigError), read and normalise the images, build the ViT, the
    objective's wrapper and the Trainer; resume from `cfg.resume` when given."""
    from minitl.data import load_dataset

    cfg = resolve(cfg, quick)
    _check_paths(cfg)
    say = functools.partial(print, file=stream if stream is not None else sys.stdout, flush=True)
    creation.manual_seed(cfg.seed)
    splits = load_dataset(str(cfg.data), seed=cfg.seed, root=cfg.data_root)
    if not hasattr(splits["train"], "images"):
        raise ConfigError(f"--data {cfg.data} is not an image dataset; {cfg.model} needs images")
    train, val, test = splits["train"], splits["validation"], splits["test"]
    x_tr, y_tr = train.images[:cfg.train_limit], train.labels[:cfg.train_limit]
    mean, std = float(x_tr.mean()), float(x_tr.std())  # train statistics only
    x_tr, x_va, x_te = (((x - mean) / std).astype(np.float32)
                        for x in (x_tr, val.images, test.images))
    bs, n_cls = int(cfg.batch_size or 1), len(train.label_names)
    keep = spread(len(x_va), None if cfg.eval_batches is None else cfg.eval_batches * bs)
    x_va, y_va = x_va[keep], val.labels[keep]
    if x_tr.shape[2] != x_tr.shape[3]:
        raise ConfigError(f"{cfg.model} needs square images, {cfg.data} has "
                          f"{x_tr.shape[2]}x{x_tr.shape[3]}")
    try:
        vcfg = ViTConfig.named(cfg.model, **{**cfg.overrides, "in_channels": x_tr.shape[1],
                                             "num_classes": n_cls, "image_size": x_tr.shape[2]})
    except ValueError as e:
        raise ConfigError(f"{cfg.model} on {cfg.data}: {e}") from None
    net = ViT(vcfg)
    if len(x_tr) < bs:
        raise ConfigError(f"the training data gives {len(x_tr)} images, fewer than one batch "
                          f"of {bs}: use more data or a smaller --batch-size")
    ref = spread(len(x_tr), 10_000)  # the labelled neighbours of the k-NN judge

    def knn() -> dict[str, float]:
        # knn_accuracy needs only `features`, which the ViT has as the ResNet does.
        return {f"{n}_knn_accuracy": knn_accuracy(net, x_tr[ref], y_tr[ref], x, y)  # type: ignore[arg-type]
                for n, x, y in (("eval", x_va, y_va), ("test", x_te, test.labels))}

    val_b = [(Tensor(x_va[i:i + bs]), Tensor(y_va[i:i + bs])) for i in range(0, len(x_va), bs)]
    model: nn.Module
    objective: Callable[[nn.Module, Any], tuple[Tensor, Any, Any]]
    if cfg.objective == "supervised":
        model, objective, metrics = net, supervised_objective, ["accuracy"]
        test_b = [(Tensor(x_te[i:i + bs]), Tensor(test.labels[i:i + bs]))
                  for i in range(0, len(x_te), bs)]

        def final() -> dict[str, float]:
            tested = {"test" + k[4:]: v for k, v in trainer.evaluate(test_b).items()}
            return {**tested, **knn()}
    elif cfg.objective == "mae":
        d = vcfg.embed_dim
        model = MaskedAutoencoder(net, decoder_dim=max(16, d // 2), decoder_depth=1,
                                  decoder_heads=max(1, vcfg.num_heads // 2))
        objective, metrics, final = mae_objective, [], knn
    else:
        augment = ImageAugment(crop_padding=3, flip=True, noise_std=0.1, erase_p=0.5)
        model = SimCLR(net)  # type: ignore[arg-type]
        objective, metrics, final = contrastive_objective(augment), [], knn
    per_epoch = len(x_tr) // bs
    steps = cfg.steps or max(1, math.ceil((cfg.epochs or 1) * per_epoch))
    eval_every = min(cfg.eval_every or per_epoch, steps)
    say(f"images: {len(x_tr):,} train / {len(x_va):,} validation / {len(x_te):,} test, "
        f"{'x'.join(map(str, x_tr.shape[1:]))}, {n_cls} classes")
    say(f"{cfg.model} ({cfg.objective}): {sum(p.numel() for p in net.parameters()):,} "
        f"backbone parameters ({sum(p.numel() for p in model.parameters()):,} trained); "
        f"{steps} steps of {bs} ({steps * bs / len(x_tr):.2f} epochs), evaluation every "
        f"{eval_every} steps on {len(val_b)} validation batches")
    trainer = _build_trainer(cfg, model, objective, metrics, val_b, steps, eval_every,
                             lambda idx: (Tensor(x_tr[idx]), Tensor(y_tr[idx])), len(x_tr))
    if cfg.resume:
        trainer.load_checkpoint(cfg.resume)
    base = {"chance_accuracy": 1.0 / n_cls,
            "majority_test_accuracy": float(np.bincount(test.labels).max() / len(test))}
    extra = {"normalize": {"mean": mean, "std": std}, "label_names": list(train.label_names)}
    return ViTRun(cfg, net, trainer, final, base, extra)


def _build_trainer(cfg: PretrainConfig, model: nn.Module, objective: Callable[..., Any],
                   metrics: list[str], val_b: list[Any], steps: int, eval_every: int,
                   fetch: Callable[[np.ndarray], Any], n_train: int) -> Trainer:
    params = list(model.parameters())
    # No decay on biases, norms, the class token and positions: all of them 1-D or (1, T, D)
    # tables that weight decay would only pull towards zero.
    decayed = [p for p in params if p.ndim == 2 or p.ndim == 4]
    rest = [p for p in params if not (p.ndim == 2 or p.ndim == 4)]
    groups: list[dict[str, Any]] = [{"params": decayed, "weight_decay": cfg.weight_decay},
                                    {"params": rest, "weight_decay": 0.0}]
    optimizer = AdamW(groups, lr=float(cfg.lr or 0), betas=(0.9, 0.95))
    warmup = max(1, steps // 20) if cfg.warmup_steps is None else cfg.warmup_steps
    scheduler = lr_scheduler.get_cosine_schedule_with_warmup(optimizer, warmup, steps)
    loader = RoundLoader(n_train, int(cfg.batch_size or 1), fetch, eval_every, cfg.seed)
    ckpt = Checkpoint(cfg.checkpoint_dir or cfg.stem + ".checkpoints",
                      cfg.checkpoint_every or _NEVER, keep_last=cfg.keep_checkpoints)
    return ObjectiveTrainer(model, optimizer, train_loader=loader, eval_loader=val_b,
                             scheduler=scheduler, max_steps=steps,
                             clip_grad_norm=cfg.grad_clip or None, metrics=metrics,
                             callbacks=[ckpt], log_dir=cfg.log_dir, log_every=cfg.log_every,
                             progress=cfg.progress, objective=objective)


# ---- files -------------------------------------------------------------------------------------

def save_vit(cfg: PretrainConfig, net: ViT, metrics: dict[str, float],
             baselines: dict[str, float], extra: dict[str, Any], steps: int,
             seconds: float) -> dict[str, str]:
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    paths = {"weights": os.fspath(cfg.out), "config": cfg.stem + ".config.json"}
    io.save(net.state_dict(), cfg.out, metadata={"format": "minitl.pretrained/1",
                                                 "model": cfg.model})
    meta = {"format": "minitl.pretrained/1", "model": cfg.model, "family": "vit",
            "model_config": dataclasses.asdict(net.config), "tokenizer": None,
            "objective": cfg.objective, "steps": steps, "train_seconds": round(seconds, 1),
            "metrics": metrics, "baselines": baselines, **extra,
            "settings": {k: v for k, v in dataclasses.asdict(cfg).items()
                         if k not in ("progress", "log_every", "out")}}
    Path(paths["config"]).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return paths


def load_pretrained_vit(path: str | os.PathLike[str]) -> tuple[ViT, dict[str, Any]]:
    """(ViT with the saved weights, config.json contents) of a run of `prepare_vit`."""
    stem = os.fspath(path).removesuffix(".safetensors")
    meta = json.loads(Path(stem + ".config.json").read_text(encoding="utf-8"))
    if meta.get("family") != "vit":
        raise ValueError(f"{os.fspath(path)!r} holds a {meta.get('family')!r} model, not a ViT")
    net = ViT(ViTConfig(**meta["model_config"]))
    net.load_state_dict(io.load(path))
    return net, meta
