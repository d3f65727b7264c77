"""Losses: cross_entropy over its option matrix (class ids / probabilities, K-dim, weights,
ignore_index, label smoothing, reductions), nll_loss, mse/l1, binary cross-entropy (with
logits): float64 gradchecks, torch parity and error messages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import check_op, gradcheck, requires_torch, torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt
import minitl.nn.functional as F

REDUCTIONS = ["mean", "sum", "none"]


def _rand(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


def _tf():
    return pytest.importorskip("torch.nn.functional")


def _targets(n: int, c: int, extra: tuple[int, ...], seed: int, ignore: bool) -> np.ndarray:
    t = np.random.default_rng(seed).integers(0, c, (n,) + extra)
    if ignore and t.size > 1:
        t.reshape(-1)[::3] = -100
    return t


def _const(w: np.ndarray | None, lib: str) -> object:
    """A weight both libraries see as a constant (torch refuses gradients for loss weights)."""
    if w is None:
        return None
    return mt.tensor(w) if lib == "mt" else torch.tensor(w)


def _probs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    p = np.random.default_rng(seed).random(shape) + 0.05
    return p / p.sum(axis=1, keepdims=True)


# ---- cross_entropy ----------------------------------------------------------------------


@settings(max_examples=20)
@given(n=st.integers(1, 4), c=st.integers(1, 5),
       extra=st.sampled_from([(), (1,), (3,), (2, 2)]),
       reduction=st.sampled_from(REDUCTIONS), smoothing=st.sampled_from([0.0, 0.3]),
       weighted=st.booleans(), ignore=st.booleans())
def test_cross_entropy_class_targets_gradcheck(n: int, c: int, extra: tuple[int, ...],
                                               reduction: str, smoothing: float,
                                               weighted: bool, ignore: bool) -> None:
    x = _rand((n, c) + extra, scale=2)
    t = _targets(n, c, extra, n + c, ignore)
    if reduction == "mean" and (t == -100).all():
        t.reshape(-1)[0] = 0  # an all-ignored mean is NaN (tested separately)
    w = np.random.default_rng(1).random(c) + 0.5

    def fn(x: mt.Tensor, t: mt.Tensor, w: mt.Tensor) -> mt.Tensor:
        return F.cross_entropy(x, t, w if weighted else None, reduction=reduction,
                               label_smoothing=smoothing)

    gradcheck(fn, [x, t, w], wrt=[0])


@settings(max_examples=10)
@given(n=st.integers(1, 3), c=st.integers(1, 4), extra=st.sampled_from([(), (2,)]),
       reduction=st.sampled_from(REDUCTIONS), smoothing=st.sampled_from([0.0, 0.2]))
def test_cross_entropy_prob_targets_gradcheck(n: int, c: int, extra: tuple[int, ...],
                                              reduction: str, smoothing: float) -> None:
    shape = (n, c) + extra
    w = np.random.default_rng(2).random(c) + 0.5
    gradcheck(lambda x, p, w: F.cross_entropy(x, p, w, reduction=reduction,
                                              label_smoothing=smoothing),
              [_rand(shape), _probs(shape, n), w], wrt=[0, 1])


def _cases(*axes: list) -> list:
    """Every combination of the option axes, as a list (pytest wants a collection)."""
    return list(itertools.product(*axes))


CE_CASES = list(itertools.product(REDUCTIONS, [0.0, 0.1], [False, True], [(), (3,), (2, 3)]))


@pytest.mark.parametrize("reduction,smoothing,weighted,extra", CE_CASES)
def test_cross_entropy_class_targets_match_torch(reduction: str, smoothing: float,
                                                 weighted: bool, extra: tuple[int, ...]
                                                 ) -> None:
    c = 5
    x, t = _rand((4, c) + extra, scale=3), _targets(4, c, extra, 7, ignore=True)
    w = np.random.default_rng(3).random(c) + 0.1 if weighted else None
    kw = {"reduction": reduction, "label_smoothing": smoothing, "ignore_index": -100}
    check_op(lambda x, t: F.cross_entropy(x, t, _const(w, "mt"), **kw),
             lambda x, t: _tf().cross_entropy(x, t, _const(w, "torch"), **kw), [x, t])


@pytest.mark.parametrize("reduction,smoothing,weighted", _cases(
    REDUCTIONS, [0.0, 0.25], [False, True]))
def test_cross_entropy_prob_targets_match_torch(reduction: str, smoothing: float,
                                                weighted: bool) -> None:
    x, p = _rand((3, 4, 2)), _probs((3, 4, 2), 5)
    w = np.random.default_rng(4).random(4) + 0.1 if weighted else None
    kw = {"reduction": reduction, "label_smoothing": smoothing}
    check_op(lambda x, p: F.cross_entropy(x, p, _const(w, "mt"), **kw),
             lambda x, p: _tf().cross_entropy(x, p, _const(w, "torch"), **kw), [x, p])


def test_cross_entropy_float32_unbatched_and_custom_ignore_index() -> None:
    x = _rand((6, 3), scale=4).astype(np.float32)
    t = np.array([0, 2, 1, 1, 2, 0])
    check_op(lambda x, t: F.cross_entropy(x, t, ignore_index=1),
             lambda x, t: _tf().cross_entropy(x, t, ignore_index=1), [x, t], atol=1e-6)
    check_op(lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1),
             lambda x, t: _tf().cross_entropy(x, t, label_smoothing=0.1),
             [x[0], np.array(2)], atol=1e-6)
    loss = F.cross_entropy(mt.tensor(x), mt.tensor(t))
    assert loss.dtype == mt.float32 and loss.shape == ()


def test_cross_entropy_is_stable_for_huge_logits() -> None:
    x = mt.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], requires_grad=True)
    loss = F.cross_entropy(x, mt.tensor([1, 0]), label_smoothing=0.1)
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(x.grad.numpy()).all()
    if torch is not None:
        ref = _tf().cross_entropy(torch.tensor(x.numpy()), torch.tensor([1, 0]),
                                  label_smoothing=0.1)
        np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-6)


def test_cross_entropy_all_ignored_mean_is_nan_like_torch() -> None:
    x = mt.tensor(_rand((2, 3)), requires_grad=True)
    loss = F.cross_entropy(x, mt.tensor([-100, -100]))
    assert np.isnan(loss.item())
    assert F.cross_entropy(x, mt.tensor([-100, -100]), reduction="sum").item() == 0.0


def test_cross_entropy_legacy_reduction_arguments() -> None:
    x, t = mt.tensor(_rand((3, 4))), mt.tensor([0, 1, 3])
    per = F.cross_entropy(x, t, reduction="none").numpy()
    np.testing.assert_allclose(F.cross_entropy(x, t, size_average=False).item(), per.sum())
    assert F.cross_entropy(x, t, reduce=False).shape == (3,)


def test_cross_entropy_errors_name_values_and_shapes() -> None:
    x = mt.randn(2, 3)
    with pytest.raises(IndexError, match=r"target 3 is out of bounds for 3 classes"):
        F.cross_entropy(x, mt.tensor([0, 3]))
    with pytest.raises(IndexError, match=r"target -2 "):
        F.cross_entropy(x, mt.tensor([-2, 0]))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 3\)"):
        F.cross_entropy(x, mt.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\)"):
        F.cross_entropy(x, mt.randn(2, 4))
    with pytest.raises(TypeError, match="bool"):
        F.cross_entropy(x, mt.tensor([True, False]))
    with pytest.raises(ValueError, match="weight of shape"):
        F.cross_entropy(x, mt.tensor([0, 1]), mt.ones(4))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, mt.tensor([0, 1]), reduction="avg")
    with pytest.raises(TypeError, match="float64"):
        F.cross_entropy(x, mt.tensor([0, 1]), mt.ones(3, dtype=mt.float64))


# ---- nll_loss ---------------------------------------------------------------------------


@settings(max_examples=10)
@given(n=st.integers(1, 4), c=st.integers(1, 4), extra=st.sampled_from([(), (2,)]),
       reduction=st.sampled_from(REDUCTIONS), weighted=st.booleans())
def test_nll_loss_gradcheck(n: int, c: int, extra: tuple[int, ...], reduction: str,
                            weighted: bool) -> None:
    t = _targets(n, c, extra, c, ignore=reduction != "mean")
    w = np.random.default_rng(0).random(c) + 0.5
    gradcheck(lambda x, t, w: F.nll_loss(x, t, w if weighted else None, reduction=reduction),
              [_rand((n, c) + extra), t, w], wrt=[0])


@pytest.mark.parametrize("reduction,weighted", _cases(REDUCTIONS, [False, True]))
def test_nll_loss_matches_torch(reduction: str, weighted: bool) -> None:
    x = np.log(_probs((5, 4, 2), 1))
    t, w = _targets(5, 4, (2,), 2, ignore=True), np.arange(1.0, 5.0) if weighted else None
    check_op(lambda x, t: F.nll_loss(x, t, _const(w, "mt"), reduction=reduction),
             lambda x, t: _tf().nll_loss(x, t, _const(w, "torch"), reduction=reduction),
             [x, t])


def test_log_softmax_then_nll_equals_cross_entropy() -> None:
    x, t = mt.tensor(_rand((4, 5))), mt.tensor([1, 0, 4, 4])
    np.testing.assert_allclose(F.nll_loss(F.log_softmax(x, 1), t).item(),
                               F.cross_entropy(x, t).item(), rtol=1e-6)


# ---- mse / l1 ---------------------------------------------------------------------------


@settings(max_examples=10)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
       reduction=st.sampled_from(REDUCTIONS))
def test_mse_l1_gradcheck(shape: tuple[int, ...], reduction: str) -> None:
    a, b = _rand(shape, 1), _rand(shape, 2)
    gradcheck(lambda a, b: F.mse_loss(a, b, reduction=reduction), [a, b])
    gradcheck(lambda a, b: F.l1_loss(a, b, reduction=reduction), [a, b])
    w = np.random.default_rng(3).random(shape) + 0.1
    gradcheck(lambda a, b, w: F.mse_loss(a, b, reduction=reduction, weight=w), [a, b, w],
              wrt=[0, 1])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_l1_match_torch(reduction: str) -> None:
    a, b = _rand((3, 4), 1), _rand((3, 4), 2)
    b[0, 0] = a[0, 0]  # |x - t| at 0 has gradient 0 in both
    for name in ("mse_loss", "l1_loss"):
        ours, theirs = getattr(F, name), getattr(_tf(), name)
        check_op(lambda a, b, f=ours: f(a, b, reduction=reduction),
                 lambda a, b, f=theirs: f(a, b, reduction=reduction), [a, b])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weighted_mse_l1_match_torch(reduction: str) -> None:
    a, b = _rand((3, 4), 1), _rand((3, 4), 2)
    w = np.random.default_rng(3).random((3, 4))
    for name in ("mse_loss", "l1_loss"):
        ours, theirs = getattr(F, name), getattr(_tf(), name)
        check_op(lambda a, b, f=ours: f(a, b, reduction=reduction, weight=_const(w, "mt")),
                 lambda a, b, f=theirs: f(a, b, reduction=reduction, weight=_const(w, "torch")),
                 [a, b])


def test_mse_broadcast_warns_and_weight_shape_error() -> None:
    with pytest.warns(UserWarning, match="broadcast"):
        out = F.mse_loss(mt.randn(3, 1), mt.randn(3))
    assert out.shape == ()
    with pytest.raises(ValueError, match=r"weight of shape \(2,\)"):
        F.mse_loss(mt.randn(3), mt.randn(3), weight=mt.ones(2))


# ---- binary cross-entropy ---------------------------------------------------------------


@settings(max_examples=10)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple),
       reduction=st.sampled_from(REDUCTIONS), weighted=st.booleans(), pos=st.booleans())
def test_bce_with_logits_gradcheck(shape: tuple[int, ...], reduction: str, weighted: bool,
                                   pos: bool) -> None:
    t = np.random.default_rng(5).random(shape)
    w = np.random.default_rng(6).random(shape) + 0.5
    pw = np.random.default_rng(7).random(shape[-1:]) + 0.5

    def fn(x: mt.Tensor, t: mt.Tensor, w: mt.Tensor, pw: mt.Tensor) -> mt.Tensor:
        return F.binary_cross_entropy_with_logits(x, t, w if weighted else None,
                                                  reduction=reduction,
                                                  pos_weight=pw if pos else None)

    gradcheck(fn, [_rand(shape, scale=3), t, w, pw])


@pytest.mark.parametrize("reduction,weighted,pos", _cases(
    REDUCTIONS, [False, True], [False, True]))
def test_bce_with_logits_matches_torch(reduction: str, weighted: bool, pos: bool) -> None:
    x = np.concatenate([_rand((4, 3), scale=3), [[80.0, -80.0, 0.0]]])
    t = np.random.default_rng(1).random((5, 3))
    w = np.random.default_rng(2).random((5, 3)) if weighted else None
    pw = np.array([0.5, 2.0, 3.0]) if pos else None

    def call(lib: object, name: str, x: object, t: object) -> object:
        return lib.binary_cross_entropy_with_logits(x, t, _const(w, name), reduction=reduction,
                                                    pos_weight=_const(pw, name))

    check_op(lambda x, t: call(F, "mt", x, t), lambda x, t: call(_tf(), "torch", x, t), [x, t])


@pytest.mark.parametrize("reduction,weighted", _cases(REDUCTIONS, [False, True]))
def test_binary_cross_entropy_matches_torch(reduction: str, weighted: bool) -> None:
    p = np.random.default_rng(0).uniform(0.05, 0.95, (4, 3))
    t = np.random.default_rng(1).random((4, 3))
    w = np.random.default_rng(2).random((4, 3)) if weighted else None
    check_op(lambda p, t: F.binary_cross_entropy(p, t, _const(w, "mt"), reduction=reduction),
             lambda p, t: _tf().binary_cross_entropy(p, t, _const(w, "torch"),
                                                     reduction=reduction), [p, t])
    gradcheck(lambda p, t: F.binary_cross_entropy(p, t, reduction=reduction), [p, t])


@requires_torch
def test_binary_cross_entropy_clamps_log_at_edges_like_torch() -> None:
    p, t = np.array([0.0, 1.0, 0.5]), np.array([1.0, 0.0, 1.0])
    ours = F.binary_cross_entropy(mt.tensor(p), mt.tensor(t), reduction="none").numpy()
    ref = _tf().binary_cross_entropy(torch.tensor(p), torch.tensor(t), reduction="none")
    np.testing.assert_allclose(ours, ref.numpy())
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.binary_cross_entropy(mt.tensor([1.5]), mt.tensor([1.0]))
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        F.binary_cross_entropy_with_logits(mt.randn(3), mt.randn(2))
