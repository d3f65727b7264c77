"""Normalization: layer_norm (with/without affine, several normalized dims), batch_norm
(train/eval, running statistics against torch over several steps), group_norm and
normalize: float64 gradchecks on drawn shapes, torch parity and error messages."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_op, gradcheck, requires_torch, torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt
import minitl.nn.functional as F


def _rand(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


def _tf():
    import torch.nn.functional as tf

    return tf


# ---- layer_norm -------------------------------------------------------------------------


@settings(max_examples=15)
@given(lead=st.lists(st.integers(1, 3), max_size=2).map(tuple),
       norm=st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple),
       affine=st.sampled_from(["none", "weight", "both"]))
def test_layer_norm_gradcheck(lead: tuple[int, ...], norm: tuple[int, ...], affine: str
                              ) -> None:
    if np.prod(norm) == 1:
        norm = norm[:-1] + (2,)  # one element normalizes to 0; its gradient is all eps noise
    w, b = _rand(norm, 1) + 1.0, _rand(norm, 2)

    def fn(x: mt.Tensor, w: mt.Tensor, b: mt.Tensor) -> mt.Tensor:
        return F.layer_norm(x, norm, w if affine != "none" else None,
                            b if affine == "both" else None, eps=1e-5)

    gradcheck(fn, [_rand(lead + norm, 3, scale=2), w, b], atol=1e-4)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape,norm", [((4, 6), (6,)), ((2, 3, 8), (8,)),
                                        ((2, 3, 4, 5), (4, 5)), ((3, 1), (1,))])
def test_layer_norm_matches_torch(affine: bool, shape: tuple[int, ...], norm: tuple[int, ...]
                                  ) -> None:
    x = _rand(shape, scale=3) + 2
    w, b = _rand(norm, 1), _rand(norm, 2)
    if affine:
        check_op(lambda x, w, b: F.layer_norm(x, norm, w, b, 1e-5),
                 lambda x, w, b: _tf().layer_norm(x, norm, w, b, 1e-5), [x, w, b])
    else:
        check_op(lambda x: F.layer_norm(x, norm), lambda x: _tf().layer_norm(x, norm), [x])


def test_layer_norm_float32_and_int_normalized_shape() -> None:
    x = _rand((5, 16), scale=10).astype(np.float32) + 100
    w, b = _rand((16,), 1).astype(np.float32), _rand((16,), 2).astype(np.float32)
    check_op(lambda x, w, b: F.layer_norm(x, 16, w, b), lambda x, w, b: _tf().layer_norm(
        x, (16,), w, b), [x, w, b], atol=2e-5, rtol=1e-4)
    assert F.layer_norm(mt.tensor(x), 16).dtype == mt.float32


def test_layer_norm_errors_name_shapes() -> None:
    x = mt.randn(2, 3)
    with pytest.raises(ValueError, match=r"\[4\].*\(2, 3\)"):
        F.layer_norm(x, 4)
    with pytest.raises(ValueError, match=r"weight of shape \(2,\)"):
        F.layer_norm(x, 3, mt.ones(2))
    with pytest.raises(TypeError, match="float64"):
        F.layer_norm(x, 3, mt.ones(3, dtype=mt.float64))


# ---- batch_norm -------------------------------------------------------------------------


@settings(max_examples=12)
@given(n=st.integers(1, 3), c=st.integers(1, 3),
       spatial=st.sampled_from([(), (1,), (3,), (2, 2)]), affine=st.booleans(),
       training=st.booleans())
def test_batch_norm_gradcheck(n: int, c: int, spatial: tuple[int, ...], affine: bool,
                              training: bool) -> None:
    if training and n * int(np.prod(spatial)) < 2:
        n = 2  # training needs more than one value per channel
    rm, rv = _rand((c,), 4), np.random.default_rng(5).random(c) + 0.5

    def fn(x: mt.Tensor, w: mt.Tensor, b: mt.Tensor) -> mt.Tensor:
        return F.batch_norm(x, rm.copy(), rv.copy(), w if affine else None,
                            b if affine else None, training=training)

    gradcheck(fn, [_rand((n, c) + spatial, 1, scale=2), _rand((c,), 2) + 1, _rand((c,), 3)],
              atol=1e-4)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 4)])
def test_batch_norm_matches_torch(training: bool, shape: tuple[int, ...]) -> None:
    c = shape[1]
    rm, rv = _rand((c,), 7), np.random.default_rng(8).random(c) + 0.5

    def ours(x: mt.Tensor, w: mt.Tensor, b: mt.Tensor) -> mt.Tensor:
        return F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training, eps=1e-3)

    def theirs(x: object, w: object, b: object) -> object:
        return _tf().batch_norm(x, torch.tensor(rm), torch.tensor(rv), w, b,
                                training=training, eps=1e-3)

    check_op(ours, theirs, [_rand(shape, scale=2) + 1, _rand((c,), 1), _rand((c,), 2)])


@requires_torch
def test_batch_norm_running_stats_follow_torch_over_steps() -> None:
    c = 4
    rm_ours, rv_ours = mt.zeros(c, dtype=mt.float64), mt.ones(c, dtype=mt.float64)
    rm_np, rv_np = np.zeros(c), np.ones(c)  # plain arrays are updated in place too
    rm_t, rv_t = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    for step in range(4):
        x = _rand((3, c, 2, 5), step, scale=step + 1) + step
        F.batch_norm(mt.tensor(x), rm_ours, rv_ours, training=True, momentum=0.3)
        F.batch_norm(mt.tensor(x), rm_np, rv_np, training=True, momentum=0.3)
        _tf().batch_norm(torch.tensor(x), rm_t, rv_t, training=True, momentum=0.3)
    np.testing.assert_allclose(rm_ours.numpy(), rm_t.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv_ours.numpy(), rv_t.numpy(), rtol=1e-12)  # unbiased
    np.testing.assert_allclose(rv_np, rv_t.numpy(), rtol=1e-12)
    x = _rand((2, c, 3), 9)
    ours = F.batch_norm(mt.tensor(x), rm_ours, rv_ours, training=False).numpy()
    ref = _tf().batch_norm(torch.tensor(x), rm_t, rv_t, training=False).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_batch_norm_keeps_running_stat_dtype_and_works_without_them() -> None:
    rm, rv = mt.zeros(3), mt.ones(3)
    with mt.no_grad():
        F.batch_norm(mt.randn(4, 3, dtype=mt.float32), rm, rv, training=True)
    assert rm.dtype == mt.float32 and np.abs(rm.numpy()).sum() > 0
    y = F.batch_norm(mt.randn(5, 3), None, None, training=True)
    np.testing.assert_allclose(y.numpy().mean(axis=0), 0, atol=1e-6)


def test_batch_norm_errors() -> None:
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(mt.randn(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        F.batch_norm(mt.randn(2, 3), None, None, training=False)
    with pytest.raises(ValueError, match=r"running_mean of shape \(4,\).*\(2, 3\)"):
        F.batch_norm(mt.randn(2, 3), mt.zeros(4), mt.ones(3))


# ---- group_norm -------------------------------------------------------------------------


@settings(max_examples=10)
@given(n=st.integers(1, 2), groups=st.integers(1, 3), per=st.integers(1, 2),
       spatial=st.sampled_from([(2,), (2, 2), (3,)]), affine=st.booleans())
def test_group_norm_gradcheck(n: int, groups: int, per: int, spatial: tuple[int, ...],
                              affine: bool) -> None:
    c = groups * per
    gradcheck(lambda x, w, b: F.group_norm(x, groups, w if affine else None,
                                           b if affine else None),
              [_rand((n, c) + spatial, 1, scale=2), _rand((c,), 2), _rand((c,), 3)], atol=1e-4)


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm_matches_torch(groups: int) -> None:
    x, w, b = _rand((2, 6, 3, 2), scale=2) + 1, _rand((6,), 1), _rand((6,), 2)
    check_op(lambda x, w, b: F.group_norm(x, groups, w, b),
             lambda x, w, b: _tf().group_norm(x, groups, w, b), [x, w, b])
    with pytest.raises(ValueError, match=r"6 channels.*4 groups"):
        F.group_norm(mt.tensor(x), 4)


# ---- normalize --------------------------------------------------------------------------


@settings(max_examples=10)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
       p=st.sampled_from([1.0, 2.0, 3.0, float("inf")]), data=st.data())
def test_normalize_gradcheck(shape: tuple[int, ...], p: float, data: st.DataObject) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = _rand(shape, 1)
    x[np.abs(x) < 0.05] = 0.3  # |x| and max are kinked at 0 and at ties
    gradcheck(lambda t: F.normalize(t, p=p, dim=dim), [x])


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_normalize_matches_torch_including_zero_rows(p: float) -> None:
    x = _rand((4, 3), 2)
    x[1] = 0.0  # eps keeps the zero row finite with zero gradient
    check_op(lambda t: F.normalize(t, p=p, dim=1), lambda t: _tf().normalize(t, p=p, dim=1), [x])
    check_op(lambda t: F.normalize(t, dim=0, eps=0.5), lambda t: _tf().normalize(t, dim=0,
                                                                                  eps=0.5), [x])
