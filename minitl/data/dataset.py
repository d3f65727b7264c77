"""Map-style datasets: Dataset, TensorDataset, Subset, ConcatDataset, random_split.

Same contract as `torch.utils.data`: a dataset has `__len__` and `__getitem__(i)`
returning one sample. Samples stay numpy arrays / Python values; the DataLoader's
collate function turns a batch of them into minitl Tensors, so indexing one
example never builds an autograd node.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from minitl.tensor import Tensor

T = TypeVar("T")


class Dataset(Generic[T]):
    """Base class: subclasses implement `__getitem__` and `__len__`."""

    def __getitem__(self, index: int) -> T:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[T]:
        for i in range(len(self)):
            yield self[i]

    def __add__(self, other: Dataset[T]) -> ConcatDataset[T]:
        return ConcatDataset([self, other])


class TensorDataset(Dataset[tuple]):
    """Rows of equally long arrays: `ds[i] == (a[i], b[i], ...)`.

    Accepts numpy arrays, minitl Tensors (their data is copied to host memory) or anything
    `np.asarray` understands.
    """

    def __init__(self, *arrays: Any) -> None:
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        self.arrays = tuple(_to_numpy(a) for a in arrays)
        n = len(self.arrays[0])
        if any(len(a) != n for a in self.arrays):
            raise ValueError("TensorDataset: arrays differ in their first dimension: "
                             f"{[a.shape for a in self.arrays]}")

    def __getitem__(self, index: int) -> tuple:
        return tuple(a[index] for a in self.arrays)

    def __len__(self) -> int:
        return len(self.arrays[0])


class Subset(Dataset[T]):
    """The examples of `dataset` at `indices`, in that order."""

    def __init__(self, dataset: Dataset[T], indices: Sequence[int] | np.ndarray) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __getitem__(self, index: int) -> T:
        return self.dataset[int(self.indices[index])]

    def __len__(self) -> int:
        return len(self.indices)


class ConcatDataset(Dataset[T]):
    """Several datasets one after another."""

    def __init__(self, datasets: Sequence[Dataset[T]]) -> None:
        self.datasets = list(datasets)
        self.cumulative_sizes = np.cumsum([len(d) for d in self.datasets]).tolist()

    def __getitem__(self, index: int) -> T:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for ConcatDataset of {len(self)}")
        k = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[k - 1] if k else 0
        return self.datasets[k][index - start]

    def __len__(self) -> int:
        return self.cumulative_sizes[-1] if self.cumulative_sizes else 0


def split_lengths(n: int, lengths: Sequence[float]) -> list[int]:
    """Turn fractions summing to 1 into counts summing to `n` (PyTorch's rule: floor each,
    then hand the remainder out one by one from the front); integer counts pass through."""
    if all(isinstance(x, (int, np.integer)) for x in lengths):
        counts = [int(x) for x in lengths]
    elif math.isclose(sum(lengths), 1.0) and all(0 <= x <= 1 for x in lengths):
        counts = [math.floor(n * f) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
    else:
        raise ValueError(f"lengths must be counts summing to {n} or fractions summing to 1, "
                         f"got {list(lengths)}")
    if sum(counts) != n or any(c < 0 for c in counts):
        raise ValueError(f"lengths {counts} do not add up to the dataset size {n}")
    return counts


def random_split(dataset: Dataset[T], lengths: Sequence[float],
                 seed: int = 0) -> list[Subset[T]]:
    """Split into non-overlapping random Subsets; the same seed gives the same split."""
    counts = split_lengths(len(dataset), lengths)
    perm = np.random.default_rng(seed).permutation(len(dataset))
    bounds = np.cumsum([0, *counts])
    return [Subset(dataset, perm[a:b]) for a, b in itertools.pairwise(bounds)]


def _to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.data if isinstance(a.data, np.ndarray) else a.to("cpu").data
    return np.asarray(a)
