"""Normalisation layers: LayerNorm (arXiv:1607.06450) and BatchNorm1d/2d (arXiv:1502.03167).

BatchNorm keeps PyTorch's buffer names (`running_mean`, `running_var`,
`num_batches_tracked`) so checkpoints of torchvision-style CNNs load unchanged.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

import minitl.nn.functional as F
from minitl.creation import empty, ones, tensor, zeros
from minitl.nn import init
from minitl.nn.module import Module
from minitl.nn.parameter import Parameter
from minitl.tensor import Tensor

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "RMSNorm"]

ShapeLike = int | Sequence[int]


class LayerNorm(Module):
    """Normalises over the trailing `normalized_shape` dims, then scales and shifts:
    `y = (x - mean) / sqrt(var + eps) * weight + bias` (biased variance).

    Args:
        normalized_shape: the trailing dims to normalise over (an int means the last dim).
        eps: added to the variance for numerical stability (default 1e-5).
        elementwise_affine: learn `weight` (ones) and `bias` (zeros) (default True).
        bias: learn the bias when elementwise_affine (default True).

    Shape:
        - Input: (*, *normalized_shape)
        - Output: same as input.
    """

    def __init__(self, normalized_shape: ShapeLike, eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (int(normalized_shape),)
        self.normalized_shape = tuple(int(n) for n in normalized_shape)  # type: ignore[union-attr]
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(empty(self.normalized_shape, dtype=dtype, device=device))
            if bias:
                self.bias = Parameter(empty(self.normalized_shape, dtype=dtype, device=device))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class RMSNorm(Module):
    """`y = x / sqrt(mean(x^2) + eps) * weight` over the trailing dims (Zhang & Sennrich,
    arXiv:1910.07467; LLaMA's norm), PyTorch's nn.RMSNorm.

    Args:
        normalized_shape: the trailing dims to normalise over (an int means the last dim).
        eps: added to the mean square; None means the dtype's machine epsilon.
        elementwise_affine: learn `weight` (ones) (default True).
    """

    def __init__(self, normalized_shape: ShapeLike, eps: float | None = None,
                 elementwise_affine: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (int(normalized_shape),)
        self.normalized_shape = tuple(int(n) for n in normalized_shape)  # type: ignore[union-attr]
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(empty(self.normalized_shape, dtype=dtype, device=device))
            init.ones_(self.weight)
        else:
            self.register_parameter("weight", None)

    def forward(self, input: Tensor) -> Tensor:
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class _BatchNorm(Module):
    """Shared by BatchNorm1d/2d: per-channel statistics over every dim but dim 1.

    Training mode normalises with the batch statistics and updates the running ones
    (`running = (1 - momentum) * running + momentum * batch`, unbiased batch variance);
    eval mode normalises with the running statistics. `momentum=None` gives a
    cumulative moving average (factor 1 / num_batches_tracked).
    """

    _expected_dims: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device: Any = None,
                 dtype: Any = None, *, bias: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(empty(num_features, dtype=dtype, device=device))
            if bias:
                self.bias = Parameter(empty(num_features, dtype=dtype, device=device))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, dtype=dtype, device=device))
            self.register_buffer("running_var", ones(num_features, dtype=dtype, device=device))
            self.register_buffer("num_batches_tracked",
                                 tensor(0, dtype=np.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def _check_input_dim(self, input: Tensor) -> None:
        if input.ndim not in self._expected_dims:
            want = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(f"expected {want} input (got {input.ndim}D input)")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            # Counted outside the graph: an int buffer, not a differentiable value.
            self.num_batches_tracked.data[...] += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.item())
        # Batch statistics in training, and in eval when there are no running ones.
        use_batch_stats = self.training or self.running_mean is None
        keep_running = not self.training or self.track_running_stats
        return F.batch_norm(input,
                            self.running_mean if keep_running else None,
                            self.running_var if keep_running else None,
                            self.weight, self.bias, use_batch_stats, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L) inputs.

    Args:
        num_features: C.
        eps: added to the variance (default 1e-5).
        momentum: running-statistics update factor; None for a cumulative average
            (default 0.1).
        affine: learn per-channel `weight` (ones) and `bias` (zeros) (default True).
        track_running_stats: keep running mean/var for eval mode (default True).
        bias: (keyword only) learn the bias when affine (default True).

    Shape:
        - Input: (N, C) or (N, C, L)
        - Output: same as input.
    """

    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W) inputs, one statistic per channel.

    Args: as BatchNorm1d.

    Shape:
        - Input: (N, C, H, W)
        - Output: same as input.
    """

    _expected_dims = (4,)
