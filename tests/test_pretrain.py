"""Pretraining objectives: MLM masking statistics, causal shift, classification loss, NT-Xent
against PyTorch (value and gradient), and the image augmentations."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import gradcheck, requires_torch, torch

import minitl as mt
from minitl.data import pad_collate
from minitl.pretrain import (
    ImageAugment,
    MLMCollator,
    causal_lm_shift,
    classification_loss,
    cutout,
    gaussian_noise,
    horizontal_flip,
    mask_tokens,
    nt_xent,
    random_crop,
    random_erasing,
    two_views,
)

PAD, CLS, SEP, MASK, VOCAB = 0, 1, 2, 3, 1000
SPECIALS = (PAD, CLS, SEP, MASK)


def token_batch(b: int = 256, t: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] tokens [SEP] [PAD]... rows of random length, and their attention mask."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, VOCAB, (b, t))
    lengths = rng.integers(3, t + 1, b)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)
    ids[:, 0] = CLS
    ids[np.arange(b), lengths - 1] = SEP
    ids[mask == 0] = PAD
    return ids, mask


# ---- masked language modelling ------------------------------------------------------------


def test_mlm_masking_statistics() -> None:
    ids, _ = token_batch()
    inputs, labels = mask_tokens(ids, MASK, VOCAB, special_ids=(CLS, SEP), pad_id=PAD, rng=0)
    eligible = ~np.isin(ids, SPECIALS)
    chosen = labels != -100
    assert not (chosen & ~eligible).any(), "a special or padding token was chosen"
    rate = chosen.sum() / eligible.sum()
    assert abs(rate - 0.15) < 0.01, rate
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    # Positions not chosen keep their token.
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])
    n = chosen.sum()
    to_mask = (inputs == MASK) & chosen
    unchanged = (inputs == ids) & chosen
    randomised = chosen & ~to_mask & ~unchanged
    # A random replacement equals the original 1 time in ~996: counted as unchanged.
    assert abs(to_mask.sum() / n - 0.8) < 0.02
    assert abs(randomised.sum() / n - 0.1) < 0.015
    assert abs(unchanged.sum() / n - 0.1) < 0.015
    assert not np.isin(inputs[randomised], SPECIALS).any()
    assert inputs.dtype == ids.dtype and labels.dtype == np.int64


def test_mlm_attention_mask_and_determinism() -> None:
    ids, attn = token_batch(64, 32, seed=1)
    ids[attn == 0] = 7  # padding that is not pad_id: only the mask tells
    a = mask_tokens(ids, MASK, VOCAB, special_ids=(CLS, SEP), attention_mask=attn, rng=5)
    b = mask_tokens(ids, MASK, VOCAB, special_ids=(CLS, SEP), attention_mask=attn,
                    rng=np.random.default_rng(5))
    c = mask_tokens(ids, MASK, VOCAB, special_ids=(CLS, SEP), attention_mask=attn, rng=6)
    assert ((a[1] != -100) & (attn == 0)).sum() == 0
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    # rng=None draws from minitl's generator, so manual_seed fixes it.
    mt.manual_seed(3)
    d = mask_tokens(ids, MASK, VOCAB, attention_mask=attn)
    mt.manual_seed(3)
    e = mask_tokens(ids, MASK, VOCAB, attention_mask=attn)
    np.testing.assert_array_equal(d[0], e[0])


def test_mlm_tensor_in_tensor_out_and_probability_edges() -> None:
    ids, _ = token_batch(8, 16)
    inputs, labels = mask_tokens(mt.tensor(ids), MASK, VOCAB, special_ids=SPECIALS,
                                 mlm_probability=1.0, mask_frac=1.0, random_frac=0.0, rng=0)
    assert isinstance(inputs, mt.Tensor) and isinstance(labels, mt.Tensor)
    eligible = ~np.isin(ids, SPECIALS)
    np.testing.assert_array_equal(inputs.numpy()[eligible], MASK)
    none = mask_tokens(ids, MASK, VOCAB, mlm_probability=0.0, rng=0)
    np.testing.assert_array_equal(none[0], ids)
    assert (none[1] == -100).all()
    with pytest.raises(ValueError):
        mask_tokens(ids, MASK, VOCAB, mask_frac=0.9, random_frac=0.2)


def test_mlm_collator_masks_padded_batches() -> None:
    samples = [[CLS, 10, 11, 12, SEP], [CLS, 20, SEP], [CLS] + list(range(30, 60)) + [SEP]]
    collate = MLMCollator(pad_collate(pad_id=PAD), mask_token_id=MASK, vocab_size=VOCAB,
                          special_ids=(CLS, SEP), pad_id=PAD, mlm_probability=0.5, rng=0)
    batch = collate(samples)
    assert batch["input_ids"].shape == batch["labels"].shape == (3, 32)
    labels, attn = batch["labels"].numpy(), batch["attention_mask"].numpy()
    assert (labels[attn == 0] == -100).all()
    assert (labels != -100).any()
    # The collator's generator moves on: the next batch is masked differently.
    assert not np.array_equal(collate(samples)["labels"].numpy(), labels)


# ---- causal LM and classification -----------------------------------------------------------


def test_causal_lm_shift() -> None:
    ids = np.array([[5, 6, 7, 8], [9, 10, PAD, PAD]])
    attn = (ids != PAD).astype(np.int64)
    inputs, targets = causal_lm_shift(ids, attention_mask=attn)
    np.testing.assert_array_equal(inputs, [[5, 6, 7], [9, 10, PAD]])
    np.testing.assert_array_equal(targets, [[6, 7, 8], [10, -100, -100]])
    _, by_pad = causal_lm_shift(ids, pad_id=PAD)
    np.testing.assert_array_equal(by_pad, targets)
    x, y = causal_lm_shift(mt.tensor([1, 2, 3]))
    assert isinstance(x, mt.Tensor) and x.tolist() == [1, 2] and y.tolist() == [2, 3]
    with pytest.raises(ValueError):
        causal_lm_shift(np.array([[1]]))


@requires_torch
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 7)])
def test_classification_loss_matches_torch(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(shape)
    labels = rng.integers(0, shape[-1], shape[:-1])
    labels.reshape(-1)[1] = -100
    got = classification_loss(mt.tensor(logits), mt.tensor(labels), label_smoothing=0.1)
    want = torch.nn.functional.cross_entropy(torch.tensor(logits).reshape(-1, shape[-1]),
                                             torch.tensor(labels).reshape(-1),
                                             label_smoothing=0.1)
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-10)


# ---- NT-Xent ---------------------------------------------------------------------------------


def nt_xent_torch(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR reference: cross entropy of cosine similarities with the diagonal removed."""
    n = z1.shape[0]
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    targets = torch.cat([torch.arange(n) + n, torch.arange(n)])
    return torch.nn.functional.cross_entropy(sim, targets)


@requires_torch
@pytest.mark.parametrize("n,d,temperature", [(1, 3, 0.5), (4, 8, 0.1), (9, 5, 1.0),
                                             (16, 32, 0.07)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nt_xent_matches_torch(n: int, d: int, temperature: float, dtype: type) -> None:
    rng = np.random.default_rng(n)
    a, b = (rng.standard_normal((n, d)).astype(dtype) for _ in range(2))
    z1, z2 = mt.tensor(a, requires_grad=True), mt.tensor(b, requires_grad=True)
    loss = nt_xent(z1, z2, temperature)
    loss.backward()
    t1, t2 = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ref = nt_xent_torch(t1, t2, temperature)
    ref.backward()
    tol = 1e-12 if dtype == np.float64 else 2e-5
    assert loss.dtype == dtype and loss.shape == ()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=tol, atol=tol)
    np.testing.assert_allclose(z1.grad.numpy(), t1.grad.numpy(), rtol=tol * 10, atol=tol)
    np.testing.assert_allclose(z2.grad.numpy(), t2.grad.numpy(), rtol=tol * 10, atol=tol)


def test_nt_xent_gradcheck_and_sanity() -> None:
    rng = np.random.default_rng(0)
    gradcheck(lambda x, y: nt_xent(x, y, 0.3), [rng.standard_normal((3, 4)),
                                               rng.standard_normal((3, 4))])
    # Views that agree score lower than views that do not.
    z = rng.standard_normal((8, 16))
    close = nt_xent(mt.tensor(z), mt.tensor(z + 0.01 * rng.standard_normal(z.shape)))
    far = nt_xent(mt.tensor(z), mt.tensor(rng.standard_normal(z.shape)))
    assert close.item() < far.item()
    with pytest.raises(ValueError):
        nt_xent(mt.tensor(z), mt.tensor(z[:4]))


# ---- augmentations ---------------------------------------------------------------------------


def images(n: int = 6, c: int = 3, h: int = 10, w: int = 12) -> np.ndarray:
    return np.random.default_rng(0).random((n, c, h, w)).astype(np.float32) + 1.0  # all >= 1


def test_random_crop_is_a_shifted_window() -> None:
    x = images()
    out = random_crop(x, padding=3, rng=4)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, random_crop(x, padding=3, rng=4))
    padded = np.pad(x, ((0, 0), (0, 0), (3, 3), (3, 3)))
    for i in range(len(x)):  # each output image is one window of its padded image
        hits = [(r, c) for r in range(7) for c in range(7)
                if np.array_equal(padded[i, :, r:r + 10, c:c + 12], out[i])]
        assert hits, f"image {i} is not a crop of its padded input"
    np.testing.assert_array_equal(random_crop(x, padding=0, rng=1), x)
    assert random_crop(x, padding=2, size=(8, 8), rng=0).shape == (6, 3, 8, 8)
    with pytest.raises(ValueError):
        random_crop(x[0], rng=0)


def test_flip_noise_erasing_cutout() -> None:
    x = images()
    np.testing.assert_array_equal(horizontal_flip(x, p=1.0, rng=0), x[..., ::-1])
    np.testing.assert_array_equal(horizontal_flip(x, p=0.0, rng=0), x)
    flipped = horizontal_flip(x, p=0.5, rng=3)
    for i in range(len(x)):
        assert np.array_equal(flipped[i], x[i]) or np.array_equal(flipped[i], x[i, :, :, ::-1])

    big = np.zeros((4, 3, 64, 64), dtype=np.float32)
    noisy = gaussian_noise(big, std=0.5, rng=0)
    assert noisy.dtype == np.float32 and abs(noisy.std() - 0.5) < 0.01

    erased = random_erasing(x, p=1.0, value=0.0, rng=0)
    for i in range(len(x)):
        zeros = erased[i, 0] == 0
        rows, cols = np.flatnonzero(zeros.any(1)), np.flatnonzero(zeros.any(0))
        assert zeros.sum() == len(rows) * len(cols) > 0  # one solid rectangle
    np.testing.assert_array_equal(random_erasing(x, p=0.0, rng=0), x)

    holes = cutout(x, size=4, value=0.0, rng=2) == 0
    per_image = holes[:, 0].sum(axis=(1, 2))
    assert ((per_image > 0) & (per_image <= 16)).all()
    assert (holes.all(axis=1) == holes.any(axis=1)).all()  # every channel alike


def test_augment_pipeline_determinism_and_types() -> None:
    x = images()
    aug = ImageAugment(crop_padding=2, flip=True, noise_std=0.1, erase_p=0.5)
    a, b = aug(x, rng=7), aug(x, rng=7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape
    v1, v2 = two_views(mt.tensor(x), aug, rng=1)
    assert isinstance(v1, mt.Tensor) and v1.shape == x.shape
    assert not np.array_equal(v1.numpy(), v2.numpy())
    mt.manual_seed(11)
    c = aug(x)
    mt.manual_seed(11)
    np.testing.assert_array_equal(c, aug(x))
