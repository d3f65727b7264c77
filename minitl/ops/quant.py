"""Linear maps and lookups over frozen weights kept in ggml's quantized blocks (Q4_0, Q4_1,
Q8_0, and the F16/F32 rows of a GGUF file), the base of QLoRA (Dettmers et al.,
arXiv:2305.14314): the weight stays in 4 or 8 bits, only the input gradient flows back.

`QuantLinear` is one Function whose forward and input gradient are the backend kernels
`quant_linear_fwd` / `quant_linear_bwd`: on the CPU a C++ dequantize-GEMM (csrc/cpu/qgemm.cpp)
that never forms the float weight, with the numpy reference (dequantize, then matmul) in
backend/reference.py. `quant_embedding` gathers the rows of ids and dequantizes only those.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minitl.function import Context, Function
from minitl.tensor import Tensor
from minitl.types import Array

__all__ = ["QuantLinear", "QuantLoRALinear", "quant_embedding", "quant_linear",
           "quant_lora_linear", "quant_rows_in_features"]


def quant_rows_in_features(q: Array, qtype: int) -> int:
    """Values per row of a block array q (rows, row_bytes) of ggml type `qtype`."""
    from minitl.backend.reference import QUANT_BLOCKS

    if int(qtype) not in QUANT_BLOCKS:
        raise ValueError(f"ggml type {qtype} is not a type quantized layers take (ids "
                         f"{sorted(QUANT_BLOCKS)}: F32, F16, Q4_0, Q4_1, Q8_0, BF16)")
    size, nbytes = QUANT_BLOCKS[int(qtype)]
    if q.ndim != 2 or q.dtype != np.uint8 or q.shape[1] % nbytes:
        raise ValueError(f"quantized weight must be uint8 (rows, k * {nbytes}) for ggml type "
                         f"{qtype}, got {q.dtype} {tuple(q.shape)}")
    return q.shape[1] // nbytes * size


class QuantLinear(Function):
    """y = x W^T + b with W the dequantized blocks q (never formed by the native kernel);
    dx = g W, db = sum g. W is frozen: it has no gradient."""

    @staticmethod
    def forward(ctx: Context, x: Array, q: Array, qtype: int, bias: Array | None) -> Array:
        din = quant_rows_in_features(q, qtype)
        if x.ndim == 0 or x.shape[-1] != din:
            raise ValueError(f"quant_linear: input {tuple(x.shape)} does not end in the weight's "
                             f"{din} input features")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, din)  # (N, Din)
        y = ctx.backend.quant_linear_fwd(x2, q, int(qtype), bias)
        ctx.save_for_backward(q)
        ctx.lead, ctx.qtype, ctx.din = lead, int(qtype), din
        return y.reshape(*lead, q.shape[0])

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, None, None, Array | None]:
        (q,) = ctx.saved
        nx, _, _, nb = (ctx.needs_input_grad + (False,) * 4)[:4]
        g2 = g.reshape(-1, q.shape[0])  # (N, Dout)
        dx = None
        if nx:
            dx = ctx.backend.quant_linear_bwd(g2, q, ctx.qtype).reshape(*ctx.lead, ctx.din)
        db = g2.sum(axis=0) if nb else None
        return dx, None, None, db


def quant_linear(x: Tensor, q: Any, qtype: int, bias: Tensor | None = None) -> Tensor:
    """x W^T + b over the quantized weight q (rows, row_bytes) uint8 (an array or a Tensor)."""
    if x.dtype.kind != "f":
        raise TypeError(f"quant_linear: expected a floating point input, got {x.dtype}")
    return QuantLinear.apply(x, q.data if isinstance(q, Tensor) else q, int(qtype), bias)


class QuantLoRALinear(Function):
    """QLoRA's layer in one op: y = x W^T + b + s (x A^T) B^T with W the quantized blocks;
    dx = g W + s (g B) A, db = sum g, dA = s (g B)^T x, dB = s g^T (x A^T); W is frozen.
    The native kernel adds the low-rank terms inside the dequantize-GEMM (csrc/cpu/lora.cpp)."""

    @staticmethod
    def forward(ctx: Context, x: Array, q: Array, qtype: int, b: Array | None, a: Array,
                bm: Array, scale: float) -> Array:
        din = quant_rows_in_features(q, qtype)
        dout, r = q.shape[0], a.shape[0]
        if x.ndim == 0 or x.shape[-1] != din or a.shape != (r, din) or bm.shape != (dout, r):
            raise ValueError(f"quant_lora_linear: shapes do not fit: x {tuple(x.shape)}, weight "
                             f"({dout}, {din}), lora_A {tuple(a.shape)}, lora_B "
                             f"{tuple(bm.shape)} (need lora_A (r, in), lora_B (out, r))")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, din)  # (N, Din)
        y, xa = ctx.backend.quant_lora_linear_fwd(x2, q, int(qtype), b, a, bm, scale)
        ctx.save_for_backward(x2, q, a, bm, xa)
        ctx.lead, ctx.qtype, ctx.scale = lead, int(qtype), scale
        return y.reshape(*lead, dout)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array | None, ...]:
        x2, q, a, bm, xa = ctx.saved
        nx, _, _, nb, na, nbm = (ctx.needs_input_grad + (False,) * 6)[:6]
        g2 = g.reshape(-1, q.shape[0])  # (N, Dout)
        dx, db, da, dbm = ctx.backend.quant_lora_linear_bwd(
            g2, x2, q, ctx.qtype, a, bm, xa, ctx.scale, (nx, nb, na, nbm))
        if dx is not None:
            dx = dx.reshape(*ctx.lead, x2.shape[1])
        return dx, None, None, db, da, dbm, None


def quant_lora_linear(x: Tensor, q: Any, qtype: int, bias: Tensor | None, lora_A: Tensor,
                      lora_B: Tensor, scale: float) -> Tensor:
    """x W^T + b + scale (x A^T) B^T over quantized blocks q, in one fused op."""
    if x.dtype.kind != "f":
        raise TypeError(f"quant_lora_linear: expected a floating point input, got {x.dtype}")
    return QuantLoRALinear.apply(x, q.data if isinstance(q, Tensor) else q, int(qtype), bias,
                                 lora_A, lora_B, float(scale))


def quant_embedding(ids: Any, q: Any, qtype: int) -> Tensor:
    """Rows `ids` (any shape, int) of the quantized table q, dequantized: (*ids.shape, dim).
    The table is frozen, so the result needs no gradient."""
    from minitl.backend import get_backend
    from minitl.backend.guards import check_indices

    raw = q.data if isinstance(q, Tensor) else q
    idx = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got {idx.dtype}")
    din = quant_rows_in_features(raw, qtype)
    check_indices("embedding", idx, raw.shape[0], "embeddings")
    rows = get_backend("cpu").dequantize_rows(raw, int(qtype), idx.reshape(-1))
    return Tensor._wrap(rows.reshape(*idx.shape, din))
