"""Class vectors from a sentence encoder: zero-shot, prototypes, heads that start from them,
and the sentence pairs of contrastive (SetFit-style) fine-tuning.

    vecs = class_vectors(bb.encoder, bb.tokenizer, describe("movie-reviews", names))  # (C, D)
    logits = SCALE * emb @ vecs.T          # zero-shot: cosine with each class's description
    protos = prototypes(emb_train, y, C)   # nearest class mean of labelled embeddings
    init_head(model.classifier, vecs)      # a head that starts at zero-shot accuracy
    pairs = make_pairs(y, per_example=10, seed=0)   # (i, j, 1.0 same class / 0.0 not)

A class's description is a set of words put into templates ("this movie is {}"); its
vector is the normalised mean of their sentence embeddings. The descriptions below were
written for the sentiment datasets; zero-shot with them scores 0.723 on the movie-reviews
validation split (docs/recipe_ablation.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from minitl import nn
from minitl.autograd_state import no_grad
from minitl.data import WordPieceTokenizer
from minitl.recipes.sentence_model import embed_texts
from minitl.recipes.text_data import encode_texts
from minitl.tensor import Tensor

__all__ = ["SCALE", "class_vectors", "cosine_logits", "describe", "init_head", "make_pairs",
           "pairs_per_example", "prototypes"]

# Cosines of unit vectors live in [-1, 1]; times 20 they make logits whose softmax is as
# peaked as a trained head's (the scale all-MiniLM-L6-v2 itself was trained at).
SCALE = 20.0

SENTIMENT_WORDS = {
    "negative": ("terrible", "awful", "bad", "boring", "horrible", "dull", "disappointing",
                 "poor", "the worst", "unpleasant"),
    "positive": ("great", "excellent", "good", "wonderful", "brilliant", "enjoyable",
                 "amazing", "fantastic", "the best", "delightful"),
}
TEMPLATES = {
    "movie-reviews": ("this movie is {}.", "the film was {}.", "a {} film.", "it was {}.",
                      "the acting is {}.", "the story is {}.", "overall, {}.", "{}."),
    "tweets": ("today was {}.", "feeling {}.", "this is {}.", "it was {}.", "so {}!",
               "my day is {}.", "life is {}.", "{}."),
    "amazon-reviews": ("this product is {}.", "the quality is {}.", "it works, {}.",
                       "it was {}.", "a {} purchase.", "this is {}.", "overall, {}.", "{}."),
    "nyt-snippets": ("this news is {}.", "the situation is {}.", "it was {}.",
                     "this is {}.", "a {} development.", "the outlook is {}.", "overall, {}.",
                     "{}."),
}
GENERIC_TEMPLATES = ("{}.", "this is {}.", "it is about {}.", "a text about {}.")


def describe(dataset: str, label_names: Sequence[str]) -> list[list[str]]:
    """For each class, the sentences whose mean embedding is its zero-shot vector: the
    sentiment words in the dataset's templates, else the label name in generic ones."""
    templates = TEMPLATES.get(dataset, GENERIC_TEMPLATES)
    out = []
    for name in label_names:
        words = SENTIMENT_WORDS.get(name.lower(), (name.replace("_", " "),))
        out.append([t.format(w) for t in templates for w in words])
    return out


def class_vectors(encoder: nn.Module, tokenizer: WordPieceTokenizer,
                  descriptions: Sequence[Sequence[str]], max_length: int = 32) -> np.ndarray:
    """(C, D) unit vectors: the normalised mean embedding of each class's sentences."""
    if not descriptions or any(len(d) == 0 for d in descriptions):
        raise ValueError("class_vectors needs at least one sentence per class")
    flat = [s for d in descriptions for s in d]
    emb = embed_texts(encoder, encode_texts(tokenizer, flat, np.zeros(len(flat)), max_length))
    bounds = np.cumsum([0] + [len(d) for d in descriptions])
    vecs = np.stack([emb[a:b].mean(0) for a, b in itertools.pairwise(bounds)])
    return _unit(vecs)


def prototypes(emb: np.ndarray, labels: np.ndarray, num_labels: int) -> np.ndarray:
    """(C, D) unit class means of labelled embeddings (a class without examples: zeros)."""
    labels = np.asarray(labels)
    if len(emb) != len(labels):
        raise ValueError(f"{len(emb)} embeddings but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(f"labels must lie in [0, {num_labels}), got {labels.min()}.."
                         f"{labels.max()}")
    means = np.zeros((num_labels, emb.shape[1]), np.float64)
    for c in range(num_labels):
        if (labels == c).any():
            means[c] = emb[labels == c].mean(0)
    return _unit(means).astype(np.float32)


def cosine_logits(emb: np.ndarray, vecs: np.ndarray, scale: float = SCALE) -> np.ndarray:
    """(N, C) scaled cosines of unit embeddings with unit class vectors."""
    return scale * (emb @ vecs.T)


def init_head(head: nn.Linear, vecs: np.ndarray, scale: float = SCALE) -> None:
    """Set a linear head to `scale * vecs` with zero bias: on unit embeddings it computes
    `cosine_logits`, so training starts from the zero-shot (or prototype) classifier."""
    w = head.weight
    if tuple(w.shape) != vecs.shape:
        raise ValueError(f"head weight {tuple(w.shape)} does not fit class vectors "
                         f"{vecs.shape}")
    with no_grad():  # copy_ bumps the version counters, as any in-place write must
        head.weight.copy_(Tensor((scale * vecs).astype(w.numpy().dtype)))
        head.bias.copy_(Tensor(np.zeros_like(head.bias.numpy())))


def pairs_per_example(n: int, total: int = 2000, lo: int = 1, hi: int = 20) -> int:
    """How often each labelled sentence appears in a pair, so that about `total` pairs
    come out (SetFit's 20 per example, fewer as the label set grows)."""
    return int(min(hi, max(lo, round(total / max(2 * n, 1)))))


def make_pairs(labels: np.ndarray, per_example: int, seed: int = 0) -> np.ndarray:
    """(P, 3) float rows (i, j, target): for each sentence i, `per_example` times, one
    partner of its class (target 1.0; skipped when i is alone in its class) and one of
    another class (0.0). Indices into `labels`; a pure function of `seed`."""
    labels = np.asarray(labels)
    if per_example < 1:
        raise ValueError(f"per_example must be >= 1, got {per_example}")
    if len(np.unique(labels)) < 2:
        raise ValueError("pairs need at least two classes among the labels")
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    others = {c: np.flatnonzero(labels != c) for c in by_class}
    rows = []
    for _ in range(per_example):
        for i, c in enumerate(labels):
            same = by_class[c][by_class[c] != i]
            if len(same):
                rows.append((i, int(rng.choice(same)), 1.0))
            rows.append((i, int(rng.choice(others[c])), 0.0))
    out = np.asarray(rows, np.float64)
    return out[rng.permutation(len(out))]


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)

