"""Image augmentations on numpy (N, C, H, W) batches, and the two views of contrastive
learning: random crop with padding, horizontal flip, gaussian noise, random erasing
(arXiv:1708.04896) and cutout (arXiv:1708.04552).

Every random choice comes from a numpy Generator: pass `rng` (a Generator or an int seed),
or leave it None to draw from `minitl.creation.default_generator()`, the stream
`mt.manual_seed` seeds and the Trainer checkpoints, so resumed runs draw the same crops as
uninterrupted ones. A Tensor in gives a Tensor out; an array gives an array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from minitl.tensor import Tensor

RngLike = np.random.Generator | int | None

__all__ = ["ImageAugment", "RngLike", "as_generator", "cutout", "gaussian_noise",
           "horizontal_flip", "random_crop", "random_erasing", "to_numpy", "two_views"]


def as_generator(rng: RngLike) -> np.random.Generator:
    """`rng` itself, a new Generator seeded with it, or (None) minitl's default stream."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        from minitl.creation import default_generator

        return default_generator()
    return np.random.default_rng(rng)


def to_numpy(x: Any) -> tuple[np.ndarray, bool]:
    """(numpy array, whether the caller passed a Tensor) so results keep the input's type."""
    if isinstance(x, Tensor):
        data = x.data if isinstance(x.data, np.ndarray) else x.to("cpu").data
        return np.asarray(data), True
    return np.asarray(x), False


def _back(arr: np.ndarray, was_tensor: bool) -> Any:
    return Tensor(arr) if was_tensor else arr


def _images(x: Any, op: str) -> tuple[np.ndarray, bool]:
    arr, was_tensor = to_numpy(x)
    if arr.ndim != 4:
        raise ValueError(f"{op}: expected an (N, C, H, W) batch, got shape {arr.shape}")
    return arr, was_tensor


def random_crop(x: Any, padding: int = 4, size: tuple[int, int] | None = None,
                fill: float = 0.0, rng: RngLike = None) -> Any:
    """Pad every image by `padding` pixels of `fill` on each side, then cut a `size` window
    (default: the original H, W) at an offset drawn per image."""
    arr, was_tensor = _images(x, "random_crop")
    gen = as_generator(rng)
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
    flip = as_generator(rng).random(arr.shape[0]) < p
    out = arr.copy()
    out[flip] = arr[flip][..., ::-1]
    return _back(out, was_tensor)


def gaussian_noise(x: Any, std: float = 0.1, rng: RngLike = None) -> Any:
    """Add N(0, std^2) noise to every pixel (dtype kept)."""
    arr, was_tensor = _images(x, "gaussian_noise")
    noise = as_generator(rng).standard_normal(arr.shape) * std
    return _back((arr + noise).astype(arr.dtype), was_tensor)


def random_erasing(x: Any, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3), value: float = 0.0,
                   rng: RngLike = None) -> Any:
    """Random erasing: with probability `p` an image gets one rectangle of `value` whose
    area is a `scale` fraction of the image and whose aspect ratio is log-uniform in
    `ratio` (up to 10 tries to fit it, as torchvision does)."""
    arr, was_tensor = _images(x, "random_erasing")
    gen = as_generator(rng)
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
    gen = as_generator(rng)
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
        gen = as_generator(rng)
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
    gen = as_generator(rng)
    return augment(x, rng=gen), augment(x, rng=gen)
