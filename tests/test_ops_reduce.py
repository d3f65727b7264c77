"""Reductions and contractions (minitl/ops/reduce.py, minitl/ops/linalg.py): sum, mean,
var, std, max/min, amax/amin, logsumexp, argmax/argmin, matmul and linear. Each is
checked against float64 central differences on hypothesis-drawn shapes and dims, and
against PyTorch (values, indices and gradients, ties included)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
from helpers import check_op, gradcheck, requires_torch, torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minitl as mt
from minitl.ops.linalg import linear

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # parity tests skip through check_op
    torch = TF = None

MAX_NUMEL = 150
FAST = settings(max_examples=12)


# ---- strategies --------------------------------------------------------------------------


@st.composite
def shapes(draw: Any, min_rank: int = 0, max_rank: int = 4, max_side: int = 5) -> tuple:
    """A shape with sides 1..max_side and at most MAX_NUMEL elements."""
    rank = draw(st.integers(min_rank, max_rank))
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=rank, max_size=rank)))
    while int(np.prod(shape)) > MAX_NUMEL:
        i = shape.index(max(shape))
        shape = shape[:i] + (shape[i] - 1,) + shape[i + 1:]
    return shape


@st.composite
def dims(draw: Any, ndim: int, allow_none: bool = True) -> Any:
    """None, one axis (maybe negative) or a tuple of distinct axes, as PyTorch accepts."""
    kinds = (["none"] if allow_none else []) + (["int", "tuple"] if ndim else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def _values(draw: Any, shape: tuple, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.uniform(low, high, size=shape)


def _reduced(shape: tuple, dim: Any) -> int:
    """Number of elements each output element reduces over."""
    if dim is None:
        return int(np.prod(shape))
    axes = (dim,) if isinstance(dim, int) else dim
    return int(np.prod([shape[a] for a in axes]))


# ---- sum / mean / var / std --------------------------------------------------------------

SMOOTH = ["sum", "mean", "var", "std", "logsumexp", "amax", "amin"]


def _reduce_fn(op: str, dim: Any, keepdim: bool, correction: int) -> Any:
    def fn(t: Any) -> Any:
        if op in ("var", "std"):
            return getattr(t, op)(dim=dim, keepdim=keepdim, correction=correction)
        if op == "logsumexp":  # dim is required; all axes when None
            return t.logsumexp(dim=tuple(range(t.ndim)) if dim is None else dim,
                               keepdim=keepdim)
        return getattr(t, op)(dim=dim, keepdim=keepdim)

    return fn


@st.composite
def reduce_case(draw: Any, op: str) -> tuple:
    shape = draw(shapes())
    dim = draw(dims(len(shape)))
    keepdim = draw(st.booleans())
    correction = draw(st.sampled_from([0, 1, 2])) if op in ("var", "std") else 0
    if op in ("var", "std"):
        assume(_reduced(shape, dim) - correction > 0)
    if op == "std":  # a single element has std 0, where sqrt has no derivative (tested below)
        assume(_reduced(shape, dim) >= 2)
    x = _values(draw, shape)
    return _reduce_fn(op, dim, keepdim, correction), x


@pytest.mark.parametrize("op", SMOOTH)
@FAST
@given(data=st.data())
def test_reduction_gradcheck(op: str, data: Any) -> None:
    fn, x = data.draw(reduce_case(op))
    gradcheck(fn, [x])


@pytest.mark.parametrize("op", SMOOTH)
@FAST
@given(data=st.data())
def test_reduction_matches_torch(op: str, data: Any) -> None:
    fn, x = data.draw(reduce_case(op))
    check_op(fn, fn, [x])


@pytest.mark.parametrize("op", ["var", "std"])
def test_var_std_unbiased_flag_and_positional_dim(op: str) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4))
    for kw in ({}, {"unbiased": False}, {"unbiased": True}, {"keepdim": True}):
        fn = functools.partial(lambda t, kw: getattr(t, op)(1, **kw), kw=kw)
        check_op(fn, fn, [x])


def test_std_of_constant_input_has_zero_gradient_like_torch() -> None:
    # torch masks the 1 / (2 std) factor where std == 0 (a constant slice or a single
    # element with correction=0), so the gradient is 0 rather than nan.
    x = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])
    check_op(lambda t: t.std(dim=1), lambda t: t.std(dim=1), [x])
    check_op(lambda t: t.std(dim=0, correction=0), lambda t: t.std(dim=0, correction=0),
             [x[:1]])


def test_sum_of_int_and_bool_tensors() -> None:
    assert mt.tensor([[1, 2], [3, 4]]).sum().item() == 10
    assert mt.tensor([[1, 2], [3, 4]]).sum(0).tolist() == [4, 6]
    b = mt.tensor([True, False, True]).sum()
    assert b.item() == 2 and b.dtype == mt.int64


def test_mean_of_int_tensor_raises() -> None:
    with pytest.raises(RuntimeError, match="floating point"):
        mt.tensor([1, 2, 3]).mean()


def test_functional_sum_and_mean() -> None:
    x = mt.tensor([[1.0, 2.0], [3.0, 5.0]])
    assert mt.sum(x, 1).tolist() == [3.0, 8.0]
    assert mt.mean(x, dim=0, keepdim=True).tolist() == [[2.0, 3.5]]


# ---- max / min / amax / amin -------------------------------------------------------------


@pytest.mark.parametrize("op", ["max", "min"])
@FAST
@given(data=st.data())
def test_max_min_full_reduction(op: str, data: Any) -> None:
    x = _values(data.draw, data.draw(shapes()))
    gradcheck(lambda t: getattr(t, op)(), [x])
    check_op(lambda t: getattr(t, op)(), lambda t: getattr(t, op)(), [x])


@pytest.mark.parametrize("op", ["max", "min"])
@FAST
@given(data=st.data())
def test_max_min_with_dim_values_indices_and_gradient(op: str, data: Any) -> None:
    shape = data.draw(shapes(min_rank=1))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    keepdim = data.draw(st.booleans())
    x = _values(data.draw, shape)
    gradcheck(lambda t: getattr(t, op)(dim, keepdim).values, [x])
    check_op(lambda t: tuple(getattr(t, op)(dim, keepdim=keepdim)),
             lambda t: tuple(getattr(t, op)(dim, keepdim=keepdim)), [x])


@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("keepdim", [False, True])
def test_max_min_with_dim_ties_match_torch(op: str, keepdim: bool) -> None:
    # Small integers give many ties; indices and the gradient's single target equal torch's.
    x = np.random.default_rng(5).integers(0, 3, size=(4, 5, 3)).astype(np.float64)
    for dim in (0, 1, -1):
        fn = functools.partial(lambda t, d: tuple(getattr(t, op)(d, keepdim)), d=dim)
        check_op(fn, fn, [x])
        res = getattr(mt.tensor(x), op)(dim=dim, keepdim=keepdim)
        assert res.indices.dtype == mt.int64
        assert res.values.shape == res.indices.shape


@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_indices_without_grad(op: str) -> None:
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    with mt.no_grad():
        v, i = getattr(mt.tensor(x, requires_grad=True), op)(1, keepdim=True)
    ref = getattr(torch.tensor(x), op)(1, keepdim=True) if torch is not None else None
    assert v.shape == i.shape == (2, 1)
    if ref is not None:
        assert i.tolist() == ref.indices.tolist()


@pytest.mark.parametrize("op", ["amax", "amin", "max", "min"])
def test_full_and_amax_ties_split_gradient_evenly_like_torch(op: str) -> None:
    x = np.array([[3.0, 1.0, 3.0], [0.0, 3.0, 0.0]])
    full = (lambda t: getattr(t, op)()) if op in ("max", "min") else (
        lambda t: getattr(t, op)(dim=(0, 1)))
    check_op(full, full, [x])
    check_op(full, full, [-x])
    if op in ("amax", "amin"):
        for dim in (0, 1, (0, 1), -1):
            fn = functools.partial(lambda t, d: getattr(t, op)(d, keepdim=True), d=dim)
            check_op(fn, fn, [x])
            check_op(fn, fn, [-x])


@pytest.mark.parametrize("op", ["max", "amax", "sum", "mean", "var", "logsumexp", "argmax"])
def test_reduction_bad_dim_raises_index_error(op: str) -> None:
    x = mt.zeros(2, 3)
    for d in (2, -3):
        with pytest.raises(IndexError, match="out of range"):
            getattr(x, op)(d)


def test_max_of_empty_raises() -> None:
    with pytest.raises(RuntimeError, match="empty"):
        mt.zeros(0).max()


# ---- logsumexp ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsumexp_is_stable_for_large_inputs(dtype: Any) -> None:
    x = np.array([[1e4, 1e4, 1e4 - 1.0], [-1e4, -1e4, -1e4 + 2.0]], dtype=dtype)
    t = mt.tensor(x, requires_grad=True)
    out = t.logsumexp(dim=1)
    out.sum().backward()
    assert np.isfinite(out.numpy()).all() and np.isfinite(t.grad.numpy()).all()
    check_op(lambda a: a.logsumexp(1), lambda a: a.logsumexp(1), [x], atol=1e-6, rtol=1e-6)
    check_op(lambda a: mt.logsumexp(a, 0) if isinstance(a, mt.Tensor) else a.logsumexp(0),
             lambda a: torch.logsumexp(a, 0), [x], atol=1e-6, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")
def test_logsumexp_of_all_neg_inf_row_is_neg_inf() -> None:
    x = mt.tensor([[-np.inf, -np.inf], [0.0, 0.0]])
    out = x.logsumexp(1).numpy()
    assert np.isneginf(out[0]) and np.isclose(out[1], np.log(2))


# ---- argmax / argmin ---------------------------------------------------------------------


@pytest.mark.parametrize("op", ["argmax", "argmin"])
@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (1, True), (-1, False),
                                         (-1, True)])
def test_argmax_argmin_match_torch_with_ties(op: str, dim: Any, keepdim: bool) -> None:
    x = np.random.default_rng(7).integers(0, 3, size=(4, 5)).astype(np.float64)
    check_op(lambda t: getattr(t, op)(dim=dim, keepdim=keepdim),
             lambda t: getattr(t, op)(dim=dim, keepdim=keepdim), [x], grad=False)
    assert getattr(mt.tensor(x), op)(dim=dim).dtype == mt.int64


@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_argmax_dim_none_keepdim(op: str) -> None:
    # torch: x.argmax(dim=None, keepdim=True) has shape (1,) * ndim.
    x = mt.tensor([[1.0, 5.0], [7.0, 0.0]])
    out = getattr(x, op)(dim=None, keepdim=True)
    assert out.shape == (1, 1)


# ---- matmul ------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((1, 3), (3, 1)),
    ((2, 3, 4), (4,)), ((4,), (2, 4, 3)), ((5, 2, 3), (3, 2)), ((2, 3), (4, 3, 5)),
    ((2, 1, 3, 4), (5, 4, 2)), ((2, 2, 3), (2, 3, 2)), ((1, 2, 3), (4, 3, 1)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES, ids=[f"{a}@{b}" for a, b in MATMUL_SHAPES])
def test_matmul_rank_combinations(sa: tuple, sb: tuple) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    gradcheck(lambda x, y: x @ y, [a, b])
    check_op(lambda x, y: x @ y, lambda x, y: x @ y, [a, b])
    check_op(lambda x, y: mt.matmul(x, y), lambda x, y: torch.matmul(x, y), [a, b])
    check_op(lambda x, y: x.matmul(y), lambda x, y: x.matmul(y), [a, b])


@FAST
@given(data=st.data())
def test_matmul_broadcast_batch_dims(data: Any) -> None:
    full = data.draw(shapes(max_rank=2, max_side=3))
    ba = tuple(1 if data.draw(st.booleans()) else s
               for s in full[data.draw(st.integers(0, len(full))):])
    bb = tuple(1 if data.draw(st.booleans()) else s
               for s in full[data.draw(st.integers(0, len(full))):])
    m, k, n = (data.draw(st.integers(1, 4)) for _ in range(3))
    a, b = _values(data.draw, ba + (m, k)), _values(data.draw, bb + (k, n))
    gradcheck(lambda x, y: x @ y, [a, b])
    check_op(lambda x, y: x @ y, lambda x, y: x @ y, [a, b])


def test_matmul_float32_gemm_path_matches_torch() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((17, 33)).astype(np.float32)
    b = rng.standard_normal((33, 9)).astype(np.float32)
    check_op(lambda x, y: x @ y, lambda x, y: x @ y, [a, b], atol=1e-4, rtol=1e-4)
    out = mt.tensor(a) @ mt.tensor(b)
    assert out.dtype == mt.float32


def test_matmul_with_array_operand() -> None:
    a = np.arange(6.0).reshape(2, 3)
    x = mt.tensor(np.ones((3, 2)), requires_grad=True)
    out = mt.matmul(a, x)
    np.testing.assert_allclose(out.numpy(), a @ np.ones((3, 2)))
    np.testing.assert_allclose((x.T @ a.T).numpy(), (a @ np.ones((3, 2))).T)


@pytest.mark.parametrize("sa,sb", [((2, 3), (4, 5)), ((2, 3, 4), (5, 6)), ((7, 2, 3), (4, 5))])
def test_matmul_mismatch_names_both_shapes(sa: tuple, sb: tuple) -> None:
    with pytest.raises(RuntimeError, match=rf"{re_shape(sa)}.*{re_shape(sb)}"):
        mt.zeros(*sa) @ mt.zeros(*sb)


def test_matmul_1d_mismatch_names_the_callers_shapes() -> None:
    # The message should show (3,) and (4,), not the internally promoted (1, 3) and (4, 1).
    with pytest.raises(RuntimeError, match=r"\(3,\).*\(4,\)"):
        mt.zeros(3) @ mt.zeros(4)


def test_matmul_0d_raises() -> None:
    with pytest.raises(RuntimeError, match="at least 1 dim"):
        mt.tensor(2.0) @ mt.zeros(2)


def re_shape(shape: tuple) -> str:
    import re

    return re.escape(str(tuple(shape)))


# ---- linear ------------------------------------------------------------------------------


@pytest.mark.parametrize("xshape", [(4, 3), (2, 4, 3), (3,), (2, 1, 2, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_and_gradcheck(xshape: tuple, bias: bool) -> None:
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal(xshape), rng.standard_normal((5, 3)), rng.standard_normal(5)
    if bias:
        gradcheck(lambda a, W, c: linear(a, W, c), [x, w, b])
        check_op(lambda a, W, c: linear(a, W, c), lambda a, W, c: TF.linear(a, W, c), [x, w, b])
    else:
        gradcheck(lambda a, W: linear(a, W), [x, w])
        check_op(lambda a, W: linear(a, W), lambda a, W: TF.linear(a, W), [x, w])


def test_linear_float32_matches_torch() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    check_op(lambda a, W, c: linear(a, W, c), lambda a, W, c: TF.linear(a, W, c), [x, w, b],
             atol=1e-5, rtol=1e-5)


def test_linear_shape_errors_name_shapes() -> None:
    with pytest.raises(RuntimeError, match=r"\(4, 3\).*\(5, 2\)"):
        linear(mt.zeros(4, 3), mt.zeros(5, 2))
    with pytest.raises(RuntimeError, match=r"\(4,\).*\(5, 3\)"):
        linear(mt.zeros(4, 3), mt.zeros(5, 3), mt.zeros(4))


BIG_MATMUL_SHAPES = [((4, 32, 40), (4, 40, 32)), ((2, 1, 32, 40), (3, 40, 32)),
                     ((32, 40), (3, 40, 32)), ((3, 32, 40), (40, 32)), ((2, 3, 40, 32), (32,))]


@requires_torch
@pytest.mark.parametrize("sa,sb", BIG_MATMUL_SHAPES,
                         ids=[f"{a}@{b}" for a, b in BIG_MATMUL_SHAPES])
def test_batched_matmul_stays_off_numpy_blas(sa: tuple, sb: tuple,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Products of useful size run on backend.gemm / gemm_batched (one OpenMP pool), never
    numpy's matmul (OpenBLAS's pool), forward and backward, broadcasting included."""
    from minitl.backend import get_backend

    paths = get_backend("cpu").paths
    if "reference" in (paths["gemm"], paths["gemm_batched"]):
        pytest.skip("the numpy reference kernels are numpy's matmul by definition")
    rng = np.random.default_rng(3)
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    want = torch.matmul(ta, tb)
    want.backward(torch.ones_like(want))

    def no_blas(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("numpy matmul called")

    monkeypatch.setattr(np, "matmul", no_blas)
    x, y = mt.tensor(a, requires_grad=True), mt.tensor(b, requires_grad=True)
    out = mt.matmul(x, y)
    out.backward(mt.ones(*out.shape))
    monkeypatch.undo()
    np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x.grad.numpy(), ta.grad.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(y.grad.numpy(), tb.grad.numpy(), rtol=1e-4, atol=1e-3)
