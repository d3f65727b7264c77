"""Conv1d and Conv2d: convolution (cross-correlation) over (N, C, L) and (N, C, H, W) inputs."""

from __future__ import annotations

import math
from typing import Any

import minitl.nn.functional as F
from minitl.creation import empty
from minitl.nn import init
from minitl.nn.module import Module
from minitl.nn.parameter import Parameter
from minitl.tensor import Tensor

__all__ = ["Conv1d", "Conv2d"]

IntOrPair = int | tuple[int, int]


def _single(v: Any) -> int:
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise ValueError(f"expected an int or a 1-tuple, got {v}")
        return int(v[0])
    return int(v)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected an int or a pair of ints, got {v}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _reset_conv(weight: Parameter, bias: Parameter | None) -> None:
    """PyTorch's default init of a convolution: Kaiming-uniform weights (a = sqrt 5), the
    bias uniform in +-1/sqrt(fan_in)."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        if fan_in != 0:
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(bias, -bound, bound)


class Conv2d(Module):
    """2-D convolution: `out[n, o] = bias[o] + sum_c weight[o, c] * input[n, c]` (cross-
    correlation, as in every deep learning framework).

    Args:
        in_channels: channels of the input.
        out_channels: channels produced.
        kernel_size: int or (kh, kw).
        stride: int or (sh, sw) (default 1).
        padding: int, (ph, pw), "valid" (no padding) or "same" (output size = input size,
            stride 1 only) (default 0).
        dilation: spacing between kernel taps (default 1).
        groups: blocked connections; in_channels and out_channels must both be divisible by
            it. groups == in_channels is a depthwise convolution (default 1).
        bias: learn a per-output-channel bias (default True).
        padding_mode: only "zeros" is supported.

    Shape:
        - Input: (N, C_in, H_in, W_in)
        - Output: (N, C_out, H_out, W_out) with
          H_out = floor((H_in + 2 ph - dh (kh - 1) - 1) / sh + 1), likewise W_out.

    Attributes:
        weight: (out_channels, in_channels / groups, kh, kw), kaiming_uniform_(a=sqrt(5)).
        bias: (out_channels,), U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair,
                 stride: IntOrPair = 1, padding: IntOrPair | str = 0, dilation: IntOrPair = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels must be divisible by groups (in_channels="
                             f"{in_channels}, groups={groups})")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels must be divisible by groups (out_channels="
                             f"{out_channels}, groups={groups})")
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode={padding_mode!r} is not supported; use 'zeros'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.padding_mode = padding_mode
        self.padding: tuple[int, int] | str
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of "
                                 "{'valid', 'same'}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = _pair(padding)
        kh, kw = self.kernel_size
        self.weight = Parameter(empty(out_channels, in_channels // groups, kh, kw, dtype=dtype,
                                      device=device))
        if bias:
            self.bias = Parameter(empty(out_channels, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_conv(self.weight, self.bias)

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim != 4:
            raise ValueError(f"Conv2d expects a 4-D (N, C, H, W) input, got shape {input.shape}")
        if input.shape[1] != self.in_channels:
            raise RuntimeError(f"Conv2d: expected input with {self.in_channels} channels, got "
                               f"shape {input.shape}")
        # "same" with an even kernel pads one more on the bottom/right, as PyTorch does.
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self) -> str:
        return _conv_repr(self)


class Conv1d(Module):
    """1-D convolution (cross-correlation) over (N, C, L) sequences; F.conv1d runs it as a
    conv2d of height 1, so it shares that op's kernels and backward.

    Args:
        in_channels, out_channels: channels of the input and of the output.
        kernel_size: taps of each filter (an int or a 1-tuple).
        stride, dilation: as ints or 1-tuples (default 1).
        padding: int, "valid" or "same" (stride 1 only) (default 0).
        groups: in_channels and out_channels must both be divisible by it (default 1).
        bias: learn a per-output-channel bias (default True).
        padding_mode: only "zeros" is supported.

    Shape:
        - Input: (N, C_in, L_in) or (C_in, L_in)
        - Output: (N, C_out, L_out), L_out = floor((L_in + 2 p - d (k - 1) - 1) / s + 1).

    Attributes:
        weight: (out_channels, in_channels / groups, k), kaiming_uniform_(a=sqrt(5)).
        bias: (out_channels,), U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int],
                 stride: int | tuple[int] = 1, padding: int | tuple[int] | str = 0,
                 dilation: int | tuple[int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels and out_channels must be divisible by groups "
                             f"(in_channels={in_channels}, out_channels={out_channels}, "
                             f"groups={groups})")
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode={padding_mode!r} is not supported; use 'zeros'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (_single(kernel_size),)
        self.stride = (_single(stride),)
        self.dilation = (_single(dilation),)
        self.groups = groups
        self.padding_mode = padding_mode
        self.padding: tuple[int] | str
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of "
                                 "{'valid', 'same'}")
            if padding == "same" and self.stride != (1,):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = (_single(padding),)
        self.weight = Parameter(empty(out_channels, in_channels // groups, self.kernel_size[0],
                                      dtype=dtype, device=device))
        if bias:
            self.bias = Parameter(empty(out_channels, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_conv(self.weight, self.bias)

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim not in (2, 3):
            raise ValueError(f"Conv1d expects a (N, C, L) or (C, L) input, got shape "
                             f"{input.shape}")
        if input.shape[-2] != self.in_channels:
            raise RuntimeError(f"Conv1d: expected input with {self.in_channels} channels, got "
                               f"shape {input.shape}")
        padding = self.padding if isinstance(self.padding, str) else self.padding[0]
        return F.conv1d(input, self.weight, self.bias, self.stride[0], padding,
                        self.dilation[0], self.groups)

    def extra_repr(self) -> str:
        return _conv_repr(self)


def _conv_repr(m: Any) -> str:
    """PyTorch's extra_repr of a convolution: the settings that differ from the defaults."""
    n = len(m.stride)
    s = (f"{m.in_channels}, {m.out_channels}, kernel_size={m.kernel_size}, "
         f"stride={m.stride}")
    if m.padding != (0,) * n:
        s += f", padding={m.padding}"
    if m.dilation != (1,) * n:
        s += f", dilation={m.dilation}"
    if m.groups != 1:
        s += f", groups={m.groups}"
    if m.bias is None:
        s += ", bias=False"
    return s
