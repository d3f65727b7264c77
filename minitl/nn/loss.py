"""Loss modules: CrossEntropyLoss and MSELoss (wrappers over `minitl.nn.functional`)."""

from __future__ import annotations

import minitl.nn.functional as F
from minitl.nn.module import Module
from minitl.tensor import Tensor

__all__ = ["CrossEntropyLoss", "MSELoss"]

_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction "
                         f"(expected one of {_REDUCTIONS})")
    return reduction


class CrossEntropyLoss(Module):
    """Softmax cross-entropy between logits and class indices (or class probabilities).

    Args:
        weight: (C,) rescaling weight per class; kept as a buffer, as in PyTorch.
        ignore_index: targets equal to it contribute neither loss nor gradient, and are
            left out of the mean (default -100).
        reduction: "none" | "mean" | "sum" (default "mean").
        label_smoothing: mix the target with the uniform distribution by this amount,
            in [0, 1] (default 0.0).

    Shape:
        - Input: (N, C) or (N, C, d1, ...) logits
        - Target: (N) or (N, d1, ...) int64 class indices
        - Output: scalar, or the target's shape with reduction="none".
    """

    def __init__(self, weight: Tensor | None = None, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = _check_reduction(reduction)
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        kwargs = {"weight": self.weight} if self.weight is not None else {}
        return F.cross_entropy(input, target, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing,
                               **kwargs)


class MSELoss(Module):
    """Mean squared error `(input - target)^2`, reduced.

    Args:
        reduction: "none" | "mean" | "sum" (default "mean").

    Shape:
        - Input: (*)
        - Target: same shape as input.
        - Output: scalar, or (*) with reduction="none".
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)
