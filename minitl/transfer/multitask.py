"""Multi-task fine-tuning: one shared encoder, one head per task, tasks drawn by size.

    model = MultiTaskModel(encoder, {"movie-reviews": 2, "trec-questions": 6, "sms-spam": 2})
    logits = model(ids, mask, task="trec-questions")             # (B, 6) through one head
    out = model(ids, mask, task="sms-spam", labels=y)            # {"loss", "logits"}
    sampler = TaskSampler({"movie-reviews": 320, "trec-questions": 160, "sms-spam": 80},
                          temperature=2.0, seed=0)               # p_t ∝ n_t ** (1 / T)
    loader = MultiTaskLoader(loaders, sampler, length=500)       # {"task", **batch} per draw
    Trainer(model, opt, None, loader, max_steps=500).fit()       # the model returns its loss

Each optimizer step trains on one batch of one task: the sampled task's head and the shared
encoder get gradients, the other heads none. Which task comes next is drawn with
probability proportional to its labelled-set size to the power 1/T (temperature-scaled
mixing, as in XLM arXiv:1901.07291 and T5 arXiv:1910.10683): T = 1 proportional to size,
T -> inf uniform; a larger T moves steps from the large tasks to the small ones. The draws
are a function of (seed, epoch), so a run restarted at an epoch replays the same tasks.

The sentence embedding is the encoder's own (token states mean-pooled over the attention
mask, L2-normalised), as in `minitl.recipes.sentence_model.SentenceClassifier`, so a head of
this model and a single-task classifier read the same features.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl import nn
from minitl.models.bert import Bert, mean_pool
from minitl.tensor import Tensor

__all__ = ["MultiTaskLoader", "MultiTaskModel", "TaskSampler", "task_probabilities"]


class MultiTaskModel(nn.Module):
    """A shared encoder (`bert.*`), dropout, and a linear head per task (`heads.<task>.*`).

    Args:
        encoder: the shared BERT-style encoder.
        num_labels: task name -> number of classes (the order is the heads' order).
        dropout: on the sentence embedding before each head.

    Shape:
        - input_ids, attention_mask: (B, T); output: logits (B, num_labels[task])
    """

    def __init__(self, encoder: Bert, num_labels: Mapping[str, int], dropout: float = 0.1
                 ) -> None:
        super().__init__()
        if not num_labels:
            raise ValueError("MultiTaskModel needs at least one task")
        d = encoder.config.hidden_size
        self.bert = encoder
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({t: nn.Linear(d, n) for t, n in num_labels.items()})
        for head in self.heads.values():
            nn.init.normal_(head.weight, 0.0, encoder.config.initializer_range)
            nn.init.zeros_(head.bias)

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    def embed(self, input_ids: Any, attention_mask: Any) -> Tensor:
        """(B, D) sentence embeddings: mean over the mask, L2-normalised."""
        h = self.bert(input_ids, attention_mask=attention_mask)  # (B, T, D)
        return F.normalize(mean_pool(h, attention_mask), dim=-1)

    def head(self, task: str) -> nn.Linear:
        if task not in self.heads:
            raise KeyError(f"no head for task {task!r}; tasks: {', '.join(self.tasks)}")
        return self.heads[task]  # type: ignore[return-value]

    def classify(self, emb: Tensor, task: str) -> Tensor:
        return self.head(task)(self.dropout(emb))  # (B, C_task)

    def forward(self, input_ids: Any, attention_mask: Any, task: str,
                labels: Any = None) -> Any:
        """Logits of `task`'s head; with `labels`, {"loss": cross-entropy, "logits"}."""
        logits = self.classify(self.embed(input_ids, attention_mask), task)
        if labels is None:
            return logits
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}

    def forward_all(self, input_ids: Any, attention_mask: Any) -> dict[str, Tensor]:
        """Every head's logits from ONE encoder pass: task -> (B, C_task)."""
        emb = self.dropout(self.embed(input_ids, attention_mask))
        return {t: h(emb) for t, h in self.heads.items()}


def task_probabilities(sizes: Mapping[str, int], temperature: float = 1.0
                       ) -> dict[str, float]:
    """p_t = n_t^(1/T) / sum_s n_s^(1/T); T = inf gives the uniform distribution."""
    if not sizes:
        raise ValueError("task_probabilities needs at least one task")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if any(n <= 0 for n in sizes.values()):
        raise ValueError(f"task sizes must be > 0, got {dict(sizes)}")
    n = np.array([float(v) for v in sizes.values()])
    # in log space: n ** (1/T) overflows for large n and small T
    z = np.log(n) / temperature
    w = np.exp(z - z.max())
    return dict(zip(sizes, (w / w.sum()).tolist()))


class TaskSampler:
    """Draws task names with p_t ∝ size_t ** (1 / temperature), reproducibly.

    Args:
        sizes: task name -> training-set size (any positive weight).
        temperature: 1 proportional to size, `math.inf` uniform.
        seed: the draws are a function of (seed, epoch) (`set_epoch`).
    """

    def __init__(self, sizes: Mapping[str, int], temperature: float = 1.0, seed: int = 0
                 ) -> None:
        self.sizes, self.temperature, self.seed = dict(sizes), float(temperature), seed
        self.probabilities = task_probabilities(self.sizes, self.temperature)
        self.tasks = list(self.sizes)
        self._p = np.array([self.probabilities[t] for t in self.tasks])
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Restart the draws at those of `epoch` (same seed and epoch, same tasks)."""
        self.epoch = epoch
        self._rng = np.random.default_rng([self.seed, epoch])

    def sample(self) -> str:
        return self.tasks[int(self._rng.choice(len(self.tasks), p=self._p))]

    def draw(self, n: int) -> list[str]:
        """The next n tasks."""
        return [self.tasks[i] for i in self._rng.choice(len(self.tasks), size=n, p=self._p)]

    def expected_counts(self, n: int) -> dict[str, float]:
        return {t: n * p for t, p in self.probabilities.items()}

    def __repr__(self) -> str:
        probs = ", ".join(f"{t}: {p:.3f}" for t, p in self.probabilities.items())
        return f"TaskSampler(T={self.temperature:g}, {probs})"


class MultiTaskLoader:
    """Batches of several tasks interleaved by a `TaskSampler`: each draw takes the next
    batch of that task's loader and yields it as `{"task": name, **batch}`; a loader that
    runs out starts its next pass. One epoch is `length` batches.

    Reproducible by epoch, so the Trainer's resume (set_epoch, then skip the batches
    already used) replays the same stream: in epoch e, task t's k-th pass over its loader
    (m_t batches) is that loader's epoch e * ceil(length / m_t) + k, an epoch no other
    (e, k) uses. `counts` holds the batches yielded per task so far."""

    def __init__(self, loaders: Mapping[str, Iterable[Any]], sampler: TaskSampler,
                 length: int) -> None:
        missing = set(sampler.tasks) ^ set(loaders)
        if missing:
            raise ValueError(f"the sampler's tasks and the loaders differ: {sorted(missing)}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.loaders, self.sampler, self.length = dict(loaders), sampler, length
        self.epoch = 0
        self.counts: Counter[str] = Counter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _stream(self, task: str) -> Iterator[Any]:
        loader = self.loaders[task]
        m = len(loader) if hasattr(loader, "__len__") else self.length  # type: ignore[arg-type]
        first = self.epoch * math.ceil(self.length / max(1, m))
        for k in range(first, first + self.length + 1):  # a pass yields >= 1 batch
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(k)
            got = False
            for batch in loader:
                got = True
                yield batch
            if not got:
                raise ValueError(f"the loader of task {task!r} produced no batches")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.sampler.set_epoch(self.epoch)
        streams = {t: self._stream(t) for t in self.loaders}
        for task in self.sampler.draw(self.length):
            self.counts[task] += 1
            yield {"task": task, **next(streams[task])}
