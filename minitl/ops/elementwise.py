"""Elementwise ops: arithmetic, unary math, clamp, where/masked_fill, casts and copies.

Broadcasting is undone once, in `Tensor.backward` (via `unbroadcast`), so each
backward here returns gradients in the broadcast output shape.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minitl.dtypes import result_type
from minitl.function import Context, Function
from minitl.tensor import Tensor, _operand, _promote, get_default_dtype
from minitl.types import Array


def _check_broadcast(name: str, x: Array, y: Array) -> None:
    sx, sy = getattr(x, "shape", ()), getattr(y, "shape", ())
    if sx == sy or not sx or not sy:
        return
    for a, b in zip(reversed(sx), reversed(sy)):
        if a != b and a != 1 and b != 1:
            raise RuntimeError(f"{name}: shapes {tuple(sx)} and {tuple(sy)} are not broadcastable")


class Add(Function):
    """z = x + y;  dx = g, dy = g."""

    @staticmethod
    def forward(ctx: Context, x: Array, y: Array) -> Array:
        _check_broadcast("add", x, y)
        return x + y

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, Array]:
        return g, g


class Sub(Function):
    """z = x - y;  dx = g, dy = -g."""

    @staticmethod
    def forward(ctx: Context, x: Array, y: Array) -> Array:
        _check_broadcast("sub", x, y)
        return x - y

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, Array]:
        return g, -g if ctx.needs_input_grad[1] else None


class Mul(Function):
    """z = x * y;  dx = g y, dy = g x."""

    @staticmethod
    def forward(ctx: Context, x: Array, y: Array) -> Array:
        _check_broadcast("mul", x, y)
        ctx.save_for_backward(x, y)
        return x * y

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, Array | None]:
        x, y = ctx.saved
        nx, ny = ctx.needs_input_grad
        return (g * y if nx else None), (g * x if ny else None)


class Div(Function):
    """z = x / y;  dx = g / y, dy = -g x / y^2."""

    @staticmethod
    def forward(ctx: Context, x: Array, y: Array) -> Array:
        _check_broadcast("div", x, y)
        ctx.save_for_backward(x, y)
        return x / y

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, Array | None]:
        x, y = ctx.saved
        nx, ny = ctx.needs_input_grad
        gx = g / y if nx else None
        gy = -g * x / (y * y) if ny else None
        return gx, gy


class Neg(Function):
    """z = -x;  dx = -g."""

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        return -x

    @staticmethod
    def backward(ctx: Context, g: Array) -> Array:
        return -g


class Pow(Function):
    """z = x ** y;  dx = g y x^(y-1), dy = g z log(x)."""

    @staticmethod
    def forward(ctx: Context, x: Array, y: Array) -> Array:
        _check_broadcast("pow", x, y)
        z = x ** y
        ctx.save_for_backward(x, y, z)
        return z

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, Array | None]:
        x, y, z = ctx.saved
        xp = ctx.xp
        nx, ny = ctx.needs_input_grad
        gx = gy = None
        if nx:
            if isinstance(y, (int, float)) and y == 2:
                gx = 2 * g * x
            else:
                gx = g * y * x ** (y - 1)
        if ny:
            with np.errstate(divide="ignore", invalid="ignore"):
                # x = 0 contributes 0 (the limit of z log x); negative x has no real gradient.
                gy = g * z * xp.where(x > 0, xp.log(xp.where(x > 0, x, 1)), 0)
        return gx, gy


def _unary(name: str, fwd: Any, bwd: Any, save: str = "x", doc: str = "") -> type[Function]:
    """Build a unary Function whose backward needs the input x or the output z."""

    def forward(ctx: Context, x: Array) -> Array:
        z = fwd(ctx.xp, x)
        ctx.save_for_backward(x if save == "x" else z)
        return z

    def backward(ctx: Context, g: Array) -> Array:
        (v,) = ctx.saved
        return bwd(ctx.xp, g, v)

    return type(name, (Function,), {"forward": staticmethod(forward),
                                    "backward": staticmethod(backward), "__doc__": doc})


Exp = _unary("Exp", lambda xp, x: xp.exp(x), lambda xp, g, z: g * z, "z", "z = e^x; dx = g z.")
Log = _unary("Log", lambda xp, x: xp.log(x), lambda xp, g, x: g / x, "x", "z = ln x; dx = g / x.")
Log1p = _unary("Log1p", lambda xp, x: xp.log1p(x), lambda xp, g, x: g / (1 + x), "x",
               "z = ln(1 + x); dx = g / (1 + x).")
Sqrt = _unary("Sqrt", lambda xp, x: xp.sqrt(x), lambda xp, g, z: g / (2 * z), "z",
              "z = sqrt x; dx = g / (2 z).")
Rsqrt = _unary("Rsqrt", lambda xp, x: 1 / xp.sqrt(x), lambda xp, g, z: -0.5 * g * z * z * z, "z",
               "z = x^-1/2; dx = -g z^3 / 2.")
Square = _unary("Square", lambda xp, x: x * x, lambda xp, g, x: 2 * g * x, "x",
                "z = x^2; dx = 2 g x.")
Tanh = _unary("Tanh", lambda xp, x: xp.tanh(x), lambda xp, g, z: g * (1 - z * z), "z",
              "z = tanh x; dx = g (1 - z^2).")
Sin = _unary("Sin", lambda xp, x: xp.sin(x), lambda xp, g, x: g * xp.cos(x), "x",
             "z = sin x; dx = g cos x.")
Cos = _unary("Cos", lambda xp, x: xp.cos(x), lambda xp, g, x: -g * xp.sin(x), "x",
             "z = cos x; dx = -g sin x.")
Abs = _unary("Abs", lambda xp, x: xp.abs(x), lambda xp, g, x: g * xp.sign(x), "x",
             "z = |x|; dx = g sign(x) (0 at 0, as in PyTorch).")
Relu = _unary("Relu", lambda xp, x: xp.maximum(x, 0), lambda xp, g, z: g * (z > 0), "z",
              "z = max(x, 0); dx = g [x > 0].")


def _sigmoid(xp: Any, x: Array) -> Array:
    # Split by sign so exp never overflows: for x < 0, e^x / (1 + e^x).
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


Sigmoid = _unary("Sigmoid", _sigmoid, lambda xp, g, z: g * z * (1 - z), "z",
                 "z = 1 / (1 + e^-x); dx = g z (1 - z).")


class Erf(Function):
    """z = erf x;  dx = g 2/sqrt(pi) e^(-x^2). erf itself is a backend kernel (numpy has none:
    numba's ufunc over libm on the CPU, cupyx on the GPU, a Python loop in the reference)."""

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        ctx.save_for_backward(x)
        return ctx.backend.erf(x)

    @staticmethod
    def backward(ctx: Context, g: Array) -> Array:
        (x,) = ctx.saved
        return g * (2 / math.sqrt(math.pi)) * ctx.xp.exp(-x * x)


class Clamp(Function):
    """z = min(max(x, lo), hi);  dx = g where lo <= x <= hi (PyTorch passes the boundary)."""

    @staticmethod
    def forward(ctx: Context, x: Array, lo: float | None, hi: float | None) -> Array:
        xp = ctx.xp
        mask = xp.ones(x.shape, dtype=bool)
        z = x
        if lo is not None:
            mask &= x >= lo
            z = xp.maximum(z, lo)
        if hi is not None:
            mask &= x <= hi
            z = xp.minimum(z, hi)
        ctx.save_for_backward(mask)
        return z.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None]:
        (mask,) = ctx.saved
        return g * mask, None, None


class Maximum(Function):
    """z = max(x, y); the gradient goes to the larger input, split evenly on ties."""

    @staticmethod
    def forward(ctx: Context, x: Array, y: Array) -> Array:
        _check_broadcast("maximum", x, y)
        z = ctx.xp.maximum(x, y)
        ctx.save_for_backward(x, y)
        return z

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, Array]:
        x, y = ctx.saved
        wx = (x > y) + 0.5 * (x == y)
        return g * wx, g * (1 - wx)


class Minimum(Function):
    """z = min(x, y); the gradient goes to the smaller input, split evenly on ties."""

    @staticmethod
    def forward(ctx: Context, x: Array, y: Array) -> Array:
        _check_broadcast("minimum", x, y)
        z = ctx.xp.minimum(x, y)
        ctx.save_for_backward(x, y)
        return z

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, Array]:
        x, y = ctx.saved
        wx = (x < y) + 0.5 * (x == y)
        return g * wx, g * (1 - wx)


class Where(Function):
    """z = cond ? x : y;  dx = g [cond], dy = g [not cond].

    x and y meet in PyTorch's result dtype (float32 with int64 is float32, a Python float
    does not widen float16); each gradient goes back in its own operand's dtype."""

    @staticmethod
    def forward(ctx: Context, cond: Array, x: Any, y: Any) -> Array:
        xp = ctx.xp
        cond = xp.asarray(cond)
        if cond.dtype != bool:
            raise RuntimeError(f"where: condition must be a bool tensor, got {cond.dtype}")
        ctx.save_for_backward(cond)
        dt = result_type(x, y, default_float=get_default_dtype())
        ctx.dtypes = (getattr(x, "dtype", dt), getattr(y, "dtype", dt))
        return xp.where(cond, xp.asarray(x, dtype=dt), xp.asarray(y, dtype=dt))

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[None, Array, Array]:
        (cond,) = ctx.saved
        xp = ctx.xp
        zero = xp.zeros((), dtype=g.dtype)
        dx_dtype, dy_dtype = ctx.dtypes
        return (None, xp.where(cond, g, zero).astype(dx_dtype, copy=False),
                xp.where(cond, zero, g).astype(dy_dtype, copy=False))


class MaskedFill(Function):
    """z = mask ? value : x;  dx = g [not mask]."""

    @staticmethod
    def forward(ctx: Context, x: Array, mask: Array, value: float) -> Array:
        xp = ctx.xp
        if mask.dtype != bool:
            raise RuntimeError(f"masked_fill: mask must be a bool tensor, got {mask.dtype}")
        _check_broadcast("masked_fill", x, mask)
        ctx.save_for_backward(mask)
        out = xp.where(mask, xp.asarray(value, dtype=x.dtype), x)
        if out.shape != x.shape:
            raise RuntimeError(f"masked_fill: mask of shape {tuple(mask.shape)} would change "
                               f"the shape {tuple(x.shape)} of the input")
        return out

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None]:
        (mask,) = ctx.saved
        return ctx.xp.where(mask, ctx.xp.zeros((), dtype=g.dtype), g), None, None


class Clone(Function):
    """A copy that stays in the graph; dx = g."""

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        return x.copy()

    @staticmethod
    def backward(ctx: Context, g: Array) -> Array:
        return g


class Cast(Function):
    """dtype conversion; the gradient is cast back to the input dtype."""

    @staticmethod
    def forward(ctx: Context, x: Array, dtype: np.dtype) -> Array:
        ctx.in_dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, None]:
        if ctx.in_dtype.kind not in "fc":
            return None, None
        return g.astype(ctx.in_dtype), None


class ToDevice(Function):
    """Copy between host and GPU memory; the gradient travels back the other way."""

    @staticmethod
    def forward(ctx: Context, x: Array, device: str) -> Array:
        ctx.src = "cpu" if isinstance(x, np.ndarray) else "cuda"
        return _move(x, device)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        return _move(g, ctx.src), None


def _move(x: Array, device: str) -> Array:
    if device.startswith("cuda"):
        from minitl.backend import get_backend

        return get_backend("cuda").xp.asarray(x)
    if device == "cpu":
        return x if isinstance(x, np.ndarray) else x.get()
    raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")


# ---- Tensor methods defined here -------------------------------------------------------


def clamp(self: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    if self.dtype.kind in "iub" and any(isinstance(v, float) for v in (min, max)):
        self = self.to(get_default_dtype())  # as in PyTorch: float bounds promote
    return Clamp.apply(self, min, max)


def masked_fill(self: Tensor, mask: Tensor, value: float) -> Tensor:
    if not isinstance(mask, Tensor):
        mask = Tensor._wrap(np.asarray(mask))
    return MaskedFill.apply(self, mask, float(value))


def maximum(self: Tensor, other: Any) -> Tensor:
    return Maximum.apply(*_promote(self, _operand(other, self)))


def minimum(self: Tensor, other: Any) -> Tensor:
    return Minimum.apply(*_promote(self, _operand(other, self)))


def where(self: Tensor, condition: Tensor, other: Any) -> Tensor:
    """x.where(cond, y) as in PyTorch: cond ? x : y."""
    return Where.apply(condition, self, other)


clip = clamp
