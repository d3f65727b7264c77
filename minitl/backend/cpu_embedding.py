"""Wrappers of the embedding kernels of the native extension (csrc/cpu/embedding.cpp).

`embedding_bwd` is the gradient of a lookup W[ids]: a zeroed (N, D) table (np.zeros, whose
pages the OS maps in only where a row lands) plus a scatter-add of the M gradient rows,
threads splitting the columns. The ids are checked on a private int64 copy before the kernel
reads them (`guards.checked_indices`), and the kernel checks them again before any write.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minitl.backend import reference
from minitl.backend.cpu import native_module
from minitl.backend.guards import check_length, checked_indices, require_float
from minitl.types import Array

KERNELS: tuple[str, ...] = ("embedding_bwd",)


def embedding_bwd(g: Array, ids: Array, num_embeddings: int, padding_idx: int | None,
                  scale_grad_by_freq: bool) -> Array:
    """dW (N, D) of a lookup W[ids] on the C++ kernel for float32 g (M, D); anything else
    (float64, a padding_idx outside [-N, N)) goes to the numpy reference."""
    mod = native_module()
    n = int(num_embeddings)
    if mod is None or not isinstance(g, np.ndarray) or g.dtype != np.float32 \
            or not g.dtype.isnative or g.ndim != 2 \
            or (padding_idx is not None and not -n <= padding_idx < n):
        return reference.embedding_bwd(g, ids, num_embeddings, padding_idx, scale_grad_by_freq)
    require_float("embedding_bwd", g)
    check_length("embedding_bwd", "ids", ids, g.shape[0])
    own = checked_indices("embedding_bwd", ids, n, "embeddings", backward=True)
    dw = np.zeros((n, g.shape[1]), dtype=np.float32)
    mod.embedding_bwd(np.ascontiguousarray(g), own, dw,
                      None if padding_idx is None else padding_idx % n, bool(scale_grad_by_freq))
    return dw


def self_check() -> dict[str, bool]:
    """Against the reference with repeated ids, the padding row and both count modes, at a
    width (37) that cuts the SIMD width."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal((29, 37)).astype(np.float32)
    ids = rng.integers(0, 11, 29)
    ok = True
    for pad, by_freq in ((None, False), (3, True), (-1, False)):
        got: Any = embedding_bwd(g, ids, 11, pad, by_freq)
        ok &= bool(np.allclose(got, reference.embedding_bwd(g, ids, 11, pad, by_freq),
                               rtol=1e-6, atol=1e-6))
    return {"embedding_bwd": ok}
