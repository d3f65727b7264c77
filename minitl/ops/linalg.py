"""Matrix products: batched broadcasting `matmul`, the `linear` layer op and its LoRA form.

Every product goes through `bmm`, the one batched-matmul path (attention uses it too): 2-D
products and a batch times one matrix go to `backend.gemm`, batches of products of useful
size to `backend.gemm_batched`, so on the CPU a training step stays in minitl's C++ kernels
and one OpenMP pool; numpy's matmul would wake multithreaded OpenBLAS, whose spinning pool
fights the OpenMP one on a small machine. Only tiny products take the array module's matmul.

`FusedLoRALinear` (arXiv:2106.09685; the op behind the module `transfer.lora.LoRALinear`) is
one Function, y = x W^T + b + scale (x A^T) B^T, whose forward and backward are backend kernels
(`lora_linear_fwd` / `lora_linear_bwd`), so the low-rank path never materializes B A.
"""

from __future__ import annotations

from typing import Any

from minitl.function import Context, Function
from minitl.tensor import Tensor, _operand
from minitl.types import Array

GEMM_MIN = 1 << 15  # multiply-adds per matrix below which the array module's matmul is cheaper


def bmm(ctx: Context, a: Array, b: Array, trans_a: bool = False, trans_b: bool = False
        ) -> Array:
    """op(a) @ op(b), batch dims broadcast as numpy does, on the backend's kernels."""
    xp = ctx.xp
    m, k = (a.shape[-1], a.shape[-2]) if trans_a else (a.shape[-2], a.shape[-1])
    n = b.shape[-2] if trans_b else b.shape[-1]
    if a.ndim == 2 and b.ndim == 2:
        return ctx.backend.gemm(a, b, trans_a, trans_b)
    if b.ndim == 2 and not trans_a:  # (..., m, k) @ W: one product of (... m, k) rows
        lead = a.shape[:-2]
        a2 = xp.ascontiguousarray(a).reshape(-1, k)
        return ctx.backend.gemm(a2, b, False, trans_b).reshape(lead + (m, n))
    lead = tuple(int(d) for d in _broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    if m * n * k < GEMM_MIN:
        return xp.matmul(xp.swapaxes(a, -1, -2) if trans_a else a,
                         xp.swapaxes(b, -1, -2) if trans_b else b)
    a3 = xp.broadcast_to(a, lead + a.shape[-2:]).reshape((-1,) + a.shape[-2:])
    b3 = xp.broadcast_to(b, lead + b.shape[-2:]).reshape((-1,) + b.shape[-2:])
    return ctx.backend.gemm_batched(a3, b3, trans_a, trans_b).reshape(lead + (m, n))


def _broadcast_shapes(sa: tuple[int, ...], sb: tuple[int, ...]) -> tuple[int, ...]:
    n = max(len(sa), len(sb))
    sa, sb = (1,) * (n - len(sa)) + tuple(sa), (1,) * (n - len(sb)) + tuple(sb)
    return tuple(max(x, y) if min(x, y) != 0 else 0 for x, y in zip(sa, sb))


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
        return bmm(ctx, a, b)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, Array | None]:
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        ga = bmm(ctx, g, b, trans_b=True) if na else None
        if nb and b.ndim == 2 and a.ndim > 2:  # W's gradient sums over the batch: one GEMM
            xp = ctx.xp
            k, n = b.shape
            a2 = xp.broadcast_to(a, g.shape[:-2] + a.shape[-2:]).reshape(-1, k)
            return ga, ctx.backend.gemm(a2, xp.ascontiguousarray(g).reshape(-1, n),
                                        trans_a=True)
        return ga, (bmm(ctx, a, g, trans_a=True) if nb else None)


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


class FusedLoRALinear(Function):
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
    return FusedLoRALinear.apply(x, weight, bias, lora_A, lora_B, float(scale))
