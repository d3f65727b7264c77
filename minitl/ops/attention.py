"""Attention and rotary position embeddings.

`scaled_dot_product_attention` (arXiv:1706.03762) is one Function, softmax(q k^T * scale +
mask) v with dropout on the weights, whose backward is written out (see its docstring): one
graph node instead of the seven a composition of transpose, matmul, mul, where, softmax,
dropout and matmul records, and no intermediate kept that the backward does not read.

On the CPU, float32 operands whose batch dims agree run the fused C++ kernels of
`backend/cpu_attention.py` (one (batch, head) per thread, the scores kept in cache from q k^T
through the softmax to the product with v); everything else (float64, CuPy, batch dims that
broadcast) runs the composition below, with the row softmax on the backend kernels
`softmax_fwd` / `softmax_bwd`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minitl import autograd_state
from minitl.backend.reference import masked_scores
from minitl.function import Context, Function
from minitl.ops.activation import dropout_scale
from minitl.ops.linalg import bmm
from minitl.tensor import Tensor
from minitl.types import Array


def _as_tensor_like(x: Any, like: Tensor) -> Tensor:
    if isinstance(x, Tensor):
        return x
    from minitl.backend import array_module

    return Tensor._wrap(array_module(like.data).asarray(x))


def _repeat_heads(x: Tensor, times: int) -> Tensor:
    """(..., H, S, E) -> (..., H * times, S, E), each head repeated `times` times in a row
    (PyTorch's repeat_interleave on dim -3, used for grouped-query attention)."""
    *lead, h, s, e = x.shape
    x = x.unsqueeze(-3).expand(*lead, h, times, s, e)
    return x.reshape(*lead, h * times, s, e)


class ScaledDotProductAttention(Function):
    """o = D(A) v with A = softmax(s q k^T + mask) and D the dropout (a 0 or 1/(1-p) scale);
    dv = D(A)^T g,  dA = D(g v^T),  dS = A (dA - sum(dA A)),  dq = s dS k,  dk = s dS^T q,
    dmask = dS (float masks). Batch dims broadcast as in matmul (gradients are summed back)."""

    @staticmethod
    def forward(ctx: Context, q: Array, k: Array, v: Array, mask: Array | None, scale: float,
                dropout_p: float) -> Array:
        xp = ctx.xp
        ctx.scale = scale
        ctx.fused = _fused_kernels(q, k, v, mask)
        if ctx.fused is not None:
            drop = None
            if dropout_p > 0.0:  # drawn as the composition draws it: one RNG stream
                drop = dropout_scale(xp, q.shape[:-1] + k.shape[-2:-1], q.dtype, dropout_p)
            # the weights (..., L, S) are written out only for a backward pass to read
            recorded = autograd_state.is_grad_enabled() and any(ctx.needs_input_grad)
            out, attn = ctx.fused.attention_fwd(q, k, v, mask, drop, scale, recorded)
            if recorded:
                ctx.save_for_backward(q, k, v, attn, drop)
            return out
        scores = bmm(ctx, q, k, trans_b=True)  # (..., L, S)
        scores *= scale
        attn = ctx.backend.softmax_fwd(masked_scores(scores, mask), True)  # masked rows: 0
        drop = None
        if dropout_p > 0.0:
            drop = dropout_scale(xp, attn.shape, attn.dtype, dropout_p)
        ctx.save_for_backward(q, k, v, attn, drop)
        return bmm(ctx, attn if drop is None else attn * drop, v)  # (..., L, Ev)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, ...]:
        q, k, v, attn, drop = ctx.saved
        nq, nk, nv, nm = (ctx.needs_input_grad + (False,))[:4]
        if ctx.fused is not None:
            dq, dk, dv, dmask = ctx.fused.attention_bwd(g, q, k, v, attn, drop, ctx.scale,
                                                        (nq, nk, nv, nm))
            return dq, dk, dv, dmask, None, None
        dv = None
        if nv:
            dv = bmm(ctx, attn if drop is None else attn * drop, g, trans_a=True)  # (.., S, Ev)
        if not (nq or nk or nm):
            return None, None, dv, None, None, None
        da = bmm(ctx, g, v, trans_b=True)  # (..., L, S)
        if drop is not None:
            da *= drop
        ds = ctx.backend.softmax_bwd(da, attn)
        dmask = ds if nm else None
        if nq or nk:
            ds = ds * ctx.scale if nm else _scale_(ds, ctx.scale)
        dq = bmm(ctx, ds, k) if nq else None
        dk = bmm(ctx, ds, q, trans_a=True) if nk else None
        return dq, dk, dv, dmask, None, None


def _fused_kernels(q: Array, k: Array, v: Array, mask: Array | None) -> Any:
    """backend/cpu_attention.py when its C++ kernels take these operands and passed their
    self-check (and MINITL_KERNELS does not force the references), else None. They are
    CPU-only, so the op asks for them here rather than through the backend's kernel table,
    whose every entry also has a CUDA path."""
    from minitl.backend import cpu, cpu_attention, kernel_mode

    if kernel_mode() == "reference" or not cpu_attention.native_ok(q, k, v, mask):
        return None
    return cpu_attention if "attention_fwd" in cpu.native_kernels() else None


def _scale_(a: Array, s: float) -> Array:
    a *= s
    return a


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Any = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """softmax(q k^T * scale + mask) v over (..., L, E) queries and (..., S, E) keys.

    attn_mask: bool (True = take part in attention) or float (added to the scores), any
    shape that broadcasts to (..., L, S). is_causal masks keys after each query position
    (the upper-left triangle of an (L, S) grid) and excludes attn_mask. dropout_p drops
    attention weights (the caller passes 0 in eval mode, as with PyTorch).

    A query row whose keys are all masked out returns zeros (and gets zero gradient),
    matching PyTorch 2.5+ instead of NaN.
    """
    if query.ndim < 2 or key.ndim < 2 or value.ndim < 2:
        raise ValueError(f"scaled_dot_product_attention: q, k, v need (..., L, E) shapes, got "
                         f"{query.shape}, {key.shape}, {value.shape}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: query {query.shape}, key {key.shape} "
                         f"and value {value.shape} do not fit (need q/k to share E and k/v "
                         f"to share S)")
    for name, t in (("key", key), ("value", value)):
        if t.dtype != query.dtype:
            raise TypeError(f"scaled_dot_product_attention: {name} dtype {t.dtype} differs "
                            f"from query dtype {query.dtype}")
    if enable_gqa and query.ndim >= 3 and key.shape[-3] != query.shape[-3]:
        hq, hk = query.shape[-3], key.shape[-3]
        if hq % hk or value.shape[-3] != hk:
            raise ValueError(f"scaled_dot_product_attention: {hq} query heads are not a "
                             f"multiple of {hk} key/value heads")
        key, value = _repeat_heads(key, hq // hk), _repeat_heads(value, hq // hk)
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout: probability has to be between 0 and 1, but got {dropout_p}")
    length, source = query.shape[-2], key.shape[-2]
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    mask: Tensor | None = None
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: pass either attn_mask or "
                             "is_causal=True, not both")
        mask = _as_tensor_like(np.tril(np.ones((length, source), dtype=bool)), query)
    elif attn_mask is not None:
        mask = _as_tensor_like(attn_mask, query)
        if mask.dtype != np.bool_ and mask.dtype != query.dtype:
            raise TypeError(f"scaled_dot_product_attention: attn_mask must be bool or "
                            f"{query.dtype}, got {mask.dtype}")
    return ScaledDotProductAttention.apply(query, key, value, mask, s, float(dropout_p))


class Rotary(Function):
    """RoPE (Su et al., arXiv:2104.09864) in Hugging Face's half-split layout:
    y = x cos + rot(x) sin with rot(x) = cat(-x2, x1) over the last dim (x1, x2 its halves);
    dx = g cos + rot^T(g sin) with rot^T(z) = cat(z2, -z1). cos and sin are constants."""

    @staticmethod
    def forward(ctx: Context, x: Array, cos: Array, sin: Array) -> Array:
        h = x.shape[-1] // 2
        y = x * cos  # (..., T, D)
        y[..., :h] -= x[..., h:] * sin[..., :h]
        y[..., h:] += x[..., :h] * sin[..., h:]
        ctx.save_for_backward(cos, sin)
        return y

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None]:
        cos, sin = ctx.saved
        h = g.shape[-1] // 2
        gs = g * sin
        dx = g * cos
        dx[..., :h] += gs[..., h:]
        dx[..., h:] -= gs[..., :h]
        return dx, None, None


def apply_rotary_emb(x: Tensor, cos: Any, sin: Any) -> Tensor:
    """Rotate the pairs (x[i], x[i + D/2]) of the last dim of x (..., T, D) by the angles whose
    cos and sin (T, D) arrays (or Tensors) are given, as Hugging Face's apply_rotary_pos_emb."""
    c = cos.data if isinstance(cos, Tensor) else cos
    s = sin.data if isinstance(sin, Tensor) else sin
    if x.ndim < 2 or x.shape[-1] % 2 or tuple(c.shape) != tuple(s.shape) \
            or tuple(c.shape) != tuple(x.shape[-2:]):
        raise ValueError(f"apply_rotary_emb: x {tuple(x.shape)} needs an even last dim and cos/"
                         f"sin of shape (T, D) = {tuple(x.shape[-2:])}, got {tuple(c.shape)} and "
                         f"{tuple(s.shape)}")
    return Rotary.apply(x, c.astype(x.dtype, copy=False), s.astype(x.dtype, copy=False))
