"""Sentence-classification data for the recipes: token ids, label samples, batches.

    task = load_task("movie-reviews", tokenizer, n_labels=100, seed=0, eval_split="test")
    task.train, task.eval                 # EncodedText: ids (cut at max_length) and labels
    task.unlabeled                        # train-split sentences outside the label sample

`n_labels` sentences are drawn stratified by label from the train split, as a function of
`seed`; the eval split is fixed for every seed. `max_length=None` takes the length from
the train split's text, labels unused (`length_from_data`: the 95th percentile of token
counts of 2,000 of its sentences), so short tweets are not padded to 128 tokens and long
reviews are not cut at 32 (the old fixed length, 32, cut 29% of movie-review sentences).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minitl.data import DataLoader, Dataset, WordPieceTokenizer, load_dataset, pad_collate
from minitl.data.corpora import stratified_split
from minitl.tensor import Tensor

__all__ = ["EVAL_SPLITS", "EncodedText", "Task", "encode_texts", "length_from_data",
           "load_task", "make_loader", "sample_indices"]

EVAL_SPLITS = ("validation", "test")
MIN_LENGTH, MAX_LENGTH = 16, 128  # bounds on a length taken from the data


class EncodedText(Dataset[dict[str, Any]]):
    """Token ids (truncated) and labels; `ds[i] == {"input_ids", "labels"}` for pad_collate."""

    def __init__(self, ids: list[np.ndarray], labels: Any, texts: Sequence[str] = ()):
        self.ids, self.labels, self.texts = ids, np.asarray(labels, np.int64), list(texts)
        if len(self.labels) != len(ids):
            raise ValueError(f"{len(ids)} sentences but {len(self.labels)} labels")
        self.lengths = [len(x) for x in ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": int(self.labels[i])}

    def subset(self, idx: Sequence[int] | np.ndarray) -> EncodedText:
        idx = np.asarray(idx, np.int64)
        return EncodedText([self.ids[i] for i in idx], self.labels[idx],
                           [self.texts[i] for i in idx] if self.texts else ())


def encode_texts(tokenizer: WordPieceTokenizer, texts: Sequence[str], labels: Any,
                 max_length: int) -> EncodedText:
    ids = [np.asarray(tokenizer.encode(t, max_length=max_length), np.int64) for t in texts]
    return EncodedText(ids, np.asarray(labels), texts)


def length_from_data(tokenizer: WordPieceTokenizer, texts: Sequence[str],
                     percentile: float = 95.0) -> int:
    """Tokens per sentence ([CLS] and [SEP] included) that cover `percentile` % of `texts`,
    rounded up to a multiple of 8 and kept within [16, 128]."""
    if not texts:
        raise ValueError("length_from_data needs at least one sentence")
    n = [len(tokenizer.encode(t)) for t in texts]
    q = int(np.ceil(np.percentile(n, percentile) / 8.0)) * 8
    return int(min(max(q, MIN_LENGTH), MAX_LENGTH))


@dataclass
class Task:
    name: str
    train: EncodedText  # the labelled sample
    eval: EncodedText  # the whole eval split (or a fixed subset of it)
    label_names: tuple[str, ...]
    max_length: int
    eval_split: str = "validation"
    unlabeled: list[str] = field(default_factory=list)  # train sentences not in the sample

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def sample_indices(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """n indices stratified by label, a function of `seed` (all of them for None)."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    if n < 1:
        raise ValueError(f"a label sample needs n >= 1, got {n}")
    return stratified_split(labels, (1 - n / len(labels), n / len(labels)), seed)[1]


def load_task(name: str, tokenizer: WordPieceTokenizer, n_labels: int | None,
              eval_size: int | None = None, *, seed: int = 0, max_length: int | None = None,
              root: str | None = None, eval_split: str = "validation",
              unlabeled: int | None = 0) -> Task:
    """`n_labels` training sentences drawn (stratified, by `seed`) from the train split
    (0: none, the zero-shot setting; None: all), and `eval_size` sentences of `eval_split`
    (None: all of them; the same subset for every seed). `unlabeled` sentences of the
    rest of the train split come without their labels (None: all of the rest)."""
    if eval_split not in EVAL_SPLITS:
        raise ValueError(f"eval_split must be one of {EVAL_SPLITS}, got {eval_split!r}")
    splits = load_dataset(name, root=root)
    train = splits["train"]
    picked = (np.zeros(0, np.int64) if n_labels == 0
              else sample_indices(train.labels, n_labels, seed))
    rest = np.setdiff1d(np.arange(len(train)), picked)
    tr = train.subset(picked)
    ev = splits[eval_split]
    ev = ev.subset(sample_indices(ev.labels, eval_size, 0))
    if max_length is None:  # a property of the domain's text: label-free, never eval text
        look = np.random.default_rng(0).permutation(len(train))[:2000]
        max_length = length_from_data(tokenizer, [train.texts[i] for i in look])
    return Task(name, encode_texts(tokenizer, tr.texts, tr.labels, max_length),
                encode_texts(tokenizer, ev.texts, ev.labels, max_length), tr.label_names,
                max_length, eval_split, _unlabeled(train.texts, rest, unlabeled, seed))


def _unlabeled(texts: Sequence[str], rest: np.ndarray, n: int | None, seed: int) -> list[str]:
    if n is not None and n < 0:
        raise ValueError(f"unlabeled must be >= 0 or None (all), got {n}")
    if n is not None and n < len(rest):
        rest = np.sort(np.random.default_rng(seed + 104729).choice(rest, n, replace=False))
    return [texts[i] for i in rest]


def make_loader(data: EncodedText, batch_size: int, shuffle: bool, seed: int = 0,
                pad_id: int = 0, extra: dict[str, int] | None = None) -> DataLoader:
    """Length-bucketed padded batches; `extra` adds constant int fields (source_index)."""
    pad = pad_collate(pad_id)

    def collate(batch: Sequence[Any]) -> dict[str, Any]:
        return {**pad(batch), **{k: Tensor(np.full(len(batch), v, np.int64))
                                 for k, v in (extra or {}).items()}}
    return DataLoader(data, batch_size, shuffle=shuffle, seed=seed, collate_fn=collate,
                      bucket_by_length=True, lengths=data.lengths, pool_factor=8)
