"""Reductions with PyTorch's `dim` / `keepdim` semantics.

Every backward re-inserts the reduced axes and broadcasts the gradient back to
the input's shape.
"""

from __future__ import annotations

import builtins
from typing import Any, NamedTuple, Sequence

import numpy as np

from minitl.function import Context, Function
from minitl.tensor import Tensor
from minitl.types import Array

Dim = int | Sequence[int] | None


def normalize_dims(dim: Dim, ndim: int, op: str) -> tuple[int, ...]:
    """Canonical non-negative axes; None means all of them."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not -builtins.max(ndim, 1) <= d < builtins.max(ndim, 1):
            raise IndexError(f"{op}: dim {d} is out of range for a tensor with {ndim} dims")
        out.append(d % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise RuntimeError(f"{op}: dim {dims} names an axis twice")
    return tuple(sorted(out)) if ndim else ()


def _expand_back(xp: Any, g: Array, shape: tuple[int, ...], axes: tuple[int, ...],
                 keepdim: bool) -> Array:
    if not keepdim:
        g = xp.expand_dims(g, axes) if axes else g
    return xp.broadcast_to(g, shape)


class Sum(Function):
    """z = sum_axes x;  dx = broadcast(g)."""

    @staticmethod
    def forward(ctx: Context, x: Array, dim: Dim = None, keepdim: bool = False) -> Array:
        axes = normalize_dims(dim, x.ndim, "sum")
        ctx.shape, ctx.axes, ctx.keepdim = x.shape, axes, keepdim
        return x.sum(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx: Context, g: Array) -> Array:
        return _expand_back(ctx.xp, g, ctx.shape, ctx.axes, ctx.keepdim)


class Mean(Function):
    """z = mean_axes x;  dx = broadcast(g) / n."""

    @staticmethod
    def forward(ctx: Context, x: Array, dim: Dim = None, keepdim: bool = False) -> Array:
        axes = normalize_dims(dim, x.ndim, "mean")
        ctx.shape, ctx.axes, ctx.keepdim = x.shape, axes, keepdim
        n = 1
        for a in axes:
            n *= x.shape[a]
        ctx.n = n
        return x.mean(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx: Context, g: Array) -> Array:
        return _expand_back(ctx.xp, g / builtins.max(ctx.n, 1), ctx.shape, ctx.axes, ctx.keepdim)


class Var(Function):
    """z = sum (x - mean)^2 / (n - correction);  dx = 2 g (x - mean) / (n - correction)."""

    @staticmethod
    def forward(ctx: Context, x: Array, dim: Dim = None, correction: int = 1,
                keepdim: bool = False) -> Array:
        axes = normalize_dims(dim, x.ndim, "var")
        n = 1
        for a in axes:
            n *= x.shape[a]
        centered = x - x.mean(axis=axes, keepdims=True)
        denom = builtins.max(n - correction, 0)
        ctx.save_for_backward(centered)
        ctx.axes, ctx.keepdim, ctx.denom = axes, keepdim, denom
        return (centered * centered).sum(axis=axes, keepdims=keepdim) / denom

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None, None]:
        (centered,) = ctx.saved
        if not ctx.keepdim and ctx.axes:
            g = ctx.xp.expand_dims(g, ctx.axes)
        return 2 * g * centered / ctx.denom, None, None, None


class Std(Function):
    """z = sqrt(var(x));  dx = g (x - mean) / ((n - correction) z), and 0 where z = 0."""

    @staticmethod
    def forward(ctx: Context, x: Array, dim: Dim = None, correction: int = 1,
                keepdim: bool = False) -> Array:
        xp = ctx.xp
        axes = normalize_dims(dim, x.ndim, "std")
        n = 1
        for a in axes:
            n *= x.shape[a]
        centered = x - x.mean(axis=axes, keepdims=True)
        denom = builtins.max(n - correction, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = xp.sqrt((centered * centered).sum(axis=axes, keepdims=True) / denom)
        ctx.save_for_backward(centered, z)
        ctx.axes, ctx.denom = axes, denom
        return z if keepdim else z.reshape([s for i, s in enumerate(x.shape) if i not in axes])

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None, None]:
        centered, z = ctx.saved
        xp = ctx.xp
        g = g.reshape(z.shape)
        safe = xp.where(z == 0, 1, z)
        return xp.where(z == 0, 0, g * centered / (ctx.denom * safe)), None, None, None


class Amax(Function):
    """z = max over axes;  dx = g split evenly among the maximal elements."""

    @staticmethod
    def forward(ctx: Context, x: Array, dim: Dim = None, keepdim: bool = False,
                largest: bool = True) -> Array:
        axes = normalize_dims(dim, x.ndim, "amax" if largest else "amin")
        if x.size == 0:
            raise RuntimeError(f"{'max' if largest else 'min'}(): the input is empty")
        z = x.max(axis=axes, keepdims=True) if largest else x.min(axis=axes, keepdims=True)
        ctx.save_for_backward(x, z)
        ctx.axes, ctx.keepdim = axes, keepdim
        return z if keepdim else z.reshape([s for i, s in enumerate(x.shape) if i not in axes])

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None, None]:
        x, z = ctx.saved
        if not ctx.keepdim and ctx.axes:
            g = ctx.xp.expand_dims(g, ctx.axes)
        hit = x == z
        return g * hit / hit.sum(axis=ctx.axes, keepdims=True), None, None, None


class MaxDim(Function):
    """values of max/min along one dim; dx = g at the arg-max index (one per slice)."""

    @staticmethod
    def forward(ctx: Context, x: Array, dim: int, keepdim: bool, largest: bool) -> Array:
        xp = ctx.xp
        (axis,) = normalize_dims(dim, x.ndim, "max" if largest else "min")
        if x.shape[axis] == 0:
            raise RuntimeError(f"{'max' if largest else 'min'}(): dim {dim} has size 0")
        idx = (x.argmax if largest else x.argmin)(axis=axis)
        idx_k = xp.expand_dims(idx, axis)
        z = xp.take_along_axis(x, idx_k, axis=axis)
        ctx.shape, ctx.axis, ctx.keepdim, ctx.idx = x.shape, axis, keepdim, idx_k
        ctx.indices = idx_k if keepdim else idx
        return z if keepdim else xp.squeeze(z, axis)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None, None]:
        xp = ctx.xp
        if not ctx.keepdim:
            g = xp.expand_dims(g, ctx.axis)
        out = xp.zeros(ctx.shape, dtype=g.dtype)
        xp.put_along_axis(out, ctx.idx, g, axis=ctx.axis)
        return out, None, None, None


class LogSumExp(Function):
    """z = log sum e^x (shifted by the max for stability);  dx = g softmax(x)."""

    @staticmethod
    def forward(ctx: Context, x: Array, dim: Dim, keepdim: bool = False) -> Array:
        xp = ctx.xp
        axes = normalize_dims(dim, x.ndim, "logsumexp")
        m = x.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        with np.errstate(divide="ignore"):  # an all -inf slice has logsumexp -inf
            z = xp.log(xp.exp(x - m).sum(axis=axes, keepdims=True)) + m
        ctx.save_for_backward(x, z)
        ctx.axes, ctx.keepdim = axes, keepdim
        return z if keepdim else z.reshape([s for i, s in enumerate(x.shape) if i not in axes])

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None]:
        x, z = ctx.saved
        if not ctx.keepdim and ctx.axes:
            g = ctx.xp.expand_dims(g, ctx.axes)
        return g * ctx.xp.exp(x - z), None, None


class MaxResult(NamedTuple):
    values: Tensor
    indices: Tensor


# ---- Tensor methods ---------------------------------------------------------------------


def sum(self: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:  # noqa: A001
    return Sum.apply(self, dim, keepdim)


def mean(self: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:
    if self.dtype.kind not in "fc":
        raise RuntimeError(f"mean(): expected a floating point tensor, got {self.dtype}")
    return Mean.apply(self, dim, keepdim)


def var(self: Tensor, dim: Dim = None, unbiased: bool | None = None, keepdim: bool = False,
        correction: int | None = None) -> Tensor:
    if correction is None:
        correction = 0 if unbiased is False else 1
    return Var.apply(self, dim, correction, keepdim)


def std(self: Tensor, dim: Dim = None, unbiased: bool | None = None, keepdim: bool = False,
        correction: int | None = None) -> Tensor:
    if correction is None:
        correction = 0 if unbiased is False else 1
    return Std.apply(self, dim, correction, keepdim)


def _max_or_min(self: Tensor, dim: int | None, keepdim: bool, largest: bool) -> Any:
    if dim is None:
        return Amax.apply(self, None, False, largest)
    values = MaxDim.apply(self, dim, keepdim, largest)
    ctx = values._ctx
    if ctx is None:  # not recorded: recompute indices without building a graph
        axis = normalize_dims(dim, self.ndim, "max")[0]
        idx = (self.data.argmax if largest else self.data.argmin)(axis=axis)
        if keepdim:
            idx = idx.reshape(values.shape)
        return MaxResult(values, Tensor._wrap(idx.astype("int64")))
    return MaxResult(values, Tensor._wrap(ctx.indices.astype("int64")))


def max(self: Tensor, dim: int | None = None, keepdim: bool = False) -> Any:  # noqa: A001
    return _max_or_min(self, dim, keepdim, True)


def min(self: Tensor, dim: int | None = None, keepdim: bool = False) -> Any:  # noqa: A001
    return _max_or_min(self, dim, keepdim, False)


def amax(self: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:
    return Amax.apply(self, dim, keepdim, True)


def amin(self: Tensor, dim: Dim = None, keepdim: bool = False) -> Tensor:
    return Amax.apply(self, dim, keepdim, False)


def logsumexp(self: Tensor, dim: Dim, keepdim: bool = False) -> Tensor:
    return LogSumExp.apply(self, dim, keepdim)


def argmax(self: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Index of the largest element (flattened when dim is None); not differentiable."""
    if dim is None:
        idx = self.data.argmax().astype("int64")
        return Tensor._wrap(idx.reshape((1,) * self.ndim) if keepdim else idx)
    axis = normalize_dims(dim, self.ndim, "argmax")[0]
    idx = self.data.argmax(axis=axis, keepdims=keepdim)
    return Tensor._wrap(idx.astype("int64"))


def argmin(self: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Index of the smallest element (flattened when dim is None); not differentiable."""
    if dim is None:
        idx = self.data.argmin().astype("int64")
        return Tensor._wrap(idx.reshape((1,) * self.ndim) if keepdim else idx)
    axis = normalize_dims(dim, self.ndim, "argmin")[0]
    idx = self.data.argmin(axis=axis, keepdims=keepdim)
    return Tensor._wrap(idx.astype("int64"))
