"""The C++ conv2d (minitl._C.conv2d_fwd / conv2d_bwd: csrc/cpu/conv.cpp's im2col + GEMM and
csrc/cpu/conv_direct.cpp's shifted windows) against its numpy reference
(minitl/backend/cpu_conv.py) and against PyTorch, on both paths.

Strides, asymmetric padding, dilation, groups (depthwise and channel multipliers), channel
counts that cut the GEMM's micro-tiles, 1x1 convolutions (no im2col), batches smaller than the
thread count (the GEMM takes the threads), and every argument the binding must refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from helpers import gemm_path, requires_torch, torch  # noqa: F401  (gemm_path: `path`)
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    import minitl._C as _C  # noqa: PLR0402 - a submodule mypy cannot see before the build
except ImportError:  # a source tree without a build
    _C = None  # type: ignore[assignment]

import minitl as mt
import minitl.nn.functional as F
from minitl.backend import cpu_conv, get_backend

needs_native = pytest.mark.skipif(_C is None, reason="minitl._C not built")
pytestmark = needs_native


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@contextmanager
def _conv_path(name: str) -> Iterator[None]:
    _C.set_conv_path(name)
    try:
        yield
    finally:
        _C.set_conv_path("auto")


CONV_PATHS = ["gemm", "direct"]


def _out_size(size: int, k: int, s: int, lo: int, hi: int, d: int) -> int:
    return (size + lo + hi - d * (k - 1) - 1) // s + 1


def _check(n: int, c: int, co: int, h: int, w: int, kh: int, kw: int, stride: tuple[int, int],
           lo: tuple[int, int], hi: tuple[int, int], dil: tuple[int, int], groups: int,
           bias: bool, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x, wt = _rand(rng, n, c, h, w), _rand(rng, co, c // groups, kh, kw)
    b = _rand(rng, co) if bias else None
    args = (stride, lo, hi, dil, groups)
    y = _C.conv2d_fwd(x, wt, b, *args)
    want = cpu_conv.conv2d_fwd_reference(x, wt, b, *args)
    assert y.shape == want.shape
    scale = 1 + np.abs(want).max(initial=0)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * scale)
    gy = _rand(rng, *y.shape)
    dx, dw = _C.conv2d_bwd(x, wt, gy, *args, True, True)
    rdx, rdw = cpu_conv.conv2d_bwd_reference(x, wt, gy, *args, True, True)
    np.testing.assert_allclose(dx, rdx, rtol=1e-4, atol=1e-4 * (1 + np.abs(rdx).max(initial=0)))
    np.testing.assert_allclose(dw, rdw, rtol=1e-4, atol=1e-4 * (1 + np.abs(rdw).max(initial=0)))


@pytest.mark.parametrize("case", [
    # n, c, co, h, w, kh, kw, stride, pad_lo, pad_hi, dilation, groups
    (64, 16, 16, 28, 28, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1),   # resnet-mini's stage
    (3, 7, 13, 9, 11, 3, 2, (2, 1), (1, 0), (2, 1), (1, 2), 1),      # odd everything
    (2, 12, 18, 10, 10, 3, 3, (1, 2), (0, 1), (0, 1), (2, 1), 3),    # groups
    (5, 8, 8, 13, 7, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 8),       # depthwise
    (2, 6, 18, 9, 9, 5, 5, (2, 2), (2, 2), (2, 2), (1, 1), 6),       # channel multiplier 3
    (4, 33, 17, 6, 5, 1, 1, (1, 1), (0, 0), (0, 0), (1, 1), 1),      # 1x1: the image is cols
    (1, 3, 37, 17, 19, 4, 4, (3, 2), (1, 2), (2, 1), (1, 1), 1),     # batch < threads
    (2, 4, 4, 3, 3, 3, 3, (1, 1), (0, 0), (0, 0), (1, 1), 2),        # output 1x1
    (3, 8, 32, 7, 7, 3, 3, (1, 1), (1, 1), (1, 1), (1, 1), 1),       # dW^T: fuller tiles
])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("conv_path", CONV_PATHS)
def test_conv_matches_reference(case: tuple[Any, ...], bias: bool, conv_path: str) -> None:
    with _conv_path(conv_path):
        _check(*case, bias=bias)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4), cg=st.integers(1, 5), cog=st.integers(1, 7), groups=st.integers(1, 3),
       h=st.integers(1, 12), w=st.integers(1, 12), kh=st.integers(1, 4), kw=st.integers(1, 4),
       sh=st.integers(1, 3), sw=st.integers(1, 3), dh=st.integers(1, 2), dw=st.integers(1, 2),
       pads=st.tuples(*[st.integers(0, 2)] * 4), bias=st.booleans())
def test_conv_hypothesis(n: int, cg: int, cog: int, groups: int, h: int, w: int, kh: int,
                         kw: int, sh: int, sw: int, dh: int, dw: int,
                         pads: tuple[int, int, int, int], bias: bool) -> None:
    lo, hi = pads[:2], pads[2:]
    if _out_size(h, kh, sh, lo[0], hi[0], dh) < 1 or _out_size(w, kw, sw, lo[1], hi[1], dw) < 1:
        return
    for conv_path in CONV_PATHS:
        with _conv_path(conv_path):
            _check(n, cg * groups, cog * groups, h, w, kh, kw, (sh, sw), lo, hi, (dh, dw),
                   groups, bias)


@pytest.mark.parametrize("case", [
    # c, co, h, w, kh, stride, pad: the shifted-window tiles follow the GEMM's ISA
    (16, 16, 10, 9, 3, 1, 1), (16, 32, 10, 9, 3, 1, 1), (13, 21, 15, 13, 3, 2, 1),
    (64, 64, 7, 7, 3, 1, 1), (1, 16, 28, 28, 3, 1, 1), (16, 32, 14, 14, 1, 2, 0),
    (32, 32, 14, 14, 3, 1, 1), (32, 64, 14, 14, 3, 2, 1), (48, 40, 9, 9, 3, 1, 1)])
@pytest.mark.parametrize("conv_path", CONV_PATHS)
def test_conv_on_every_gemm_path(path: str, conv_path: str, case: tuple[int, ...]) -> None:
    """Each GEMM tile picks its own dW orientation (csrc/cpu/conv.cpp); each ISA its own
    shifted-window tiles (csrc/cpu/conv_direct.cpp): filters x pixel vectors, or channel
    vectors x row strips where the map is small (7 x 7, 14 x 14), for y, dx and dW."""
    c, co, h, w, k, s, p = case
    with _conv_path(conv_path):
        _check(3, c, co, h, w, k, k, (s, s), (p, p), (p, p), (1, 1), 1, bias=True)


@pytest.mark.parametrize("where", ["x", "weight", "gy"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values_spread_as_in_the_reference(where: str, value: float) -> None:
    """The shifted windows multiply the zero padding and read junk columns: a non-finite
    filter or input must still reach exactly the outputs the reference gives it."""
    rng = np.random.default_rng(6)
    x, wt = _rand(rng, 2, 5, 9, 8), _rand(rng, 6, 5, 3, 3)
    gy = _rand(rng, 2, 6, 9, 8)
    if where == "x":
        x[1, 2, 0, 7] = value
    elif where == "weight":
        wt[3, 1, 2, 0] = value
    else:
        gy[0, 4, 8, 0] = value
    args = ((1, 1), (1, 1), (1, 1), (1, 1), 1)
    with _conv_path("direct"):
        y = _C.conv2d_fwd(x, wt, None, *args)
        dx, dw = _C.conv2d_bwd(x, wt, gy, *args, True, True)
    with np.errstate(invalid="ignore", over="ignore"):
        want = cpu_conv.conv2d_fwd_reference(x, wt, None, *args)
        rdx, rdw = cpu_conv.conv2d_bwd_reference(x, wt, gy, *args, True, True)
    for got, ref in ((y, want), (dx, rdx), (dw, rdw)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
        ok = np.isfinite(ref)
        np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-4, atol=1e-4)


def test_unknown_conv_path_is_refused() -> None:
    with pytest.raises(ValueError, match="set_conv_path"):
        _C.set_conv_path("fast")
    assert _C.conv_path() == "auto"


def test_only_the_asked_gradients() -> None:
    rng = np.random.default_rng(1)
    x, wt = _rand(rng, 2, 4, 6, 6), _rand(rng, 4, 4, 3, 3)
    gy = _rand(rng, 2, 4, 4, 4)
    args = ((1, 1), (0, 0), (0, 0), (1, 1), 1)
    dx, dw = _C.conv2d_bwd(x, wt, gy, *args, True, False)
    assert dw is None and dx.shape == x.shape
    dx, dw = _C.conv2d_bwd(x, wt, gy, *args, False, True)
    assert dx is None and dw.shape == wt.shape


def test_backend_selects_native_conv() -> None:
    assert get_backend("cpu").paths["conv2d_fwd"] == "native"
    assert get_backend("cpu").paths["conv2d_bwd"] == "native"


@requires_torch
@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 1, 1, 1), (2, 0, 1, 1), (1, "same", 2, 1), (2, 1, 1, 6), (1, 2, 2, 2)])
def test_conv_autograd_matches_torch(stride: Any, padding: Any, dilation: int,
                                     groups: int) -> None:
    rng = np.random.default_rng(2)
    x, wt, b = _rand(rng, 3, 6, 11, 10), _rand(rng, 12, 6 // groups, 3, 4), _rand(rng, 12)
    mx, mw, mb = (mt.tensor(a, requires_grad=True) for a in (x, wt, b))
    y = F.conv2d(mx, mw, mb, stride, padding, dilation, groups)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, wt, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    gy = _rand(rng, *ty.shape)
    (y * mt.tensor(gy)).sum().backward()
    (ty * torch.from_numpy(gy)).sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    for m, t in ((mx, tx), (mw, tw), (mb, tb)):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-3)


# ---- arguments the binding refuses ----------------------------------------------------------

_ARGS = ((1, 1), (1, 1), (1, 1), (1, 1), 1)


def _good() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return _rand(rng, 2, 4, 5, 5), _rand(rng, 3, 4, 3, 3), _rand(rng, 2, 3, 5, 5)


@pytest.mark.parametrize("bad", ["dtype", "noncontig", "ndim", "channels", "bias", "gy",
                                 "groups", "stride", "padding", "too_small"])
def test_hostile_input_raises(bad: str) -> None:
    x, w, gy = _good()
    b: np.ndarray | None = None
    args: tuple[Any, ...] = _ARGS
    if bad == "dtype":
        x = x.astype(np.float64)
    elif bad == "noncontig":
        x = np.asfortranarray(x)
    elif bad == "ndim":
        x = x[0]
    elif bad == "channels":
        w = w[:, :3].copy()
    elif bad == "bias":
        b = np.zeros(5, np.float32)
    elif bad == "gy":
        gy = gy[:, :2].copy()
    elif bad == "groups":
        args = _ARGS[:4] + (3,)
    elif bad == "stride":
        args = ((0, 1),) + _ARGS[1:]
    elif bad == "padding":
        args = (_ARGS[0], (-1, 0)) + _ARGS[2:]
    elif bad == "too_small":
        args = (_ARGS[0], (0, 0), (0, 0)) + _ARGS[3:]
        x = x[:, :, :2, :2].copy()
    if bad != "gy":  # the forward takes no gy
        with pytest.raises(ValueError):
            _C.conv2d_fwd(x, w, b, *args)
    if bad != "bias":  # the backward takes no bias
        with pytest.raises(ValueError):
            _C.conv2d_bwd(x, w, gy, *args, True, True)


def test_wrapper_sends_float64_to_reference() -> None:
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    y = cpu_conv.conv2d_fwd(x, w, None, (1, 1), (1, 1), (1, 1), (1, 1), 1)
    assert y.dtype == np.float64
    np.testing.assert_allclose(
        y, cpu_conv.conv2d_fwd_reference(x, w, None, (1, 1), (1, 1), (1, 1), (1, 1), 1))


def test_frozen_weight_keeps_no_input() -> None:
    """A frozen filter (transfer learning's backbone) needs no x for backward: dx alone."""
    rng = np.random.default_rng(5)
    x, wt = _rand(rng, 2, 3, 7, 7), _rand(rng, 4, 3, 3, 3)
    mx, mw = mt.tensor(x, requires_grad=True), mt.tensor(wt)
    y = F.conv2d(mx, mw, padding=1)
    assert y._ctx.saved[0] is None
    gy = _rand(rng, *y.shape)
    (y * mt.tensor(gy)).sum().backward()
    want, _ = cpu_conv.conv2d_bwd_reference(x, wt, gy, (1, 1), (1, 1), (1, 1), (1, 1), 1,
                                            True, False)
    np.testing.assert_allclose(mx.grad.numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path", CONV_PATHS)
def test_weight_gradient_is_the_same_from_run_to_run_on_two_threads(path: str) -> None:
    # per-thread partial sums of dW are added in a fixed order; the images each thread sums
    # must be fixed too, or dW's last bits change with whichever thread was free
    rng = np.random.default_rng(3)
    x, w, gy = _rand(rng, 24, 16, 14, 14), _rand(rng, 16, 16, 3, 3), _rand(rng, 24, 16, 14, 14)
    before = mt.get_num_threads()
    mt.set_num_threads(2)
    try:
        with _conv_path(path):
            runs = {cpu_conv.conv2d_bwd(x, w, gy, (1, 1), (1, 1), (1, 1), (1, 1), 1, True,
                                        True)[1].tobytes() for _ in range(12)}
    finally:
        mt.set_num_threads(before)
    assert len(runs) == 1
