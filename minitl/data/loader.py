"""DataLoader, samplers and collate functions.

Batches come out in an order that is a pure function of `(seed, epoch)`: epoch e
of a loader built with seed s is the same on every machine and every run, and
`set_epoch(e)` jumps straight to it (resuming a run mid-way replays the right
order). Without `set_epoch` each pass over the loader moves to the next epoch,
so successive epochs differ as they do in PyTorch. A loader given no seed draws
one when it is built, from `generator=` or else from minitl's default generator,
so `minitl.manual_seed(s)` before building it fixes its order as in PyTorch.

Text batches are padded by `pad_collate` to the longest sequence in the batch,
with an `attention_mask` (1 = real token, 0 = padding). `LengthBucketSampler`
(`bucket_by_length=True`) groups examples of similar length so there is little
padding to add: it shuffles, cuts the order into pools of `pool_factor`
batches, sorts each pool by length, cuts it into batches and shuffles the
batches (the "sorted mega-batch" scheme of fairseq and AllenNLP).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from minitl.creation import default_generator
from minitl.tensor import Tensor, get_default_dtype

# ---------------------------------------------------------------- samplers


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    # SeedSequence mixes both numbers: (0, 1) and (1, 0) give unrelated streams.
    return np.random.default_rng([seed, epoch])


class Sampler:
    """Yields dataset indices; `set_epoch` picks which epoch's order to produce."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Any]:  # indices, or lists of them for batch samplers
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class SequentialSampler(Sampler):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


class _IterableSampler(Sampler):
    """Wraps a caller's iterable of indices (a list, a range, a PyTorch-style sampler) so
    that BatchSampler can forward `set_epoch` to it when it has one."""

    def __init__(self, indices: Any) -> None:
        self.indices = indices

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.indices, "set_epoch"):
            self.indices.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class RandomSampler(Sampler):
    """A fresh permutation of range(n) per epoch, fixed by (seed, epoch)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed = n, seed

    def __iter__(self) -> Iterator[int]:
        return iter(_epoch_rng(self.seed, self.epoch).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class BatchSampler(Sampler):
    """Groups the indices of `sampler` into lists of `batch_size`."""

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


class LengthBucketSampler(Sampler):
    """Batches of indices whose `lengths` are close, to cut padding.

    Args:
        lengths: one length per example (tokens, words, ...).
        batch_size: examples per batch.
        shuffle: randomise pools and batch order per epoch; False sorts the whole dataset.
        seed: with the epoch, fixes the order.
        drop_last: drop the one incomplete batch.
        pool_factor: a pool holds `pool_factor * batch_size` examples; smaller pools keep
            more randomness, larger ones less padding.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, pool_factor: int = 50) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.pool = drop_last, max(1, pool_factor) * batch_size

    def __iter__(self) -> Iterator[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        rng = _epoch_rng(self.seed, self.epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        pool = self.pool if self.shuffle else max(n, 1)
        batches = []
        for start in range(0, n, pool):
            chunk = order[start:start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + bs] for i in range(0, len(chunk), bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()  # pools hold whole batches, so only the very last can be short
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return iter([b.tolist() for b in batches])

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


# ---------------------------------------------------------------- collate

def _as_tensor(arr: np.ndarray) -> Tensor:
    return Tensor(np.ascontiguousarray(arr))


def default_collate(batch: Sequence[Any]) -> Any:
    """Stack a list of samples into Tensors, keeping the samples' structure.

    numpy arrays and Tensors are stacked (dtype kept); Python ints become int64, Python
    floats the default float dtype, bools bool; strings stay a list; tuples, lists and
    dicts are collated field by field.
    """
    first = batch[0]
    if isinstance(first, Tensor):
        return _as_tensor(np.stack([_host(t) for t in batch]))
    if isinstance(first, np.ndarray):
        shapes = {a.shape for a in batch}
        if len(shapes) > 1:
            raise ValueError(f"default_collate: samples have different shapes {sorted(shapes)};"
                             " pad them, e.g. collate_fn=minitl.data.pad_collate(pad_id)")
        return _as_tensor(np.stack(batch))
    if isinstance(first, (bool, np.bool_)):
        return _as_tensor(np.asarray(batch, dtype=np.bool_))
    if isinstance(first, np.generic):
        return _as_tensor(np.asarray(batch, dtype=first.dtype))
    if isinstance(first, int):
        return _as_tensor(np.asarray(batch, dtype=np.int64))
    if isinstance(first, float):
        return _as_tensor(np.asarray(batch, dtype=get_default_dtype()))
    if isinstance(first, (str, bytes)):
        return list(batch)
    if isinstance(first, Mapping):
        return {k: default_collate([s[k] for s in batch]) for k in first}
    if isinstance(first, (tuple, list)):
        if len({len(s) for s in batch}) > 1:
            raise ValueError("default_collate: samples have different numbers of fields; "
                             "for token id lists use collate_fn=minitl.data.pad_collate(pad_id)")
        fields = [default_collate(list(f)) for f in zip(*batch)]
        return tuple(fields) if isinstance(first, tuple) else fields
    raise TypeError(f"default_collate: don't know how to batch {type(first).__name__}")


def _host(t: Tensor) -> np.ndarray:
    return t.data if isinstance(t.data, np.ndarray) else t.to("cpu").data


_SEQ_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def pad_collate(pad_id: int | None = None, label_pad_id: int = -100,
                max_length: int | None = None, pad_to_multiple_of: int | None = None,
                tokenizer: Any = None) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """A collate_fn padding variable-length token ids into a rectangular batch.

    Samples may be dicts (`input_ids`, optional `token_type_ids`, `label`/`labels` and
    anything else), `(ids, label)` tuples, bare id sequences, or `(text, label)` tuples when
    a `tokenizer` (anything with `encode(text, max_length=...)`) is given.

    Returns a dict: `input_ids` (B, T) int64 padded with `pad_id`, `attention_mask` (B, T)
    int64 (1 = token, 0 = padding), `token_type_ids` (B, T) when the samples have them,
    `labels` (B,) int64, or (B, T) padded with `label_pad_id` for per-token labels; other
    dict fields go through `default_collate`. `max_length` truncates (keeping the start);
    `pad_to_multiple_of` rounds T up, which suits kernels tuned for multiples of 8.
    """
    if pad_id is None:
        pad_id = getattr(tokenizer, "pad_token_id", None)
        pad_id = 0 if pad_id is None else int(pad_id)

    def ids_of(x: Any) -> np.ndarray:
        if isinstance(x, str):
            if tokenizer is None:
                raise TypeError("pad_collate got text; pass tokenizer= to encode it")
            x = tokenizer.encode(x, max_length=max_length)
        if isinstance(x, Tensor):
            x = _host(x)
        ids = np.asarray(x, dtype=np.int64).reshape(-1)
        return ids[:max_length] if max_length is not None else ids

    def collate(batch: Sequence[Any]) -> dict[str, Any]:
        samples = [_as_dict(s) for s in batch]
        seqs = {k: [ids_of(s[k]) for s in samples] for k in _SEQ_KEYS if k in samples[0]}
        lens = np.array([len(x) for x in seqs["input_ids"]])
        T = int(lens.max()) if len(lens) else 0
        if pad_to_multiple_of:
            T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
        out: dict[str, Any] = {}
        fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0}
        for k, rows in seqs.items():
            out[k] = _as_tensor(_pad(rows, T, fill[k]))
        if "attention_mask" not in out:
            out["attention_mask"] = _as_tensor((np.arange(T)[None, :] < lens[:, None])
                                               .astype(np.int64))
        if "labels" in samples[0]:
            labels = [s["labels"] for s in samples]
            if np.ndim(_host(labels[0]) if isinstance(labels[0], Tensor) else labels[0]) == 0:
                out["labels"] = _as_tensor(np.array([int(x) for x in labels], dtype=np.int64))
            else:
                out["labels"] = _as_tensor(_pad([ids_of(x) for x in labels], T, label_pad_id))
        for k in samples[0]:
            if k not in out:
                out[k] = default_collate([s[k] for s in samples])
        return out

    return collate


def _as_dict(sample: Any) -> Mapping[str, Any]:
    if isinstance(sample, Mapping):
        if "label" in sample and "labels" not in sample:
            sample = {("labels" if k == "label" else k): v for k, v in sample.items()}
        return sample
    if isinstance(sample, tuple) and len(sample) == 2:
        return {"input_ids": sample[0], "labels": sample[1]}
    if isinstance(sample, tuple) and len(sample) == 1:
        return {"input_ids": sample[0]}
    if isinstance(sample, tuple):
        raise TypeError(f"pad_collate: a tuple sample must be (ids,) or (ids, label), got "
                        f"{len(sample)} fields; use a dict with input_ids/token_type_ids/labels")
    return {"input_ids": sample}


def _pad(rows: Sequence[np.ndarray], T: int, value: int) -> np.ndarray:
    out = np.full((len(rows), T), value, dtype=np.int64)  # (B, T)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r[:T]
    return out


# ---------------------------------------------------------------- loader

def _default_length(sample: Any) -> int:
    if isinstance(sample, Mapping):
        sample = sample["input_ids"]
    elif isinstance(sample, tuple):
        sample = sample[0]
    if isinstance(sample, str):
        return len(sample.split())  # words: a cheap stand-in for the token count
    return len(sample)


class DataLoader:
    """Iterate over `dataset` in batches.

    Args:
        dataset: a Dataset, or anything with `__len__` and `__getitem__`.
        batch_size: examples per batch.
        shuffle: a new order every epoch, fixed by `(seed, epoch)`.
        seed: the order's seed. None (the default) draws one when the loader is built, from
            `generator` if given, else from minitl's default generator (`minitl.manual_seed`).
        generator: a `numpy.random.Generator` to draw the seed from instead of minitl's.
            Unlike PyTorch, which draws from it at every pass, the loader draws once, so
            `set_epoch(e)` can replay epoch e after a resume.
        drop_last: drop the final incomplete batch.
        collate_fn: list of samples -> batch; `default_collate` stacks into Tensors.
        bucket_by_length: batch examples of similar length (see `LengthBucketSampler`).
        lengths: per-example lengths for bucketing; by default `dataset.lengths` if it
            exists, else `length_fn(dataset[i])` for every i (token ids: their count;
            text: its word count).
        length_fn: how to measure one sample when `lengths` is not given.
        pool_factor: bucketing pool size in batches.
        sampler: an iterable of dataset indices to batch in its order (a list, a range, a
            `Sampler`); it fixes the order itself, so shuffle=True with it is a ValueError.
        batch_sampler: yields lists of indices; overrides the options above.
    """

    def __init__(self, dataset: Any, batch_size: int = 1,
                 shuffle: bool = False, seed: int | None = None, drop_last: bool = False,
                 collate_fn: Callable[[list[Any]], Any] | None = None,
                 bucket_by_length: bool = False, lengths: Sequence[int] | None = None,
                 length_fn: Callable[[Any], int] | None = None, pool_factor: int = 50,
                 batch_sampler: Sampler | None = None, sampler: Any = None,
                 generator: np.random.Generator | None = None) -> None:
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if sampler is not None and bucket_by_length:
            raise ValueError("DataLoader: sampler and bucket_by_length both choose the order; "
                             "pass one of them")
        if generator is not None and not isinstance(generator, np.random.Generator):
            raise TypeError(f"DataLoader: generator must be a numpy.random.Generator, got "
                            f"{type(generator).__name__}")
        if seed is None and shuffle and batch_sampler is None:
            # Drawn now rather than per pass so that the order stays a function of
            # (seed, epoch), which is what lets Trainer.resume replay an epoch.
            rng = generator if generator is not None else default_generator()
            seed = int(rng.integers(2**63 - 1))
        elif seed is None:
            seed = 0  # unused: drawing it would shift the global stream that init and dropout use
        self.dataset = dataset
        self.batch_size, self.drop_last, self.seed = batch_size, drop_last, seed
        self.collate_fn = collate_fn if collate_fn is not None else default_collate
        if batch_sampler is None:
            n = len(dataset)
            if bucket_by_length:
                if lengths is None:
                    lengths = getattr(dataset, "lengths", None)
                if lengths is None:
                    fn = length_fn or _default_length
                    lengths = [fn(dataset[i]) for i in range(n)]
                if len(lengths) != n:
                    raise ValueError(f"{len(lengths)} lengths for a dataset of {n} examples")
                batch_sampler = LengthBucketSampler(lengths, batch_size, shuffle, seed,
                                                    drop_last, pool_factor)
            else:
                if sampler is not None:
                    chosen = sampler if isinstance(sampler, Sampler) else _IterableSampler(sampler)
                elif shuffle:
                    chosen = RandomSampler(n, seed)
                else:
                    chosen = SequentialSampler(n)
                batch_sampler = BatchSampler(chosen, batch_size, drop_last)
        self.batch_sampler = batch_sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The next pass produces epoch `epoch`'s order."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Any]:
        self.batch_sampler.set_epoch(self.epoch)
        batches = list(self.batch_sampler)  # fix this epoch's order before moving on
        self.epoch += 1
        return (self.collate_fn([self.dataset[i] for i in b]) for b in batches)

    def __len__(self) -> int:
        return len(self.batch_sampler)
