"""Matrix products: batched broadcasting `matmul` and the fused `linear` layer op.

2-D float products go through `backend.gemm`, the kernel the native backends
replace; batched products use the array module's matmul.
"""

from __future__ import annotations

from typing import Any

from minitl.function import Context, Function
from minitl.tensor import Tensor, _operand

Array = Any


def _batched_operand(xp: Any, x: Array) -> Array:
    """numpy's batched matmul calls BLAS only when each matrix is a plain or transposed
    contiguous block; a permuted view (attention heads split from (B, T, h, hs)) would take a
    scalar loop ~20x slower, so such views are copied once."""
    if x.flags.c_contiguous or xp.swapaxes(x, -1, -2).flags.c_contiguous:
        return x
    return xp.ascontiguousarray(x)


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def check_matmul_shapes(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    """PyTorch's errors for operands that cannot be multiplied, naming both shapes (numpy's
    own message speaks of "remapped shapes" and gufunc signatures)."""
    ka, kb = sa[-1], sb[-2] if len(sb) > 1 else sb[0]
    if len(sa) <= 2 and len(sb) <= 2:
        if ka != kb:
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({_dims(sa)} and "
                               f"{_dims(sb)}): matmul of shapes {sa} and {sb}")
        return
    ba, bb = sa[:-2], sb[:-2]
    n = max(len(ba), len(bb))
    for i, (x, y) in enumerate(zip(reversed(ba), reversed(bb))):
        if x != y and x != 1 and y != 1:
            raise RuntimeError(f"matmul: the batch dims of shapes {sa} and {sb} do not "
                               f"broadcast: the size of tensor a ({x}) must match the size of "
                               f"tensor b ({y}) at non-singleton dimension {n - 1 - i}")
    if ka != kb:
        raise RuntimeError(f"matmul: shapes {sa} and {sb} cannot be multiplied: batched "
                           f"matrices ...x{ka} and {kb}x... (the last dim of the first operand "
                           f"must equal the second-to-last of the second)")


class MatMul(Function):
    """z = a @ b over broadcast batch dims;  da = g b^T, db = a^T g."""

    @staticmethod
    def forward(ctx: Context, a: Array, b: Array) -> Array:
        check_matmul_shapes(tuple(a.shape), tuple(b.shape))
        if a.dtype != b.dtype:
            raise RuntimeError(f"matmul: expected both operands to have the same dtype, got "
                               f"{a.dtype} and {b.dtype}")
        ctx.save_for_backward(a, b)
        if a.ndim == 2 and b.ndim == 2:
            return ctx.backend.gemm(a, b)
        xp = ctx.xp
        a, b = _batched_operand(xp, a), _batched_operand(xp, b)
        ctx.save_for_backward(a, b)
        return xp.matmul(a, b)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, Array | None]:
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        if a.ndim == 2 and b.ndim == 2:
            gemm = ctx.backend.gemm
            return (gemm(g, b, trans_b=True) if na else None,
                    gemm(a, g, trans_a=True) if nb else None)
        xp = ctx.xp
        ga = xp.matmul(g, xp.swapaxes(b, -1, -2)) if na else None
        gb = xp.matmul(xp.swapaxes(a, -1, -2), g) if nb else None
        return ga, gb


def matmul(a: Any, b: Any) -> Tensor:
    """PyTorch's matmul rules, including 1-D operands (promoted, then squeezed)."""
    if not isinstance(a, Tensor):
        a = _operand(a, b)
    if not isinstance(b, Tensor):
        b = _operand(b, a)
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(f"matmul: both arguments need at least 1 dim, got shapes "
                           f"{a.shape} and {b.shape}")
    check_matmul_shapes(a.shape, b.shape)
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = a.unsqueeze(0)
    if squeeze_b:
        b = b.unsqueeze(-1)
    out = MatMul.apply(a, b)
    if squeeze_a and squeeze_b:
        return out.reshape(out.shape[:-2])
    if squeeze_a:
        return out.squeeze(-2)
    if squeeze_b:
        return out.squeeze(-1)
    return out


class Linear(Function):
    """y = x W^T + b over any leading dims;  dx = g W, dW = g^T x, db = sum g."""

    @staticmethod
    def forward(ctx: Context, x: Array, w: Array, b: Array | None = None) -> Array:
        if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1]:
            raise RuntimeError(f"linear: input of shape {tuple(x.shape)} does not match weight "
                               f"of shape {tuple(w.shape)} (expected last dim {w.shape[-1]})")
        if b is not None and b.shape != (w.shape[0],):
            raise RuntimeError(f"linear: bias of shape {tuple(b.shape)} does not match weight "
                               f"of shape {tuple(w.shape)}")
        if x.dtype != w.dtype:
            raise RuntimeError(f"linear: input dtype {x.dtype} does not match weight dtype "
                               f"{w.dtype}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        y = ctx.backend.gemm(x2, w, trans_b=True)  # (N, out)
        if b is not None:
            y += b
        ctx.save_for_backward(x2, w)
        ctx.lead = lead
        return y.reshape(*lead, w.shape[0])

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, ...]:
        x2, w = ctx.saved
        nx, nw, nb = (ctx.needs_input_grad + (False,))[:3]
        g2 = g.reshape(-1, w.shape[0])  # (N, out)
        gemm = ctx.backend.gemm
        dx = gemm(g2, w).reshape(*ctx.lead, w.shape[1]) if nx else None
        dw = gemm(g2, x2, trans_a=True) if nw else None
        db = g2.sum(axis=0) if nb else None
        return dx, dw, db


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, bias)

