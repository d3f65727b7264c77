"""ReduceLROnPlateau: cut the learning rate when a watched metric stops improving
(`torch.optim.lr_scheduler.ReduceLROnPlateau`, same arguments, same decisions).

Unlike the closed-form schedules in `lr_scheduler.py`, this one depends on the history of
the metric, so its state (best value, bad-epoch count, cooldown) is what `state_dict()`
carries. Re-exported as `minitl.optim.lr_scheduler.ReduceLROnPlateau`.
"""

from __future__ import annotations

import math
from typing import Any

from minitl.optim.lr_scheduler import LRScheduler
from minitl.optim.optimizer import Optimizer


class ReduceLROnPlateau(LRScheduler):
    """Multiply every group's lr by `factor` once the metric has failed to improve for more
    than `patience` consecutive `step(metric)` calls.

    Args:
        optimizer: the optimizer whose groups' "lr" is lowered.
        mode: "min" (lower is better, e.g. a loss) or "max" (e.g. accuracy) (default "min").
        factor: new_lr = lr * factor, < 1 (default 0.1).
        patience: how many non-improving steps are tolerated; the lr drops on the next one
            (default 10).
        threshold: how much better than the best a value must be to count (default 1e-4).
        threshold_mode: "rel": better means below best * (1 - threshold) (above
            best * (1 + threshold) for "max"); "abs": below best - threshold (above
            best + threshold) (default "rel").
        cooldown: steps after a cut during which bad steps are not counted (default 0).
        min_lr: a floor for every group, or one floor per group (default 0).
        eps: a cut smaller than this is skipped, so the lr stops moving at float
            resolution (default 1e-8).
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | list[float] = 0, eps: float = 1e-8) -> None:
        # No LRScheduler.__init__: there is no closed-form lr to set at step 0.
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"expected {n} min_lrs, got {len(min_lr)}")
            self.default_min_lr: float | None = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * n
        self.factor = factor
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]
        self._init_is_better(mode, threshold, threshold_mode)
        self._reset()

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        self.mode, self.threshold, self.threshold_mode = mode, threshold, threshold_mode
        self.mode_worse = math.inf if mode == "min" else -math.inf

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def is_better(self, a: float, best: float) -> bool:
        """Whether `a` beats `best` by more than the threshold."""
        if self.mode == "min":
            bar = best * (1 - self.threshold) if self.threshold_mode == "rel" \
                else best - self.threshold
            return a < bar
        bar = best * (1 + self.threshold) if self.threshold_mode == "rel" \
            else best + self.threshold
        return a > bar

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record one value of the metric (a float or a 1-element Tensor) and cut the lr
        if it has not improved for more than `patience` steps."""
        current = float(metrics)
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad steps right after a cut do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):  # a group was added after construction
            if self.default_min_lr is None:
                raise RuntimeError(f"the optimizer now has {len(groups)} param groups but "
                                   f"{len(self.min_lrs)} min_lrs were given")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, floor in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, floor)
            if old - new > self.eps:
                group["lr"] = new

    def get_lr(self) -> list[float]:
        return self.get_last_lr()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)
