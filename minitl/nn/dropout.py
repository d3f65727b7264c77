"""Dropout (arXiv:1207.0580): zero entries with probability p while training."""

from __future__ import annotations

import minitl.nn.functional as F
from minitl.nn.module import Module
from minitl.tensor import Tensor

__all__ = ["Dropout"]


class Dropout(Module):
    """During training, zeroes each element with probability `p` and scales the rest by
    1 / (1 - p) so the expected value is unchanged; the identity in eval mode.

    Args:
        p: probability of an element being zeroed (default 0.5).
        inplace: accepted for PyTorch compatibility; a new tensor is always returned.

    Shape:
        - Input: (*)
        - Output: same as input.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if p < 0 or p > 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
