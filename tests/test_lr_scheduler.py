"""Learning-rate schedules: lr sequences against torch.optim.lr_scheduler, the warmup and
slanted-triangular helpers against their closed forms, per-group base lrs, checkpoints."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from minitl.nn.parameter import Parameter
from minitl.optim import SGD, Adam, AdamW, Optimizer, lr_scheduler
from minitl.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    MultiStepLR,
    OneCycleLR,
    SequentialLR,
    StepLR,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
    slanted_triangular,
)

LRS = (0.1, 0.02)  # two param groups, different base lrs
STEPS = 50


def _optimizer(cls: type[Optimizer] = SGD, **kwargs: Any) -> Optimizer:
    groups = [{"params": [Parameter(np.zeros(2))], "lr": LRS[0]},
              {"params": [Parameter(np.zeros(3))], "lr": LRS[1]}]
    return cls(groups, **kwargs)


def _torch_optimizer(torch: Any, name: str, **kwargs: Any) -> Any:
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": LRS[0]},
              {"params": [torch.zeros(3, requires_grad=True)], "lr": LRS[1]}]
    return getattr(torch.optim, name)(groups, **kwargs)


def _trace(opt: Any, sched: Any, steps: int, step_opt: bool = False) -> list[list[float]]:
    """Group lrs (and momenta) after construction and after each of `steps` steps."""
    def snap() -> list[float]:
        row = [float(g["lr"]) for g in opt.param_groups]
        row += [float(g["momentum"]) for g in opt.param_groups if "momentum" in g]
        row += [float(g["betas"][0]) for g in opt.param_groups if "betas" in g]
        assert [float(x) for x in sched.get_last_lr()] == row[:len(opt.param_groups)]
        return row

    rows = [snap()]
    for _ in range(steps):
        if step_opt:
            opt.step()  # no grads: a no-op that keeps torch from warning about the order
        sched.step()
        rows.append(snap())
    return rows


def _lambda(epoch: int) -> float:
    return 0.95**epoch + 0.01 * (epoch % 3)


SCHEDULES: list[tuple[str, str, dict[str, Any], dict[str, Any], int]] = [
    # (scheduler, optimizer, optimizer kwargs, scheduler kwargs, steps)
    ("LambdaLR", "SGD", {}, {"lr_lambda": _lambda}, STEPS),
    ("StepLR", "SGD", {}, {"step_size": 7, "gamma": 0.5}, STEPS),
    ("MultiStepLR", "SGD", {}, {"milestones": [30, 5, 12, 12], "gamma": 0.3}, STEPS),
    ("LinearLR", "SGD", {}, {"start_factor": 0.1, "end_factor": 0.9, "total_iters": 17}, STEPS),
    ("CosineAnnealingLR", "SGD", {}, {"T_max": 20, "eta_min": 1e-3}, STEPS),
    ("OneCycleLR", "SGD", {"momentum": 0.9},
     {"max_lr": [1.0, 0.3], "total_steps": STEPS}, STEPS),
    ("OneCycleLR", "Adam", {},
     {"max_lr": 0.5, "total_steps": 40, "anneal_strategy": "linear", "pct_start": 0.25,
      "div_factor": 10.0, "final_div_factor": 100.0}, 40),
    ("OneCycleLR", "AdamW", {},
     {"max_lr": 0.5, "epochs": 5, "steps_per_epoch": 9, "three_phase": True,
      "base_momentum": 0.8, "max_momentum": 0.9}, 45),
    ("OneCycleLR", "SGD", {}, {"max_lr": 0.5, "total_steps": 30, "cycle_momentum": False}, 30),
]


@pytest.mark.parametrize("sched_name,opt_name,opt_kwargs,kwargs,steps", SCHEDULES,
                         ids=[f"{s[0]}-{i}" for i, s in enumerate(SCHEDULES)])
def test_matches_torch(sched_name: str, opt_name: str, opt_kwargs: dict[str, Any],
                       kwargs: dict[str, Any], steps: int) -> None:
    torch = pytest.importorskip("torch")
    opt = _optimizer({"SGD": SGD, "Adam": Adam, "AdamW": AdamW}[opt_name], **opt_kwargs)
    sched = getattr(lr_scheduler, sched_name)(opt, **kwargs)
    topt = _torch_optimizer(torch, opt_name, **opt_kwargs)
    tsched = getattr(torch.optim.lr_scheduler, sched_name)(topt, **kwargs)
    ours, theirs = _trace(opt, sched, steps), _trace(topt, tsched, steps, step_opt=True)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


def test_sequential_matches_torch() -> None:
    torch = pytest.importorskip("torch")

    def build(ns: Any, opt: Any) -> Any:
        warm = ns.LinearLR(opt, start_factor=0.01, total_iters=5)
        cos = ns.CosineAnnealingLR(opt, T_max=20, eta_min=1e-4)
        step = ns.StepLR(opt, step_size=4, gamma=0.5)
        return ns.SequentialLR(opt, [warm, cos, step], milestones=[5, 25])

    opt, topt = _optimizer(), _torch_optimizer(torch, "SGD")
    ours = _trace(opt, build(lr_scheduler, opt), 40)
    theirs = _trace(topt, build(torch.optim.lr_scheduler, topt), 40, step_opt=True)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


def _hf_linear(t: int, w: int, n: int) -> float:
    return t / w if t < w else max(0.0, (n - t) / (n - w))


def _hf_cosine(t: int, w: int, n: int, cycles: float) -> float:
    if t < w:
        return t / w
    return max(0.0, 0.5 * (1 + math.cos(2 * math.pi * cycles * (t - w) / (n - w))))


def _stlr(t: int, n: int, cut_frac: float, ratio: float) -> float:
    # ULMFiT eq. 3, written out with T = n.
    cut = math.floor(n * cut_frac)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return (1 + p * (ratio - 1)) / ratio


HELPERS: list[tuple[Callable[..., Any], dict[str, Any], Callable[[int], float]]] = [
    (get_linear_schedule_with_warmup, {"num_warmup_steps": 8, "num_training_steps": 50},
     lambda t: _hf_linear(t, 8, 50)),
    (get_cosine_schedule_with_warmup, {"num_warmup_steps": 8, "num_training_steps": 50},
     lambda t: _hf_cosine(t, 8, 50, 0.5)),
    (get_cosine_schedule_with_warmup,
     {"num_warmup_steps": 5, "num_training_steps": 45, "num_cycles": 1.5},
     lambda t: _hf_cosine(t, 5, 45, 1.5)),
    (slanted_triangular, {"num_training_steps": 50}, lambda t: _stlr(t, 50, 0.1, 32)),
    (slanted_triangular, {"num_training_steps": 50, "cut_frac": 0.2, "ratio": 8},
     lambda t: _stlr(t, 50, 0.2, 8)),
]


@pytest.mark.parametrize("make,kwargs,factor", HELPERS, ids=lambda x: "")
def test_helpers_closed_form_per_group(make: Callable[..., Any], kwargs: dict[str, Any],
                                       factor: Callable[[int], float]) -> None:
    opt = _optimizer(AdamW)
    sched = make(opt, **kwargs)
    assert isinstance(sched, LambdaLR)
    for t in range(STEPS + 1):
        expected = [base * factor(t) for base in LRS]
        np.testing.assert_allclose([g["lr"] for g in opt.param_groups], expected,
                                   rtol=1e-12, atol=1e-15)
        assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
        opt.step()
        sched.step()


def test_warmup_shapes() -> None:
    opt = _optimizer()
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=4, num_training_steps=10)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(12):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[0] == 0.0 and lrs[4] == pytest.approx(LRS[0]) and lrs[10:] == [0.0] * 3

    opt = _optimizer()
    sched = slanted_triangular(opt, num_training_steps=100, cut_frac=0.1, ratio=32)
    lrs = [sched.get_last_lr()[1]]
    for _ in range(105):
        sched.step()
        lrs.append(sched.get_last_lr()[1])
    assert int(np.argmax(lrs)) == 10 and lrs[10] == pytest.approx(LRS[1])
    assert lrs[0] == pytest.approx(LRS[1] / 32) and lrs[100] == pytest.approx(LRS[1] / 32)
    assert min(lrs) == pytest.approx(LRS[1] / 32)  # stays at the floor past T


def test_per_group_lambdas_and_base_lrs() -> None:
    opt = _optimizer()
    sched = LambdaLR(opt, [lambda t: 1.0, lambda t: 0.5**t])
    assert sched.base_lrs == list(LRS)
    for _ in range(3):
        sched.step()
    assert sched.get_last_lr() == [LRS[0], LRS[1] * 0.125]
    with pytest.raises(ValueError, match="2 param groups"):
        LambdaLR(_optimizer(), [lambda t: 1.0])


@pytest.mark.parametrize("make", [
    lambda o: get_cosine_schedule_with_warmup(o, 5, 40),
    lambda o: StepLR(o, 3, gamma=0.7),
    lambda o: OneCycleLR(o, max_lr=0.4, total_steps=40),
    lambda o: SequentialLR(o, [LinearLR(o, 0.1, total_iters=4), CosineAnnealingLR(o, 30)],
                           [4]),
], ids=["cosine-warmup", "step", "onecycle", "sequential"])
def test_state_dict_resume(make: Callable[[Optimizer], Any]) -> None:
    opt = _optimizer(SGD, momentum=0.9)
    sched = make(opt)
    for _ in range(15):
        sched.step()
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    expected = _trace(opt, sched, 20)

    opt2 = _optimizer(SGD, momentum=0.9)
    sched2 = make(opt2)  # build the scheduler first, then load (as in PyTorch)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    assert sched2.get_last_lr() == expected[0][:2]
    assert _trace(opt2, sched2, 20) == expected


def test_validation() -> None:
    opt = _optimizer()
    with pytest.raises(ValueError):
        LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError):
        OneCycleLR(opt, max_lr=1.0)  # neither total_steps nor epochs
    with pytest.raises(ValueError):
        slanted_triangular(opt, 100, cut_frac=1.5)
    with pytest.raises(KeyError):
        StepLR(_optimizer(), step_size=2, last_epoch=5)  # resuming needs initial_lr
    with pytest.raises(TypeError):
        StepLR(object(), step_size=2)  # type: ignore[arg-type]
    sched = OneCycleLR(_optimizer(), max_lr=1.0, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="total steps"):
        sched.step()
    with pytest.raises(ValueError):
        OneCycleLR(_optimizer(SGD), max_lr=1.0, total_steps=3, anneal_strategy="exp")


def test_multistep_and_jump_to_epoch() -> None:
    opt = _optimizer()
    sched = MultiStepLR(opt, milestones=[2, 4], gamma=0.1)
    sched.step(5)
    assert sched.get_last_lr() == pytest.approx([LRS[0] * 0.01, LRS[1] * 0.01])
