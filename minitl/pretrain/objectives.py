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
- Contrastive learning (SimCLR, arXiv:2002.05709): `nt_xent`, the normalised
  temperature-scaled cross entropy with in-batch negatives, a fused differentiable op;
  and the image augmentations that make the two views of each image: random crop with
  padding, horizontal flip, gaussian noise, random erasing (arXiv:1708.04896) and cutout
  (arXiv:1708.04552), all numpy on (N, C, H, W) batches.

Every random choice comes from a numpy Generator: pass `rng` (a Generator or an int
seed), or leave it None to draw from `minitl.creation.default_generator()`, the stream
`mt.manual_seed` seeds and the Trainer checkpoints, so resumed runs draw the same masks
and crops as uninterrupted ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minitl.function import Context, Function
from minitl.tensor import Tensor

Array = Any  # numpy.ndarray (or CuPy inside nt_xent)
RngLike = np.random.Generator | int | None

__all__ = [
    "ImageAugment", "MLMCollator", "NTXent", "causal_lm_shift", "classification_loss",
    "cutout", "gaussian_noise", "horizontal_flip", "mask_tokens", "nt_xent", "random_crop",
    "random_erasing", "two_views",
]


def _generator(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        from minitl.creation import default_generator

        return default_generator()
    return np.random.default_rng(rng)


def _host(x: Any) -> tuple[np.ndarray, bool]:
    """(numpy array, whether the caller passed a Tensor) so results keep the input's type."""
    if isinstance(x, Tensor):
        data = x.data if isinstance(x.data, np.ndarray) else x.to("cpu").data
        return np.asarray(data), True
    return np.asarray(x), False


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
    ids, was_tensor = _host(input_ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"mask_tokens: input_ids must be integers, got {ids.dtype}")
    gen = _generator(rng)
    never = {int(i) for i in special_ids} | {int(mask_token_id)}
    if pad_id is not None:
        never.add(int(pad_id))
    eligible = ~np.isin(ids, np.fromiter(never, dtype=np.int64))
    if attention_mask is not None:
        eligible &= _host(attention_mask)[0] != 0
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
        self.rng = rng if rng is None else _generator(rng)

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
    ids, was_tensor = _host(input_ids)
    if ids.ndim not in (1, 2) or ids.shape[-1] < 2:
        raise ValueError(f"causal_lm_shift: expected (T,) or (B, T) ids with T >= 2, got shape "
                         f"{ids.shape}")
    inputs = np.ascontiguousarray(ids[..., :-1])
    targets = ids[..., 1:].astype(np.int64)  # a copy
    if attention_mask is not None:
        targets[_host(attention_mask)[0][..., 1:] == 0] = ignore_index
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


# ---- contrastive: NT-Xent ---------------------------------------------------------------------


class NTXent(Function):
    """SimCLR's loss for two views z1, z2 (N, D): rows i and i+N of z = [z1; z2] are a
    positive pair and every other row in the batch is a negative.

        u = z / ||z||,  s_ij = u_i . u_j / t  (s_ii = -inf),
        L = 1/(2N) sum_i [ logsumexp_j s_ij - s_i,p(i) ]

    Backward: with P = softmax_j(s) and G = (P - onehot(p)) / (2N),
        dL/du = (G + G^T) u / t,   dL/dz = (dL/du - u (u . dL/du)) / ||z||.
    """

    @staticmethod
    def forward(ctx: Context, z1: Array, z2: Array, temperature: float, eps: float) -> Array:
        xp = ctx.xp
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(f"nt_xent: expected two (N, D) views of the same shape, got "
                             f"{tuple(z1.shape)} and {tuple(z2.shape)}")
        n = z1.shape[0]
        z = xp.concatenate([z1, z2], axis=0)  # (2N, D)
        norm = xp.sqrt((z * z).sum(axis=1, keepdims=True))  # (2N, 1)
        clamped = xp.maximum(norm, eps)
        u = z / clamped
        s = (u @ u.T) / temperature  # (2N, 2N)
        rows = xp.arange(2 * n)
        pos = (rows + n) % (2 * n)
        s[rows, rows] = -xp.inf  # a view is not its own negative
        m = s.max(axis=1, keepdims=True)
        lse = m + xp.log(xp.exp(s - m).sum(axis=1, keepdims=True))  # (2N, 1)
        loss = (lse[:, 0] - s[rows, pos]).mean()
        ctx.save_for_backward(xp.exp(s - lse), u, clamped, norm > eps, pos, temperature)
        return xp.asarray(loss, dtype=z.dtype)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, Array, None, None]:
        xp = ctx.xp
        p, u, clamped, unclamped, pos, temperature = ctx.saved
        n2 = u.shape[0]
        grad_s = p.copy()  # (2N, 2N)
        grad_s[xp.arange(n2), pos] -= 1.0
        grad_s *= g / n2
        grad_u = (grad_s + grad_s.T) @ u / temperature  # (2N, D)
        radial = u * (u * grad_u).sum(axis=1, keepdims=True)
        # Where the norm was clamped to eps, z / eps is linear in z: no projection.
        grad_z = xp.where(unclamped, grad_u - radial, grad_u) / clamped
        n = n2 // 2
        return grad_z[:n], grad_z[n:], None, None


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5, eps: float = 1e-12) -> Tensor:
    """NT-Xent loss of two (N, D) batches of projections, z1[i] and z2[i] the two views of
    example i; every other of the 2N - 2 rows is a negative. Returns a 0-d Tensor."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return NTXent.apply(z1, z2, float(temperature), float(eps))


# ---- image augmentations (numpy, (N, C, H, W)) ----------------------------------------------


def _images(x: Any, op: str) -> tuple[np.ndarray, bool]:
    arr, was_tensor = _host(x)
    if arr.ndim != 4:
        raise ValueError(f"{op}: expected an (N, C, H, W) batch, got shape {arr.shape}")
    return arr, was_tensor


def random_crop(x: Any, padding: int = 4, size: tuple[int, int] | None = None,
                fill: float = 0.0, rng: RngLike = None) -> Any:
    """Pad every image by `padding` pixels of `fill` on each side, then cut a `size` window
    (default: the original H, W) at an offset drawn per image."""
    arr, was_tensor = _images(x, "random_crop")
    gen = _generator(rng)
    n, c, h, w = arr.shape
    oh, ow = (h, w) if size is None else size
    padded = np.pad(arr, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                    constant_values=fill)
    ph, pw = h + 2 * padding, w + 2 * padding
    if oh > ph or ow > pw:
        raise ValueError(f"random_crop: crop {oh}x{ow} is larger than the padded {ph}x{pw}")
    top = gen.integers(0, ph - oh + 1, size=(n,))
    left = gen.integers(0, pw - ow + 1, size=(n,))
    r = (top[:, None] + np.arange(oh))[:, None, :, None]  # (N, 1, oh, 1)
    k = (left[:, None] + np.arange(ow))[:, None, None, :]  # (N, 1, 1, ow)
    out = padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], r, k]
    return _back(out, was_tensor)


def horizontal_flip(x: Any, p: float = 0.5, rng: RngLike = None) -> Any:
    """Mirror each image left-right with probability `p`."""
    arr, was_tensor = _images(x, "horizontal_flip")
    flip = _generator(rng).random(arr.shape[0]) < p
    out = arr.copy()
    out[flip] = arr[flip][..., ::-1]
    return _back(out, was_tensor)


def gaussian_noise(x: Any, std: float = 0.1, rng: RngLike = None) -> Any:
    """Add N(0, std^2) noise to every pixel (dtype kept)."""
    arr, was_tensor = _images(x, "gaussian_noise")
    noise = _generator(rng).standard_normal(arr.shape) * std
    return _back((arr + noise).astype(arr.dtype), was_tensor)


def random_erasing(x: Any, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3), value: float = 0.0,
                   rng: RngLike = None) -> Any:
    """Random erasing: with probability `p` an image gets one rectangle of `value` whose
    area is a `scale` fraction of the image and whose aspect ratio is log-uniform in
    `ratio` (up to 10 tries to fit it, as torchvision does)."""
    arr, was_tensor = _images(x, "random_erasing")
    gen = _generator(rng)
    n, _, h, w = arr.shape
    out = arr.copy()
    log_ratio = np.log(ratio)
    for i in np.flatnonzero(gen.random(n) < p):
        for _ in range(10):
            area = h * w * gen.uniform(*scale)
            aspect = np.exp(gen.uniform(*log_ratio))
            eh, ew = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
            if 0 < eh < h and 0 < ew < w:
                top, left = gen.integers(0, h - eh + 1), gen.integers(0, w - ew + 1)
                out[i, :, top:top + eh, left:left + ew] = value
                break
    return _back(out, was_tensor)


def cutout(x: Any, size: int = 8, value: float = 0.0, rng: RngLike = None) -> Any:
    """Cutout: a `size` x `size` square of `value`, centred on a random pixel of each image
    and clipped at the border (so it may be partly outside)."""
    arr, was_tensor = _images(x, "cutout")
    gen = _generator(rng)
    n, _, h, w = arr.shape
    cy, cx = gen.integers(0, h, size=(n,)), gen.integers(0, w, size=(n,))
    dr = np.arange(h)[None, :] - cy[:, None]  # (N, H) offset from the centre row
    dc = np.arange(w)[None, :] - cx[:, None]  # (N, W)
    inside_r = (dr >= -(size // 2)) & (dr <= (size - 1) // 2)
    inside_c = (dc >= -(size // 2)) & (dc <= (size - 1) // 2)
    hole = inside_r[:, None, :, None] & inside_c[:, None, None, :]  # (N, 1, H, W)
    out = np.where(hole, np.asarray(value, dtype=arr.dtype), arr)
    return _back(out, was_tensor)


@dataclass
class ImageAugment:
    """The augmentation pipeline for contrastive pretraining of the CNN, applied to a batch
    in this order: crop, flip, noise, erasing. A stage is off when its field is 0 / False."""

    crop_padding: int = 4  # pixels of zero padding before the random crop; 0 disables
    flip: bool = True  # horizontal flip with probability 0.5
    noise_std: float = 0.0  # std of additive gaussian noise; 0 disables
    erase_p: float = 0.0  # probability of random erasing per image; 0 disables
    erase_scale: tuple[float, float] = (0.02, 0.33)  # erased area as a fraction of the image

    def __call__(self, x: Any, rng: RngLike = None) -> Any:
        gen = _generator(rng)
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, rng=gen)
        if self.flip:
            x = horizontal_flip(x, rng=gen)
        if self.noise_std:
            x = gaussian_noise(x, self.noise_std, rng=gen)
        if self.erase_p:
            x = random_erasing(x, self.erase_p, self.erase_scale, rng=gen)
        return x


def two_views(x: Any, augment: Callable[..., Any] | None = None,
              rng: RngLike = None) -> tuple[Any, Any]:
    """Two independent augmentations of the same batch: the positive pairs of NT-Xent."""
    augment = ImageAugment() if augment is None else augment
    gen = _generator(rng)
    return augment(x, rng=gen), augment(x, rng=gen)
