"""Rehearsal: mix source-task examples into fine-tuning batches, against forgetting
(experience replay as in Robins 1995 and its use in continual fine-tuning).

`ReplayBuffer.mix(batch)` appends source examples to a target batch so that, over the
run, a fraction `ratio` of all examples seen is from the source task: after target
batches totalling n examples it has added floor(n * ratio / (1 - ratio)) source examples
(error-free bookkeeping, so the realised ratio never drifts). Source examples come from
a seeded permutation, reshuffled each time it is used up: the same seed and the same
batches give the same mixed batches.

Batches are tuples/lists of arrays or Tensors (`(inputs, labels)`), dicts of them (a
padded text batch: input_ids, attention_mask, labels) or one array; the source data has
the same structure with a leading example axis, or is a sequence of examples with a
`collate_fn`. When the source and target batches differ in a trailing size (padded text
of different lengths) both are padded to the larger with `pad_value`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from minitl.tensor import Tensor

__all__ = ["ReplayBuffer", "ReplayLoader"]


def _np(x: Any) -> np.ndarray:
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def _fields(batch: Any) -> tuple[str, list[Any]]:
    if isinstance(batch, Mapping):
        return "dict", list(batch.items())
    if isinstance(batch, (tuple, list)):
        return type(batch).__name__, list(batch)
    return "single", [batch]


class ReplayBuffer:
    """Source-task examples to replay into target batches.

    Args:
        source_data: a batch-like structure of arrays/Tensors with a leading example axis
            (tuple, list, dict or one array), or a sequence of examples with `collate_fn`.
        ratio: fraction of all examples seen that are source examples, in [0, 1).
        seed: seeds the sampling order.
        pad_value: padding for trailing sizes that differ; a number, or a dict by field
            key / position (e.g. {"labels": -100}), default 0.
        collate_fn: turns a list of source examples into a batch.
    """

    def __init__(self, source_data: Any, ratio: float = 0.1, seed: int = 0,
                 pad_value: float | Mapping[Any, float] = 0,
                 collate_fn: Callable[[list[Any]], Any] | None = None) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {ratio}")
        self.ratio, self.seed, self.pad_value = float(ratio), seed, pad_value
        self.collate_fn = collate_fn
        self._src: list[tuple[Any, np.ndarray]] = []
        if collate_fn is not None:
            self._examples: Sequence[Any] | None = source_data
            self._kind = "examples"
            n = len(source_data)
        else:
            self._examples = None
            self._kind, fields = _fields(source_data)
            self._src = [(k, _np(v)) for k, v in fields] if self._kind == "dict" else \
                [(i, _np(v)) for i, v in enumerate(fields)]
            sizes = {v.shape[0] for _, v in self._src}
            if len(sizes) != 1:
                raise ValueError(f"source fields differ in their number of examples: {sizes}")
            n = sizes.pop()
        if n == 0:
            raise ValueError("ReplayBuffer: no source examples")
        self.n_source = n
        self.reset()

    def reset(self) -> None:
        """Back to the state right after construction (same seed, nothing drawn)."""
        self._rng = np.random.default_rng(self.seed)
        self._order = self._rng.permutation(self.n_source)
        self._pos = 0
        self.target_seen = 0
        self.source_added = 0

    def _draw(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self._pos == self.n_source:
                self._order, self._pos = self._rng.permutation(self.n_source), 0
            take = min(k, self.n_source - self._pos)
            out.append(self._order[self._pos:self._pos + take])
            self._pos += take
            k -= take
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _source_batch(self, idx: np.ndarray) -> dict[Any, np.ndarray]:
        if self._examples is not None:
            assert self.collate_fn is not None
            batch = self.collate_fn([self._examples[int(i)] for i in idx])
            kind, fields = _fields(batch)
            pairs = fields if kind == "dict" else list(enumerate(fields))
            return {k: _np(v) for k, v in pairs}
        return {k: v[idx] for k, v in self._src}

    def _pad(self, key: Any) -> float:
        if isinstance(self.pad_value, Mapping):
            return self.pad_value.get(key, 0)
        return self.pad_value

    def _join(self, key: Any, target: Any, source: np.ndarray) -> Any:
        t = _np(target)
        s = source.astype(t.dtype, copy=False)
        if t.shape[1:] != s.shape[1:]:
            if t.ndim != s.ndim:
                raise ValueError(f"field {key!r}: target {t.shape} and source {s.shape} "
                                 f"do not stack")
            size = [max(a, b) for a, b in zip(t.shape[1:], s.shape[1:])]
            t, s = (np.pad(x, [(0, 0)] + [(0, m - d) for m, d in zip(size, x.shape[1:])],
                           constant_values=self._pad(key)) for x in (t, s))
        out = np.concatenate([t, s], axis=0)
        if not isinstance(target, Tensor):
            return out
        return Tensor(out) if target.device.type == "cpu" else Tensor(out).to(target.device)

    def n_to_add(self, batch_size: int) -> int:
        """How many source examples the next target batch of `batch_size` gets."""
        want = (self.target_seen + batch_size) * self.ratio / (1.0 - self.ratio)
        return max(0, math.floor(want + 1e-9) - self.source_added)

    def mix(self, batch: Any) -> Any:
        """The target batch with replayed source examples appended (same structure and
        types); the bookkeeping moves on by one batch."""
        kind, fields = _fields(batch)
        first = fields[0][1] if kind == "dict" else fields[0]
        b = int(first.shape[0])
        k = self.n_to_add(b)
        self.target_seen += b
        if k == 0:
            return batch
        self.source_added += k
        src = self._source_batch(self._draw(k))
        if kind == "dict":
            missing = [key for key, _ in fields if key not in src]
            if missing:
                raise KeyError(f"source data lacks the batch fields {missing}")
            return {key: self._join(key, v, src[key]) for key, v in fields}
        if len(src) != len(fields):
            raise ValueError(f"target batches have {len(fields)} fields, the source data "
                             f"{len(src)}")
        joined = [self._join(i, v, src[i]) for i, v in enumerate(fields)]
        if kind == "single":
            return joined[0]
        return tuple(joined) if kind == "tuple" else joined

    __call__ = mix

    @property
    def realised_ratio(self) -> float:
        total = self.target_seen + self.source_added
        return self.source_added / total if total else 0.0

    def wrap(self, loader: Iterable[Any]) -> ReplayLoader:
        """A loader whose batches are `mix`ed; `len` and `set_epoch` pass through."""
        return ReplayLoader(loader, self)


class ReplayLoader:
    """Iterates a target loader and mixes source examples into each batch."""

    def __init__(self, loader: Iterable[Any], buffer: ReplayBuffer) -> None:
        self.loader, self.buffer = loader, buffer

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            yield self.buffer.mix(batch)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)
