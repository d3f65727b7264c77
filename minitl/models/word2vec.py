"""Static word vectors: skip-gram with negative sampling (SGNS), word2vec (Mikolov et al.,
"Distributed Representations of Words and Phrases and their Compositionality",
arXiv:1310.4546). Each word of the vocabulary owns one fixed vector, whatever its sentence.

This file holds the vocabulary and its sampling distributions, `WordVectors` (one matrix:
similarity queries and averaged sentence features, shared with published vectors such as
GloVe, `minitl.io.word_vectors`) and the trained model (its two matrices, save/load); the
training loop is in `minitl.pretrain.word2vec`.

    vocab = Vocabulary.build(lines, min_count=5)
    model = Word2Vec.init(vocab, dim=100, seed=0)      # then train_word2vec(...) fills it
    model.most_similar("king", k=5)                    # [(word, cosine), ...]
    model.save("w2v.safetensors"); Word2Vec.load("w2v.safetensors")
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from minitl.io import load_file, load_metadata, save

__all__ = ["FORMAT", "Vocabulary", "Word2Vec", "WordVectors", "keep_probabilities",
           "negative_table", "tokenize"]

FORMAT = "minitl.word2vec/1"
# Words are runs of letters/digits, with inner apostrophes kept ("don't", "you're"): the film
# dialogue and the review sentences spell contractions that way, and they carry sentiment.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lowercased words of a text, the one tokenization vocabulary and features share."""
    return _WORD.findall(text.lower())


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Probability of keeping each occurrence of a word with frequency f = count / total:

        p_keep = (sqrt(f / t) + 1) * t / f, capped at 1   (t = `sample`; word2vec.c's formula)

    Words rarer than t are always kept; a word at frequency f >> t keeps ~sqrt(t / f) of its
    occurrences. `sample` <= 0 keeps everything."""
    counts = np.asarray(counts, dtype=np.float64)
    if sample <= 0:
        return np.ones(len(counts))
    f = counts / counts.sum()
    with np.errstate(divide="ignore"):
        p = (np.sqrt(f / sample) + 1.0) * sample / f
    return np.minimum(p, 1.0)


def negative_table(counts: np.ndarray, size: int, power: float = 0.75) -> np.ndarray:
    """A table of word ids in which word w fills round(size * q_w) slots, q = counts^power
    normalised (the unigram^0.75 noise distribution): a uniform draw from the table is a
    draw from q, to within 1/size per word. Rounding is by cumulative share, so the table
    holds exactly `size` ids."""
    counts = np.asarray(counts, dtype=np.float64)
    if size < 1 or len(counts) == 0 or counts.min() <= 0:
        raise ValueError(f"negative_table needs size >= 1 and positive counts, got size={size}"
                         f" and {len(counts)} counts (min {counts.min(initial=0)})")
    q = counts**power
    edges = np.rint(np.cumsum(q) / q.sum() * size).astype(np.int64)  # word w ends at edges[w]
    return np.repeat(np.arange(len(counts), dtype=np.int64), np.diff(edges, prepend=0))


@dataclass
class Vocabulary:
    """Words in order of falling count (ties alphabetical) and their counts in the corpus."""

    words: list[str]
    counts: np.ndarray  # (V,) int64

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if len(self.words) != len(self.counts) or len(set(self.words)) != len(self.words):
            raise ValueError(f"vocabulary: {len(self.words)} words ({len(set(self.words))} "
                             f"distinct) but {len(self.counts)} counts")
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, lines: Iterable[str], min_count: int = 5,
              max_size: int | None = None) -> Vocabulary:
        """Words seen at least `min_count` times in `lines` (tokenized by `tokenize`), the
        `max_size` most frequent of them when given."""
        if min_count < 1 or (max_size is not None and max_size < 1):
            raise ValueError(f"min_count and max_size must be >= 1, got {min_count}, "
                             f"{max_size}")
        counter: Counter[str] = Counter()
        n_lines = 0
        for line in lines:
            if not isinstance(line, str):
                raise TypeError(f"corpus lines must be str, got {type(line).__name__}")
            counter.update(tokenize(line))
            n_lines += 1
        if not counter:
            raise ValueError(f"empty corpus: {n_lines} lines and no words in them")
        kept = sorted((w for w, c in counter.items() if c >= min_count),
                      key=lambda w: (-counter[w], w))[:max_size]
        if not kept:
            raise ValueError(f"empty vocabulary: none of the {len(counter)} distinct words "
                             f"occurs min_count={min_count} times (the most frequent, "
                             f"{counter.most_common(1)[0]!r}, falls short)")
        return cls(kept, np.array([counter[w] for w in kept], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def encode(self, text: str) -> np.ndarray:
        """Ids of the known words of `text` (unknown words dropped, as word2vec does)."""
        index = self.index
        return np.array([i for w in tokenize(text) if (i := index.get(w)) is not None],
                        dtype=np.int64)


class WordVectors:
    """A vocabulary and one (V, D) matrix of static word vectors: similarity queries and
    averaged sentence features. `Word2Vec` trains one; `minitl.io.word_vectors.load_glove`
    reads published GloVe vectors into one, so the same feature code serves both."""

    def __init__(self, vocab: Vocabulary, vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or vectors.shape[0] != len(vocab):
            raise ValueError(f"word vectors: {len(vocab)} words but a matrix of shape "
                             f"{vectors.shape}")
        self.vocab, self.vectors = vocab, vectors
        self._unit: np.ndarray | None = None  # vectors with unit rows, made on first query

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def changed(self) -> None:
        """Forget cached unit vectors (call after changing the vectors in place)."""
        self._unit = None

    def _id(self, word: str) -> int:
        i = self.vocab.index.get(word)
        if i is None:
            hint = " (words are lowercased)" if word.lower() in self.vocab.index else ""
            raise KeyError(f"word {word!r} is not in the vocabulary of {len(self.vocab)} "
                           f"words{hint}")
        return i

    def vector(self, word: str) -> np.ndarray:
        """(D,) copy of the word's vector."""
        return self.vectors[self._id(word)].copy()

    def _unit_vectors(self) -> np.ndarray:
        if self._unit is None:
            w = self.vectors.astype(np.float64)
            norm = np.linalg.norm(w, axis=1, keepdims=True)
            self._unit = w / np.where(norm > 0, norm, 1.0)
        return self._unit

    def similarity(self, a: str, b: str) -> float:
        """Cosine of the two words' vectors."""
        u = self._unit_vectors()
        return float(u[self._id(a)] @ u[self._id(b)])

    def most_similar(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        """The k words nearest to `word` by cosine, nearest first, the word itself left out."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        u = self._unit_vectors()
        i = self._id(word)
        cos = u @ u[i]  # (V,)
        cos[i] = -np.inf
        k = min(k, len(cos) - 1)
        top = np.argpartition(-cos, k - 1)[:k] if k > 0 else np.zeros(0, np.int64)
        top = top[np.argsort(-cos[top], kind="stable")]
        return [(self.vocab.words[j], float(cos[j])) for j in top]

    def sentence_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean of the known words' vectors for each text: (N, D) float64, and (N,) the count
        of known words (a text with none gets a zero row)."""
        out = np.zeros((len(texts), self.dim))
        known = np.zeros(len(texts), dtype=np.int64)
        for r, text in enumerate(texts):
            ids = self.vocab.encode(text)
            known[r] = len(ids)
            if len(ids):
                out[r] = self.vectors[ids].mean(axis=0, dtype=np.float64)
        return out, known

    def __repr__(self) -> str:
        return f"{type(self).__name__}(words={len(self.vocab)}, dim={self.dim})"


class Word2Vec(WordVectors):
    """A vocabulary and its two SGNS matrices: `w_in` (V, D), the word vectors people use (the
    `vectors` of WordVectors), and `w_out` (V, D), the context vectors the loss scores them
    against."""

    def __init__(self, vocab: Vocabulary, w_in: np.ndarray, w_out: np.ndarray) -> None:
        if w_in.ndim != 2 or w_in.shape != w_out.shape or w_in.shape[0] != len(vocab):
            raise ValueError(f"word2vec: {len(vocab)} words but w_in {w_in.shape} and w_out "
                             f"{w_out.shape}")
        super().__init__(vocab, w_in)
        self.w_out = w_out

    @property
    def w_in(self) -> np.ndarray:
        return self.vectors

    @w_in.setter
    def w_in(self, value: np.ndarray) -> None:
        self.vectors = value
        self._unit = None

    @classmethod
    def init(cls, vocab: Vocabulary, dim: int = 100, seed: int = 0,
             dtype: type = np.float32) -> Word2Vec:
        """word2vec.c's start: w_in uniform in +-0.5/dim, w_out zero (so the first steps move
        only w_out, and no pair starts out scored as likely)."""
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        rng = np.random.default_rng(seed)
        w_in: np.ndarray = ((rng.random((len(vocab), dim)) - 0.5) / dim).astype(dtype)
        return cls(vocab, w_in, np.zeros((len(vocab), dim), dtype=dtype))

    # ---- checkpoint: the two matrices and the counts as tensors, the words in metadata
    def save(self, path: str | os.PathLike[str]) -> None:
        save({"w_in": self.w_in, "w_out": self.w_out, "counts": self.vocab.counts}, path,
             metadata={"format": FORMAT, "vocabulary": json.dumps(self.vocab.words)})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Word2Vec:
        meta = load_metadata(path)
        if meta.get("format") != FORMAT or "vocabulary" not in meta:
            raise ValueError(f"{os.fspath(path)}: not a minitl word2vec file (format "
                             f"{meta.get('format')!r}, expected {FORMAT!r})")
        try:
            words = json.loads(meta["vocabulary"])
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: its vocabulary is not valid JSON ({e})"
                             ) from None
        arrays = load_file(path)
        missing = {"w_in", "w_out", "counts"} - set(arrays)
        if missing or not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{os.fspath(path)}: damaged word2vec file (missing tensors "
                             f"{sorted(missing)} or a vocabulary that is not a list of words)")
        return cls(Vocabulary(words, arrays["counts"]), arrays["w_in"], arrays["w_out"])
