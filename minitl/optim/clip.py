"""Gradient clipping: `clip_grad_norm_` and `clip_grad_value_` (PyTorch semantics).

Re-exported as `minitl.nn.utils.clip_grad_norm_`. Both modify `p.grad` in place (bumping
its version counter, in case a graph saved it) and skip parameters without a gradient. The
norm is computed as PyTorch does it: the norm of each gradient first, then the norm of those
norms, so `inf` and any p > 0 compose.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from minitl.autograd_state import bump_version
from minitl.backend import array_module
from minitl.tensor import Tensor

TensorOrTensors = Tensor | Iterable[Tensor]


def _grads(parameters: TensorOrTensors) -> list[Any]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad.data for p in parameters if p.grad is not None]


def _vector_norm(x: Any, norm_type: float) -> Any:
    """||x||_p over all elements as a 0-d array (torch.linalg.vector_norm)."""
    xp = array_module(x)
    if x.size == 0:
        return xp.zeros((), dtype=x.dtype)
    a = xp.abs(x)
    if norm_type == math.inf:
        out = a.max()
    elif norm_type == -math.inf:
        out = a.min()
    elif norm_type == 0:
        out = xp.count_nonzero(x)  # an int in numpy, a 0-d array in CuPy
    elif norm_type == 1:
        out = a.sum()
    elif norm_type == 2:
        out = xp.sqrt((a * a).sum())
    else:
        out = (a**norm_type).sum() ** (1.0 / norm_type)
    return xp.asarray(out, dtype=x.dtype)


def clip_grad_norm_(parameters: TensorOrTensors, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients by `min(1, max_norm / (total_norm + 1e-6))`, in place.

    Returns the total norm of the gradients (before clipping) as a 0-d Tensor. With
    `error_if_nonfinite` a NaN/inf total raises RuntimeError instead of spreading into
    every gradient.
    """
    norm_type = float(norm_type)
    grads = _grads(parameters)
    if not grads:
        return Tensor(np.zeros((), dtype=np.float32))
    xp = array_module(grads[0])
    norms = xp.stack([_vector_norm(g, norm_type) for g in grads])
    total = _vector_norm(norms, norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            f"non-finite ({float(total)}), so it cannot be clipped. To scale the gradients "
            f"by the non-finite norm anyway, set error_if_nonfinite=False"
        )
    # Multiplying by a clamped coefficient (1.0 when no clipping is needed) instead of
    # branching keeps the device from syncing to the host, as PyTorch does.
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g *= coef.astype(g.dtype, copy=False)
        bump_version(g)
    return Tensor(total)


def clip_grad_value_(parameters: TensorOrTensors, clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        array_module(g).clip(g, -clip_value, clip_value, out=g)
        bump_version(g)
