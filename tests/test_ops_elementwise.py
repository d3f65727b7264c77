"""Elementwise ops (minitl/ops/elementwise.py): float64 finite-difference gradients on
hypothesis-drawn broadcasting shapes, forward and backward parity with PyTorch, edge
inputs (ties, clamp boundaries, sigmoid at +-1e3) and error messages."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import check_op, gradcheck
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt

try:
    import torch
except ImportError:  # parity tests skip through check_op
    torch = None

MAX_NUMEL = 150
FAST = settings(max_examples=12)


# ---- strategies --------------------------------------------------------------------------


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@st.composite
def shapes(draw: Any, min_rank: int = 0, max_rank: int = 4, max_side: int = 5) -> tuple:
    """A shape with sides 1..max_side (size-1 axes included) and at most MAX_NUMEL elements."""
    rank = draw(st.integers(min_rank, max_rank))
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=rank, max_size=rank)))
    while _numel(shape) > MAX_NUMEL:  # shrink the largest side until it fits
        i = shape.index(max(shape))
        shape = shape[:i] + (shape[i] - 1,) + shape[i + 1:]
    return shape


@st.composite
def broadcastable_shapes(draw: Any, max_rank: int = 4) -> tuple[tuple, tuple]:
    """Two shapes that broadcast together: a common full shape, from which each side drops
    some leading dims (rank differences) and turns some axes into 1 (stretched axes)."""
    full = draw(shapes(max_rank=max_rank))

    def derive() -> tuple:
        drop = draw(st.integers(0, len(full)))
        return tuple(1 if draw(st.booleans()) else s for s in full[drop:])

    return derive(), derive()


def _values(draw: Any, shape: tuple, low: float, high: float, away_from_zero: bool = False
            ) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if away_from_zero:  # |v| in [low, high] with a random sign
        return rng.uniform(low, high, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return rng.uniform(low, high, size=shape)


# ---- binary ops with broadcasting --------------------------------------------------------

# name -> (fn on minitl or torch tensors, x domain, y domain, y away from zero)
BINARY: dict[str, tuple[Callable[[Any, Any], Any], tuple, tuple, bool]] = {
    "add": (lambda a, b: a + b, (-2, 2), (-2, 2), False),
    "sub": (lambda a, b: a - b, (-2, 2), (-2, 2), False),
    "mul": (lambda a, b: a * b, (-2, 2), (-2, 2), False),
    "div": (lambda a, b: a / b, (-2, 2), (0.5, 2), True),
    "pow": (lambda a, b: a ** b, (0.5, 2), (-2, 2), False),
    "maximum": (lambda a, b: a.maximum(b), (-2, 2), (-2, 2), False),
    "minimum": (lambda a, b: a.minimum(b), (-2, 2), (-2, 2), False),
    "add_method": (lambda a, b: a.add(b), (-2, 2), (-2, 2), False),
    "mul_method": (lambda a, b: a.mul(b), (-2, 2), (-2, 2), False),
}


@st.composite
def binary_inputs(draw: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    _, (xl, xh), (yl, yh), away = BINARY[name]
    sx, sy = draw(broadcastable_shapes())
    return _values(draw, sx, xl, xh), _values(draw, sy, yl, yh, away)


@pytest.mark.parametrize("name", sorted(BINARY))
@FAST
@given(data=st.data())
def test_binary_gradcheck(name: str, data: Any) -> None:
    x, y = data.draw(binary_inputs(name))
    gradcheck(BINARY[name][0], [x, y])


@pytest.mark.parametrize("name", sorted(BINARY))
@FAST
@given(data=st.data())
def test_binary_matches_torch(name: str, data: Any) -> None:
    x, y = data.draw(binary_inputs(name))
    check_op(BINARY[name][0], BINARY[name][0], [x, y])


# ---- Python scalars on either side -------------------------------------------------------

SCALAR_FORMS: dict[str, tuple[Callable[[Any], Any], tuple]] = {
    "x+2": (lambda x: x + 2, (-2, 2)), "2+x": (lambda x: 2 + x, (-2, 2)),
    "x-2": (lambda x: x - 2, (-2, 2)), "2-x": (lambda x: 2 - x, (-2, 2)),
    "x*3": (lambda x: x * 3, (-2, 2)), "3*x": (lambda x: 3 * x, (-2, 2)),
    "x/2": (lambda x: x / 2, (-2, 2)), "2/x": (lambda x: 2 / x, (0.5, 2)),
    "x**2": (lambda x: x ** 2, (-2, 2)), "x**3": (lambda x: x ** 3, (-2, 2)),
    "x**0.5": (lambda x: x ** 0.5, (0.5, 2)), "x**-1.5": (lambda x: x ** -1.5, (0.5, 2)),
    "2**x": (lambda x: 2 ** x, (-2, 2)), "0.5**x": (lambda x: 0.5 ** x, (-2, 2)),
    "x.pow(2.5)": (lambda x: x.pow(2.5), (0.5, 2)), "x.sub(1.5)": (lambda x: x.sub(1.5), (-2, 2)),
    "x.div(4)": (lambda x: x.div(4), (-2, 2)),
}


@pytest.mark.parametrize("form", list(SCALAR_FORMS))
def test_scalar_operand_gradcheck_and_torch(form: str) -> None:
    fn, (lo, hi) = SCALAR_FORMS[form]
    x = np.random.default_rng(1).uniform(lo, hi, size=(3, 4))
    gradcheck(fn, [x])
    check_op(fn, fn, [x])


@pytest.mark.parametrize("form", list(SCALAR_FORMS))
def test_scalar_operand_keeps_float32(form: str) -> None:
    fn, (lo, hi) = SCALAR_FORMS[form]
    x = mt.tensor(np.random.default_rng(2).uniform(lo, hi, size=(2, 3)).astype(np.float32),
                  requires_grad=True)
    y = fn(x)
    assert y.dtype == mt.float32
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == mt.float32


def test_pow_with_tensor_exponent_and_zero_base() -> None:
    # d/dy x**y at x = 0 is taken as 0 (the limit of x**y log x), as in PyTorch.
    x = np.array([0.0, 0.5, 2.0])
    y = np.array([2.0, 1.5, 0.5])
    check_op(lambda a, b: a ** b, lambda a, b: a ** b, [x, y])


# ---- unary ops ---------------------------------------------------------------------------

UNARY: dict[str, tuple[Callable[[Any], Any], tuple]] = {
    "neg": (lambda x: -x, (-2, 2)), "neg_method": (lambda x: x.neg(), (-2, 2)),
    "exp": (lambda x: x.exp(), (-2, 2)), "log": (lambda x: x.log(), (0.2, 3)),
    "log1p": (lambda x: x.log1p(), (-0.7, 3)), "sqrt": (lambda x: x.sqrt(), (0.2, 3)),
    "rsqrt": (lambda x: x.rsqrt(), (0.2, 3)), "square": (lambda x: x.square(), (-2, 2)),
    "tanh": (lambda x: x.tanh(), (-3, 3)), "sigmoid": (lambda x: x.sigmoid(), (-6, 6)),
    "relu": (lambda x: x.relu(), (-2, 2)), "abs": (lambda x: x.abs(), (-2, 2)),
    "abs_builtin": (lambda x: abs(x), (-2, 2)),
    "sin": (lambda x: x.sin(), (-4, 4)), "cos": (lambda x: x.cos(), (-4, 4)),
    "erf": (lambda x: x.erf(), (-3, 3)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@FAST
@given(data=st.data())
def test_unary_gradcheck(name: str, data: Any) -> None:
    fn, (lo, hi) = UNARY[name]
    x = _values(data.draw, data.draw(shapes()), lo, hi)
    gradcheck(fn, [x])


@pytest.mark.parametrize("name", sorted(UNARY))
@FAST
@given(data=st.data())
def test_unary_matches_torch(name: str, data: Any) -> None:
    fn, (lo, hi) = UNARY[name]
    x = _values(data.draw, data.draw(shapes()), lo, hi)
    check_op(fn, fn, [x])


def test_functional_forms_match_methods() -> None:
    x = mt.tensor(np.random.default_rng(3).uniform(0.5, 2, size=(2, 3)))
    for name in ("exp", "log", "sqrt", "tanh", "sigmoid", "relu"):
        np.testing.assert_array_equal(getattr(mt, name)(x).numpy(), getattr(x, name)().numpy())


def test_relu_and_abs_gradient_at_zero_is_zero_like_torch() -> None:
    x = np.array([-1.0, 0.0, 0.0, 2.0])
    check_op(lambda t: t.relu(), lambda t: t.relu(), [x])
    check_op(lambda t: t.abs(), lambda t: t.abs(), [x])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_extreme_inputs_stay_finite(dtype: Any) -> None:
    x = np.array([-1e3, -100.0, -30.0, 0.0, 30.0, 100.0, 1e3], dtype=dtype)
    t = mt.tensor(x, requires_grad=True)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = t.sigmoid()
        y.sum().backward()
    assert y.dtype == dtype and np.isfinite(y.numpy()).all()
    assert np.isfinite(t.grad.numpy()).all()
    assert y.numpy()[0] == 0.0 and y.numpy()[-1] == 1.0
    check_op(lambda a: a.sigmoid(), lambda a: a.sigmoid(), [x], atol=1e-7)


# ---- clamp -------------------------------------------------------------------------------

CLAMPS = {"min": {"min": -0.5}, "max": {"max": 0.7}, "both": {"min": -0.5, "max": 0.7},
          "min>max": {"min": 0.7, "max": -0.5}}


@pytest.mark.parametrize("bounds", list(CLAMPS))
@FAST
@given(data=st.data())
def test_clamp_gradcheck(bounds: str, data: Any) -> None:
    x = _values(data.draw, data.draw(shapes()), -2, 2)
    gradcheck(lambda t: t.clamp(**CLAMPS[bounds]), [x])


@pytest.mark.parametrize("bounds", list(CLAMPS))
def test_clamp_matches_torch_including_boundary_points(bounds: str) -> None:
    # Points exactly on a bound: PyTorch passes the gradient through there.
    x = np.array([[-2.0, -0.5, 0.0], [0.3, 0.7, 1.5]])
    kw = CLAMPS[bounds]
    check_op(lambda t: t.clamp(**kw), lambda t: t.clamp(**kw), [x])
    check_op(lambda t: mt.clamp(t, **kw), lambda t: torch.clamp(t, **kw), [x])


def test_clamp_without_bounds_raises() -> None:
    with pytest.raises(ValueError, match="min"):
        mt.tensor([1.0]).clamp()


# ---- maximum / minimum ties --------------------------------------------------------------


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_ties_split_gradient_like_torch(op: str) -> None:
    x = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    y = np.array([1.0, 0.0, 3.0])  # ties in columns 0 and 2 of the first row
    check_op(lambda a, b: getattr(a, op)(b), lambda a, b: getattr(a, op)(b), [x, y])
    check_op(lambda a, b: getattr(mt, op)(a, b), lambda a, b: getattr(torch, op)(a, b), [x, y])


def test_maximum_tie_with_self_gives_full_gradient() -> None:
    x = mt.tensor([1.0, -2.0], requires_grad=True)
    x.maximum(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


# ---- where / masked_fill -----------------------------------------------------------------


@FAST
@given(data=st.data())
def test_where_broadcast_gradcheck_and_torch(data: Any) -> None:
    sc, sx = data.draw(broadcastable_shapes())
    sy = data.draw(st.sampled_from([sx, sx[1:], (1,) * len(sx)]))
    cond = _values(data.draw, sc, -1, 1) > 0
    x, y = _values(data.draw, sx, -2, 2), _values(data.draw, sy, -2, 2)
    gradcheck(lambda c, a, b: mt.where(c, a, b), [cond, x, y])
    check_op(lambda c, a, b: mt.where(c, a, b), lambda c, a, b: torch.where(c, a, b),
             [cond, x, y])


def test_where_method_and_scalar_branches() -> None:
    cond = np.array([[True], [False]])  # (2, 1) broadcast against (3,)
    x = np.array([1.0, -2.0, 3.0])
    check_op(lambda c, a: a.where(c, 0.5), lambda c, a: a.where(c, 0.5), [cond, x])
    check_op(lambda c, a: mt.where(c, a, 0.0), lambda c, a: torch.where(c, a, 0.0), [cond, x])
    check_op(lambda c, a: mt.where(c, -1.0, a), lambda c, a: torch.where(c, -1.0, a), [cond, x])
    out = mt.where(mt.tensor([True, False]), 1.0, 2.0)  # no tensor branch: no graph
    np.testing.assert_array_equal(out.numpy(), [1.0, 2.0])


def test_where_rejects_non_bool_condition() -> None:
    with pytest.raises(RuntimeError, match="bool"):
        mt.where(mt.tensor([1, 0]), mt.tensor([1.0, 2.0]), mt.tensor([3.0, 4.0]))


@FAST
@given(data=st.data())
def test_masked_fill_broadcast_mask_gradcheck_and_torch(data: Any) -> None:
    sx = data.draw(shapes(min_rank=1))
    sm = sx[data.draw(st.integers(0, len(sx))):]
    sm = tuple(1 if data.draw(st.booleans()) else s for s in sm)
    x = _values(data.draw, sx, -2, 2)
    mask = _values(data.draw, sm, -1, 1) > 0
    gradcheck(lambda a, m: a.masked_fill(m, -3.0), [x, mask])
    check_op(lambda a, m: a.masked_fill(m, -3.0), lambda a, m: a.masked_fill(m, -3.0),
             [x, mask])


def test_masked_fill_errors() -> None:
    x = mt.zeros(2, 3)
    with pytest.raises(RuntimeError, match="bool"):
        x.masked_fill(mt.tensor([1, 0, 1]), 1.0)
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        x.masked_fill(mt.ones(4, 2, 3, dtype=mt.bool_), 1.0)


def test_masked_fill_keeps_dtype_with_inf() -> None:
    x = mt.zeros(2, 2)
    out = x.masked_fill(mt.tensor([[True, False], [False, True]]), float("-inf"))
    assert out.dtype == mt.float32
    assert np.isneginf(out.numpy()).tolist() == [[True, False], [False, True]]


# ---- error messages ----------------------------------------------------------------------


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "maximum", "minimum"])
def test_non_broadcastable_shapes_name_both_shapes(op: str) -> None:
    a, b = mt.ones(2, 3), mt.ones(4, 5)
    fn = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
          "div": lambda: a / b, "pow": lambda: a ** b,
          "maximum": lambda: a.maximum(b), "minimum": lambda: a.minimum(b)}[op]
    with pytest.raises(RuntimeError, match=r"\(2, 3\).*\(4, 5\)"):
        fn()


def test_the_suite_runs_on_the_kernel_path_its_id_names(kernel_path: str) -> None:
    from minitl.backend import get_backend

    paths = set(get_backend("cpu").paths.values())
    assert (paths == {"reference"}) == (kernel_path == "reference"), paths
