"""Optimizers against torch.optim (float64 trajectories), checkpoints, zero_grad, validation,
and gradient clipping."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from minitl.nn.parameter import Parameter
from minitl.optim import SGD, Adam, AdamW, Optimizer, clip_grad_norm_, clip_grad_value_
from minitl.tensor import Tensor

SHAPES = [(3, 4), (5,), (2, 3, 2), ()]
STEPS = 20


def _init(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _grad_sequence(n: int, seed: int = 1) -> list[list[np.ndarray | None]]:
    """n steps of float64 gradients; every 7th step the last parameter has none."""
    rng = np.random.default_rng(seed)
    seq: list[list[np.ndarray | None]] = []
    for t in range(n):
        grads: list[np.ndarray | None] = [rng.standard_normal(s) for s in SHAPES]
        if t % 7 == 3:
            grads[-1] = None
        seq.append(grads)
    return seq


def _groups(params: list[Any], **group1: Any) -> list[dict[str, Any]]:
    # Two groups with different lrs (and whatever else the test overrides in the second).
    return [{"params": params[:2]}, {"params": params[2:], "lr": 0.03, **group1}]


def _set_grads(params: list[Parameter], grads: list[np.ndarray | None]) -> None:
    for p, g in zip(params, grads):
        p.grad = None if g is None else Tensor(g.copy())


def _run_minitl(cls: type[Optimizer], kwargs: dict[str, Any], steps: int,
                init: list[np.ndarray] | None = None) -> tuple[list[Parameter], Optimizer]:
    params = [Parameter(a.copy()) for a in (init or _init())]
    opt = cls(_groups(params), **kwargs)
    for grads in _grad_sequence(steps):
        _set_grads(params, grads)
        opt.step()
    return params, opt


SGD_CONFIGS = [
    {"lr": 0.1},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.3},
    {"lr": 0.1, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "weight_decay": 0.05},
    {"lr": 0.1, "momentum": 0.8, "weight_decay": 0.05, "maximize": True},
    {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01, "maximize": True},
]
ADAM_CONFIGS = [
    {"lr": 0.05},
    {"lr": 0.05, "amsgrad": True},
    {"lr": 0.05, "weight_decay": 0.1},
    {"lr": 0.05, "betas": (0.3, 0.8), "eps": 1e-6},  # beta1 < 0.5 takes lerp's other branch
    {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1, "maximize": True},
]
ADAMW_CONFIGS = [
    {"lr": 0.05},
    {"lr": 0.05, "weight_decay": 0.2, "amsgrad": True},
    {"lr": 0.05, "maximize": True, "betas": (0.8, 0.99)},
]
CASES = ([("SGD", SGD, c) for c in SGD_CONFIGS] + [("Adam", Adam, c) for c in ADAM_CONFIGS]
         + [("AdamW", AdamW, c) for c in ADAMW_CONFIGS])


@pytest.mark.parametrize("name,cls,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _, _) in
                                                        enumerate(CASES)])
def test_matches_torch(name: str, cls: type[Optimizer], kwargs: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    init = _init()
    params = [Parameter(a.copy()) for a in init]
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = cls(_groups(params), **kwargs)
    topt = getattr(torch.optim, name)(_groups(tparams), foreach=False, **kwargs)
    for grads in _grad_sequence(STEPS):
        _set_grads(params, grads)
        for tp, g in zip(tparams, grads):
            tp.grad = None if g is None else torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        for p, tp in zip(params, tparams):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls,kwargs", [(SGD, SGD_CONFIGS[5]), (Adam, ADAM_CONFIGS[4]),
                                        (AdamW, ADAMW_CONFIGS[1])])
def test_state_dict_round_trip(cls: type[Optimizer], kwargs: dict[str, Any]) -> None:
    full, _ = _run_minitl(cls, kwargs, 2 * 10)

    params, opt = _run_minitl(cls, kwargs, 10)
    saved = opt.state_dict()
    params2 = [Parameter(p.data.copy()) for p in params]
    opt.step()  # later steps must not leak into the saved copy
    # Hyper-parameters come from the checkpoint, not from the constructor.
    fresh = cls(_groups(params2), lr=123.0)  # type: ignore[call-arg]
    fresh.load_state_dict(saved)
    assert fresh.param_groups[1]["lr"] == 0.03
    for grads in _grad_sequence(20)[10:]:
        _set_grads(params2, grads)
        fresh.step()
    for a, b in zip(params2, full):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_layout_and_copies() -> None:
    params, opt = _run_minitl(Adam, {"lr": 0.1, "amsgrad": True}, 4)
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert sd["param_groups"][1]["lr"] == 0.03 and sd["param_groups"][0]["lr"] == 0.1
    assert set(sd["state"]) == {0, 1, 2, 3}
    assert sd["state"][0]["step"] == 4 and sd["state"][3]["step"] == 3  # no grad at t=3
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["exp_avg"] is not opt.state[params[0]]["exp_avg"]

    # Loading casts floating buffers to the parameter's dtype and copies them.
    params32 = [Parameter(p.data.astype(np.float32)) for p in params]
    opt32 = Adam(_groups(params32), amsgrad=True)
    opt32.load_state_dict(sd)
    buf = opt32.state[params32[0]]["exp_avg"]
    assert buf.dtype == np.float32 and buf is not sd["state"][0]["exp_avg"]


def test_load_state_dict_validates() -> None:
    params, opt = _run_minitl(SGD, {"lr": 0.1, "momentum": 0.9}, 2)
    sd = opt.state_dict()
    one_group = SGD([Parameter(p.data.copy()) for p in params], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="1 parameter groups|2 parameter groups"):
        one_group.load_state_dict(sd)
    short = [Parameter(p.data.copy()) for p in params[:3]]
    wrong_size = SGD([{"params": short[:2]}, {"params": short[2:]}], lr=0.1)
    with pytest.raises(ValueError, match="parameter group 1"):
        wrong_size.load_state_dict(sd)
    swapped = [Parameter(p.data.copy()) for p in params]
    swapped[0], swapped[1] = swapped[1], swapped[0]  # shapes (5,) and (3, 4) trade places
    target = SGD(_groups(swapped), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="shape"):
        target.load_state_dict(sd)
    assert len(target.state) == 0  # a failed load changes nothing


def test_zero_grad() -> None:
    p, q = Parameter(np.ones(3)), Parameter(np.ones(2))
    opt = SGD([p, q], lr=0.1)
    p.grad = Tensor(np.full(3, 2.0))
    kept = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is kept and np.all(p.grad.data == 0) and q.grad is None
    opt.zero_grad()
    assert p.grad is None and q.grad is None


def test_skips_params_without_grad_and_creates_no_state() -> None:
    p, q = Parameter(np.ones(3)), Parameter(np.ones(2))
    for opt in (SGD([p, q], lr=0.1, momentum=0.9), Adam([p, q], lr=0.1)):
        p.grad = Tensor(np.ones(3))
        q.grad = None
        before = q.data.copy()
        opt.step()
        np.testing.assert_array_equal(q.data, before)
        assert q not in opt.state
        assert not np.all(p.data == 1)


def test_updates_in_place_and_leave_grad_alone() -> None:
    p = Parameter(np.arange(4.0))
    tied = Tensor(p.data)  # shares the array, as tied weights do
    array = p.data
    for opt in (SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True),
                Adam([p], weight_decay=0.1, maximize=True), AdamW([p])):
        g = np.linspace(-1, 1, 4)
        p.grad = Tensor(g.copy())
        opt.step()
        opt.step()
        assert p.data is array and tied.data is array
        np.testing.assert_array_equal(p.grad.data, g)
        assert p.grad.grad_fn is None and p.grad_fn is None


def test_closure_and_float32() -> None:
    p = Parameter(np.array([3.0, -2.0], dtype=np.float32))
    opt = Adam([p], lr=0.1)

    def closure() -> float:
        p.grad = Tensor(2 * p.data)  # d/dp sum(p^2)
        return float((p.data**2).sum())

    losses = [opt.step(closure) for _ in range(100)]
    assert losses[-1] < losses[0] and p.data.dtype == np.float32
    assert opt.state[p]["exp_avg"].dtype == np.float32


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=-0.1),
    lambda ps: SGD(ps, lr=float("nan")),
    lambda ps: SGD(ps, momentum=-0.5),
    lambda ps: SGD(ps, weight_decay=-1e-4),
    lambda ps: SGD(ps, nesterov=True),
    lambda ps: SGD(ps, momentum=0.9, dampening=0.1, nesterov=True),
    lambda ps: Adam(ps, lr=-1e-3),
    lambda ps: Adam(ps, betas=(1.0, 0.999)),
    lambda ps: Adam(ps, betas=(0.9, -0.1)),
    lambda ps: Adam(ps, eps=-1e-8),
    lambda ps: AdamW(ps, weight_decay=-0.01),
    lambda ps: Adam([{"params": ps, "lr": -1.0}]),  # per-group values are checked too
    lambda ps: SGD([], lr=0.1),
    lambda ps: SGD([ps[0], np.ones(3)], lr=0.1),
    lambda ps: SGD(ps[0], lr=0.1),
    lambda ps: SGD({ps[0]}, lr=0.1),
    lambda ps: SGD([{"params": ps}, {"params": ps[:1], "lr": 0.5}], lr=0.1),
    lambda ps: SGD([ps[0], ps[0]], lr=0.1),
], ids=lambda _: "")
def test_invalid_arguments_raise(make: Any) -> None:
    ps = [Parameter(np.ones(3)), Parameter(np.ones(2))]
    with pytest.raises(ValueError):
        make(ps)


def test_error_messages_name_the_value() -> None:
    ps = [Parameter(np.ones(3))]
    with pytest.raises(ValueError, match="-0.25"):
        SGD(ps, lr=-0.25)
    with pytest.raises(ValueError, match="1.5"):
        Adam(ps, betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="ndarray"):
        SGD([np.ones(3)], lr=0.1)  # type: ignore[arg-type]


def test_add_param_group_and_named_params() -> None:
    a, b = Parameter(np.ones(2)), Parameter(np.ones(3))
    opt = AdamW([("a", a)], lr=0.01)
    opt.add_param_group({"params": [("b", b)], "lr": 0.5})
    assert opt.param_groups[0]["param_names"] == ["a"]
    assert opt.param_groups[1]["lr"] == 0.5
    assert opt.param_groups[1]["weight_decay"] == 0.01 and opt.param_groups[1]["eps"] == 1e-8
    with pytest.raises(ValueError, match="param_groups\\[1\\]"):
        opt.add_param_group({"params": [b]})


# ---- clipping ------------------------------------------------------------------------


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type: float, max_norm: float) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(s) for s in SHAPES] + [None]
    params = [Parameter(np.zeros(g.shape if g is not None else (2,))) for g in grads]
    tparams = [torch.zeros(p.shape, dtype=torch.float64, requires_grad=True) for p in params]
    for p, tp, g in zip(params, tparams, grads):
        if g is not None:
            p.grad = Tensor(g.copy())
            tp.grad = torch.from_numpy(g.copy())
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type,
                                            foreach=False)
    assert isinstance(total, Tensor) and total.shape == ()
    np.testing.assert_allclose(total.data, ttotal.numpy(), rtol=1e-12)
    for p, tp in zip(params, tparams):
        if p.grad is not None:
            np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), rtol=1e-12, atol=1e-15)
    if max_norm > total.data:
        for p, g in zip(params, grads):
            if p.grad is not None:
                np.testing.assert_array_equal(p.grad.data, g)  # untouched below the bound


def test_clip_grad_norm_edge_cases() -> None:
    p = Parameter(np.zeros(3))
    assert float(clip_grad_norm_([p], 1.0).data) == 0.0  # no gradients at all
    p.grad = Tensor(np.array([3.0, 4.0, 0.0]))
    total = clip_grad_norm_(p, 1.0)  # a single Tensor is accepted
    assert float(total.data) == 5.0
    np.testing.assert_allclose(np.linalg.norm(p.grad.data), 1.0, rtol=1e-6)
    p.grad = Tensor(np.array([np.inf, 1.0, 0.0]))
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    q = Parameter(np.zeros(2, dtype=np.float32))
    q.grad = Tensor(np.array([30.0, 40.0], dtype=np.float32))
    total = clip_grad_norm_([q], 5.0)
    assert total.dtype == np.float32 and q.grad.dtype == np.float32
    np.testing.assert_allclose(q.grad.data, [3.0, 4.0], rtol=1e-5)


def test_clip_grad_value() -> None:
    p, q = Parameter(np.zeros(4)), Parameter(np.zeros(2))
    p.grad = Tensor(np.array([-3.0, -0.5, 0.2, 9.0]))
    clip_grad_value_([p, q], 1.0)
    np.testing.assert_array_equal(p.grad.data, [-1.0, -0.5, 0.2, 1.0])
    assert q.grad is None
