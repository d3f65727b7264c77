"""Attention and the fused LoRA linear layer.

`scaled_dot_product_attention` (arXiv:1706.03762) is composed from existing ops (matmul,
where, the stable Softmax, dropout), so its backward comes for free and reads like the
formula: softmax(q k^T * scale + mask) v. `LoRALinear` (arXiv:2106.09685) is one Function,
y = x W^T + b + scale (x A^T) B^T, whose forward and backward are backend kernels
(`lora_linear_fwd` / `lora_linear_bwd`), so the low-rank path never materializes B A.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minitl.function import Context, Function
from minitl.ops.activation import Softmax, dropout
from minitl.ops.elementwise import Where
from minitl.tensor import Tensor

Array = Any


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
    length, source = query.shape[-2], key.shape[-2]
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    scores = (query @ key.transpose(-2, -1)) * s  # (..., L, S)
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: pass either attn_mask or "
                             "is_causal=True, not both")
        keep = np.tril(np.ones((length, source), dtype=bool))
        attn_mask = _as_tensor_like(keep, query)
    if attn_mask is not None:
        mask = _as_tensor_like(attn_mask, query)
        if mask.dtype == np.bool_:
            scores = Where.apply(mask, scores, -math.inf)
        elif mask.dtype == query.dtype:
            scores = scores + mask
        else:
            raise TypeError(f"scaled_dot_product_attention: attn_mask must be bool or "
                            f"{query.dtype}, got {mask.dtype}")
    attn = Softmax.apply(scores, -1, safe=True)
    if dropout_p > 0.0:
        attn = dropout(attn, dropout_p, training=True)
    return attn @ value  # (..., L, Ev)


class LoRALinear(Function):
    """y = x W^T + b + s (x A^T) B^T;  dx = g W + s (g B) A, dW = g^T x, db = sum g,
    dA = s (g B)^T x, dB = s g^T (x A^T)."""

    @staticmethod
    def forward(ctx: Context, x: Array, w: Array, b: Array | None, a: Array, bm: Array,
                scale: float) -> Array:
        dout, din = w.shape
        r = a.shape[0]
        if (x.ndim == 0 or x.shape[-1] != din or a.shape != (r, din) or bm.shape != (dout, r)
                or (b is not None and b.shape != (dout,))):
            raise ValueError(
                f"lora_linear: shapes do not fit: x {tuple(x.shape)}, weight {tuple(w.shape)}, "
                f"bias {None if b is None else tuple(b.shape)}, lora_A {tuple(a.shape)}, "
                f"lora_B {tuple(bm.shape)} (need weight (out, in), lora_A (r, in), "
                f"lora_B (out, r))")
        for name, t in (("weight", w), ("bias", b), ("lora_A", a), ("lora_B", bm)):
            if t is not None and t.dtype != x.dtype:
                raise TypeError(f"lora_linear: {name} dtype {t.dtype} differs from input "
                                f"dtype {x.dtype}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, din)  # (N, Din)
        y, xa = ctx.backend.lora_linear_fwd(x2, w, b, a, bm, scale)
        ctx.save_for_backward(x2, w, a, bm, xa)
        ctx.lead, ctx.scale = lead, scale
        return y.reshape(*lead, dout)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, ...]:
        x2, w, a, bm, xa = ctx.saved
        needs = (ctx.needs_input_grad + (False,) * 5)[:5]
        g2 = g.reshape(-1, w.shape[0])  # (N, Dout)
        dx, dw, db, da, dbm = ctx.backend.lora_linear_bwd(g2, x2, w, a, bm, xa, ctx.scale,
                                                          needs)
        if dx is not None:
            dx = dx.reshape(*ctx.lead, w.shape[1])
        return dx, dw, db, da, dbm, None


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor,
                lora_B: Tensor, scale: float) -> Tensor:
    """x W^T + b + scale (x A^T) B^T in one fused op; gradients only where required
    (a frozen W costs no dW)."""
    return LoRALinear.apply(x, weight, bias, lora_A, lora_B, float(scale))
