"""Loss modules (thin wrappers over `minitl.nn.functional`, with PyTorch names and arguments):
CrossEntropyLoss, NLLLoss, MSELoss, L1Loss, SmoothL1Loss, BCELoss, BCEWithLogitsLoss."""

from __future__ import annotations

import minitl.nn.functional as F
from minitl.nn.module import Module
from minitl.tensor import Tensor

__all__ = ["BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "L1Loss", "MSELoss", "NLLLoss",
           "SmoothL1Loss"]

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


class NLLLoss(Module):
    """Negative log-likelihood of log-probabilities at class indices: -w_y x[n, y].

    Args:
        weight: (C,) rescaling weight per class; kept as a buffer, as in PyTorch.
        ignore_index: targets equal to it contribute neither loss nor gradient, and are
            left out of the mean (default -100).
        reduction: "none" | "mean" | "sum" (default "mean"); "mean" divides by the summed
            weights of the targets that are not ignored.

    Shape:
        - Input: (N, C) or (N, C, d1, ...) log-probabilities (e.g. from LogSoftmax)
        - Target: (N) or (N, d1, ...) int64 class indices
        - Output: scalar, or the target's shape with reduction="none".
    """

    def __init__(self, weight: Tensor | None = None, ignore_index: int = -100,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = _check_reduction(reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class L1Loss(Module):
    """Mean absolute error `|input - target|`, reduced.

    Args:
        reduction: "none" | "mean" | "sum" (default "mean").

    Shape:
        - Input: (*); Target: same shape; Output: scalar, or (*) with reduction="none".
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(Module):
    """Quadratic `0.5 d^2 / beta` for |d| < beta, linear `|d| - 0.5 beta` beyond (d = input -
    target), reduced: Fast R-CNN's box loss, the Huber loss divided by beta.

    Args:
        reduction: "none" | "mean" | "sum" (default "mean").
        beta: where the loss turns from quadratic to linear, >= 0; 0 gives L1Loss
            (default 1.0).

    Shape:
        - Input: (*); Target: same shape; Output: scalar, or (*) with reduction="none".
    """

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"SmoothL1Loss: beta must be >= 0, got {beta}")
        self.reduction = _check_reduction(reduction)
        self.beta = beta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class BCELoss(Module):
    """Binary cross-entropy of probabilities: -w (t log x + (1 - t) log(1 - x)), reduced.

    Args:
        weight: rescaling weight, the input's shape; kept as a buffer.
        reduction: "none" | "mean" | "sum" (default "mean").

    Shape:
        - Input: (*) probabilities in [0, 1]; Target: same shape; Output: scalar, or (*).
    """

    def __init__(self, weight: Tensor | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.reduction = _check_reduction(reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(Module):
    """Sigmoid and binary cross-entropy in one numerically stable op (no overflow for any
    logit): loss = -w (p t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))), p = pos_weight.

    Args:
        weight: rescaling weight broadcast against the input; kept as a buffer.
        reduction: "none" | "mean" | "sum" (default "mean").
        pos_weight: weight of the positive examples, broadcast along the last (class) dim;
            > 1 raises recall, < 1 raises precision. Kept as a buffer.

    Shape:
        - Input: (*) logits; Target: same shape; Output: scalar, or (*).
    """

    def __init__(self, weight: Tensor | None = None, reduction: str = "mean",
                 pos_weight: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.reduction = _check_reduction(reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.weight,
                                                  reduction=self.reduction,
                                                  pos_weight=self.pos_weight)
