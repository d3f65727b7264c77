"""minitl.nn.functional: the op set under torch.nn.functional's names and signatures.

Nothing is implemented here; each name is re-exported from the ops module that owns it
(minitl/ops/*.py), plus thin wrappers where PyTorch's signature differs from the Tensor method
(`relu(input, inplace=False)`, `pad(..., value=None)`).
"""

from __future__ import annotations

from collections.abc import Sequence

from minitl.ops.activation import dropout, gelu, leaky_relu, log_softmax, silu, softmax, swiglu
from minitl.ops.attention import apply_rotary_emb, scaled_dot_product_attention
from minitl.ops.conv import adaptive_avg_pool2d, avg_pool2d, conv1d, conv2d, max_pool2d
from minitl.ops.embedding import embedding, one_hot
from minitl.ops.linalg import linear, lora_linear
from minitl.ops.loss import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    l1_loss,
    mse_loss,
    nll_loss,
    nt_xent,
    smooth_l1_loss,
)
from minitl.ops.movement import pad as _pad
from minitl.ops.norm import batch_norm, group_norm, layer_norm, normalize, rms_norm
from minitl.tensor import Tensor


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0); `inplace` is accepted for compatibility and ignored (ops never mutate)."""
    return input.relu()


def tanh(input: Tensor) -> Tensor:
    return input.tanh()


def sigmoid(input: Tensor) -> Tensor:
    return input.sigmoid()


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant",
        value: float | None = None) -> Tensor:
    """Constant padding; `pad` lists (low, high) pairs starting from the last dim."""
    return _pad(input, pad, mode, 0.0 if value is None else value)


__all__ = [
    "adaptive_avg_pool2d", "apply_rotary_emb", "avg_pool2d", "batch_norm",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "conv1d", "conv2d",
    "cross_entropy", "dropout", "embedding", "gelu", "group_norm", "l1_loss", "layer_norm",
    "leaky_relu", "linear", "log_softmax", "lora_linear", "max_pool2d", "mse_loss", "nll_loss",
    "normalize", "nt_xent", "one_hot", "pad", "relu", "rms_norm", "scaled_dot_product_attention",
    "sigmoid", "silu", "smooth_l1_loss", "softmax", "swiglu", "tanh",
]
