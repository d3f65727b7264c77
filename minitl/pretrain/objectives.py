"""Pretraining objectives: what a network is asked to predict before it is transferred.

- Masked language modelling (BERT, arXiv:1810.04805, section 3.1): 15% of the eligible
  positions are chosen; of those 80% become [MASK], 10% a random token and 10% stay as
  they are. Labels hold the original id at chosen positions and -100 everywhere else, so
  `F.cross_entropy(..., ignore_index=-100)` scores only them. Special tokens and padding
  are never chosen.
- Causal language modelling (GPT): predict token t+1 from tokens <= t; `causal_lm_shift`
  cuts one batch of ids into aligned inputs and targets.
- Supervised classification: `classification_loss`, cross entropy over (B, C) or
  (B, T, C) logits.
- Contrastive learning (SimCLR, arXiv:2002.05709): `contrastive_objective` scores two
  augmented views (`minitl.data.augment.two_views`) with NT-Xent (`minitl.nn.functional.
  nt_xent`, a loss like the others) through a projection head (`SimCLR`).

Each objective maps (model, batch) to (loss, logits, labels), what `ObjectiveTrainer` (the
Trainer with the loss computed by an objective) needs; logits and labels feed its metrics.

Every random choice comes from a numpy Generator: pass `rng` (a Generator or an int
seed), or leave it None to draw from `minitl.creation.defaultas_generator()`, the stream
`mt.manual_seed` seeds and the Trainer checkpoints, so resumed runs draw the same masks
and crops as uninterrupted ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl import nn
from minitl.data.augment import ImageAugment, RngLike, as_generator, to_numpy, two_views
from minitl.tensor import Tensor
from minitl.train import Trainer

Objective = Callable[[nn.Module, Any], tuple[Tensor, Any, Any]]  # -> loss, logits, labels

__all__ = [
    "MLMCollator", "Objective", "ObjectiveTrainer", "SimCLR", "causal_lm_objective",
    "causal_lm_shift", "classification_loss", "contrastive_objective", "mask_tokens",
    "masked_lm_objective", "supervised_objective",
]


def _back(arr: np.ndarray, was_tensor: bool) -> Any:
    return Tensor(arr) if was_tensor else arr


# ---- masked language modelling ------------------------------------------------------------


def mask_tokens(input_ids: Any, mask_token_id: int, vocab_size: int, *,
                special_ids: Iterable[int] = (), pad_id: int | None = None,
                attention_mask: Any = None, mlm_probability: float = 0.15,
                mask_frac: float = 0.8, random_frac: float = 0.1, ignore_index: int = -100,
                rng: RngLike = None) -> tuple[Any, Any]:
    """BERT's masking of a batch of token ids.

    Args:
        input_ids: (B, T) int ids, numpy or Tensor (the result has the same type).
        mask_token_id: id of [MASK].
        vocab_size: random replacements are drawn from range(vocab_size) minus the
            special, padding and mask ids.
        special_ids: ids never chosen ([CLS], [SEP], ...).
        pad_id: padding id, never chosen.
        attention_mask: (B, T), 0 marks padding; positions with 0 are never chosen.
        mlm_probability: chance that an eligible position is chosen.
        mask_frac, random_frac: of the chosen positions, the share replaced by [MASK] and
            by a random token; the rest keep their token.
        ignore_index: label of positions that are not chosen.
        rng: Generator or seed; None uses minitl's default generator.

    Returns:
        (inputs, labels): `inputs` a masked copy of `input_ids`; `labels` (B, T) int64
        holding the original id where a position was chosen and `ignore_index` elsewhere.
    """
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    if mask_frac < 0 or random_frac < 0 or mask_frac + random_frac > 1.0:
        raise ValueError(f"mask_frac ({mask_frac}) and random_frac ({random_frac}) must be "
                         "non-negative and sum to at most 1")
    ids, was_tensor = to_numpy(input_ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"mask_tokens: input_ids must be integers, got {ids.dtype}")
    gen = as_generator(rng)
    never = {int(i) for i in special_ids} | {int(mask_token_id)}
    if pad_id is not None:
        never.add(int(pad_id))
    eligible = ~np.isin(ids, np.fromiter(never, dtype=np.int64))
    if attention_mask is not None:
        eligible &= to_numpy(attention_mask)[0] != 0
    # Always draw the same amount of randomness, whatever the batch holds, so a seed
    # fixes the masks of every later batch too.
    chosen = eligible & (gen.random(ids.shape) < mlm_probability)
    action = gen.random(ids.shape)
    candidates = np.setdiff1d(np.arange(vocab_size), np.fromiter(never, dtype=np.int64))
    if len(candidates) == 0:
        raise ValueError("mask_tokens: no ordinary token left to use as a random replacement")
    random_tokens = candidates[gen.integers(0, len(candidates), ids.shape)]

    labels = np.where(chosen, ids, ignore_index).astype(np.int64)
    out = ids.copy()
    out[chosen & (action < mask_frac)] = mask_token_id
    to_random = chosen & (action >= mask_frac) & (action < mask_frac + random_frac)
    out[to_random] = random_tokens[to_random]
    return _back(out, was_tensor), _back(labels, was_tensor)


class MLMCollator:
    """Wrap a collate function (e.g. `minitl.data.pad_collate(...)`) so each batch comes out
    masked: `input_ids` replaced by the masked ids and `labels` by the MLM labels.

    The ids of [MASK], the vocabulary size, special tokens and padding come from
    `tokenizer` (`mask_token_id`, `vocab_size`, `all_special_ids`, `pad_token_id`) unless
    given explicitly.
    """

    def __init__(self, collate_fn: Callable[[Sequence[Any]], Mapping[str, Any]],
                 tokenizer: Any = None, *, mask_token_id: int | None = None,
                 vocab_size: int | None = None, special_ids: Iterable[int] | None = None,
                 pad_id: int | None = None, mlm_probability: float = 0.15,
                 rng: RngLike = None) -> None:
        def pick(value: Any, attr: str) -> Any:
            if value is None and tokenizer is not None:
                value = getattr(tokenizer, attr, None)
            return value

        self.collate_fn = collate_fn
        self.mask_token_id = pick(mask_token_id, "mask_token_id")
        self.vocab_size = pick(vocab_size, "vocab_size")
        if self.mask_token_id is None or self.vocab_size is None:
            raise ValueError("MLMCollator needs mask_token_id and vocab_size (or a tokenizer "
                             "that has them)")
        self.special_ids = tuple(pick(special_ids, "all_special_ids") or ())
        self.pad_id = pick(pad_id, "pad_token_id")
        self.mlm_probability = mlm_probability
        # An int seed becomes one Generator that advances batch after batch.
        self.rng = rng if rng is None else as_generator(rng)

    def __call__(self, samples: Sequence[Any]) -> dict[str, Any]:
        batch = dict(self.collate_fn(samples))
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], self.mask_token_id, self.vocab_size,
            special_ids=self.special_ids, pad_id=self.pad_id,
            attention_mask=batch.get("attention_mask"),
            mlm_probability=self.mlm_probability, rng=self.rng)
        return batch


# ---- causal language modelling and classification -----------------------------------------


def causal_lm_shift(input_ids: Any, attention_mask: Any = None, pad_id: int | None = None,
                    ignore_index: int = -100) -> tuple[Any, Any]:
    """Next-token prediction pairs: inputs = ids[:, :-1], targets = ids[:, 1:].

    Targets at padding (attention_mask 0, or equal to `pad_id`) become `ignore_index`.
    Accepts (T,) or (B, T), numpy or Tensor; returns the same type.
    """
    ids, was_tensor = to_numpy(input_ids)
    if ids.ndim not in (1, 2) or ids.shape[-1] < 2:
        raise ValueError(f"causal_lm_shift: expected (T,) or (B, T) ids with T >= 2, got shape "
                         f"{ids.shape}")
    inputs = np.ascontiguousarray(ids[..., :-1])
    targets = ids[..., 1:].astype(np.int64)  # a copy
    if attention_mask is not None:
        targets[to_numpy(attention_mask)[0][..., 1:] == 0] = ignore_index
    if pad_id is not None:
        targets[ids[..., 1:] == pad_id] = ignore_index
    return _back(inputs, was_tensor), _back(targets, was_tensor)


def classification_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0,
                        ignore_index: int = -100, weight: Tensor | None = None) -> Tensor:
    """Mean cross entropy of (B, C) logits, or of (B, T, C) per-token logits against (B, T)
    labels (token classification, language modelling); `ignore_index` labels are skipped."""
    from minitl.nn import functional as F

    if logits.ndim > 2:
        logits = logits.reshape(-1, logits.shape[-1])
        labels = labels.reshape(-1)
    return F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index,
                           label_smoothing=label_smoothing)


# ---- objectives: (model, batch) -> (loss, logits, labels) --------------------------------

def causal_lm_objective(model: nn.Module, batch: np.ndarray) -> tuple[Tensor, Any, Any]:
    inputs, targets = causal_lm_shift(batch)  # (B, T) each
    logits = model(inputs)  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), Tensor(targets.reshape(-1)))
    return loss, None, targets  # perplexity = exp(mean loss): the logits need not be kept


def masked_lm_objective(model: nn.Module, batch: dict[str, np.ndarray]
                        ) -> tuple[Tensor, Any, Any]:
    """BERT's MLM loss, the decoder run on the masked positions only."""
    h = model.bert(batch["input_ids"])  # (B, T, D)
    flat = batch["labels"].reshape(-1)
    chosen = np.flatnonzero(flat != -100)  # (N,)
    labels = Tensor(flat[chosen])
    logits = model.cls(h.reshape(-1, h.shape[-1])[chosen])  # (N, V)
    return F.cross_entropy(logits, labels), logits, labels


def supervised_objective(model: nn.Module, batch: tuple[Tensor, Tensor]
                         ) -> tuple[Tensor, Any, Any]:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits, y), logits, y


class SimCLR(nn.Module):
    """Backbone features -> projection MLP, the space NT-Xent compares views in. The backbone
    has `features(x)` (N, feature_dim) and `feature_dim` (ResNet, ViT)."""

    def __init__(self, backbone: nn.Module, dim: int = 64) -> None:
        super().__init__()
        self.backbone, d = backbone, backbone.feature_dim
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.backbone.features(x))


def contrastive_objective(augment: ImageAugment, temperature: float = 0.5) -> Objective:
    def objective(model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Any, Any]:
        x = batch[0].numpy()
        # Evaluation draws its views from a fixed stream: it must not move the training one.
        v1, v2 = two_views(x, augment, rng=None if model.training else 0)
        z = model(Tensor(np.concatenate([v1, v2])))  # (2N, dim)
        return F.nt_xent(z[:len(x)], z[len(x):], temperature), None, None
    return objective


class ObjectiveTrainer(Trainer):
    """The Trainer with the loss computed by an objective function."""

    def __init__(self, *args: Any, objective: Objective, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.objective = objective

    def compute_loss(self, batch: Any) -> tuple[Tensor, Any, Any]:
        return self.objective(self.model, batch)
