"""Index-based ops: embedding lookup (with scatter-add backward and padding_idx) and one_hot.

The gradient of a lookup is a scatter-add: every occurrence of id j adds its output gradient
to row j, so repeated ids accumulate. It is the backend kernel `embedding_bwd` (numpy's
`ufunc.at` in the reference; on the CPU a column-parallel C++ loop, csrc/cpu/embedding.cpp, or
numba's where the extension is not built).
"""

from __future__ import annotations

import numpy as np

from minitl.autograd_state import increment_version
from minitl.function import Context, Function
from minitl.tensor import Tensor
from minitl.types import Array


def _check_ids(op: str, ids: Array, n: int, what: str = "embeddings") -> None:
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must be an integer (int64) tensor, got {ids.dtype}")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        bad = lo if lo < 0 else hi if hi >= n else None
        if bad is not None:
            raise IndexError(f"{op}: index {bad} is out of range for {n} {what} "
                             f"(valid ids are 0..{n - 1})")


class Embedding(Function):
    """y = W[ids];  dW_j = sum over {i : ids_i = j} of g_i (zero for padding_idx)."""

    @staticmethod
    def forward(ctx: Context, ids: Array, weight: Array, padding_idx: int | None = None,
                scale_grad_by_freq: bool = False) -> Array:
        if weight.ndim != 2:
            raise ValueError(f"embedding: weight must be (num_embeddings, dim), got "
                             f"{tuple(weight.shape)}")
        _check_ids("embedding", ids, weight.shape[0])
        ctx.save_for_backward(ids)
        ctx.weight_shape, ctx.padding_idx = weight.shape, padding_idx
        ctx.by_freq = scale_grad_by_freq
        return weight[ids]  # (*ids.shape, D)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[None, Array, None, None]:
        (ids,) = ctx.saved
        n, d = ctx.weight_shape
        dw = ctx.backend.embedding_bwd(g.reshape(-1, d), ids.reshape(-1), n, ctx.padding_idx,
                                       ctx.by_freq)
        return None, dw, None, None


def _renorm_(weight: Tensor, ids: Array, max_norm: float, norm_type: float) -> None:
    """PyTorch's max_norm: rows looked up whose norm exceeds max_norm are rescaled in place
    (outside the graph) before the lookup."""
    from minitl.backend import array_module

    xp = array_module(weight.data)
    rows = xp.unique(ids.reshape(-1))
    w = weight.data[rows]
    norms = (xp.abs(w) ** norm_type).sum(axis=1, keepdims=True) ** (1.0 / norm_type)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
    weight.data[rows] = (w * scale).astype(weight.dtype, copy=False)
    increment_version(weight)  # as torch.embedding_renorm_: an in-place write


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None,
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of `weight` (num_embeddings, D) at the int64 ids in `input` -> (*input.shape, D).
    padding_idx (may be negative) names a row that receives no gradient."""
    if sparse:
        raise NotImplementedError("embedding: sparse gradients are not supported")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, dim), got {weight.shape}")
    n = weight.shape[0]
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"embedding: padding_idx {padding_idx} must be within "
                             f"num_embeddings {n}")
        padding_idx %= n
    ids = input.data if isinstance(input, Tensor) else np.asarray(input)
    if max_norm is not None:
        _check_ids("embedding", ids, n)
        _renorm_(weight, ids, float(max_norm), float(norm_type))
    return Embedding.apply(Tensor._wrap(ids), weight, padding_idx, bool(scale_grad_by_freq))


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot encoding (*tensor.shape, num_classes); num_classes=-1 uses max + 1."""
    ids = tensor.data
    if ids.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected an integer (int64) tensor, got {ids.dtype}")
    if num_classes == -1:
        if ids.size == 0:
            raise RuntimeError("one_hot: cannot infer the number of classes of an empty tensor")
        num_classes = int(ids.max()) + 1
    _check_ids("one_hot", ids, num_classes, "classes")
    from minitl.backend import array_module

    xp = array_module(ids)
    return Tensor._wrap((ids[..., None] == xp.arange(num_classes)).astype(np.int64))
