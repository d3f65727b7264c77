"""Pretraining static word vectors: skip-gram with negative sampling over a text corpus
(word2vec, Mikolov et al. arXiv:1310.4546), with word2vec.c's schedule.

    lines = text_lines("movie-dialog")
    model = train_word2vec(lines, dim=100, window=5, negative=5, epochs=5, min_count=5)
    model.most_similar("money")

Each epoch: drop frequent words' occurrences with probability 1 - p_keep (`keep_probabilities`),
draw a window b in 1..window for every remaining word (nearer words are paired more often:
offset d is used with probability (window - d + 1) / window), pair it with the words within b
on either side in its own line, draw `negative` noise words per pair from the unigram^0.75
table, and take one SGD step per pair (backend kernel `sgns_update`), with the learning rate
falling linearly from `lr` to `lr * 1e-4` over all epochs, as word2vec.c does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from minitl.backend import get_backend
from minitl.data import load_dataset
from minitl.models.word2vec import Vocabulary, Word2Vec, keep_probabilities, negative_table

__all__ = ["TrainStats", "skipgram_pairs", "text_lines", "train_word2vec"]

_TABLE_SIZE = 10_000_000  # negative table slots: word2vec.c's 1e8 is 400 MB; 1e7 resolves
                          # a share of 1e-7, below any word kept by min_count here
_MIN_LR_FRACTION = 1e-4   # word2vec.c's floor on the decayed learning rate


def text_lines(name: str = "movie-dialog", split: str = "all",
               root: str | None = None) -> list[str]:
    """The non-empty lines of a text corpus known to `minitl.data.load_dataset` (movie-dialog:
    one utterance a line), of the sentences of a classification dataset's `split` (their
    labels dropped: unlabeled text), or of a UTF-8 text file when `name` is a file's path."""
    data: Any
    if os.path.isfile(name):
        with open(name, encoding="utf-8") as f:
            data = f.read()
    else:
        data = load_dataset(name, split=split, root=root)
    lines = data.splitlines() if isinstance(data, str) else list(data.texts)
    return [t for t in (line.strip() for line in lines) if t]


def skipgram_pairs(ids: np.ndarray, line_of: np.ndarray, window: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(center, context) id pairs for the words `ids` (N,), where `line_of` (N,) says which
    line each word is in (pairs never cross lines). Each center draws its own window b in
    1..window (word2vec's dynamic window); pairs come back ordered by center position."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n = len(ids)
    reach = rng.integers(1, window + 1, size=n)  # (N,) each center's b
    pos = np.arange(n)
    centers: list[np.ndarray] = []
    contexts: list[np.ndarray] = []
    for d in range(1, window + 1):
        near = pos[reach >= d]  # centers whose window covers offset d
        for other in (near - d, near + d):
            ok = (other >= 0) & (other < n)
            c, o = near[ok], other[ok]
            same = line_of[c] == line_of[o]
            centers.append(c[same])
            contexts.append(o[same])
    c = np.concatenate(centers)
    o = np.concatenate(contexts)
    order = np.argsort(c, kind="stable")
    return ids[c[order]], ids[o[order]]


class TrainStats:
    """What a training run measured: words, pairs, seconds and the mean loss per epoch."""

    def __init__(self) -> None:
        self.corpus_words = 0       # known words per epoch, before subsampling
        self.trained_words = 0      # words kept by subsampling, over all epochs
        self.pairs = 0
        self.seconds = 0.0          # the whole loop, pair generation included
        self.kernel_seconds = 0.0   # sgns_update alone
        self.epoch_loss: list[float] = []

    @property
    def words_per_second(self) -> float:
        """Corpus words (before subsampling) per second, as word2vec.c and gensim count."""
        epochs = max(1, len(self.epoch_loss))
        return self.corpus_words * epochs / max(self.seconds, 1e-9)

    def as_dict(self) -> dict[str, float | int | list[float]]:
        return {"corpus_words": self.corpus_words, "trained_words": self.trained_words,
                "pairs": self.pairs, "seconds": self.seconds,
                "kernel_seconds": self.kernel_seconds,
                "words_per_second": self.words_per_second, "epoch_loss": self.epoch_loss}


def _encode(vocab: Vocabulary, lines: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All known words of the corpus (N,) and the line each is in (N,)."""
    encoded = [vocab.encode(line) for line in lines]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    ids = np.concatenate(encoded) if encoded else np.zeros(0, np.int64)
    return ids, np.repeat(np.arange(len(encoded)), lengths)


def train_word2vec(corpus_lines: Iterable[str], dim: int = 100, window: int = 5,
                   negative: int = 5, epochs: int = 5, min_count: int = 5,
                   max_vocab: int | None = None, sample: float = 1e-3, lr: float = 0.025,
                   seed: int = 0, batch_words: int = 10_000,
                   log: Callable[[str], None] | None = print,
                   stats: TrainStats | None = None) -> Word2Vec:
    """Train SGNS word vectors on `corpus_lines` (one sentence or utterance per string).

    Args:
        dim: vector width. window: the largest context offset (each center draws 1..window).
        negative: noise words per pair. epochs: passes over the corpus.
        min_count, max_vocab: keep words seen that often (the max_vocab most frequent).
        sample: subsampling threshold t (0 keeps every occurrence). The defaults are
            word2vec.c's (t = 1e-3, 5 epochs); on movie-dialog they gave vectors as useful as
            t = 1e-4 over 15 epochs in 2/3 of the time (docs/word_vectors.md).
        lr: starting learning rate, decayed linearly to lr * 1e-4.
        seed: fixes the start, the subsampling, the windows and the negatives (the result is
            then bit-identical on one thread).
        batch_words: words (after subsampling) per call of the kernel; the learning rate is
            constant within a batch.
        log: called with one progress line per epoch (None: silent).
        stats: filled with what the run measured (words/s, loss per epoch).
    """
    for name, value in (("epochs", epochs), ("negative", negative), ("window", window),
                        ("batch_words", batch_words)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    lines = list(corpus_lines)
    vocab = Vocabulary.build(lines, min_count=min_count, max_size=max_vocab)
    model = Word2Vec.init(vocab, dim=dim, seed=seed)
    ids, line_of = _encode(vocab, lines)
    keep_p = keep_probabilities(vocab.counts, sample)
    table = negative_table(vocab.counts, _TABLE_SIZE)
    rng = np.random.default_rng(seed + 1)  # seed itself drew the initial vectors
    update = get_backend("cpu").sgns_update
    st = stats if stats is not None else TrainStats()
    st.corpus_words = len(ids)
    total_words = len(ids) * epochs
    done = 0  # corpus words already passed, for the learning-rate schedule
    start = time.perf_counter()
    for epoch in range(epochs):
        kept = rng.random(len(ids)) < keep_p[ids]
        e_ids, e_line = ids[kept], line_of[kept]
        # corpus words covered per kept word, so the schedule follows the corpus, not the kept
        scale = len(ids) / max(1, len(e_ids))
        loss_sum, pair_count = 0.0, 0
        # a line cut by a batch boundary loses the pairs across the cut (~window / batch_words
        # of them), as word2vec.c's 1,000-word reads do
        for lo in range(0, len(e_ids), batch_words):
            hi = min(len(e_ids), lo + batch_words)
            centers, contexts = skipgram_pairs(e_ids[lo:hi], e_line[lo:hi], window, rng)
            negs = table[rng.integers(0, len(table), size=(len(centers), negative))]
            rate = lr * max(_MIN_LR_FRACTION, 1.0 - done / total_words)
            t0 = time.perf_counter()
            loss_sum += update(model.w_in, model.w_out, centers, contexts, negs, rate)
            st.kernel_seconds += time.perf_counter() - t0
            pair_count += len(centers)
            done += round((hi - lo) * scale)
        st.trained_words += len(e_ids)
        st.pairs += pair_count
        st.epoch_loss.append(loss_sum / max(1, pair_count))
        st.seconds = time.perf_counter() - start
        if log is not None:
            log(f"word2vec epoch {epoch + 1}/{epochs}: loss {st.epoch_loss[-1]:.4f} per pair, "
                f"{len(e_ids):,} of {len(ids):,} words kept, {pair_count:,} pairs, "
                f"{st.words_per_second:,.0f} words/s")
    model.changed()
    return model
