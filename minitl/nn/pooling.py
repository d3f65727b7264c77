"""Pooling layers (MaxPool2d, AvgPool2d, AdaptiveAvgPool2d) and Flatten."""

from __future__ import annotations

from typing import Any

import minitl.nn.functional as F
from minitl.nn.module import Module
from minitl.tensor import Tensor

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "Flatten", "MaxPool2d"]

IntOrPair = int | tuple[int, int]


def _non_default(**pairs: tuple[Any, Any]) -> dict[str, Any]:
    """Keyword arguments whose value differs from the default: the functional ops need not
    grow options (dilation, ceil_mode) that a layer leaves at their defaults."""
    return {k: v for k, (v, default) in pairs.items() if v != default}


class MaxPool2d(Module):
    """Maximum over sliding (kh, kw) windows of each channel.

    Args:
        kernel_size: window size, int or (kh, kw).
        stride: window step (default: kernel_size).
        padding: implicit -inf padding on each side (default 0).
        dilation: spacing between window taps (default 1).
        return_indices: also return the argmax positions (default False).
        ceil_mode: round the output size up instead of down (default False).

    Shape:
        - Input: (N, C, H_in, W_in)
        - Output: (N, C, H_out, W_out), H_out = floor((H_in + 2p - d (k - 1) - 1) / s + 1).
    """

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None,
                 padding: IntOrPair = 0, dilation: IntOrPair = 1, return_indices: bool = False,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, input: Tensor) -> Any:
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding,
                            **_non_default(dilation=(self.dilation, 1),
                                           ceil_mode=(self.ceil_mode, False),
                                           return_indices=(self.return_indices, False)))

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over sliding (kh, kw) windows of each channel.

    Args:
        kernel_size: window size, int or (kh, kw).
        stride: window step (default: kernel_size).
        padding: implicit zero padding on each side (default 0).
        ceil_mode: round the output size up instead of down (default False).
        count_include_pad: count padded zeros in the divisor (default True).
        divisor_override: divide by this instead of the window size.

    Shape:
        - Input: (N, C, H_in, W_in)
        - Output: (N, C, H_out, W_out), H_out = floor((H_in + 2p - k) / s + 1).
    """

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None,
                 padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding,
                            **_non_default(ceil_mode=(self.ceil_mode, False),
                                           count_include_pad=(self.count_include_pad, True),
                                           divisor_override=(self.divisor_override, None)))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size, whatever the input size; (1, 1) is the
    global average pooling in front of a CNN classifier head.

    Args:
        output_size: (H_out, W_out), or an int for a square output.

    Shape:
        - Input: (N, C, H_in, W_in)
        - Output: (N, C, H_out, W_out)
    """

    def __init__(self, output_size: IntOrPair) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Flatten(Module):
    """Flattens dims start_dim..end_dim into one.

    Args:
        start_dim: first dim to flatten (default 1: keep the batch dim).
        end_dim: last dim to flatten (default -1).

    Shape:
        - Input: (*, S_start, ..., S_end, *)
        - Output: (*, S_start * ... * S_end, *)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Tensor) -> Tensor:
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
