"""A leaf's first gradient becomes `.grad` without a copy only when the backward pass owns it
alone (minitl/autograd/engine.py: accumulate_grad); every other first gradient is copied, so
`.grad` never aliases another tensor's gradient or an array someone else holds."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pytest

import minitl as mt
from minitl.autograd.engine import STEALS_GRADIENTS
from minitl.function import Context, Function

KEPT: list[Any] = []  # arrays a backward also hands to someone else


class _Scale(Function):
    """y = 3 x; backward builds a fresh dx, optionally keeps it, or returns a view of it."""

    mode = "fresh"
    made: Any = None

    @staticmethod
    def forward(ctx: Context, x: Any) -> Any:
        return 3 * x

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        dx = 3 * g
        if _Scale.mode == "kept":
            KEPT.append(dx)
        if _Scale.mode == "view":
            buf = np.concatenate([dx.ravel(), dx.ravel()])
            dx = buf[: g.size].reshape(g.shape)
        if _Scale.mode == "reshaped":  # a kernel's flat result reshaped to the output
            dx = np.ascontiguousarray(dx.ravel()).reshape(g.shape)
        if _Scale.mode == "reshaped, base kept":
            KEPT.append(np.ascontiguousarray(dx.ravel()))
            dx = KEPT[-1].reshape(g.shape)
        _Scale.made = weakref.ref(dx)
        return dx


def _leaf_grad(mode: str) -> tuple[mt.Tensor, Any]:
    _Scale.mode = mode
    x = mt.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    _Scale.apply(x).sum().backward()
    return x, _Scale.made()


# "fresh": a buffer only the pass holds; "reshaped": a reshape of a whole buffer nothing else
# holds. Either becomes .grad without a copy.
@pytest.mark.skipif(not STEALS_GRADIENTS, reason="first gradients are copied on this Python")
@pytest.mark.parametrize("mode", ["fresh", "reshaped"])
def test_a_gradient_only_the_pass_holds_becomes_grad_without_a_copy(mode: str) -> None:
    x, made = _leaf_grad(mode)
    assert made is not None and x.grad.data is made
    np.testing.assert_array_equal(x.grad.data, np.full((2, 3), 3.0, np.float32))


def test_a_gradient_someone_else_holds_is_copied() -> None:
    KEPT.clear()
    x, made = _leaf_grad("kept")
    assert made is KEPT[0] and x.grad.data is not made
    KEPT[0][...] = -1.0  # the holder's writes never reach .grad
    np.testing.assert_array_equal(x.grad.data, np.full((2, 3), 3.0, np.float32))


def test_a_reshape_of_a_buffer_someone_holds_is_copied() -> None:
    KEPT.clear()
    x, made = _leaf_grad("reshaped, base kept")
    assert x.grad.data is not made and not np.shares_memory(x.grad.data, KEPT[-1])
    KEPT[-1][...] = -1.0
    np.testing.assert_array_equal(x.grad.data, np.full((2, 3), 3.0, np.float32))


def test_a_view_of_part_of_a_buffer_is_copied_into_its_own_buffer() -> None:
    x, _ = _leaf_grad("view")
    assert x.grad.data.base is None
    np.testing.assert_array_equal(x.grad.data, np.full((2, 3), 3.0, np.float32))


def test_one_gradient_routed_to_two_leaves_gives_two_buffers() -> None:
    a = mt.randn(4, 5, requires_grad=True)
    b = mt.randn(4, 5, requires_grad=True)
    (a + b).sum().backward()  # add's backward hands the same g to both inputs
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data[...] = 7.0
    np.testing.assert_array_equal(b.grad.data, np.ones((4, 5), np.float32))


def test_a_gradient_passed_in_is_never_taken() -> None:
    x = mt.randn(3, requires_grad=True)
    g = np.array([1.0, 2.0, 3.0], np.float32)
    x.backward(g)
    assert not np.shares_memory(x.grad.data, g)
    g[...] = 0.0
    np.testing.assert_array_equal(x.grad.data, [1.0, 2.0, 3.0])


def test_later_gradients_still_add_into_a_new_array() -> None:
    x, made = _leaf_grad("fresh")
    held = x.grad.data
    _Scale.apply(x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.full((2, 3), 6.0, np.float32))
    np.testing.assert_array_equal(held, np.full((2, 3), 3.0, np.float32))  # not added in place
