"""The C++ row-wise kernels (csrc/cpu/rowwise.cpp: softmax, layer_norm, softmax cross-entropy,
forward and backward) against their numpy references and PyTorch, and their refusals.

Row lengths cut the 16-lane vectors (1, 7, 15, 17, 129, 1025); non-finite rows (all -inf,
+inf, NaN, partly masked) must come out as the reference's; the wrappers send float64,
strided and empty operands where the kernels cannot take them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import check_op, requires_torch, torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt
import minitl.nn.functional as F
from minitl.backend import cpu, cpu_rowwise, get_backend, reference, shape_checks
from minitl.ops.activation import Softmax

pytestmark = pytest.mark.skipif(cpu.native_module() is None, reason="minitl._C not built")

ODD = [1, 7, 15, 16, 17, 129, 1025]


def _rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _close(got: Any, want: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    got = got if isinstance(got, (tuple, list)) else [got]
    want = want if isinstance(want, (tuple, list)) else [want]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        assert g.shape == w.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def _f64(*arrays: Any) -> list[Any]:
    return [None if a is None else a.astype(np.float64) for a in arrays]


def test_the_backend_runs_these_kernels_natively() -> None:
    paths = get_backend("cpu").paths
    assert {name: paths[name] for name in cpu_rowwise.KERNELS} == \
        dict.fromkeys(cpu_rowwise.KERNELS, "native")
    assert all(cpu_rowwise.self_check().values())


# ---- softmax -------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 9), n=st.sampled_from(ODD + [2, 64, 300]),
       scale=st.sampled_from([0.1, 3.0, 40.0]), safe=st.booleans(), seed=st.integers(0, 999))
def test_softmax_matches_the_reference(rows: int, n: int, scale: float, safe: bool,
                                       seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, g = _rand(rng, 2, rows, n, scale=scale), _rand(rng, 2, rows, n)
    y = cpu_rowwise.softmax_fwd(x, safe)
    _close(y, reference.softmax_fwd(*_f64(x), safe).astype(np.float32), atol=1e-7)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)
    _close(cpu_rowwise.softmax_bwd(g, y), reference.softmax_bwd(*_f64(g, y)).astype(np.float32))


def test_softmax_of_masked_and_non_finite_rows_is_the_references() -> None:
    inf, nan = np.inf, np.nan
    x = np.array([[0.5, -inf, 2.0, -inf, 1.0],     # masked keys: zeros there
                  [-inf] * 5,                      # a fully masked row
                  [1.0, inf, 2.0, -inf, 0.0],      # +inf
                  [1.0, nan, 2.0, 3.0, 0.0],       # NaN
                  [-1e30, 0.0, -200.0, 1e30, 3.0],  # huge but finite
                  [100.0, 95.0, -inf, 89.0, 100.0]], np.float32)
    for safe in (False, True):
        got = cpu_rowwise.softmax_fwd(x, safe)
        with np.errstate(all="ignore"):
            want = reference.softmax_fwd(x, safe)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, equal_nan=True)
    assert np.array_equal(cpu_rowwise.softmax_fwd(x, True)[1], np.zeros(5, np.float32))
    assert np.isnan(cpu_rowwise.softmax_fwd(x, False)[1]).all()


def test_softmax_keeps_the_shape_and_takes_strided_input() -> None:
    rng = np.random.default_rng(1)
    x = _rand(rng, 3, 17, 5).transpose(0, 2, 1)  # not contiguous
    _close(cpu_rowwise.softmax_fwd(x, False), reference.softmax_fwd(x, False))
    g = _rand(rng, 3, 5, 17)
    y = reference.softmax_fwd(x, False)
    _close(cpu_rowwise.softmax_bwd(g[:, ::-1], y), reference.softmax_bwd(g[:, ::-1], y))
    empty = np.zeros((4, 0), np.float32)
    assert cpu_rowwise.softmax_fwd(empty, True).shape == (4, 0)
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(cpu_rowwise.softmax_fwd(x64, False),
                                  reference.softmax_fwd(x64, False))


# ---- layer_norm ----------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), d=st.sampled_from(ODD + [2, 256]), affine=st.booleans(),
       bias=st.booleans(), shift=st.sampled_from([0.0, 50.0]), seed=st.integers(0, 999))
def test_layer_norm_matches_the_reference(rows: int, d: int, affine: bool, bias: bool,
                                          shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # an offset tests the centred variance; float32 x itself then carries ~shift * 6e-8 of
    # rounding, which a short row's spread (d = 1, 2) can magnify without bound
    shift = shift if d >= 7 else 0.0
    x = _rand(rng, rows, d) + np.float32(shift)
    tol = 2e-5 if shift == 0.0 else 2e-4
    w = _rand(rng, d) if affine else None
    b = _rand(rng, d) if bias else None
    g = _rand(rng, rows, d)
    y, mean, rstd = cpu_rowwise.layernorm_fwd(x, w, b, 1e-5)
    want = [a.astype(np.float32) for a in reference.layernorm_fwd(*_f64(x, w, b), 1e-5)]
    assert mean.shape == rstd.shape == (rows, 1)
    _close((y, mean, rstd), want, rtol=tol, atol=tol)
    for needs in ((True, True, True), (False, True, False), (True, False, False)):
        got = cpu_rowwise.layernorm_bwd(g, x, mean, rstd, w, needs)
        ref = reference.layernorm_bwd(*_f64(g, x, mean, rstd, w), needs)
        _close(got, [None if r is None else r.astype(np.float32) for r in ref],
               rtol=10 * tol, atol=10 * tol)


def test_layer_norm_of_constant_and_non_finite_rows() -> None:
    x = np.array([[3.0] * 20, [1.0, np.nan] + [0.0] * 18, [np.inf] + [0.0] * 19], np.float32)
    got = cpu_rowwise.layernorm_fwd(x, None, None, 1e-5)
    with np.errstate(all="ignore"):
        want = reference.layernorm_fwd(x, None, None, 1e-5)
    for g_, w_ in zip(got, want):
        np.testing.assert_allclose(g_, w_, rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(got[0][0], 0.0)


# ---- softmax cross-entropy -----------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 12), c=st.sampled_from(ODD + [3, 500]), weighted=st.booleans(),
       eps=st.sampled_from([0.0, 0.1]), ignored=st.floats(0.0, 1.0),
       scalar_grad=st.booleans(), seed=st.integers(0, 999))
def test_cross_entropy_matches_the_reference(rows: int, c: int, weighted: bool, eps: float,
                                             ignored: float, scalar_grad: bool,
                                             seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = _rand(rng, rows, c, scale=4.0)
    t = np.where(rng.random(rows) < ignored, -100, rng.integers(0, c, rows))
    w = np.abs(_rand(rng, c)) if weighted else None
    loss, lse = cpu_rowwise.softmax_xent_fwd(x, t, w, -100, eps)
    want = [a.astype(np.float32) for a in
            reference.softmax_xent_fwd(*_f64(x), t, *_f64(w), -100, eps)]
    _close((loss, lse), want, rtol=1e-5, atol=1e-5)
    grad = np.float32(0.7) if scalar_grad else np.abs(_rand(rng, rows))
    dx = cpu_rowwise.softmax_xent_bwd(x, lse, t, w, -100, eps, grad)
    want_dx = reference.softmax_xent_bwd(*_f64(x, lse), t, *_f64(w), -100, eps,
                                         np.float64(grad))
    _close(dx, want_dx.astype(np.float32), rtol=1e-5, atol=1e-6)


def test_cross_entropy_rows_that_are_ignored_masked_or_not_finite() -> None:
    inf = np.inf
    x = np.array([[1.0, 2.0, 3.0], [-inf, 0.0, 1.0], [-inf] * 3, [1.0, inf, 0.0],
                  [np.nan, 0.0, 1.0], [5.0, 1.0, 2.0]], np.float32)
    t = np.array([2, 1, 0, 0, 1, -100])
    loss, lse = cpu_rowwise.softmax_xent_fwd(x, t, None, -100, 0.0)
    with np.errstate(all="ignore"):
        want = reference.softmax_xent_fwd(x, t, None, -100, 0.0)
        np.testing.assert_allclose(loss, want[0], rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(lse, want[1], rtol=1e-6, equal_nan=True)
        grad = np.ones(6, np.float32)
        dx = cpu_rowwise.softmax_xent_bwd(x, lse, t, None, -100, 0.0, grad)
        want_dx = reference.softmax_xent_bwd(x, lse, t, None, -100, 0.0, grad)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-6, atol=1e-7, equal_nan=True)
    assert loss[5] == 0.0 and not dx[5].any()


def test_cross_entropy_targets_are_checked_before_any_read() -> None:
    _C = cpu.native_module()
    x = np.zeros((3, 4), np.float32)
    for bad in ([0, 4, 1], [0, -1, 1], [0, 1, 2**40]):
        with pytest.raises(IndexError, match="out of range"):
            _C.softmax_xent_fwd(x, np.array(bad, np.int64), None, -100, 0.0)
        with pytest.raises(IndexError, match="out of range"):
            cpu_rowwise.softmax_xent_fwd(x, np.array(bad), None, -100, 0.0)
        with pytest.raises(IndexError, match="out of range"):
            cpu_rowwise.softmax_xent_bwd(x, np.zeros(3, np.float32), np.array(bad), None, -100,
                                         0.0, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="int64"):
        _C.softmax_xent_fwd(x, np.array([0, 1, 2], np.int32), None, -100, 0.0)
    # int32 targets through the wrapper are checked on an int64 copy
    loss, _ = cpu_rowwise.softmax_xent_fwd(x, np.array([0, 1, 2], np.int32), None, -100, 0.0)
    np.testing.assert_allclose(loss, np.log(4.0), rtol=1e-6)


# ---- refusals ------------------------------------------------------------------------------


def test_bad_operands_are_refused_naming_the_kernel() -> None:
    _C = cpu.native_module()
    x = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match="softmax_fwd: expected float32"):
        _C.softmax_fwd(x.astype(np.float64), True)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.softmax_fwd(x.T, True)
    with pytest.raises(ValueError, match="softmax_bwd: g of shape"):
        _C.softmax_bwd(np.ones((6, 4), np.float32), x)
    with pytest.raises(ValueError, match="layernorm_fwd: weight of shape"):
        _C.layernorm_fwd(x, np.ones(5, np.float32), None, 1e-5)
    with pytest.raises(ValueError, match="layernorm_fwd: expected x to be 2-D"):
        _C.layernorm_fwd(np.ones(6, np.float32), None, None, 1e-5)
    with pytest.raises(ValueError, match="needs must hold 3"):
        _C.layernorm_bwd(x, x, np.ones(4, np.float32), np.ones(4, np.float32), None, (True,))
    with pytest.raises(ValueError, match="rstd of shape"):
        _C.layernorm_bwd(x, x, np.ones(4, np.float32), np.ones(3, np.float32), None,
                         (True,) * 3)
    with pytest.raises(ValueError, match="softmax_xent_bwd: grad of shape"):
        _C.softmax_xent_bwd(x, np.ones(4, np.float32), np.zeros(4, np.int64), None, -100, 0.0,
                            np.ones(3, np.float32))


@pytest.mark.parametrize("name", ["layernorm_fwd", "layernorm_bwd", "softmax_xent_fwd",
                                  "softmax_xent_bwd"])
def test_the_python_shape_checks_agree_with_the_bindings(name: str) -> None:
    from test_shape_checks import BAD, GOOD

    fn = getattr(cpu.native_module(), name)
    fn(*GOOD[name])
    shape_checks.CHECKS[name](*GOOD[name])
    for args in BAD[name]:
        with pytest.raises(ValueError, match=name):
            fn(*args)


# ---- the ops, against PyTorch ---------------------------------------------------------------


@requires_torch
@pytest.mark.parametrize("shape", [(2, 3, 17), (4, 129), (1, 1)])
def test_ops_match_torch(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    x = _rand(rng, *shape, scale=3.0)
    d = shape[-1]
    check_op(lambda a: F.softmax(a, dim=-1), lambda a: torch.softmax(a, -1), [x], atol=1e-6)
    check_op(lambda a: F.softmax(a, dim=0), lambda a: torch.softmax(a, 0), [x], atol=1e-6)
    check_op(lambda a: F.log_softmax(a, dim=-1), lambda a: torch.log_softmax(a, -1), [x],
             atol=1e-5)
    w, b = _rand(rng, d), _rand(rng, d)
    check_op(lambda a, w_, b_: F.layer_norm(a, (d,), w_, b_, 1e-5),
             lambda a, w_, b_: torch.nn.functional.layer_norm(a, (d,), w_, b_, 1e-5),
             [x, w, b], atol=1e-4, rtol=1e-4)
    x2 = x.reshape(-1, d)
    t = rng.integers(0, d, x2.shape[0])
    t[0] = -100 if x2.shape[0] > 1 else t[0]
    check_op(lambda a, t_: F.cross_entropy(a, t_, label_smoothing=0.1),
             lambda a, t_: torch.nn.functional.cross_entropy(a, t_, label_smoothing=0.1),
             [x2, t], atol=1e-5)


def test_masked_attention_softmax_through_the_op() -> None:
    s = np.random.default_rng(4).standard_normal((2, 3, 5)).astype(np.float32)
    s[0, 1, :] = -np.inf  # a query with every key masked
    t = mt.tensor(s, requires_grad=True)
    y = Softmax.apply(t, -1, True)
    assert np.all(np.isfinite(y.numpy()))
    (y * mt.tensor(np.ones_like(s))).sum().backward()
    assert np.all(np.isfinite(t.grad.numpy()))
