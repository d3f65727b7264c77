"""Activations: GELU (exact and tanh, arXiv:1606.08415), SiLU, LeakyReLU, Softmax and
LogSoftmax along a dim, and inverted Dropout (arXiv:1207.0580).

Softmax and LogSoftmax subtract the row max before exponentiating, so logits of 1e4 stay
finite. `softmax` / `log_softmax` are also Tensor methods (minitl/tensor_methods.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minitl.function import Context, Function
from minitl.tensor import Tensor
from minitl.types import Array


def _axis(dim: int, ndim: int, op: str) -> int:
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dims")
    return dim % n


class GELU(Function):
    """y = x Phi(x);  dx = g (Phi(x) + x phi(x))  ('tanh': Phi ~ (1 + tanh u) / 2).
    Backend kernels `gelu_fwd` / `gelu_bwd`; only x is kept, backward recomputes Phi."""

    @staticmethod
    def forward(ctx: Context, x: Array, approximate: str = "none") -> Array:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        return ctx.backend.gelu_fwd(x, approximate)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        (x,) = ctx.saved
        return ctx.backend.gelu_bwd(g, x, ctx.approximate), None


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


class SwiGLU(Function):
    """y = silu(a) b, the gated unit of LLaMA's MLP (Shazeer, arXiv:2002.05202), fused so that
    only a and b are kept; da = g b s (1 + a (1 - s)), db = g a s, with s = sigmoid(a)."""

    @staticmethod
    def forward(ctx: Context, a: Array, b: Array) -> Array:
        xp = ctx.xp
        e = xp.exp(-xp.abs(a))
        s = xp.where(a >= 0, 1 / (1 + e), e / (1 + e))
        ctx.save_for_backward(a, b)
        return a * s * b

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, Array | None]:
        a, b = ctx.saved
        xp = ctx.xp
        e = xp.exp(-xp.abs(a))
        s = xp.where(a >= 0, 1 / (1 + e), e / (1 + e))
        na, nb = ctx.needs_input_grad
        da = g * b * s * (1 + a * (1 - s)) if na else None
        db = g * a * s if nb else None
        return da, db


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


def _last_axis(xp: Any, x: Array, axis: int) -> Array:
    """x with `axis` moved last (a view), 0-d as (1,): the layout the row kernels take."""
    return x.reshape(1) if x.ndim == 0 else xp.moveaxis(x, axis, -1)


def _from_last_axis(xp: Any, y: Array, axis: int, shape: tuple[int, ...]) -> Array:
    return y.reshape(shape) if len(shape) == 0 else xp.moveaxis(y, -1, axis)


class Softmax(Function):
    """y = e^(x - max) / sum e^(x - max) along dim;  dx = y (g - sum(g y)).

    With `safe=True` a row that is entirely -inf gives zeros (and zero gradient) instead of
    NaN; attention uses this for fully masked query rows. Backend kernels `softmax_fwd` /
    `softmax_bwd` work on the last axis; another dim is moved there (a view) and back.
    """

    @staticmethod
    def forward(ctx: Context, x: Array, dim: int, safe: bool = False) -> Array:
        xp = ctx.xp
        axis = _axis(dim, x.ndim, "softmax")
        y = ctx.backend.softmax_fwd(_last_axis(xp, x, axis), safe)
        ctx.save_for_backward(y)
        ctx.axis, ctx.shape = axis, x.shape
        return _from_last_axis(xp, y, axis, x.shape)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None]:
        xp = ctx.xp
        (y,) = ctx.saved
        dx = ctx.backend.softmax_bwd(_last_axis(xp, g, ctx.axis), y)
        return _from_last_axis(xp, dx, ctx.axis, ctx.shape), None, None


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


def dropout_scale(xp: Any, shape: tuple[int, ...], dtype: Any, p: float) -> Array:
    """One array holding 0 (probability p) or 1/(1-p), from minitl's generator: dropout's
    forward and backward are then a single multiply each."""
    keep = 1.0 - p
    if keep <= 0.0:
        return xp.zeros(shape, dtype=dtype)
    if xp is np:
        from minitl.creation import default_generator

        u = default_generator().random(shape)
    else:  # pragma: no cover - GPU only: draw on the device, no host round trip
        u = xp.random.random(shape)
    return (u < keep).astype(dtype) * np.dtype(dtype).type(1.0 / keep)


class Dropout(Function):
    """y = x m / (1 - p) with m ~ Bernoulli(1 - p);  dx = g m / (1 - p)."""

    @staticmethod
    def forward(ctx: Context, x: Array, p: float) -> Array:
        scale = dropout_scale(ctx.xp, x.shape, x.dtype, p)
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


def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    """silu(gate) * up in one op (not in torch.nn.functional: LLaMA's MLP spells it as two)."""
    _float_input(gate, "swiglu")
    if tuple(gate.shape) != tuple(up.shape):
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} differ")
    return SwiGLU.apply(gate, up)


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
