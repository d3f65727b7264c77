"""numpy reference kernels: the definition every native kernel is tested against.

They are written for clarity and work unchanged on CuPy arrays (they only use
array methods and `array_module`). Shapes follow the kernels in csrc/.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any


def _xp(a: Array) -> Any:
    from minitl.backend import array_module

    return array_module(a)


def gemm(a: Array, b: Array, trans_a: bool = False, trans_b: bool = False) -> Array:
    """C = op(A) @ op(B) for 2-D arrays; op is the identity or a transpose."""
    return (a.T if trans_a else a) @ (b.T if trans_b else b)


# ---- LoRA linear -------------------------------------------------------------------
# y = x W^T + b + s (x A^T) B^T with x (N, Din), W (Dout, Din), A (r, Din), B (Dout, r).


def lora_linear_fwd(x: Array, w: Array, b: Array | None, a: Array, bm: Array,
                    scale: float) -> tuple[Array, Array]:
    """Returns (y, xa) where xa = x A^T (N, r) is kept for the backward pass."""
    xa = x @ a.T  # (N, r)
    y = x @ w.T + (scale * xa) @ bm.T  # (N, Dout)
    if b is not None:
        y += b
    return y, xa


def lora_linear_bwd(g: Array, x: Array, w: Array, a: Array, bm: Array, xa: Array,
                    scale: float, needs: tuple[bool, bool, bool, bool, bool]
                    ) -> tuple[Array | None, ...]:
    """Gradients (dx, dW, db, dA, dB); `needs` says which of them to compute.

    dB = s g^T (x A^T),  dA = s (g B)^T x,  dx = g W + s (g B) A,  dW = g^T x,  db = sum g.
    """
    need_x, need_w, need_b, need_a, need_bm = needs
    gb = g @ bm  # (N, r); cheap next to the (N, D) products
    dx = g @ w + scale * (gb @ a) if need_x else None
    dw = g.T @ x if need_w else None
    db = g.sum(axis=0) if need_b else None
    da = scale * (gb.T @ x) if need_a else None
    dbm = scale * (g.T @ xa) if need_bm else None
    return dx, dw, db, da, dbm


# ---- im2col / col2im ---------------------------------------------------------------


def conv_out_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def im2col(x: Array, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int],
           dilation: tuple[int, int]) -> Array:
    """(N, C, H, W) -> (N, C, kh, kw, OH, OW), a contiguous copy of every receptive field."""
    xp = _xp(x)
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = conv_out_size(h, kh, sh, ph, dh)
    ow = conv_out_size(w, kw, sw, pw, dw)
    if ph or pw:
        x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            cols[:, :, i, j] = x[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw]
    return cols


def col2im(cols: Array, x_shape: tuple[int, int, int, int], stride: tuple[int, int],
           padding: tuple[int, int], dilation: tuple[int, int]) -> Array:
    """Adjoint of im2col: scatter-add (N, C, kh, kw, OH, OW) back onto (N, C, H, W)."""
    xp = _xp(cols)
    n, c, h, w = x_shape
    _, _, kh, kw, oh, ow = cols.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            out[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw] += cols[:, :, i, j]
    return out[:, :, ph:ph + h, pw:pw + w] if (ph or pw) else out


__all__ = ["gemm", "lora_linear_fwd", "lora_linear_bwd", "im2col", "col2im", "conv_out_size",
           "np"]
