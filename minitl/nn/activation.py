"""Activation layers: thin Module wrappers over `minitl.nn.functional` and Tensor ops."""

from __future__ import annotations

import minitl.nn.functional as F
from minitl.nn.module import Module
from minitl.tensor import Tensor

__all__ = ["GELU", "LeakyReLU", "LogSoftmax", "ReLU", "SiLU", "Sigmoid", "Softmax", "Tanh"]


class ReLU(Module):
    """max(0, x) elementwise.

    Args:
        inplace: accepted for PyTorch compatibility; minitl always returns a new tensor.

    Shape:
        - Input: (*)
        - Output: same as input.
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    """x if x >= 0 else negative_slope * x.

    Args:
        negative_slope: slope for negative inputs (default 0.01).
        inplace: accepted for PyTorch compatibility; a new tensor is always returned.

    Shape:
        - Input: (*)
        - Output: same as input.
    """

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
    """x * Phi(x) (arXiv:1606.08415).

    Args:
        approximate: "none" for the exact erf form, "tanh" for the tanh approximation
            used by GPT-2 (default "none").

    Shape:
        - Input: (*)
        - Output: same as input.
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    """tanh(x) elementwise. Shape: any, output same as input."""

    def forward(self, input: Tensor) -> Tensor:
        return input.tanh()


class Sigmoid(Module):
    """1 / (1 + exp(-x)) elementwise. Shape: any, output same as input."""

    def forward(self, input: Tensor) -> Tensor:
        return input.sigmoid()


class SiLU(Module):
    """x * sigmoid(x) (a.k.a. swish). Shape: any, output same as input."""

    def forward(self, input: Tensor) -> Tensor:
        return F.silu(input)


class Softmax(Module):
    """exp(x) / sum(exp(x)) along `dim`.

    Args:
        dim: the dim that sums to 1. Required in practice: PyTorch's implicit choice is
            deprecated, so None raises a TypeError when called.

    Shape:
        - Input: (*)
        - Output: same as input.
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log(softmax(x)) along `dim`, computed stably (x - logsumexp(x)).

    Args:
        dim: the dim to normalise over.
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.log_softmax(input, self.dim)
