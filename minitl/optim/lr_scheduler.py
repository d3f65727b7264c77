"""Learning-rate schedules with `torch.optim.lr_scheduler` names and semantics, plus the
warmup helpers fine-tuning recipes use (Hugging Face `get_*_schedule_with_warmup`) and
ULMFiT's slanted triangular schedule (arXiv:1801.06146, eq. 3).

A scheduler reads each group's starting lr once (`group["initial_lr"]`, stored as
`base_lrs`), moves to step 0 on construction, and on every `step()` writes
`group["lr"]` for each parameter group. Every schedule here is computed in closed form
from `last_epoch` and `base_lrs`: the value at step t does not depend on the values
before it, so resuming from `state_dict()` is exact. (PyTorch's multiplicative
"chainable" updates give the same numbers to rounding when one scheduler owns the
optimizer; combine schedules with `SequentialLR` rather than stepping two at once.)

Call `optimizer.step()` then `scheduler.step()` once per training step.
"""

from __future__ import annotations

import math
import types
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from minitl.optim.optimizer import Optimizer


def _per_group(name: str, optimizer: Optimizer, value: Any) -> list[Any]:
    """One value per param group: a scalar is repeated, a sequence must match the groups."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} values but the optimizer has {n} "
                             f"param groups")
        return list(value)
    return [value] * n


class LRScheduler:
    """Base class: subclasses implement `get_lr()` from `self.last_epoch` and `base_lrs`."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not set in param_groups[{i}] when "
                                   f"resuming a scheduler at last_epoch={last_epoch}; load the "
                                   f"optimizer's state_dict first")
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self.step()

    def get_lr(self) -> list[float]:
        """The lr of every group at step `self.last_epoch`."""
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The lrs the last `step()` wrote into the optimizer, one per group."""
        return list(self._last_lr)

    def step(self, epoch: int | None = None) -> None:
        """Advance one step (or jump to `epoch`) and write the new lrs into the groups."""
        self._step_count += 1
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer (plain numbers and lists)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(step); one function for all groups or one per group."""

    def __init__(self, optimizer: Optimizer,
                 lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
                 last_epoch: int = -1) -> None:
        self.lr_lambdas: list[Callable[[int], float]] = _per_group(
            "lr_lambda", optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self) -> dict[str, Any]:
        # Functions cannot be saved; callable objects contribute their attributes (as in
        # PyTorch), plain functions and partials are rebuilt by the code that makes them.
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [
            None if isinstance(fn, (types.FunctionType, partial)) else dict(vars(fn))
            for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop("lr_lambdas", [None] * len(self.lr_lambdas))
        self.__dict__.update(state)
        for fn, attrs in zip(self.lr_lambdas, saved):
            if attrs is not None:
                vars(fn).update(attrs)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (step // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        if step_size <= 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base * self.gamma ** (self.last_epoch // self.step_size)
                for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (number of milestones <= step)."""

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.milestones = sorted(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        k = bisect_right(self.milestones, self.last_epoch)
        return [base * self.gamma**k for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Factor moves linearly from start_factor to end_factor over total_iters steps, then
    stays: lr = base_lr * (s + (e - s) * min(step, total_iters) / total_iters)."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1) -> None:
        if not 0 < start_factor <= 1:
            raise ValueError(f"start_factor must be in (0, 1], got {start_factor}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"end_factor must be in [0, 1], got {end_factor}")
        if total_iters <= 0:
            raise ValueError(f"total_iters must be positive, got {total_iters}")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t = min(self.total_iters, self.last_epoch)
        factor = self.start_factor + (self.end_factor - self.start_factor) * t / self.total_iters
        return [base * factor for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """SGDR's cosine without restarts (arXiv:1608.03983):
    lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,  # noqa: N803
                 last_epoch: int = -1) -> None:
        if T_max <= 0:
            raise ValueError(f"T_max must be positive, got {T_max}")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        cos = 1 + math.cos(math.pi * self.last_epoch / self.T_max)
        return [self.eta_min + (base - self.eta_min) * cos / 2 for base in self.base_lrs]


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin, arXiv:1708.07120), as PyTorch implements it.

    lr rises from max_lr / div_factor to max_lr over the first pct_start of total_steps,
    then anneals to initial_lr / final_div_factor (cosine or linear). With
    `cycle_momentum`, momentum (or Adam's beta1) moves the opposite way between
    max_momentum and base_momentum. `three_phase` adds a symmetric descent back to
    initial_lr before the final anneal.
    """

    def __init__(self, optimizer: Optimizer, max_lr: float | Sequence[float],
                 total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.85,
                 max_momentum: float | Sequence[float] = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("give either total_steps or both epochs and steps_per_epoch")
            if epochs <= 0 or steps_per_epoch <= 0:
                raise ValueError(f"epochs and steps_per_epoch must be positive, got {epochs} "
                                 f"and {steps_per_epoch}")
            total_steps = epochs * steps_per_epoch
        if not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"Expected positive integer total_steps, got {total_steps}")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"pct_start must be in [0, 1], got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.total_steps = total_steps
        self.anneal_strategy = anneal_strategy
        self.cycle_momentum = cycle_momentum

        # Phase boundaries (last step of each phase) and the group keys they move between.
        up = float(pct_start * total_steps) - 1
        if three_phase:
            self._phases = [
                (up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (float(2 * pct_start * total_steps) - 2, "max_lr", "initial_lr",
                 "base_momentum", "max_momentum"),
                (total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            self._phases = [
                (up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]

        groups = optimizer.param_groups
        if last_epoch == -1:
            for group, top in zip(groups, _per_group("max_lr", optimizer, max_lr)):
                group["initial_lr"] = top / div_factor
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div_factor
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError("cycle_momentum needs an optimizer with momentum or betas")
            self.use_beta1 = "betas" in optimizer.defaults
            if last_epoch == -1:
                tops = _per_group("max_momentum", optimizer, max_momentum)
                bases = _per_group("base_momentum", optimizer, base_momentum)
                for group, top, base in zip(groups, tops, bases):
                    self._set_momentum(group, top)
                    group["max_momentum"] = top
                    group["base_momentum"] = base
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group: dict[str, Any], value: float) -> None:
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(f"Tried to step {t} times. The specified number of total steps "
                             f"is {self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, (end_step, lr0, lr1, m0, m1) in enumerate(self._phases):
                if t <= end_step or i == len(self._phases) - 1:
                    pct = (t - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(group[lr0], group[lr1], pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(group[m0], group[m1], pct))
                    break
                start_step = end_step
        return lrs


class SequentialLR(LRScheduler):
    """Run `schedulers[i]` between milestones[i-1] and milestones[i]; each one restarts
    from its own step 0 at its milestone (e.g. LinearLR warmup, then CosineAnnealingLR)."""

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler],
                 milestones: Sequence[int], last_epoch: int = -1) -> None:
        if len(schedulers) < 1:
            raise ValueError("SequentialLR expects at least one scheduler")
        for i, s in enumerate(schedulers):
            if s.optimizer is not optimizer:
                raise ValueError(f"scheduler {i} ({type(s).__name__}) drives a different "
                                 f"optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR needs len(schedulers) - 1 milestones, got "
                             f"{len(schedulers)} schedulers and {len(milestones)} milestones")
        self.optimizer = optimizer
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch + 1
        # Each scheduler stepped once when it was built; rewind them and let only the
        # first one take step 0.
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for s in self._schedulers:
            s.last_epoch -= 1
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self, epoch: int | None = None) -> None:
        if epoch is not None:
            raise ValueError("SequentialLR.step() takes no epoch")
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler.step(0)  # the next schedule starts from its own step 0
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop("_schedulers")
        self.__dict__.update(state)
        for s, sd in zip(self._schedulers, saved):
            s.load_state_dict(sd)


# ---- warmup helpers (Hugging Face semantics), each a LambdaLR -------------------------


def _linear_warmup_decay(step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    return max(0.0, float(num_training_steps - step)
               / float(max(1, num_training_steps - num_warmup_steps)))


def _cosine_warmup_decay(step: int, *, num_warmup_steps: int, num_training_steps: int,
                         num_cycles: float) -> float:
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    progress = float(step - num_warmup_steps) / float(max(1, num_training_steps
                                                              - num_warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def _slanted_triangular(step: int, *, num_training_steps: int, cut_frac: float,
                        ratio: float) -> float:
    # ULMFiT eq. 3: cut = floor(T * cut_frac); p rises linearly to 1 at `cut`, then falls
    # linearly; lr = lr_max * (1 + p * (ratio - 1)) / ratio. `cut` is at least 1 so short
    # runs still have a peak, and p stops at 0 so steps past T stay at lr_max / ratio.
    cut = max(1, math.floor(num_training_steps * cut_frac))
    if step < cut:
        p = step / cut
    else:
        p = max(0.0, 1 - (step - cut) / (cut * (1 / cut_frac - 1)))
    return (1 + p * (ratio - 1)) / ratio


def get_linear_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int,
                                    num_training_steps: int, last_epoch: int = -1) -> LambdaLR:
    """lr rises linearly from 0 to each group's lr over num_warmup_steps, then falls
    linearly to 0 at num_training_steps."""
    fn = partial(_linear_warmup_decay, num_warmup_steps=num_warmup_steps,
                 num_training_steps=num_training_steps)
    return LambdaLR(optimizer, fn, last_epoch)


def get_cosine_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int,
                                    num_training_steps: int, num_cycles: float = 0.5,
                                    last_epoch: int = -1) -> LambdaLR:
    """Linear warmup, then cosine decay; num_cycles=0.5 is one half-wave from the group's
    lr down to 0 at num_training_steps."""
    fn = partial(_cosine_warmup_decay, num_warmup_steps=num_warmup_steps,
                 num_training_steps=num_training_steps, num_cycles=num_cycles)
    return LambdaLR(optimizer, fn, last_epoch)


def slanted_triangular(optimizer: Optimizer, num_training_steps: int, cut_frac: float = 0.1,
                       ratio: float = 32, last_epoch: int = -1) -> LambdaLR:
    """ULMFiT's slanted triangular lr (arXiv:1801.06146, eq. 3): a short linear rise over
    the first cut_frac of the steps to each group's lr, then a long linear decay; the
    lowest lr is lr / ratio. Per-group lrs make it discriminative fine-tuning."""
    if num_training_steps <= 0:
        raise ValueError(f"num_training_steps must be positive, got {num_training_steps}")
    if not 0 < cut_frac < 1:
        raise ValueError(f"cut_frac must be in (0, 1), got {cut_frac}")
    if not ratio >= 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    fn = partial(_slanted_triangular, num_training_steps=num_training_steps, cut_frac=cut_frac,
                 ratio=ratio)
    return LambdaLR(optimizer, fn, last_epoch)


# imported last: ReduceLROnPlateau subclasses LRScheduler
from minitl.optim.plateau import ReduceLROnPlateau  # noqa: E402

__all__ = [
    "LRScheduler", "LambdaLR", "ReduceLROnPlateau", "StepLR", "MultiStepLR", "LinearLR",
    "CosineAnnealingLR", "OneCycleLR", "SequentialLR", "get_linear_schedule_with_warmup",
    "get_cosine_schedule_with_warmup", "slanted_triangular",
]
