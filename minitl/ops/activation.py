"""Activations: GELU (exact and tanh, arXiv:1606.08415), SiLU, LeakyReLU, Softmax and
LogSoftmax along a dim, and inverted Dropout (arXiv:1207.0580).

Softmax and LogSoftmax subtract the row max before exponentiating, so logits of 1e4 stay
finite. `softmax` / `log_softmax` are also Tensor methods (see TENSOR_METHODS).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minitl.function import Context, Function
from minitl.ops.elementwise import erf_array
from minitl.tensor import Tensor

Array = Any

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715  # the cubic coefficient of the tanh approximation


def _axis(dim: int, ndim: int, op: str) -> int:
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dims")
    return dim % n


class GELU(Function):
    """y = x Phi(x);  dx = g (Phi(x) + x phi(x))  ('tanh': Phi ~ (1 + tanh u) / 2)."""

    @staticmethod
    def forward(ctx: Context, x: Array, approximate: str = "none") -> Array:
        xp = ctx.xp
        ctx.exact = approximate == "none"
        if ctx.exact:
            cdf = 0.5 * (1.0 + erf_array(xp, x * _INV_SQRT_2))
            ctx.save_for_backward(x, cdf)
            return (x * cdf).astype(x.dtype, copy=False)
        if approximate == "tanh":
            t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))
            ctx.save_for_backward(x, t)
            return 0.5 * x * (1.0 + t)
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        x, v = ctx.saved
        if ctx.exact:  # v = Phi(x)
            pdf = _INV_SQRT_2PI * ctx.xp.exp(-0.5 * x * x)
            return g * (v + x * pdf), None
        # v = tanh(u), u = sqrt(2/pi) (x + c x^3)
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * x * x)
        return g * (0.5 * (1.0 + v) + 0.5 * x * (1.0 - v * v) * du), None


class SiLU(Function):
    """y = x sigmoid(x);  dx = g s (1 + x (1 - s)) with s = sigmoid(x)."""

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        xp = ctx.xp
        e = xp.exp(-xp.abs(x))  # split by sign so exp never overflows
        s = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx: Context, g: Array) -> Array:
        x, s = ctx.saved
        return g * s * (1 + x * (1 - s))


class LeakyReLU(Function):
    """y = x if x > 0 else a x;  dx = g if x > 0 else a g (a at 0, as in PyTorch)."""

    @staticmethod
    def forward(ctx: Context, x: Array, negative_slope: float = 0.01) -> Array:
        pos = x > 0
        ctx.save_for_backward(pos)
        ctx.slope = negative_slope
        return ctx.xp.where(pos, x, x * negative_slope)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        (pos,) = ctx.saved
        return ctx.xp.where(pos, g, g * ctx.slope), None


class Softmax(Function):
    """y = e^(x - max) / sum e^(x - max) along dim;  dx = y (g - sum(g y)).

    With `safe=True` a row that is entirely -inf gives zeros (and zero gradient) instead of
    NaN; attention uses this for fully masked query rows.
    """

    @staticmethod
    def forward(ctx: Context, x: Array, dim: int, safe: bool = False) -> Array:
        xp = ctx.xp
        axis = _axis(dim, x.ndim, "softmax")
        m = x.max(axis=axis, keepdims=True) if x.size else x.sum(axis=axis, keepdims=True)
        if safe:
            m = xp.where(xp.isfinite(m), m, 0)
        e = xp.exp(x - m)
        s = e.sum(axis=axis, keepdims=True)
        if safe:
            s = xp.where(s == 0, 1, s)
        y = e / s
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None]:
        (y,) = ctx.saved
        gy = g * y
        return gy - y * gy.sum(axis=ctx.axis, keepdims=True), None, None


class LogSoftmax(Function):
    """y = x - max - log sum e^(x - max) along dim;  dx = g - e^y sum(g)."""

    @staticmethod
    def forward(ctx: Context, x: Array, dim: int) -> Array:
        xp = ctx.xp
        axis = _axis(dim, x.ndim, "log_softmax")
        m = x.max(axis=axis, keepdims=True) if x.size else x.sum(axis=axis, keepdims=True)
        shifted = x - m
        y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        (y,) = ctx.saved
        return g - ctx.xp.exp(y) * g.sum(axis=ctx.axis, keepdims=True), None


class Dropout(Function):
    """y = x m / (1 - p) with m ~ Bernoulli(1 - p);  dx = g m / (1 - p)."""

    @staticmethod
    def forward(ctx: Context, x: Array, p: float) -> Array:
        xp = ctx.xp
        keep = 1.0 - p
        if keep <= 0.0:
            scale = xp.zeros(x.shape, dtype=x.dtype)
        else:
            if xp is np:
                from minitl.creation import default_generator

                u = default_generator().random(x.shape)
            else:  # pragma: no cover - GPU only: draw on the device, no host round trip
                u = xp.random.random(x.shape)
            # One array holding 0 or 1/(1-p), so backward is a single multiply.
            scale = (u < keep).astype(x.dtype) * x.dtype.type(1.0 / keep)
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        (scale,) = ctx.saved
        return g * scale, None


# ---- functional forms and Tensor methods ------------------------------------------------


def _float_input(x: Tensor, op: str) -> None:
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating point tensor, got dtype {x.dtype}")


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """GELU(x) = x Phi(x); approximate='tanh' uses the tanh form of the Gaussian cdf."""
    _float_input(input, "gelu")
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(input, approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    _float_input(input, "silu")
    return SiLU.apply(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    _float_input(input, "leaky_relu")
    return LeakyReLU.apply(input, float(negative_slope))


def _cast(x: Tensor, dtype: Any) -> Tensor:
    return x if dtype is None else x.to(dtype)


def softmax(self: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    """Softmax along `dim` (required: PyTorch's implicit-dim guess is deprecated)."""
    if dim is None:
        raise TypeError("softmax: pass dim explicitly (e.g. dim=-1)")
    x = _cast(self, dtype)
    _float_input(x, "softmax")
    return Softmax.apply(x, dim)


def log_softmax(self: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    """log(softmax(x)) along `dim`, computed without forming softmax (stable)."""
    if dim is None:
        raise TypeError("log_softmax: pass dim explicitly (e.g. dim=-1)")
    x = _cast(self, dtype)
    _float_input(x, "log_softmax")
    return LogSoftmax.apply(x, dim)


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
            ) -> Tensor:
    """Inverted dropout: zero each element with probability p and scale the rest by
    1/(1-p), so eval mode is the identity. p = 0 or training=False returns `input` itself."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    _float_input(input, "dropout")
    return Dropout.apply(input, float(p))


TENSOR_METHODS = ("softmax", "log_softmax")
