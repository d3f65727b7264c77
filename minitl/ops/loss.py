"""Losses: fused softmax-cross-entropy, nll_loss, mse/l1/smooth-l1, binary cross-entropy (with
logits), and NT-Xent, the contrastive loss of SimCLR.

Each loss is one Function with an analytic backward, following PyTorch's exact semantics:
the class dim is dim 1 ((N, C) or (N, C, d1, ...); an unbatched (C,) input is allowed),
class-index targets may hold `ignore_index`, and 'mean' divides by the summed weights of the
targets that are not ignored (NaN when every target is ignored, as in PyTorch).

Cross-entropy with class indices and label smoothing eps, for row i with target y:
    loss_i = -sum_c q_ic log p_ic,   q_ic = (1 - eps) w_y [c = y] + (eps / C) w_c
so every variant shares the gradient  d loss_i / d x_ic = p_ic sum_c q_ic - q_ic. With class
indices it runs on the backend kernels `softmax_xent_fwd` / `softmax_xent_bwd`, which keep
only the logits and one log-sum-exp per row (no (M, C) log-probabilities).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from minitl.function import Context, Function
from minitl.tensor import Tensor
from minitl.types import Array

_REDUCTIONS = ("none", "mean", "sum")


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """PyTorch's rule for the deprecated size_average/reduce arguments."""
    if size_average is None and reduce is None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return ("mean" if size_average else "sum") if reduce else "none"


def _rows(xp: Any, x: Array) -> Array:
    """(N, C, d1, ...) -> (M, C) with the class dim last; (C,) -> (1, C)."""
    if x.ndim == 1:
        return x.reshape(1, -1)
    if x.ndim == 2:
        return x
    return xp.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _unrows(xp: Any, r: Array, shape: tuple[int, ...]) -> Array:
    """Inverse of _rows."""
    if len(shape) <= 2:
        return r.reshape(shape)
    moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
    return xp.moveaxis(r.reshape(moved), -1, 1)


def _log_softmax_rows(xp: Any, x: Array) -> Array:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def _class_shape(x: Array) -> tuple[int, ...]:
    """Shape of a class-index target (and of the 'none' loss) for input x."""
    return () if x.ndim == 1 else (x.shape[0],) + tuple(x.shape[2:])


def _check_class_target(op: str, x: Array, t: Array) -> None:
    expected = _class_shape(x)
    if tuple(t.shape) != expected:
        raise ValueError(f"{op}: target of shape {tuple(t.shape)} does not match input of "
                         f"shape {tuple(x.shape)} (expected target shape {expected})")


def _class_rows(xp: Any, op: str, t: Array, n_classes: int, ignore_index: int
                ) -> tuple[Array, Array]:
    """(safe target ids, valid mask), both (M,); raises on ids outside [0, C)."""
    t = t.reshape(-1)
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= n_classes))
    if bool(bad.any()):
        value = int(t[bad][0])
        raise IndexError(f"{op}: target {value} is out of bounds for {n_classes} classes "
                         f"(expected 0 <= target < {n_classes} or ignore_index={ignore_index})")
    return xp.where(valid, t, 0), valid


def _check_weight(op: str, w: Array | None, n_classes: int, dtype: Any) -> None:
    if w is None:
        return
    if tuple(w.shape) != (n_classes,):
        raise ValueError(f"{op}: weight of shape {tuple(w.shape)} does not match "
                         f"{n_classes} classes")
    if w.dtype != dtype:
        raise TypeError(f"{op}: weight dtype {w.dtype} differs from input dtype {dtype}")


def _finish(xp: Any, per: Array, reduction: str, denom: Any, shape: tuple[int, ...],
            dtype: Any) -> Array:
    if reduction == "none":
        return per.reshape(shape).astype(dtype, copy=False)
    total = per.sum()
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):  # all ignored -> NaN, as torch
            total = total / denom
    return xp.asarray(total, dtype=dtype)


def _row_grad(g: Array, reduction: str, denom: Any, m: int) -> Array:
    """The upstream gradient of each row's loss: (M,) for 'none', else a 0-d value that
    broadcasts over the rows."""
    if reduction == "none":
        return g.reshape(m)
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return g / denom
    return g


class CrossEntropy(Function):
    """loss_i = -sum_c q_ic log softmax(x)_ic;  dx_ic = g_i (p_ic sum_c q_ic - q_ic),
    dq_ic = -g_i (1 - eps) w_c log p_ic for probability targets."""

    @staticmethod
    def forward(ctx: Context, x: Array, target: Array, weight: Array | None,
                ignore_index: int = -100, reduction: str = "mean",
                label_smoothing: float = 0.0) -> Array:
        xp = ctx.xp
        n_classes = x.shape[0] if x.ndim == 1 else x.shape[1]
        _check_weight("cross_entropy", weight, n_classes, x.dtype)
        eps = label_smoothing
        ctx.prob = target.dtype.kind == "f"
        if ctx.prob:
            logp = _log_softmax_rows(xp, _rows(xp, x))  # (M, C)
            m = logp.shape[0]
            if tuple(target.shape) != tuple(x.shape):
                raise ValueError(f"cross_entropy: probability target of shape "
                                 f"{tuple(target.shape)} does not match input of shape "
                                 f"{tuple(x.shape)}")
            q = _rows(xp, target)
            if eps:
                q = q * (1 - eps) + eps / n_classes
            qw = q if weight is None else q * weight
            per = -(qw * logp).sum(axis=1)
            denom = m
            ctx.save_for_backward(logp, qw, weight)
            out_shape: tuple[int, ...] = _class_shape(x)
        else:
            if target.dtype.kind not in "iu":
                raise TypeError(f"cross_entropy: target must hold int64 class indices or "
                                f"float probabilities, got dtype {target.dtype}")
            _check_class_target("cross_entropy", x, target)
            tc, valid = _class_rows(xp, "cross_entropy", target, n_classes, ignore_index)
            w_t = valid.astype(x.dtype) if weight is None else weight[tc] * valid  # (M,)
            x2, t = _rows(xp, x), target.reshape(-1)  # (M, C), (M,)
            per, lse = ctx.backend.softmax_xent_fwd(x2, t, weight, ignore_index, eps)
            denom = w_t.sum()
            ctx.save_for_backward(x2, lse, t, weight)
            ctx.ignore_index = ignore_index
            out_shape = tuple(target.shape)
        ctx.reduction, ctx.denom, ctx.eps, ctx.x_shape = reduction, denom, eps, x.shape
        return _finish(xp, per, reduction, denom, out_shape, x.dtype)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, Array | None, None]:
        xp = ctx.xp
        eps = ctx.eps
        if ctx.prob:
            logp, qw, weight = ctx.saved
            m = logp.shape[0]
            gi = _row_grad(g, ctx.reduction, ctx.denom, m)  # (M,) or scalar
            col = gi[:, None] if getattr(gi, "ndim", 0) else gi
            dx = col * (xp.exp(logp) * qw.sum(axis=1, keepdims=True) - qw)
            dt = None
            if ctx.needs_input_grad[1]:
                wl = logp if weight is None else logp * weight
                dt = _unrows(xp, -col * (1 - eps) * wl, ctx.x_shape)
            return _unrows(xp, dx, ctx.x_shape), dt, None
        x2, lse, t, weight = ctx.saved
        m = x2.shape[0]
        gi = _row_grad(g, ctx.reduction, ctx.denom, m)  # (M,) or scalar
        grad = xp.broadcast_to(xp.asarray(gi, dtype=x2.dtype), (m,))
        dx = ctx.backend.softmax_xent_bwd(x2, lse, t, weight, ctx.ignore_index, eps, grad)
        return _unrows(xp, dx, ctx.x_shape), None, None


class NLLLoss(Function):
    """loss_i = -w_y x_iy for log-probabilities x;  dx_iy = -g_i w_y (zero elsewhere)."""

    @staticmethod
    def forward(ctx: Context, x: Array, target: Array, weight: Array | None,
                ignore_index: int = -100, reduction: str = "mean") -> Array:
        xp = ctx.xp
        if target.dtype.kind not in "iu":
            raise TypeError(f"nll_loss: target must hold int64 class indices, got dtype "
                            f"{target.dtype}")
        n_classes = x.shape[0] if x.ndim == 1 else x.shape[1]
        _check_weight("nll_loss", weight, n_classes, x.dtype)
        _check_class_target("nll_loss", x, target)
        rows = _rows(xp, x)
        tc, valid = _class_rows(xp, "nll_loss", target, n_classes, ignore_index)
        validf = valid.astype(x.dtype)
        w_t = validf if weight is None else weight[tc] * validf
        per = -w_t * rows[xp.arange(rows.shape[0]), tc]
        denom = w_t.sum()
        ctx.save_for_backward(tc, w_t)
        ctx.reduction, ctx.denom, ctx.x_shape, ctx.dtype = reduction, denom, x.shape, x.dtype
        return _finish(xp, per, reduction, denom, tuple(target.shape), x.dtype)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None]:
        xp = ctx.xp
        tc, w_t = ctx.saved
        m = tc.shape[0]
        n_classes = ctx.x_shape[0] if len(ctx.x_shape) == 1 else ctx.x_shape[1]
        gi = xp.broadcast_to(_row_grad(g, ctx.reduction, ctx.denom, m), (m,))
        dx = xp.zeros((m, n_classes), dtype=ctx.dtype)
        dx[xp.arange(m), tc] = -gi * w_t
        return _unrows(xp, dx, ctx.x_shape), None, None


def _pointwise_grad(g: Array, reduction: str, n: int) -> Array:
    return g / n if reduction == "mean" else g


def _pointwise_finish(xp: Any, per: Array, reduction: str, dtype: Any) -> Array:
    if reduction == "none":
        return per.astype(dtype, copy=False)
    total = per.mean() if reduction == "mean" else per.sum()
    return xp.asarray(total, dtype=dtype)


def _weighted_forward(ctx: Context, err: Array, weight: Array | None, reduction: str,
                      keep: Array) -> Array:
    """Reduce an elementwise error; with a weight, 'mean' is sum(w err) / sum(w) (PyTorch).
    `keep` is what the loss's backward needs besides (err, weight)."""
    if weight is None:
        ctx.save_for_backward(err, None, keep)
        ctx.reduction, ctx.denom = reduction, err.size
        return _pointwise_finish(ctx.xp, err, reduction, err.dtype)
    per = err * weight
    ctx.reduction, ctx.denom = reduction, weight.sum()
    ctx.save_for_backward(err, weight, keep)
    if reduction == "none":
        return per
    total = per.sum()
    ctx.total = total
    return ctx.xp.asarray(total / ctx.denom if reduction == "mean" else total, dtype=err.dtype)


def _weighted_backward(ctx: Context, g: Array) -> tuple[Array, Array | None]:
    """(gradient w.r.t. each error element, gradient w.r.t. the weight or None)."""
    err, weight, _ = ctx.saved
    if weight is None:
        return _pointwise_grad(g, ctx.reduction, ctx.denom), None
    if ctx.reduction == "mean":
        d = ctx.denom
        gw = g * (err / d - ctx.total / (d * d))  # quotient rule on sum(w e) / sum(w)
        return g * weight / d, gw
    return g * weight, g * err


class MSELoss(Function):
    """loss = w (x - t)^2 reduced;  dx = 2 g w (x - t) / D, dt = -dx (D = n or sum w)."""

    @staticmethod
    def forward(ctx: Context, x: Array, t: Array, weight: Array | None,
                reduction: str = "mean") -> Array:
        diff = x - t
        return _weighted_forward(ctx, diff * diff, weight, reduction, diff)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, Array, Array | None, None]:
        ge, gw = _weighted_backward(ctx, g)
        d = 2 * ge * ctx.saved[2]  # diff
        return d, -d, gw, None


class L1Loss(Function):
    """loss = w |x - t| reduced;  dx = g w sign(x - t) / D, dt = -dx (D = n or sum w)."""

    @staticmethod
    def forward(ctx: Context, x: Array, t: Array, weight: Array | None,
                reduction: str = "mean") -> Array:
        diff = x - t
        return _weighted_forward(ctx, ctx.xp.abs(diff), weight, reduction, ctx.xp.sign(diff))

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, Array, Array | None, None]:
        ge, gw = _weighted_backward(ctx, g)
        d = ge * ctx.saved[2]  # sign(x - t)
        return d, -d, gw, None


class SmoothL1Loss(Function):
    """loss = 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (d = x - t), reduced;
    dx = g clamp(d / beta, -1, 1) / D, dt = -dx (D = n for 'mean'). beta = 0 is l1_loss."""

    @staticmethod
    def forward(ctx: Context, x: Array, t: Array, beta: float = 1.0,
                reduction: str = "mean") -> Array:
        xp = ctx.xp
        diff = x - t
        ad = xp.abs(diff)
        if beta == 0.0:  # the quadratic zone vanishes; avoid 0 / 0
            err, slope = ad, xp.sign(diff)
        else:
            quad = ad < beta
            err = xp.where(quad, 0.5 * diff * diff / beta, ad - 0.5 * beta)
            slope = xp.where(quad, diff / beta, xp.sign(diff))
        return _weighted_forward(ctx, err.astype(x.dtype, copy=False), None, reduction,
                                 slope.astype(x.dtype, copy=False))

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, Array, None, None]:
        ge, _ = _weighted_backward(ctx, g)
        d = ge * ctx.saved[2]  # the slope of the loss at each d
        return d, -d, None, None


class BCEWithLogits(Function):
    """loss = w ((1 - t) x + l softplus(-x)), l = 1 + (pw - 1) t;
    dx = g w ((1 - t) - l sigmoid(-x)), dt = g w (-x + (pw - 1) softplus(-x)),
    dw = g loss / w, dpw = g w t softplus(-x)."""

    @staticmethod
    def forward(ctx: Context, x: Array, t: Array, weight: Array | None,
                pos_weight: Array | None, reduction: str = "mean") -> Array:
        xp = ctx.xp
        # softplus(-x) = max(-x, 0) + log1p(e^-|x|): no overflow for any x.
        sp = xp.maximum(-x, 0) + xp.log1p(xp.exp(-xp.abs(x)))
        lw = 1 if pos_weight is None else 1 + (pos_weight - 1) * t
        raw = (1 - t) * x + lw * sp
        per = raw if weight is None else raw * weight
        ctx.save_for_backward(x, t, weight, pos_weight, sp, raw, lw)
        ctx.reduction, ctx.n = reduction, per.size
        return _pointwise_finish(xp, per, reduction, x.dtype)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, ...]:
        xp = ctx.xp
        x, t, weight, pos_weight, sp, raw, lw = ctx.saved
        nx, nt, nw, npw = (ctx.needs_input_grad + (False,) * 4)[:4]
        gg = _pointwise_grad(g, ctx.reduction, ctx.n)
        gw = gg if weight is None else gg * weight
        sig_neg = xp.exp(-sp)  # = sigmoid(x); sigmoid(-x) = 1 - sigmoid(x)
        dx = gw * ((1 - t) - lw * (1 - sig_neg)) if nx else None
        dt = None
        if nt:
            dt = gw * (-x + (0 if pos_weight is None else (pos_weight - 1) * sp))
        dw = gg * raw if nw else None
        dpw = gw * t * sp if npw else None
        return dx, dt, dw, dpw, None


class BCELoss(Function):
    """loss = -w (t log x + (1 - t) log(1 - x)), logs clamped at -100 as in PyTorch;
    dx = g w (x - t) / max(x (1 - x), 1e-12), dt = g w (log(1 - x) - log x)."""

    @staticmethod
    def forward(ctx: Context, x: Array, t: Array, weight: Array | None,
                reduction: str = "mean") -> Array:
        xp = ctx.xp
        if bool(((x < 0) | (x > 1)).any()):
            raise ValueError("binary_cross_entropy: all elements of input should be between "
                             "0 and 1 (pass logits to binary_cross_entropy_with_logits)")
        with np.errstate(divide="ignore"):
            log_x = xp.maximum(xp.log(x), -100)
            log_1mx = xp.maximum(xp.log1p(-x), -100)
        raw = -(t * log_x + (1 - t) * log_1mx)
        per = raw if weight is None else raw * weight
        ctx.save_for_backward(x, t, weight, log_x, log_1mx, raw)
        ctx.reduction, ctx.n = reduction, per.size
        return _pointwise_finish(xp, per, reduction, x.dtype)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, ...]:
        xp = ctx.xp
        x, t, weight, log_x, log_1mx, raw = ctx.saved
        nx, nt, nw = (ctx.needs_input_grad + (False,) * 3)[:3]
        gg = _pointwise_grad(g, ctx.reduction, ctx.n)
        gw = gg if weight is None else gg * weight
        dx = gw * (x - t) / xp.maximum(x * (1 - x), 1e-12) if nx else None
        dt = gw * (log_1mx - log_x) if nt else None
        dw = gg * raw if nw else None
        return dx, dt, dw, None


# ---- functional forms (torch.nn.functional signatures) ----------------------------------


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  size_average: bool | None = None, ignore_index: int = -100,
                  reduce: bool | None = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy on logits (N, C, ...) with int64 class ids or float class
    probabilities as targets; one fused op (log-softmax is never a separate graph node)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got "
                         f"{label_smoothing}")
    if input.ndim == 0:
        raise ValueError("cross_entropy: input must have at least 1 dim (C,) or (N, C, ...)")
    if input.dtype.kind != "f":
        raise TypeError(f"cross_entropy: input must be floating point logits, got "
                        f"{input.dtype}")
    if target.dtype.kind == "f" and target.dtype != input.dtype:
        raise TypeError(f"cross_entropy: probability target dtype {target.dtype} differs "
                        f"from input dtype {input.dtype}")
    return CrossEntropy.apply(input, target, weight, ignore_index=int(ignore_index),
                              reduction=reduction, label_smoothing=float(label_smoothing))


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None,
             size_average: bool | None = None, ignore_index: int = -100,
             reduce: bool | None = None, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of log-probabilities (N, C, ...) at int64 class ids."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if input.ndim == 0:
        raise ValueError("nll_loss: input must have at least 1 dim (C,) or (N, C, ...)")
    return NLLLoss.apply(input, target, weight, ignore_index=int(ignore_index),
                         reduction=reduction)


def _check_same_size(op: str, input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        warnings.warn(f"{op}: target size {target.shape} differs from input size "
                      f"{input.shape}; they will be broadcast, which is likely a mistake",
                      stacklevel=3)


def _check_weight_shape(op: str, weight: Tensor | None, input: Tensor) -> None:
    if weight is not None and weight.shape != input.shape:
        raise ValueError(f"{op}: weight of shape {weight.shape} must match input of shape "
                         f"{input.shape}")


def mse_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
             reduce: bool | None = None, reduction: str = "mean",
             weight: Tensor | None = None) -> Tensor:
    """Mean squared error; `weight` (same shape as input) gives sum(w e^2) / sum(w)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_same_size("mse_loss", input, target)
    _check_weight_shape("mse_loss", weight, input)
    return MSELoss.apply(input, target, weight, reduction=reduction)


def l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
            reduce: bool | None = None, reduction: str = "mean",
            weight: Tensor | None = None) -> Tensor:
    """Mean absolute error; `weight` as in mse_loss."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_same_size("l1_loss", input, target)
    _check_weight_shape("l1_loss", weight, input)
    return L1Loss.apply(input, target, weight, reduction=reduction)


def smooth_l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,
                   reduce: bool | None = None, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """Huber-like loss: quadratic for |input - target| < beta, linear beyond (beta = 0: L1)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss does not support negative values for beta, got {beta}")
    _check_same_size("smooth_l1_loss", input, target)
    return SmoothL1Loss.apply(input, target, beta=float(beta), reduction=reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Tensor | None = None,
                                     size_average: bool | None = None,
                                     reduce: bool | None = None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """Sigmoid + binary cross-entropy in one stable op; pos_weight scales positives."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: target size {target.shape} "
                         f"must be the same as input size {input.shape}")
    return BCEWithLogits.apply(input, target, weight, pos_weight, reduction=reduction)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         size_average: bool | None = None, reduce: bool | None = None,
                         reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of probabilities in [0, 1]."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy: target size {target.shape} must be the same "
                         f"as input size {input.shape}")
    return BCELoss.apply(input, target, weight, reduction=reduction)


# ---- contrastive: NT-Xent (SimCLR, arXiv:2002.05709) ---------------------------------------


class NTXent(Function):
    """SimCLR's loss for two views z1, z2 (N, D): rows i and i+N of z = [z1; z2] are a
    positive pair and every other row in the batch is a negative.

        u = z / ||z||,  s_ij = u_i . u_j / t  (s_ii = -inf),
        L = 1/(2N) sum_i [ logsumexp_j s_ij - s_i,p(i) ]

    Backward: with P = softmax_j(s) and G = (P - onehot(p)) / (2N),
        dL/du = (G + G^T) u / t,   dL/dz = (dL/du - u (u . dL/du)) / ||z||.
    """

    @staticmethod
    def forward(ctx: Context, z1: Array, z2: Array, temperature: float, eps: float) -> Array:
        xp = ctx.xp
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(f"nt_xent: expected two (N, D) views of the same shape, got "
                             f"{tuple(z1.shape)} and {tuple(z2.shape)}")
        n = z1.shape[0]
        z = xp.concatenate([z1, z2], axis=0)  # (2N, D)
        norm = xp.sqrt((z * z).sum(axis=1, keepdims=True))  # (2N, 1)
        clamped = xp.maximum(norm, eps)
        u = z / clamped
        s = (u @ u.T) / temperature  # (2N, 2N)
        rows = xp.arange(2 * n)
        pos = (rows + n) % (2 * n)
        s[rows, rows] = -xp.inf  # a view is not its own negative
        m = s.max(axis=1, keepdims=True)
        lse = m + xp.log(xp.exp(s - m).sum(axis=1, keepdims=True))  # (2N, 1)
        loss = (lse[:, 0] - s[rows, pos]).mean()
        ctx.save_for_backward(xp.exp(s - lse), u, clamped, norm > eps, pos, temperature)
        return xp.asarray(loss, dtype=z.dtype)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, Array, None, None]:
        xp = ctx.xp
        p, u, clamped, unclamped, pos, temperature = ctx.saved
        n2 = u.shape[0]
        grad_s = p.copy()  # (2N, 2N)
        grad_s[xp.arange(n2), pos] -= 1.0
        grad_s *= g / n2
        grad_u = (grad_s + grad_s.T) @ u / temperature  # (2N, D)
        radial = u * (u * grad_u).sum(axis=1, keepdims=True)
        # Where the norm was clamped to eps, z / eps is linear in z: no projection.
        grad_z = xp.where(unclamped, grad_u - radial, grad_u) / clamped
        n = n2 // 2
        return grad_z[:n], grad_z[n:], None, None


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5, eps: float = 1e-12) -> Tensor:
    """NT-Xent loss of two (N, D) batches of projections, z1[i] and z2[i] the two views of
    example i; every other of the 2N - 2 rows is a negative. Returns a 0-d Tensor."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return NTXent.apply(z1, z2, float(temperature), float(eps))
