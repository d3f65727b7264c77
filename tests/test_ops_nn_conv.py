"""Convolution and pooling: conv2d over stride/padding ('same', 'valid', asymmetric)/
dilation/groups/depthwise, conv1d, max_pool2d (padding, dilation, ceil_mode, indices),
avg_pool2d (count_include_pad, ceil_mode, divisor_override), adaptive_avg_pool2d: float64
gradchecks on drawn geometry, torch parity and error messages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import check_op, gradcheck, requires_torch, torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minitl as mt
import minitl.nn.functional as F


def _rand(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


def _tf():
    import torch.nn.functional as tf

    return tf


def _distinct(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values with no ties (max pooling's gradient is undefined at ties)."""
    return np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) * 0.1


# ---- conv2d -----------------------------------------------------------------------------


@settings(max_examples=20)
@given(n=st.integers(1, 2), groups=st.integers(1, 2), cin_g=st.integers(1, 2),
       cout_g=st.integers(1, 2), h=st.integers(1, 5), w=st.integers(1, 5),
       kh=st.integers(1, 3), kw=st.integers(1, 3), stride=st.integers(1, 2),
       pad=st.integers(0, 1), dil=st.integers(1, 2), bias=st.booleans())
def test_conv2d_gradcheck(n: int, groups: int, cin_g: int, cout_g: int, h: int, w: int,
                          kh: int, kw: int, stride: int, pad: int, dil: int, bias: bool
                          ) -> None:
    assume(h + 2 * pad >= dil * (kh - 1) + 1 and w + 2 * pad >= dil * (kw - 1) + 1)
    cin, cout = groups * cin_g, groups * cout_g
    x = _rand((n, cin, h, w), 1)
    wt, b = _rand((cout, cin_g, kh, kw), 2), _rand((cout,), 3)
    gradcheck(lambda x, wt, b: F.conv2d(x, wt, b if bias else None, stride, pad, dil, groups),
              [x, wt, b])


CONV_CASES = [
    # (input shape, weight shape, stride, padding, dilation, groups)
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 0, 1, 1),
    ((2, 3, 7, 6), (4, 3, 3, 3), 2, 1, 1, 1),
    ((1, 3, 8, 9), (5, 3, 3, 2), (2, 3), (1, 0), (2, 1), 1),
    ((2, 4, 6, 6), (6, 2, 3, 3), 1, 1, 1, 2),  # grouped
    ((2, 4, 6, 5), (4, 1, 3, 3), 1, 1, 1, 4),  # depthwise
    ((2, 4, 6, 5), (8, 1, 3, 3), 2, 1, 1, 4),  # depthwise with channel multiplier
    ((2, 3, 5, 5), (2, 3, 1, 1), 1, 0, 1, 1),  # pointwise
    ((1, 2, 6, 7), (3, 2, 3, 3), 1, "same", 1, 1),
    ((1, 2, 6, 7), (3, 2, 4, 2), 1, "same", 1, 1),  # even kernel: asymmetric padding
    ((1, 2, 9, 7), (3, 2, 3, 2), 1, "same", (2, 3), 1),
    ((1, 2, 6, 7), (3, 2, 3, 3), 1, "valid", 1, 1),
    ((2, 3, 1, 1), (2, 3, 1, 1), 1, 0, 1, 1),  # size-1 spatial dims
]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV_CASES)
def test_conv2d_matches_torch(xs: tuple, ws: tuple, stride: object, padding: object,
                              dilation: object, groups: int, bias: bool) -> None:
    args = [_rand(xs, 1), _rand(ws, 2)] + ([_rand((ws[0],), 3)] if bias else [])
    check_op(lambda *a: F.conv2d(*a[:2], a[2] if bias else None, stride, padding, dilation,
                                 groups),
             lambda *a: _tf().conv2d(*a[:2], a[2] if bias else None, stride, padding,
                                     dilation, groups), args)


def test_conv2d_float32_unbatched() -> None:
    x, w = _rand((3, 6, 6), 1).astype(np.float32), _rand((4, 3, 3, 3), 2).astype(np.float32)
    check_op(lambda x, w: F.conv2d(x, w, padding=1), lambda x, w: _tf().conv2d(x, w, padding=1),
             [x, w], atol=1e-5, rtol=1e-4)
    assert F.conv2d(mt.tensor(x), mt.tensor(w)).dtype == mt.float32


def test_conv2d_errors_name_shapes_and_dtypes() -> None:
    x = mt.randn(1, 3, 5, 5)
    with pytest.raises(ValueError, match=r"\(1, 3, 5, 5\).*\(4, 2, 3, 3\).*groups=1"):
        F.conv2d(x, mt.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="groups=2"):
        F.conv2d(x, mt.randn(4, 1, 3, 3), groups=2)
    with pytest.raises(ValueError, match="strided"):
        F.conv2d(x, mt.randn(4, 3, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        F.conv2d(x, mt.randn(4, 3, 3, 3), dilation=3)
    with pytest.raises(TypeError, match="float64"):
        F.conv2d(x, mt.randn(4, 3, 3, 3, dtype=mt.float64))
    with pytest.raises(ValueError, match="bias of shape"):
        F.conv2d(x, mt.randn(4, 3, 3, 3), mt.randn(3))


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 1),
                                                             (1, "same", 2, 1), (1, 1, 1, 2)])
def test_conv1d_matches_torch(stride: int, padding: object, dilation: int, groups: int
                              ) -> None:
    x, w, b = _rand((2, 4, 9), 1), _rand((6, 4 // groups, 3), 2), _rand((6,), 3)
    check_op(lambda x, w, b: F.conv1d(x, w, b, stride, padding, dilation, groups),
             lambda x, w, b: _tf().conv1d(x, w, b, stride, padding, dilation, groups),
             [x, w, b])


def test_conv1d_gradcheck() -> None:
    gradcheck(lambda x, w: F.conv1d(x, w, stride=2, padding=1), [_rand((2, 2, 5)),
                                                                 _rand((3, 2, 2), 1)])


# ---- max_pool2d -------------------------------------------------------------------------


@settings(max_examples=15)
@given(h=st.integers(1, 6), w=st.integers(1, 6), k=st.integers(1, 3), s=st.integers(1, 3),
       pad=st.integers(0, 1), dil=st.integers(1, 2), ceil=st.booleans())
def test_max_pool2d_gradcheck(h: int, w: int, k: int, s: int, pad: int, dil: int,
                              ceil: bool) -> None:
    assume(pad <= k // 2 and h + 2 * pad >= dil * (k - 1) + 1 and w + 2 * pad >= dil * (k - 1) + 1)
    x = _distinct((2, 2, h, w))
    # A dilated window can hold only padding: its output is -inf (as in torch) and has no
    # finite difference, so such geometries are left to the torch parity tests.
    assume(np.isfinite(F.max_pool2d(mt.tensor(x), k, s, pad, dil, ceil_mode=ceil).numpy()).all())
    gradcheck(lambda x: F.max_pool2d(x, k, s, pad, dil, ceil_mode=ceil), [x])


MAXPOOL_CASES = list(itertools.product([2, 3, (3, 2)], [None, 1, 2], [0, 1], [1, 2],
                                       [False, True]))


@pytest.mark.parametrize("k,s,p,d,ceil", MAXPOOL_CASES)
def test_max_pool2d_matches_torch(k: object, s: object, p: int, d: int, ceil: bool) -> None:
    x = _distinct((2, 3, 7, 8), 4)
    check_op(lambda x: F.max_pool2d(x, k, s, p, d, ceil_mode=ceil),
             lambda x: _tf().max_pool2d(x, k, s, p, d, ceil_mode=ceil), [x])


@requires_torch
def test_max_pool2d_indices_and_unbatched_match_torch() -> None:
    x = _distinct((2, 2, 7, 6), 5)
    a, ia = F.max_pool2d(mt.tensor(x), 3, 2, 1, 2, return_indices=True)
    b, ib = _tf().max_pool2d(torch.tensor(x), 3, 2, 1, 2, return_indices=True)
    np.testing.assert_array_equal(ia.numpy(), ib.numpy())
    np.testing.assert_allclose(a.numpy(), b.numpy())
    with mt.no_grad():
        _, ia2 = F.max_pool2d(mt.tensor(x), 3, 2, 1, 2, return_indices=True)
    np.testing.assert_array_equal(ia2.numpy(), ib.numpy())
    check_op(lambda x: F.max_pool2d(x, 2), lambda x: _tf().max_pool2d(x, 2), [x[0]])


def test_max_pool2d_window_of_only_padding_is_minus_inf_with_zero_grad() -> None:
    # torch gives the same -inf / zero gradient (but its backward writes out of bounds on
    # this geometry in 2.13, so it is not called here).
    x = mt.tensor(_rand((1, 2, 1, 1)), requires_grad=True)
    y = F.max_pool2d(x, 2, 1, 1, 2)
    assert y.shape == (1, 2, 1, 1) and np.isneginf(y.numpy()).all()
    y.sum().backward()
    assert (x.grad.numpy() == 0).all()


def test_max_pool2d_ties_route_to_first_maximum_like_torch() -> None:
    x = mt.tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [[1, 0], [0, 0]])


def test_pool_errors() -> None:
    x = mt.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="at most half of kernel"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        F.avg_pool2d(mt.randn(4, 4), 2)
    with pytest.raises(ValueError, match="too small"):
        F.max_pool2d(mt.randn(1, 1, 2, 2), 3)


# ---- avg_pool2d -------------------------------------------------------------------------


@settings(max_examples=15)
@given(h=st.integers(1, 6), w=st.integers(1, 6), k=st.integers(1, 3), s=st.integers(1, 3),
       pad=st.integers(0, 1), ceil=st.booleans(), include=st.booleans())
def test_avg_pool2d_gradcheck(h: int, w: int, k: int, s: int, pad: int, ceil: bool,
                              include: bool) -> None:
    assume(pad <= k // 2 and h + 2 * pad >= k and w + 2 * pad >= k)
    gradcheck(lambda x: F.avg_pool2d(x, k, s, pad, ceil, include), [_rand((2, 1, h, w))])


AVGPOOL_CASES = list(itertools.product([2, 3, (3, 2)], [None, 2], [0, 1], [False, True],
                                       [True, False], [None, 5]))


@pytest.mark.parametrize("k,s,p,ceil,include,div", AVGPOOL_CASES)
def test_avg_pool2d_matches_torch(k: object, s: object, p: int, ceil: bool, include: bool,
                                  div: int | None) -> None:
    x = _rand((2, 2, 7, 6), 3)
    check_op(lambda x: F.avg_pool2d(x, k, s, p, ceil, include, div),
             lambda x: _tf().avg_pool2d(x, k, s, p, ceil, include, div), [x])


# ---- adaptive_avg_pool2d ----------------------------------------------------------------


@settings(max_examples=15)
@given(h=st.integers(1, 6), w=st.integers(1, 6), oh=st.integers(1, 4), ow=st.integers(1, 4))
def test_adaptive_avg_pool2d_gradcheck(h: int, w: int, oh: int, ow: int) -> None:
    gradcheck(lambda x: F.adaptive_avg_pool2d(x, (oh, ow)), [_rand((2, 2, h, w))])


@pytest.mark.parametrize("size", [1, 3, (2, 5), (7, 4), (None, 2), (10, 13)])
def test_adaptive_avg_pool2d_matches_torch(size: object) -> None:
    x = _rand((2, 3, 7, 9), 1)
    check_op(lambda x: F.adaptive_avg_pool2d(x, size),
             lambda x: _tf().adaptive_avg_pool2d(x, size), [x])
    check_op(lambda x: F.adaptive_avg_pool2d(x, size),
             lambda x: _tf().adaptive_avg_pool2d(x, size), [x[0]])


def test_adaptive_avg_pool2d_global_equals_mean() -> None:
    x = mt.randn(2, 3, 4, 5)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, 1).numpy()[..., 0, 0],
                               x.numpy().mean(axis=(2, 3)), rtol=1e-5)
