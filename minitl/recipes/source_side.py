"""The source side of a sentence-encoder fine-tune: drift probe, replay, EWC.

all-MiniLM-L6-v2's source task is sentence embedding (it has no MLM head), so the source
metric is how much the fine-tuned encoder still embeds source-style text the way the
original does, on held-out lines of film dialogue (`SourceProbe`): `cosine`, the mean
cosine between the original's and the fine-tuned encoder's mean-pooled, L2-normalised
embeddings of the same line, and `knn`, the mean overlap of each line's 5 nearest
neighbours among the probe lines under both encoders (what retrieval with these
embeddings returns). 1.0 means unchanged. Adapters, LoRA and prompts are measured while
active (as the fine-tuned model runs); removing them restores the original exactly.

Against forgetting: `make_ewc` builds EWC (arXiv:1612.00796) whose Fisher comes from the
encoder's own training loss, in-batch contrastive ranking of dialogue (prompt, reply)
pairs (`contrastive_nll`), normalised to mean 1 so that lambda is comparable across
models; `SourceReplay` mixes source lines into each batch with an embedding-preservation
loss, 1 - cos(student, original embedding) (distillation to the original encoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl import nn
from minitl import transfer as tl
from minitl.data import WordPieceTokenizer, load_dataset, pad_collate
from minitl.models.bert import Bert
from minitl.recipes.sentence_model import embed_texts, sentence_embedding
from minitl.recipes.text_data import encode_texts
from minitl.tensor import Tensor

__all__ = ["SourceProbe", "SourceReplay", "contrastive_nll", "dialog_pairs", "make_ewc",
           "source_lines"]


def source_lines(name: str = "movie-dialog", n: int = 200, split: str = "test",
                 root: str | None = None) -> list[str]:
    """The first n distinct non-empty lines of a text corpus split."""
    lines = load_dataset(name, split=split, root=root).splitlines()
    return list(dict.fromkeys(ln.strip() for ln in lines if ln.strip()))[:n]


def dialog_pairs(n: int, split: str = "train", root: str | None = None
                 ) -> list[tuple[str, str]]:
    """n (prompt, reply) pairs of film dialogue (the corpus alternates the two)."""
    lines = load_dataset("movie-dialog", split=split, root=root).splitlines()
    pairs = [(a, b) for a, b in zip(lines[0::2], lines[1::2]) if a.strip() and b.strip()]
    return pairs[:n]


def _knn(emb: np.ndarray, k: int) -> np.ndarray:
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    return np.argpartition(-sims, k, axis=1)[:, :k]


class SourceProbe:
    """The source-side metric of a sentence encoder (see the module docstring): `cosine`
    and `knn` (5-nearest-neighbour overlap) against the original encoder on `lines`."""

    def __init__(self, encoder: Bert, tokenizer: WordPieceTokenizer, lines: Sequence[str],
                 max_length: int = 32, k: int = 5) -> None:
        self.data = encode_texts(tokenizer, lines, np.zeros(len(lines)), max_length)
        self.k = min(k, len(lines) - 1)
        self.reference = embed_texts(encoder, self.data)
        self.reference_knn = _knn(self.reference, self.k)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        emb = embed_texts(getattr(model, "bert", model), self.data)
        cos = float((emb * self.reference).sum(1).mean())
        nn_now = _knn(emb, self.k)
        overlap = np.mean([len(set(a) & set(b)) / self.k
                           for a, b in zip(nn_now, self.reference_knn)])
        return {"cosine": cos, "knn": float(overlap)}


# ---- against forgetting: replay with distillation, EWC ------------------------------------

class SourceReplay:
    """Source lines to replay, each with the original encoder's embedding as its target.

    Replayed rows carry label -100 (no classification loss) and `source_index` >= 0, which
    selects their teacher embedding for the distillation loss; target rows have -1."""

    def __init__(self, encoder: Bert, tokenizer: WordPieceTokenizer, lines: Sequence[str],
                 max_length: int = 32) -> None:
        self.data = encode_texts(tokenizer, lines, np.zeros(len(lines)), max_length)
        self.teacher = embed_texts(encoder, self.data)  # (N, D)

    def buffer(self, ratio: float, seed: int = 0) -> tl.ReplayBuffer:
        examples = [{"input_ids": ids, "labels": -100, "source_index": i}
                    for i, ids in enumerate(self.data.ids)]
        return tl.ReplayBuffer(examples, ratio=ratio, seed=seed, collate_fn=pad_collate(0),
                               pad_value={"labels": -100, "source_index": -1})


def contrastive_nll(model: nn.Module, batch: tuple[Any, Any]) -> Tensor:
    """In-batch contrastive ranking loss of (prompt, reply) pairs, scale 20: the mean
    -log p(reply_i | prompt_i) over the batch's replies, the loss all-MiniLM-L6-v2 trained
    with. `batch` is two pad_collate batches (prompts, replies)."""
    a, b = (sentence_embedding(getattr(model, "bert", model), x) for x in batch)
    logits = (a @ b.transpose(0, 1)) * 20.0  # (B, B)
    return F.cross_entropy(logits, Tensor(np.arange(logits.shape[0], dtype=np.int64)))


def make_ewc(model: nn.Module, tokenizer: WordPieceTokenizer,
             pairs: Sequence[tuple[str, str]], lam: float, batch_size: int = 16,
             max_length: int = 32) -> tl.EWC:
    """EWC on the encoder with the Fisher of `contrastive_nll` on `pairs`, scaled to mean 1
    over all constrained weights (the word embeddings are left out: a sentence batch moves
    only its own rows, and they are half of the weights)."""
    collate = pad_collate(0)
    batches = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        batches.append(tuple(collate([{"input_ids": tokenizer.encode(t, max_length=max_length)}
                                      for t in side]) for side in zip(*chunk)))
    ewc = tl.EWC(model, batches, lam, loss_fn=contrastive_nll, params=("bert.*",),
                 exclude=("*word_embeddings*", "*lora_*", "*adapter*"))
    mean = sum(float(f.data.sum()) for f in ewc.fisher) / sum(f.numel() for f in ewc.fisher)
    ewc.fisher = [Tensor(f.data / max(mean, 1e-30)) for f in ewc.fisher]
    return ewc
