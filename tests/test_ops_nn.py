"""Activations (gelu, silu, leaky_relu, softmax, log_softmax, dropout), embedding, one_hot
and the nn.functional namespace: float64 gradchecks on drawn shapes and parity with torch."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_op, gradcheck, requires_torch, torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt
import minitl.nn.functional as F

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


def _rand(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


def _tf():  # torch.nn.functional, imported lazily so the file collects without torch
    import torch.nn.functional as tf

    return tf


# ---- gelu / silu / leaky_relu -----------------------------------------------------------


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@settings(max_examples=10)
@given(shape=shapes)
def test_gelu_gradcheck(approximate: str, shape: tuple[int, ...]) -> None:
    gradcheck(lambda x: F.gelu(x, approximate=approximate), [_rand(shape, scale=2)])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_matches_torch(approximate: str, dtype: type) -> None:
    x = np.concatenate([_rand((50,), scale=3), [0.0, -8.0, 8.0, 1e-4]]).astype(dtype)
    tol = {"atol": 1e-6, "rtol": 1e-5} if dtype == np.float32 else {}
    check_op(lambda t: F.gelu(t, approximate), lambda t: _tf().gelu(t, approximate=approximate),
             [x], **tol)


def test_gelu_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(mt.randn(3), approximate="fast")


@settings(max_examples=10)
@given(shape=shapes, slope=st.sampled_from([0.01, 0.2, -0.5]))
def test_silu_leaky_relu_gradcheck(shape: tuple[int, ...], slope: float) -> None:
    x = _rand(shape)
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the leaky_relu kink
    gradcheck(F.silu, [x])
    gradcheck(lambda t: F.leaky_relu(t, slope), [x])


def test_silu_leaky_relu_match_torch() -> None:
    x = np.concatenate([_rand((30,), scale=4), [0.0, -100.0, 100.0]])
    check_op(F.silu, lambda t: _tf().silu(t), [x])
    check_op(lambda t: F.leaky_relu(t, 0.1), lambda t: _tf().leaky_relu(t, 0.1), [x])


# ---- softmax / log_softmax --------------------------------------------------------------


@settings(max_examples=15)
@given(shape=shapes, data=st.data())
def test_softmax_log_softmax_gradcheck(shape: tuple[int, ...], data: st.DataObject) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = _rand(shape, scale=3)
    gradcheck(lambda t: F.softmax(t, dim), [x])
    gradcheck(lambda t: F.log_softmax(t, dim), [x])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_log_softmax_match_torch(dim: int) -> None:
    x = _rand((4, 5, 3), scale=5)
    check_op(lambda t: F.softmax(t, dim), lambda t: _tf().softmax(t, dim), [x])
    check_op(lambda t: F.log_softmax(t, dim), lambda t: _tf().log_softmax(t, dim), [x])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_stable_for_huge_logits(dtype: type) -> None:
    x = np.array([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]], dtype=dtype)
    for fn in (F.softmax, F.log_softmax):
        t = mt.tensor(x, requires_grad=True)
        y = fn(t, -1)
        assert np.isfinite(y.numpy()).all(), fn.__name__
        (y * mt.tensor(np.arange(9.0).reshape(3, 3).astype(dtype))).sum().backward()
        assert np.isfinite(t.grad.numpy()).all()
    np.testing.assert_allclose(F.softmax(mt.tensor(x), -1).numpy()[1], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(F.log_softmax(mt.tensor(x), -1).numpy()[0], [0, -2e4, -1e4])
    if torch is not None:
        np.testing.assert_allclose(F.log_softmax(mt.tensor(x), 0).numpy(),
                                   _tf().log_softmax(torch.tensor(x), 0).numpy(), rtol=1e-6)


def test_softmax_dtype_argument_and_errors() -> None:
    x = mt.tensor([[1.0, 2.0]])
    assert F.softmax(x, -1, dtype=mt.float64).dtype == mt.float64
    with pytest.raises(IndexError, match="dim 2"):
        F.softmax(x, 2)
    with pytest.raises(TypeError, match="dim"):
        F.softmax(x)
    with pytest.raises(TypeError, match="int64"):
        F.softmax(mt.tensor([1, 2]), 0)


def test_softmax_tensor_methods() -> None:
    x = mt.tensor(_rand((2, 3)))
    np.testing.assert_allclose(x.softmax(-1).numpy(), F.softmax(x, -1).numpy())
    np.testing.assert_allclose(x.log_softmax(dim=0).numpy(), F.log_softmax(x, 0).numpy())


# ---- dropout ----------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_statistics_and_scaling(p: float) -> None:
    x = mt.ones(200, 250, requires_grad=True)
    y = F.dropout(x, p)
    kept = y.numpy() != 0
    n = kept.size
    # Bernoulli(1-p) keep rate within 5 standard deviations.
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y.numpy()[kept], 1 / (1 - p), rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), y.numpy())  # dx = mask / (1 - p)
    assert y.dtype == mt.float32


def test_dropout_identity_cases_and_p1() -> None:
    x = mt.randn(4, 5, requires_grad=True)
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 0.7, training=False) is x
    y = F.dropout(x, 1.0)
    assert (y.numpy() == 0).all()
    y.sum().backward()
    assert (x.grad.numpy() == 0).all()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            F.dropout(x, bad)


def test_dropout_follows_manual_seed() -> None:
    mt.manual_seed(3)
    a = F.dropout(mt.ones(50), 0.5).numpy()
    mt.manual_seed(3)
    b = F.dropout(mt.ones(50), 0.5).numpy()
    np.testing.assert_array_equal(a, b)


def test_dropout_gradcheck_with_fixed_mask() -> None:
    def fn(x: mt.Tensor) -> mt.Tensor:
        mt.manual_seed(1)  # same mask on every evaluation
        return F.dropout(x, 0.3)

    gradcheck(fn, [_rand((4, 6))])


# ---- embedding / one_hot ----------------------------------------------------------------


@settings(max_examples=15)
@given(n=st.integers(1, 6), d=st.integers(1, 4), ids_shape=shapes)
def test_embedding_gradcheck(n: int, d: int, ids_shape: tuple[int, ...]) -> None:
    ids = np.random.default_rng(n * d).integers(0, n, ids_shape)  # repeats accumulate
    gradcheck(F.embedding, [ids, _rand((n, d))])


def test_embedding_padding_row_gets_no_gradient() -> None:
    w = mt.tensor(_rand((4, 3)), requires_grad=True)
    out = F.embedding(mt.tensor([[3, 1, 3], [0, 3, 1]]), w, padding_idx=-1)  # row 3
    np.testing.assert_allclose(out.numpy()[0, 0], w.numpy()[3])  # the lookup still reads it
    out.sum().backward()
    np.testing.assert_allclose(w.grad.numpy()[:, 0], [1.0, 2.0, 0.0, 0.0])


@pytest.mark.parametrize("kwargs", [{}, {"padding_idx": 1}, {"padding_idx": -2},
                                    {"scale_grad_by_freq": True},
                                    {"padding_idx": 0, "scale_grad_by_freq": True}])
def test_embedding_matches_torch(kwargs: dict) -> None:
    ids = np.array([[0, 1, 1, 4], [4, 4, 2, 0]])
    check_op(lambda i, w: F.embedding(i, w, **kwargs),
             lambda i, w: _tf().embedding(i, w, **kwargs), [ids, _rand((5, 3))])


@requires_torch
def test_embedding_max_norm_renormalizes_like_torch() -> None:
    w = _rand((6, 4), scale=3)
    ids = np.array([0, 2, 2, 5])
    wm, wt = mt.tensor(w.copy()), torch.tensor(w.copy())
    a = F.embedding(mt.tensor(ids), wm, max_norm=1.5)
    b = _tf().embedding(torch.tensor(ids), wt, max_norm=1.5)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    np.testing.assert_allclose(wm.numpy(), wt.numpy(), rtol=1e-6)


def test_embedding_errors() -> None:
    w = mt.randn(5, 2)
    with pytest.raises(IndexError, match=r"index 7 .* 5 embeddings"):
        F.embedding(mt.tensor([1, 7]), w)
    with pytest.raises(IndexError, match="index -1"):
        F.embedding(mt.tensor([-1, 2]), w)
    with pytest.raises(TypeError, match="float32"):
        F.embedding(mt.tensor([1.0, 2.0]), w)
    with pytest.raises(ValueError, match="padding_idx 9"):
        F.embedding(mt.tensor([1]), w, padding_idx=9)


def test_one_hot_matches_torch() -> None:
    ids = np.array([[0, 3], [2, 2]])
    got = F.one_hot(mt.tensor(ids), 5)
    assert got.dtype == mt.int64 and got.shape == (2, 2, 5)
    np.testing.assert_array_equal(got.numpy(), np.eye(5, dtype=np.int64)[ids])
    assert F.one_hot(mt.tensor(ids)).shape == (2, 2, 4)
    if torch is not None:
        np.testing.assert_array_equal(got.numpy(), _tf().one_hot(torch.tensor(ids), 5).numpy())
    with pytest.raises(IndexError, match=r"index 3 .* 3 classes"):
        F.one_hot(mt.tensor(ids), 3)


# ---- the functional namespace -----------------------------------------------------------


def test_functional_exports_and_simple_wrappers() -> None:
    for name in F.__all__:
        assert callable(getattr(F, name)), name
    x = mt.tensor(_rand((2, 3)))
    np.testing.assert_allclose(F.relu(x).numpy(), np.maximum(x.numpy(), 0))
    np.testing.assert_allclose(F.tanh(x).numpy(), np.tanh(x.numpy()), rtol=1e-6)
    np.testing.assert_allclose(F.sigmoid(x).numpy(), 1 / (1 + np.exp(-x.numpy())), rtol=1e-6)
    assert F.pad(x, (1, 2)).shape == (2, 6)
    assert F.pad(x, (1, 1, 0, 1), value=3.0).numpy()[2, 0] == 3.0
    w, b = mt.tensor(_rand((4, 3), 1)), mt.tensor(_rand((4,), 2))
    np.testing.assert_allclose(F.linear(x, w, b).numpy(), x.numpy() @ w.numpy().T + b.numpy())


@requires_torch
def test_functional_signatures_match_torch() -> None:
    import inspect

    tf = _tf()
    for name in ("cross_entropy", "nll_loss", "mse_loss", "l1_loss", "layer_norm",
                 "batch_norm", "group_norm", "embedding", "avg_pool2d", "dropout", "normalize",
                 "binary_cross_entropy_with_logits", "binary_cross_entropy", "leaky_relu"):
        try:
            theirs = list(inspect.signature(getattr(tf, name)).parameters)
        except (TypeError, ValueError):  # a builtin without a Python signature
            continue
        ours = list(inspect.signature(getattr(F, name)).parameters)
        assert ours == theirs, name
