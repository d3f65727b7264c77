"""Scaled dot-product attention as two whole kernels: the C++ version (csrc/cpu/attention.cpp,
one (batch, head) per thread, scores kept in cache from q k^T to the product with v) and its
numpy reference (the same formulas over whole arrays).

Both take q (..., L, E), k (..., S, E), v (..., S, Ev) with equal batch dims, an optional
mask (bool: True attends; float: added to the scores) that broadcasts to (..., L, S), an
optional dropout scale `drop` (..., L, S) and the score scale. The forward returns the output
(..., L, Ev) and the attention weights p (..., L, S), which backward reads. The op
(minitl/ops/attention.py) calls these directly: they are CPU-only, so they are not backend
kernels (every name there also has a CUDA path).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minitl.backend import reference
from minitl.backend.cpu import all_close, float32_draws, native_module

KERNELS = ("attention_fwd", "attention_bwd")
Needs = tuple[bool, bool, bool, bool]


def attention_fwd_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Any,
                            drop: Any, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """o = (p drop) v with p = softmax(scale q k^T + mask), a fully masked row giving zeros."""
    scores = np.matmul(q, np.swapaxes(k, -1, -2))
    scores *= scale
    p = reference.softmax_fwd(reference.masked_scores(scores, mask), True)
    return np.matmul(p if drop is None else p * drop, v), p


def attention_bwd_reference(g: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                            p: np.ndarray, drop: Any, scale: float, needs: Needs
                            ) -> tuple[Any, Any, Any, Any]:
    """(dq, dk, dv, dmask): dv = (p drop)^T g, ds = softmax_bwd(drop (g v^T), p),
    dq = scale ds k, dk = scale ds^T q, dmask = ds; one not needed is None."""
    nq, nk, nv, nm = needs
    dv = np.matmul(np.swapaxes(p if drop is None else p * drop, -1, -2), g) if nv else None
    if not (nq or nk or nm):
        return None, None, dv, None
    da = np.matmul(g, np.swapaxes(v, -1, -2))
    if drop is not None:
        da *= drop
    ds = reference.softmax_bwd(da, p)
    dmask = ds if nm else None
    ds = ds * scale
    dq = np.matmul(ds, k) if nq else None
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) if nk else None
    return dq, dk, dv, dmask


def native_ok(q: Any, k: Any, v: Any, mask: Any) -> bool:
    """Whether the C++ kernels take these operands: float32 numpy arrays in native byte order
    with equal batch dims, and a bool or float32 mask that broadcasts to (..., L, S) without
    widening the batch."""
    if native_module() is None:
        return False
    for x in (q, k, v):
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not x.dtype.isnative:
            return False
    if q.ndim < 2 or not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        return False
    if mask is None:
        return True
    if not isinstance(mask, np.ndarray) or not (mask.dtype == np.bool_
                                                or (mask.dtype == np.float32
                                                    and mask.dtype.isnative)):
        return False
    scores = q.shape[:-1] + k.shape[-2:-1]
    try:
        return np.broadcast_shapes(mask.shape, scores) == scores
    except ValueError:
        return False


def _heads(x: np.ndarray) -> np.ndarray:
    """(..., M, N) -> (H, M, N), C-contiguous (H spelled out: -1 is ambiguous for empty x)."""
    return np.ascontiguousarray(x).reshape((math.prod(x.shape[:-2]),) + x.shape[-2:])


def _mask_operand(mask: np.ndarray, scores: tuple[int, ...]) -> np.ndarray:
    """The mask as the kernel's (M, rows, S) slices: the batch dims it varies over lead (each
    slice then serves the prod(rest) heads after it, so a (N, 1, 1, S) padding mask stays
    N x S), rows is 1 when one row serves every query; only dims broadcast between varying
    ones, and a broadcast S, are materialised."""
    lead, source = scores[:-2], scores[-1]
    shape = (1,) * (len(scores) - mask.ndim) + mask.shape
    varying = max((i + 1 for i, d in enumerate(shape[:-2]) if d != 1), default=0)
    rows = shape[-2]  # 1 or L: broadcast_shapes in native_ok allowed nothing else
    target = lead[:varying] + (1,) * (len(lead) - varying) + (rows, source)
    slices = np.broadcast_to(mask.reshape(shape), target)
    return np.ascontiguousarray(slices).reshape((math.prod(lead[:varying]), rows, source))


def attention_fwd(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Any, drop: Any,
                  scale: float, need_weights: bool = True) -> tuple[np.ndarray, Any]:
    """(o, p) on the C++ kernel when `native_ok`, else on the numpy reference; without
    need_weights (no backward to follow) the kernel keeps p to itself and returns None."""
    mod = native_module()
    if mod is None or not native_ok(q, k, v, mask) \
            or (drop is not None and drop.dtype != np.float32):
        return attention_fwd_reference(q, k, v, mask, drop, scale)
    lead, scores = q.shape[:-2], q.shape[:-1] + k.shape[-2:-1]
    m = None if mask is None else _mask_operand(mask, scores)
    dr = None if drop is None else _heads(drop)
    o, p = mod.attention_fwd(_heads(q), _heads(k), _heads(v), m, dr, float(scale),
                             bool(need_weights))
    return o.reshape(lead + o.shape[1:]), None if p is None else p.reshape(scores)


def attention_bwd(g: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, p: np.ndarray,
                  drop: Any, scale: float, needs: Needs) -> tuple[Any, Any, Any, Any]:
    """(dq, dk, dv, dmask) of attention_fwd on the C++ kernel (the reference for operands it
    does not take); dmask has p's shape, one not needed is None."""
    mod = native_module()
    if mod is None or not native_ok(q, k, v, None) or not native_ok(g, k, v, None) \
            or p.dtype != np.float32 or (drop is not None and drop.dtype != np.float32):
        return attention_bwd_reference(g, q, k, v, p, drop, scale, needs)
    lead = q.shape[:-2]
    dr = None if drop is None else _heads(drop)
    grads = mod.attention_bwd(_heads(g), _heads(q), _heads(k), _heads(v), _heads(p), dr,
                              float(scale), tuple(bool(n) for n in needs))
    return tuple(None if d is None else d.reshape(lead + d.shape[1:])  # type: ignore[return-value]
                 for d in grads)


def self_check() -> dict[str, bool]:
    """Native against reference on a float mask shared by the heads, a bool mask per head with
    a fully masked row, and dropout, at sizes that cut the register tiles (ms)."""
    rng = np.random.default_rng(0)

    rand, close = float32_draws(rng), all_close

    q, k, v, g = rand(2, 3, 13, 5), rand(2, 3, 17, 5), rand(2, 3, 17, 7), rand(2, 3, 13, 7)
    keep = rng.random((2, 3, 13, 17)) < 0.7
    keep[0, 1, 4] = False
    drop = (rng.random((2, 3, 13, 17)) < 0.8).astype(np.float32) / np.float32(0.8)
    ok_f, ok_b = True, True
    needs = (True, True, True, True)
    for mask, dr in ((rand(13, 17), None), (keep, None), (None, drop)):
        o, p = attention_fwd(q, k, v, mask, dr, 0.3)
        want = attention_fwd_reference(q, k, v, mask, dr, 0.3)
        ok_f &= close((o, p), want)
        ok_b &= close(attention_bwd(g, q, k, v, p, dr, 0.3, needs),
                      attention_bwd_reference(g, q, k, v, want[1], dr, 0.3, needs))
    return {"attention_fwd": bool(ok_f), "attention_bwd": bool(ok_b)}
