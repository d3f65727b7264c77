"""Normalization: LayerNorm (arXiv:1607.06450), RMSNorm (arXiv:1910.07467), BatchNorm
(arXiv:1502.03167), GroupNorm (arXiv:1803.08494) and Lp `normalize`, each one fused Function
with an analytic backward.

All three share one identity: with xhat = (x - mean) * rstd over the normalized axes and
dxhat = g * weight,
    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
LayerNorm runs on the backend kernels `layernorm_fwd` / `layernorm_bwd` over (M, D) rows (numpy
reference in backend/reference.py; on the CPU the vectorised C++ of csrc/cpu/rowwise.cpp, or
numba without the extension).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from minitl.autograd_state import bump_version
from minitl.backend import cpu_batchnorm
from minitl.function import Context, Function
from minitl.tensor import Tensor
from minitl.types import Array


def _stats(x: Array, axes: Any, eps: float) -> tuple[Array, Array, Array]:
    """(mean, biased var, 1/sqrt(var + eps)) over `axes`, keepdims."""
    mean = x.mean(axis=axes, keepdims=True)
    c = x - mean
    var = (c * c).mean(axis=axes, keepdims=True)
    return mean, var, (var + eps) ** -0.5


def _input_grad(dxhat: Array, xhat: Array, rstd: Array, axes: Any) -> Array:
    return rstd * (dxhat - dxhat.mean(axis=axes, keepdims=True)
                   - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))


def _check_dtypes(op: str, x: Array, *others: Array | None) -> None:
    for o in others:
        if o is not None and o.dtype != x.dtype:
            raise TypeError(f"{op}: parameter dtype {o.dtype} differs from input dtype "
                            f"{x.dtype}")


class LayerNorm(Function):
    """y = (x - mean) rstd w + b over the last dims;
    dx = rstd (g w - mean(g w) - xhat mean(g w xhat)), dw = sum g xhat, db = sum g."""

    @staticmethod
    def forward(ctx: Context, x: Array, weight: Array | None, bias: Array | None,
                normalized_shape: tuple[int, ...], eps: float = 1e-5) -> Array:
        k = len(normalized_shape)
        if k == 0 or tuple(x.shape[x.ndim - k:]) != normalized_shape or x.ndim < k:
            raise ValueError(f"layer_norm: normalized_shape {list(normalized_shape)} does not "
                             f"match the trailing dims of input of shape {tuple(x.shape)}")
        for name, p in (("weight", weight), ("bias", bias)):
            if p is not None and tuple(p.shape) != normalized_shape:
                raise ValueError(f"layer_norm: {name} of shape {tuple(p.shape)} does not "
                                 f"match normalized_shape {list(normalized_shape)}")
        _check_dtypes("layer_norm", x, weight, bias)
        d = math.prod(normalized_shape)
        x2 = x.reshape(-1, d)  # (M, D)
        w2 = None if weight is None else weight.reshape(d)
        b2 = None if bias is None else bias.reshape(d)
        y, mean, rstd = ctx.backend.layernorm_fwd(x2, w2, b2, eps)
        ctx.save_for_backward(x2, mean, rstd, w2)
        ctx.x_shape, ctx.norm_shape = x.shape, normalized_shape
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, ...]:
        x2, mean, rstd, w2 = ctx.saved
        needs = (ctx.needs_input_grad + (False, False))[:3]
        dx, dw, db = ctx.backend.layernorm_bwd(g.reshape(x2.shape), x2, mean, rstd, w2,
                                               needs)
        return (None if dx is None else dx.reshape(ctx.x_shape),
                None if dw is None else dw.reshape(ctx.norm_shape),
                None if db is None else db.reshape(ctx.norm_shape), None, None)


def _row_dots(xp: Any, a: Array, b: Array) -> Array:
    """sum over L of a * b for (N, C, L) operands, as (N, C): a batched (1, L) @ (L, 1)
    product, which reads both once without a temporary (twice as fast as einsum here)."""
    return xp.matmul(a[:, :, None, :], b[:, :, :, None])[:, :, 0, 0]


def _row_sums(xp: Any, a: Array) -> Array:
    """sum over L of a (N, C, L), as (N, C): a matrix-vector product with ones, three times
    as fast as a.sum(axis=2) for resnet-mini's maps."""
    return xp.matmul(a, xp.ones((a.shape[2], 1), dtype=a.dtype))[:, :, 0]


class BatchNorm(Function):
    """y = (x - mean_c) rstd_c w_c + b_c over (N, *spatial) per channel c;
    training: dx = rstd (g w - mean(g w) - xhat mean(g w xhat)); eval: dx = g w rstd_running.

    Both passes see x as (N, C, L) and fold the per-channel factors first: forward is
    y = x s_c + t_c with s = rstd w and t = b - mean s; backward takes sum g and
    sum g (x - mean), then dx = k1 g + k2 (x - mean) + k3 per channel. x itself is saved (as
    PyTorch does), not x - mean. float32 CPU arrays run these passes in C++
    (backend/cpu_batchnorm.py: statistics summed per row in float and over rows in float64,
    two reads of x forward and one of g and x backward); other arrays run the same algebra in
    numpy, sums along rows of L (matrix-vector products) and then over N in float64.
    """

    @staticmethod
    def forward(ctx: Context, x: Array, weight: Array | None, bias: Array | None, *,
                running_mean: Array | None, running_var: Array | None, training: bool,
                momentum: float, eps: float) -> Array:
        if x.ndim < 2:
            raise ValueError(f"batch_norm: expected input of shape (N, C, ...), got "
                             f"{tuple(x.shape)}")
        c = x.shape[1]
        for name, p in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                        ("running_var", running_var)):
            if p is not None and tuple(p.shape) != (c,):
                raise ValueError(f"batch_norm: {name} of shape {tuple(p.shape)} does not "
                                 f"match {c} channels of input {tuple(x.shape)}")
        _check_dtypes("batch_norm", x, weight, bias)
        xp = ctx.xp
        x3 = x.reshape(x.shape[0], c, -1)  # (N, C, L)
        n = x3.shape[0] * x3.shape[2]
        mod = cpu_batchnorm.native(x3)
        if training:
            if n <= 1:
                raise ValueError(f"batch_norm: expected more than 1 value per channel when "
                                 f"training, got input of shape {tuple(x.shape)}")
            if mod is not None:
                mean64, var64 = cpu_batchnorm.stats(mod, x3)
            else:
                mean64 = _row_sums(xp, x3).sum(axis=0, dtype=xp.float64) / n  # (C,)
                xc = x3 - mean64.astype(x.dtype)[:, None]
                var64 = _row_dots(xp, xc, xc).sum(axis=0, dtype=xp.float64) / n
            mean = mean64.astype(x.dtype)
            rstd = ((var64 + eps) ** -0.5).astype(x.dtype)
            if running_mean is not None and running_var is not None:
                # PyTorch tracks the unbiased variance but normalizes with the biased one.
                running_mean[...] = (1 - momentum) * running_mean + momentum * mean64
                running_var[...] = ((1 - momentum) * running_var
                                    + momentum * var64 * (n / (n - 1)))
                bump_version(running_mean)  # in-place buffer updates, as in PyTorch
                bump_version(running_var)
        else:
            if running_mean is None or running_var is None:
                raise ValueError("batch_norm: running_mean and running_var are required "
                                 "when training=False")
            mean = xp.array(running_mean, dtype=x.dtype)  # a copy: the buffer may change
            rstd = ((running_var + eps) ** -0.5).astype(x.dtype)
        scale = rstd if weight is None else rstd * weight  # (C,)
        shift = -mean * scale if bias is None else bias - mean * scale
        if mod is not None:
            y = cpu_batchnorm.affine(mod, x3, scale, shift)
        else:
            y = x3 * scale[:, None] + shift[:, None]
        ctx.save_for_backward(x3, weight)
        ctx.mean, ctx.rstd, ctx.training, ctx.count = mean, rstd, training, n
        return y.reshape(x.shape).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, ...]:
        x3, weight = ctx.saved  # (N, C, L)
        mean, rstd = ctx.mean, ctx.rstd
        nx, nw, nb = (ctx.needs_input_grad + (False, False))[:3]
        xp = ctx.xp
        g3 = g.reshape(x3.shape)
        mod = cpu_batchnorm.native(g3, x3)
        if mod is not None:
            sum_g, sum_gxc = cpu_batchnorm.bwd_sums(mod, g3, x3, mean)
        else:
            xc = x3 - mean[:, None]
            sum_g = _row_sums(xp, g3).sum(axis=0, dtype=xp.float64)  # (C,)
            sum_gxc = _row_dots(xp, g3, xc).sum(axis=0, dtype=xp.float64)
        dx = dw = db = None
        if nx:
            k1 = rstd if weight is None else rstd * weight  # d y / d xhat folded with rstd
            k2 = xp.zeros_like(k1)
            k3 = xp.zeros_like(k1)
            if ctx.training:
                n = ctx.count
                k2 = (-k1 * rstd * rstd * sum_gxc / n).astype(g.dtype)
                k3 = (-k1 * sum_g / n).astype(g.dtype)
            if mod is not None:
                dx = cpu_batchnorm.bwd_dx(mod, g3, x3, mean, k1, k2, k3)
            else:
                dx = g3 * k1[:, None].astype(g.dtype, copy=False)
                if ctx.training:
                    dx += xc * k2[:, None]
                    dx += k3[:, None]
            dx = dx.reshape(g.shape).astype(g.dtype, copy=False)
        if nw:
            dw = (sum_gxc * rstd).astype(g.dtype)
        if nb:
            db = sum_g.astype(g.dtype)
        return dx, dw, db


class GroupNorm(Function):
    """y = (x - mean) rstd w_c + b_c with stats over each group of channels and all positions;
    dx = rstd (g w - mean(g w) - xhat mean(g w xhat)) within each group."""

    @staticmethod
    def forward(ctx: Context, x: Array, weight: Array | None, bias: Array | None,
                num_groups: int, eps: float = 1e-5) -> Array:
        if x.ndim < 2 or num_groups <= 0 or x.shape[1] % num_groups:
            raise ValueError(f"group_norm: {x.shape[1] if x.ndim > 1 else '?'} channels of "
                             f"input {tuple(x.shape)} are not divisible into {num_groups} "
                             f"groups")
        c = x.shape[1]
        for name, p in (("weight", weight), ("bias", bias)):
            if p is not None and tuple(p.shape) != (c,):
                raise ValueError(f"group_norm: {name} of shape {tuple(p.shape)} does not "
                                 f"match {c} channels")
        _check_dtypes("group_norm", x, weight, bias)
        xg = x.reshape(x.shape[0], num_groups, -1)  # (N, G, C/G * spatial)
        mean, _, rstd = _stats(xg, -1, eps)
        xhat = ((xg - mean) * rstd).reshape(x.shape)
        bshape = (1, c) + (1,) * (x.ndim - 2)
        y = xhat
        if weight is not None:
            y = y * weight.reshape(bshape)
        if bias is not None:
            y = y + bias.reshape(bshape)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.bshape, ctx.groups = bshape, num_groups
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, ...]:
        xhat, rstd, weight = ctx.saved
        nx, nw, nb = (ctx.needs_input_grad + (False, False))[:3]
        axes = (0,) + tuple(range(2, g.ndim))
        dx = dw = db = None
        if nx:
            dxhat = g if weight is None else g * weight.reshape(ctx.bshape)
            grouped = (g.shape[0], ctx.groups, -1)
            dx = _input_grad(dxhat.reshape(grouped), xhat.reshape(grouped), rstd, -1)
            dx = dx.reshape(g.shape).astype(g.dtype, copy=False)
        if nw:
            dw = (g * xhat).sum(axis=axes)
        if nb:
            db = g.sum(axis=axes)
        return dx, dw, db, None, None


class Normalize(Function):
    """y = x / max(||x||_p, eps) along dim;
    dx = g / d - [n >= eps] (dn/dx) sum(g x) / d^2 with d = max(n, eps)."""

    @staticmethod
    def forward(ctx: Context, x: Array, p: float, dim: int, eps: float) -> Array:
        xp = ctx.xp
        a = xp.abs(x)
        if math.isinf(p):
            n = a.max(axis=dim, keepdims=True)
        elif p == 2:
            n = xp.sqrt((x * x).sum(axis=dim, keepdims=True))
        else:
            n = (a ** p).sum(axis=dim, keepdims=True) ** (1.0 / p)
        d = xp.maximum(n, eps)
        ctx.save_for_backward(x, n, d)
        ctx.p, ctx.dim, ctx.eps = p, dim, eps
        return (x / d).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None, None]:
        xp = ctx.xp
        x, n, d = ctx.saved
        p, dim = ctx.p, ctx.dim
        n_safe = xp.where(n > 0, n, 1)  # n = 0 only reaches here masked out
        if math.isinf(p):
            hit = xp.abs(x) == n
            dn = xp.sign(x) * hit / hit.sum(axis=dim, keepdims=True)
        elif p == 2:
            dn = x / n_safe
        else:
            dn = xp.sign(x) * xp.abs(x) ** (p - 1) / n_safe ** (p - 1)
        through_norm = (n >= ctx.eps) & (n > 0)
        dx = g / d - through_norm * dn * (g * x).sum(axis=dim, keepdims=True) / (d * d)
        return dx.astype(g.dtype, copy=False), None, None, None


class RMSNorm(Function):
    """y = x rstd w with rstd = 1 / sqrt(mean(x^2) + eps) over the last k dims (no centring);
    dx = rstd (g w - xhat mean(g w xhat)), dw = sum g xhat, with xhat = x rstd."""

    @staticmethod
    def forward(ctx: Context, x: Array, weight: Array | None, k: int, eps: float) -> Array:
        axes = tuple(range(x.ndim - k, x.ndim))
        rstd = ((x * x).mean(axis=axes, keepdims=True) + eps) ** -0.5
        xhat = x * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.axes = axes
        return xhat if weight is None else xhat * weight

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, ...]:
        xhat, rstd, weight = ctx.saved
        nx, nw = ctx.needs_input_grad[:2]
        dw = None
        if nw:
            dw = (g * xhat).reshape(-1, *weight.shape).sum(axis=0)
        dx = None
        if nx:
            dxhat = g if weight is None else g * weight
            dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(axis=ctx.axes, keepdims=True))
        return dx, dw, None, None


# ---- functional forms (torch.nn.functional signatures) ----------------------------------


def _shape_tuple(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


def layer_norm(input: Tensor, normalized_shape: int | Sequence[int],
               weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalize over the trailing `normalized_shape` dims, then scale and shift."""
    return LayerNorm.apply(input, weight, bias, _shape_tuple(normalized_shape), float(eps))


def rms_norm(input: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,
             eps: float | None = None) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the trailing `normalized_shape` dims (LLaMA's
    norm); eps None means the dtype's machine epsilon, as in PyTorch."""
    shape = _shape_tuple(normalized_shape)
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k:]) != shape:
        raise ValueError(f"rms_norm: normalized_shape {list(shape)} does not match the trailing "
                         f"dims of input of shape {tuple(input.shape)}")
    if weight is not None and tuple(weight.shape) != shape:
        raise ValueError(f"rms_norm: weight of shape {tuple(weight.shape)} does not match "
                         f"normalized_shape {list(shape)}")
    if input.dtype.kind != "f":
        raise TypeError(f"rms_norm: expected a floating point tensor, got {input.dtype}")
    _check_dtypes("rms_norm", input.data, None if weight is None else weight.data)
    e = float(np.finfo(input.dtype).eps) if eps is None else float(eps)
    return RMSNorm.apply(input, weight, k, e)


def _array(t: Any) -> Any:
    return t.data if isinstance(t, Tensor) else t


def batch_norm(input: Tensor, running_mean: Any, running_var: Any,
               weight: Tensor | None = None, bias: Tensor | None = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Per-channel normalization of (N, C, ...). In training the batch statistics are used
    and running_mean/running_var (Tensors or arrays, updated in place, outside the graph)
    move towards them with `momentum`; in eval the running statistics are used."""
    return BatchNorm.apply(input, weight, bias, running_mean=_array(running_mean),
                           running_var=_array(running_var), training=bool(training),
                           momentum=float(momentum), eps=float(eps))


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize (N, C, ...) over groups of C/num_groups channels, then scale per channel."""
    return GroupNorm.apply(input, weight, bias, int(num_groups), float(eps))


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12,
              out: Any = None) -> Tensor:
    """x / max(||x||_p, eps) along `dim` (unit-norm embeddings for contrastive losses)."""
    if out is not None:
        raise NotImplementedError("normalize: out= is not supported")
    if input.dtype.kind != "f":
        raise TypeError(f"normalize: expected a floating point tensor, got {input.dtype}")
    if p <= 0:
        raise ValueError(f"normalize: p must be positive, got {p}")
    n = max(input.ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"normalize: dim {dim} is out of range for shape {input.shape}")
    return Normalize.apply(input, float(p), dim % n, float(eps))
