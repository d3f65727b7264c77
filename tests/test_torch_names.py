"""Names PyTorch users reach for: the loss modules, nn.Conv1d and ReduceLROnPlateau, each
against torch (skipped without it) and, where differentiable, float64 finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_op, gradcheck, requires_torch, torch

import minitl as mt
import minitl.nn.functional as F
from minitl import nn
from minitl.optim.lr_scheduler import ReduceLROnPlateau

REDUCTIONS = ["none", "mean", "sum"]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---- losses -----------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0])
def test_smooth_l1_loss_gradcheck(reduction: str, beta: float) -> None:
    rng = _rng()
    x, t = rng.normal(size=(3, 5)) * 2, rng.normal(size=(3, 5)) * 2
    # keep every |x - t| away from the kink at beta (and from 0, where |d| has no derivative)
    d = x - t
    near = (np.abs(np.abs(d) - beta) < 1e-3) | (np.abs(d) < 1e-3)
    x[near] += 0.1
    gradcheck(lambda a, b: F.smooth_l1_loss(a, b, reduction=reduction, beta=beta), [x, t])


@requires_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_smooth_l1_loss_matches_torch(reduction: str, beta: float) -> None:
    rng = _rng(1)
    x, t = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    check_op(lambda a, b: F.smooth_l1_loss(a, b, reduction=reduction, beta=beta),
             lambda a, b: torch.nn.functional.smooth_l1_loss(a, b, reduction=reduction,
                                                             beta=beta), [x, t])


def test_smooth_l1_loss_rejects_negative_beta() -> None:
    x = mt.zeros(3)
    with pytest.raises(ValueError, match="beta"):
        F.smooth_l1_loss(x, x, beta=-1.0)
    with pytest.raises(ValueError, match="beta"):
        nn.SmoothL1Loss(beta=-1.0)


def _loss_pairs() -> list[tuple[str, object, object, object]]:
    """(id, minitl module factory, torch module factory, input maker)."""
    rng = _rng(2)
    logits = rng.normal(size=(4, 3)) * 3
    labels = rng.integers(0, 2, size=(4, 3)).astype(np.float64)
    w_elem = rng.uniform(0.5, 2.0, size=(4, 3))
    pos_w = rng.uniform(0.5, 3.0, size=(3,))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    cls = np.array([0, 2, -100, 1])
    w_cls = rng.uniform(0.5, 2.0, size=(3,))
    reg = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    probs = 1 / (1 + np.exp(-logits))

    def both(fn_mt, fn_t):
        return fn_mt, fn_t

    T = torch.nn if torch is not None else None
    tt = (lambda a: torch.tensor(a)) if torch is not None else None
    cases = []
    for red in REDUCTIONS:
        cases += [
            (f"bcewl-{red}", *both(
                lambda red=red: nn.BCEWithLogitsLoss(mt.tensor(w_elem), red, mt.tensor(pos_w)),
                lambda red=red: T.BCEWithLogitsLoss(tt(w_elem), reduction=red,
                                                    pos_weight=tt(pos_w))), (logits, labels)),
            (f"bcewl-plain-{red}", *both(lambda red=red: nn.BCEWithLogitsLoss(reduction=red),
                                         lambda red=red: T.BCEWithLogitsLoss(reduction=red)),
             (logits, labels)),
            (f"bce-{red}", *both(lambda red=red: nn.BCELoss(mt.tensor(w_elem), red),
                                 lambda red=red: T.BCELoss(tt(w_elem), reduction=red)),
             (probs, labels)),
            (f"nll-{red}", *both(
                lambda red=red: nn.NLLLoss(mt.tensor(w_cls), reduction=red),
                lambda red=red: T.NLLLoss(tt(w_cls), reduction=red)), (logp, cls)),
            (f"nll-ignore1-{red}", *both(
                lambda red=red: nn.NLLLoss(ignore_index=1, reduction=red),
                lambda red=red: T.NLLLoss(ignore_index=1, reduction=red)),
             (logp, np.array([0, 1, 2, 1]))),
            (f"l1-{red}", *both(lambda red=red: nn.L1Loss(red),
                                lambda red=red: T.L1Loss(reduction=red)), reg),
            (f"smoothl1-{red}", *both(lambda red=red: nn.SmoothL1Loss(red, beta=0.7),
                                      lambda red=red: T.SmoothL1Loss(reduction=red, beta=0.7)),
             reg),
        ]
    return cases


@requires_torch
@pytest.mark.parametrize("case", _loss_pairs() if torch is not None else [],
                         ids=lambda c: c[0])
def test_loss_modules_match_torch(case: tuple) -> None:
    _, make_mt, make_t, arrays = case
    check_op(lambda *a: make_mt()(*a), lambda *a: make_t()(*a), list(arrays))


def test_loss_module_buffers_and_reduction_check() -> None:
    m = nn.BCEWithLogitsLoss(pos_weight=mt.ones(3))
    assert "pos_weight" in m.state_dict()
    assert "weight" in nn.NLLLoss(weight=mt.ones(3)).state_dict()
    with pytest.raises(ValueError, match="reduction"):
        nn.L1Loss("average")


def test_bce_with_logits_module_is_finite_for_huge_logits() -> None:
    x = mt.tensor([[-1e4, 1e4, 0.0]], requires_grad=True)
    loss = nn.BCEWithLogitsLoss(pos_weight=mt.tensor([2.0, 2.0, 2.0]))(x, mt.tensor([[1.0, 0.0,
                                                                                      1.0]]))
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(x.grad.numpy()).all()


# ---- Conv1d -----------------------------------------------------------------------------

CONV1D = [  # (c_in, c_out, k, stride, padding, dilation, groups, bias, length)
    (3, 4, 3, 1, 0, 1, 1, True, 9),
    (4, 6, 3, 2, 1, 2, 2, True, 11),
    (4, 4, 5, 1, "same", 1, 4, False, 8),
    (2, 3, 2, 3, "valid", 1, 1, True, 10),
    (2, 4, 4, 1, "same", 2, 1, True, 7),
]


@requires_torch
@pytest.mark.parametrize("cfg", CONV1D, ids=str)
def test_conv1d_module_matches_torch(cfg: tuple) -> None:
    c_in, c_out, k, s, p, d, g, bias, length = cfg
    tm = torch.nn.Conv1d(c_in, c_out, k, s, p, d, g, bias, dtype=torch.float64)
    m = nn.Conv1d(c_in, c_out, k, s, p, d, g, bias, dtype=mt.float64)
    assert m.weight.shape == tuple(tm.weight.shape)
    w = tm.weight.detach().numpy()
    b = tm.bias.detach().numpy() if bias else None
    with mt.no_grad():
        m.weight.copy_(mt.tensor(w))
        if bias:
            m.bias.copy_(mt.tensor(b))
    x = _rng(3).normal(size=(2, c_in, length))
    inputs = [x, w] + ([b] if bias else [])
    check_op(lambda xi, wi, *bi: F.conv1d(xi, wi, bi[0] if bi else None, s, p, d, g),
             lambda xi, wi, *bi: torch.nn.functional.conv1d(xi, wi, bi[0] if bi else None, s,
                                                            p, d, g), inputs)
    out = m(mt.tensor(x))
    np.testing.assert_allclose(out.numpy(), tm(torch.tensor(x)).detach().numpy(), atol=1e-10)
    # an unbatched (C, L) input gives the batched result of its single row
    np.testing.assert_allclose(m(mt.tensor(x[0])).numpy(), out.numpy()[0], atol=1e-10)


@pytest.mark.parametrize("cfg", CONV1D[:3], ids=str)
def test_conv1d_gradcheck(cfg: tuple) -> None:
    c_in, c_out, k, s, p, d, g, bias, length = cfg
    rng = _rng(4)
    x = rng.normal(size=(2, c_in, length))
    w = rng.normal(size=(c_out, c_in // g, k))
    b = rng.normal(size=(c_out,))
    gradcheck(lambda xi, wi, bi: F.conv1d(xi, wi, bi if bias else None, s, p, d, g), [x, w, b],
              wrt=[0, 1, 2] if bias else [0, 1])


def test_conv1d_errors_and_repr() -> None:
    with pytest.raises(ValueError, match="divisible"):
        nn.Conv1d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv1d(2, 2, 3, stride=2, padding="same")
    m = nn.Conv1d(2, 4, 3, padding=1, bias=False)
    with pytest.raises(RuntimeError, match="channels"):
        m(mt.zeros(1, 3, 5))
    assert "bias=False" in repr(m) and m.weight.shape == (4, 2, 3)


# ---- ReduceLROnPlateau ----------------------------------------------------------------

PLATEAU = [
    {},
    {"mode": "max", "factor": 0.5, "patience": 2},
    {"mode": "min", "factor": 0.5, "patience": 1, "threshold": 0.1, "threshold_mode": "abs",
     "cooldown": 2},
    {"mode": "max", "factor": 0.3, "patience": 0, "threshold": 0.05, "threshold_mode": "rel",
     "min_lr": [0.01, 0.002]},
    {"factor": 0.5, "patience": 1, "min_lr": 0.02, "eps": 1e-3},
]


def _metrics(n: int = 60) -> list[float]:
    rng = _rng(5)
    # improves, stalls, improves a little, then wanders: every rule gets exercised
    base = np.concatenate([np.linspace(1.0, 0.5, 10), np.full(10, 0.5),
                           np.linspace(0.5, 0.45, 10), 0.45 + rng.normal(0, 0.05, n - 30)])
    return [float(v) for v in base]


def _lr_sequence(sched, opt, metrics) -> list[list[float]]:
    out = []
    for v in metrics:
        sched.step(v)
        out.append([g["lr"] for g in opt.param_groups])
    return out


@requires_torch
@pytest.mark.parametrize("kwargs", PLATEAU, ids=str)
def test_reduce_lr_on_plateau_matches_torch(kwargs: dict) -> None:
    lrs = (0.1, 0.02)
    p, q = mt.zeros(1, requires_grad=True), mt.zeros(1, requires_grad=True)
    opt = mt.optim.SGD([{"params": [p], "lr": lrs[0]}, {"params": [q], "lr": lrs[1]}])
    tp, tq = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([{"params": [tp], "lr": lrs[0]}, {"params": [tq], "lr": lrs[1]}])
    metrics = _metrics()
    ours = _lr_sequence(ReduceLROnPlateau(opt, **kwargs), opt, metrics)
    theirs = _lr_sequence(torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs), topt,
                          metrics)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert len({tuple(r) for r in ours}) > 1, "the sequence never cut the lr"


def test_reduce_lr_on_plateau_state_dict_resumes_exactly() -> None:
    def make():
        opt = mt.optim.SGD([mt.zeros(1, requires_grad=True)], lr=1.0)
        return opt, ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1)

    metrics = _metrics()
    opt, sched = make()
    full = _lr_sequence(sched, opt, metrics)
    opt, sched = make()
    head = _lr_sequence(sched, opt, metrics[:25])
    state = sched.state_dict()
    assert "optimizer" not in state
    opt2, sched2 = make()
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    sched2.load_state_dict(state)
    assert head + _lr_sequence(sched2, opt2, metrics[25:]) == full
    assert sched2.get_last_lr() == [full[-1][0]]


def test_reduce_lr_on_plateau_errors() -> None:
    opt = mt.optim.SGD([mt.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="Factor"):
        ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="unknown"):
        ReduceLROnPlateau(opt, mode="best")
    with pytest.raises(ValueError, match="unknown"):
        ReduceLROnPlateau(opt, threshold_mode="pct")
    with pytest.raises(ValueError, match="min_lrs"):
        ReduceLROnPlateau(opt, min_lr=[0.1, 0.2])
