"""The training loops behind the recipes: a classifier with its encoder (with a held-out
slice for model selection), a head on fixed embeddings, and an encoder on sentence pairs.

None of them sees the eval split: they get the labelled sentences and nothing else.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl import nn
from minitl import transfer as tl
from minitl.creation import manual_seed
from minitl.data import pad_collate
from minitl.optim import AdamW
from minitl.optim.lr_scheduler import get_linear_schedule_with_warmup
from minitl.recipes.sentence_model import (
    SentenceClassifier,
    log_probabilities,
    metrics,
    predict_logits,
)
from minitl.recipes.text_data import EncodedText, make_loader, sample_indices
from minitl.tensor import Tensor
from minitl.train import LambdaCallback, Trainer

__all__ = ["Schedule", "Selection", "train_classifier", "train_head", "train_pairs"]


@dataclass
class Schedule:
    steps: int
    lr: float  # the encoder side's peak lr
    head_lr: float
    batch_size: int = 16
    warmup: float = 0.1  # share of the steps with a linear warm-up, then linear decay
    weight_decay: float = 0.01
    seed: int = 0
    progress: bool = False
    stream: Any = None
    log_dir: str | None = None  # the Trainer's metrics.jsonl and loss plot go here


@dataclass
class Selection:
    """Model selection on a held-out slice of the labelled set: scored `evals` times in
    training (and at the end), the best state is put back. Best = highest accuracy, then
    lowest loss."""

    holdout: EncodedText
    evals: int = 5
    scores: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0


class _RecipeTrainer(Trainer):
    """Classification loss on labelled rows, plus distillation on replayed rows, plus a
    penalty (EWC)."""

    def __init__(self, *args: Any, penalty: Callable[[], Tensor] | None = None,
                 teacher: np.ndarray | None = None, distill_weight: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.penalty, self.teacher, self.distill_weight = penalty, teacher, distill_weight

    def compute_loss(self, batch: Any) -> tuple[Tensor, Any, Any]:
        labels = batch["labels"]
        emb = self.model.embed(batch["input_ids"], batch["attention_mask"])  # (B, D)
        logits = self.model.classify(emb)
        loss = F.cross_entropy(logits, labels)
        if self.teacher is not None and "source_index" in batch:
            si = batch["source_index"].numpy()
            rows = np.flatnonzero(si >= 0)
            if rows.size:
                student = F.normalize(emb[Tensor(rows)], dim=-1)  # (R, D)
                cos = (student * Tensor(self.teacher[si[rows]])).sum(-1)
                loss = loss + (1.0 - cos).mean() * self.distill_weight
        if self.penalty is not None:
            loss = loss + self.penalty()
        return loss, logits, labels


def optimizer_for(strategy: str, model: SentenceClassifier, s: Schedule,
                  lr_decay: float = 0.8) -> AdamW:
    """AdamW with the head in a group of its own at `s.head_lr`; discriminative: the
    encoder's groups from `layerwise_lr_groups`; gradual: every weight, frozen ones too
    (they join as they thaw); prompt: no weight decay on the soft prompt."""
    head = list(model.classifier.parameters())
    ids = {id(p) for p in head}
    if strategy == "discriminative":
        body = [{"params": ps, "lr": g["lr"]} for g in tl.layerwise_lr_groups(
            model, s.lr, decay=lr_decay, head_patterns=("classifier.*",))
            if (ps := [p for p in g["params"] if id(p) not in ids])]
    elif strategy == "gradual":
        body = [{"params": [p for p in model.parameters() if id(p) not in ids]}]
    else:
        body = [{"params": [p for p in model.parameters()
                            if p.requires_grad and id(p) not in ids]}]
    for g in body:
        g["weight_decay"] = 0.0 if strategy == "prompt" else s.weight_decay
    return AdamW([g for g in body if g["params"]] + [{"params": head, "lr": s.head_lr}],
                 lr=s.lr, weight_decay=s.weight_decay)


def unfreezing(model: SentenceClassifier, n_stages: int, steps: int) -> LambdaCallback:
    """Head first, then the blocks (and last the embeddings) in n_stages - 1 equal groups,
    one group more every steps / n_stages optimizer steps."""
    stages = tl.bert_unfreezing_stages(model, head_patterns=("classifier.*",))
    head, rest = stages[0], stages[1:]
    k = max(1, n_stages - 1)
    groups = [[g for st in rest[i * len(rest) // k:(i + 1) * len(rest) // k] for g in st]
              for i in range(k)]
    unfreezer = tl.GradualUnfreezing(model, [head] + [g for g in groups if g])
    every = max(1, steps // len(unfreezer.stages))

    def on_step_end(trainer: Trainer, record: Any) -> None:
        if trainer.step % every == 0:
            unfreezer.step()

    return LambdaCallback(on_step_end=on_step_end)


def _selector(model: SentenceClassifier, sel: Selection, steps: int
              ) -> tuple[LambdaCallback, dict[str, Any]]:
    """A callback scoring `sel.holdout` every steps / sel.evals steps and at the end, and
    the dict where it keeps the best state so far ("state": name -> array)."""
    every = max(1, steps // max(1, sel.evals))
    best: dict[str, Any] = {"key": None, "state": None}

    def score(step: int) -> None:
        z = predict_logits(model, sel.holdout)  # one pass gives accuracy and loss
        m = metrics(z, sel.holdout.labels)
        logp = log_probabilities(z)
        loss = float(-logp[np.arange(len(z)), sel.holdout.labels].mean())
        sel.scores.append({"step": step, **m, "loss": loss})
        key = (m["accuracy"], -loss)
        if best["key"] is None or key > best["key"]:
            best["key"] = key
            best["state"] = {k: v.numpy().copy() for k, v in model.state_dict().items()}
            sel.best_step = step

    def on_step_end(trainer: Trainer, record: Any) -> None:
        if trainer.step % every == 0 or trainer.step == steps:
            score(trainer.step)

    return LambdaCallback(on_step_end=on_step_end), best


class RankShare:
    """A loader whose batches each data-parallel rank sees a slice of (rows rank::world): the
    ranks' mean-loss gradients, averaged by DistributedDataParallel, are the gradient of the
    whole batch (exactly when the batch divides evenly). A batch smaller than the number of
    ranks goes to every rank whole, so no rank gets an empty one."""

    def __init__(self, loader: Any, rank: int, world: int) -> None:
        self.loader, self.rank, self.world = loader, rank, world

    def __getattr__(self, name: str) -> Any:  # len, set_epoch, state: the loader's own
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            n = len(batch["labels"])
            yield batch if n < self.world else {k: v[self.rank::self.world]
                                                 for k, v in batch.items()}


def _data_parallel(model: SentenceClassifier, loader: Any) -> tuple[Any, Any]:
    """(DistributedDataParallel over `model`, this rank's share of `loader`) inside a
    minitl.distributed process group of several ranks; (None, loader) otherwise."""
    import minitl.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return None, loader
    ddp = dist.DistributedDataParallel(model)  # its hooks average every backward
    return ddp, RankShare(loader, dist.get_rank(), dist.get_world_size())


def train_classifier(strategy: str, model: SentenceClassifier, train: EncodedText,
                     s: Schedule, *, selection: Selection | None = None,
                     unfreeze_stages: int = 4, lr_decay: float = 0.8,
                     loader_wrap: Callable[[Any], Any] | None = None,
                     trainer_extra: dict[str, Any] | None = None,
                     on_step: Callable[[float], None] | None = None) -> int:
    """Train `model` on `train` for `s.steps` optimizer steps, warm-up then linear decay;
    returns the steps taken. With a `selection`, the best held-out state is restored."""
    loader: Any = make_loader(train, s.batch_size, shuffle=True, seed=s.seed,
                              extra={"source_index": -1} if loader_wrap else None)
    if loader_wrap is not None:
        loader = loader_wrap(loader)
    ddp, loader = _data_parallel(model, loader)  # kept alive through fit: it holds the hooks
    opt = optimizer_for(strategy, model, s, lr_decay)
    callbacks: list[Any] = []
    if strategy == "gradual":
        callbacks.append(unfreezing(model, unfreeze_stages, s.steps))
    if on_step is not None:
        callbacks.append(_step_timer(on_step))
    best: dict[str, Any] = {"state": None}
    if selection is not None:
        selector, best = _selector(model, selection, s.steps)
        callbacks.append(selector)
    trainer = _RecipeTrainer(
        model, opt, None, loader, max_steps=s.steps, callbacks=callbacks,
        scheduler=get_linear_schedule_with_warmup(opt, int(s.warmup * s.steps), s.steps),
        progress=s.progress, seed=s.seed, stream=s.stream or sys.stderr, log_dir=s.log_dir,
        **(trainer_extra or {}))
    trainer.fit()
    del ddp
    if best["state"] is not None:
        model.load_state_dict({k: Tensor(v) for k, v in best["state"].items()})
    return trainer.step


def _step_timer(on_step: Callable[[float], None]) -> LambdaCallback:
    last = [time.perf_counter()]

    def on_step_end(trainer: Trainer, record: Any) -> None:
        now = time.perf_counter()
        on_step(now - last[0])
        last[0] = now

    return LambdaCallback(on_step_end=on_step_end)


def head_steps(n: int, batch_size: int = 16) -> int:
    """A head on fixed embeddings is cheap: 100 passes, within [200, 3000] steps."""
    return int(min(3000, max(200, round(100 * n / batch_size))))


def train_head(head: nn.Linear, emb: np.ndarray, labels: np.ndarray, *, steps: int,
               lr: float, prior: float = 0.0, batch_size: int = 16, seed: int = 0,
               weight_decay: float = 0.0) -> None:
    """Logistic regression of `head` on fixed (N, D) embeddings with AdamW, in place.

    `prior` > 0 pulls the weights towards their starting values (a Gaussian prior around
    the zero-shot head): the loss gets `prior / N * sum((W - W0)^2) / 2`, strong with a
    handful of labels, fading as they grow, so a few labels refine zero-shot instead of
    overwriting it."""
    n = len(labels)
    if n == 0:
        raise ValueError("train_head needs at least one labelled embedding")
    manual_seed(seed)
    rng = np.random.default_rng(seed)
    w0 = Tensor(head.weight.numpy().copy())
    x, y = Tensor(np.ascontiguousarray(emb, np.float32)), np.asarray(labels, np.int64)
    opt = AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = get_linear_schedule_with_warmup(opt, 0, steps)
    order, pos = rng.permutation(n), 0
    for _ in range(steps):
        if pos + batch_size > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos:pos + min(batch_size, n)]
        pos += batch_size
        loss = F.cross_entropy(head(x[Tensor(idx)]), Tensor(y[idx]))
        if prior > 0:
            loss = loss + ((head.weight - w0) ** 2).sum() * (0.5 * prior / n)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


class PairLoader:
    """Batches of sentence pairs: {"a", "b": pad_collate batches, "labels": targets}."""

    def __init__(self, data: EncodedText, pairs: np.ndarray, batch_size: int, seed: int):
        self.data, self.pairs, self.batch_size, self.seed = data, pairs, batch_size, seed
        self.epoch = 0
        self.collate = pad_collate(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.pairs) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng(self.seed * 100003 + self.epoch)
        rows = self.pairs[rng.permutation(len(self.pairs))]
        for i in range(0, len(rows), self.batch_size):
            r = rows[i:i + self.batch_size]
            a = self.collate([self.data[int(j)] for j in r[:, 0]])
            b = self.collate([self.data[int(j)] for j in r[:, 1]])
            yield {"a": a, "b": b, "labels": Tensor(r[:, 2].astype(np.float32))}


class _PairTrainer(Trainer):
    """Cosine-similarity loss on pairs: (cos(u, v) - target)^2, target 1 for the same
    class and 0 for different classes (SetFit's CosineSimilarityLoss)."""

    def compute_loss(self, batch: Any) -> tuple[Tensor, Any, Any]:
        u = self.model.embed(batch["a"]["input_ids"], batch["a"]["attention_mask"])
        v = self.model.embed(batch["b"]["input_ids"], batch["b"]["attention_mask"])
        cos = (u * v).sum(-1)  # unit embeddings
        return ((cos - batch["labels"]) ** 2).mean(), None, None


def train_pairs(model: SentenceClassifier, train: EncodedText, pairs: np.ndarray,
                s: Schedule, on_step: Callable[[float], None] | None = None) -> int:
    """One pass over `pairs` (P, 3) with the cosine-similarity loss on the encoder (what
    requires grad in it: all of it, or the LoRA factors); the head is left alone."""
    params = [p for n, p in model.named_parameters()
              if p.requires_grad and not n.startswith("classifier.")]
    opt = AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    loader = PairLoader(train, pairs, s.batch_size, s.seed)
    steps = len(loader)
    trainer = _PairTrainer(
        model, opt, None, loader, max_steps=steps,
        scheduler=get_linear_schedule_with_warmup(opt, int(s.warmup * steps), steps),
        callbacks=[_step_timer(on_step)] if on_step else [], progress=s.progress,
        seed=s.seed, stream=s.stream or sys.stderr, log_dir=s.log_dir)
    trainer.fit()
    return trainer.step


def split_holdout(train: EncodedText, n_holdout: int, seed: int
                  ) -> tuple[EncodedText, EncodedText]:
    """(fit, holdout): `n_holdout` sentences drawn stratified from `train`."""
    hold = sample_indices(train.labels, n_holdout, seed + 7919)
    keep = np.setdiff1d(np.arange(len(train)), hold)
    return train.subset(keep), train.subset(hold)

