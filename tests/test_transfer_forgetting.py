"""Forgetting controls (minitl.transfer.ewc / .replay / .ledger): EWC and L2-SP penalties
(zero at the anchor, gradients vs finite differences in float64, Fisher vs PyTorch), the
replay buffer's ratio and determinism, and the forgetting ledger."""

import json

import numpy as np
import pytest

import minitl as mt
import minitl.nn.functional as F
from minitl import nn
from minitl import transfer as tl
from tests.helpers import requires_torch, torch


def mlp64(seed: int = 0):
    mt.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    return net


def source_batches(n: int = 6, b: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(mt.tensor(rng.standard_normal((b, 4))), mt.tensor(rng.integers(0, 3, b)))
            for _ in range(n)]


def perturb(model, scale=0.1, seed=3):
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data += rng.standard_normal(p.shape) * scale


def fd_check(model, penalty_fn, eps=1e-6):
    """Analytic gradient of penalty_fn() vs central differences, every parameter entry."""
    for p in model.parameters():
        p.grad = None
    penalty_fn().backward()
    for name, p in model.named_parameters():
        analytic = np.zeros(p.shape) if p.grad is None else p.grad.numpy()
        numeric = np.zeros(p.shape)
        flat = p.data.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            with mt.no_grad():
                up = penalty_fn().item()
            flat[j] = old - eps
            with mt.no_grad():
                down = penalty_fn().item()
            flat[j] = old
            numeric.reshape(-1)[j] = (up - down) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


# ---- EWC ------------------------------------------------------------------------------------

def test_ewc_zero_at_anchor_and_gradient_matches_finite_differences():
    model = mlp64()
    ewc = tl.EWC(model, source_batches(), lam=3.0)
    pen = ewc.penalty()
    assert isinstance(pen, mt.Tensor) and pen.item() == 0.0
    assert all(p.grad is None for p in model.parameters())  # Fisher pass leaves no grads
    perturb(model)
    assert ewc.penalty().item() > 0
    fd_check(model, ewc.penalty)
    # closed form: lam/2 sum F (w - w*)^2, gradient lam F (w - w*)
    expect = sum((f.numpy() * (p.numpy() - a.numpy()) ** 2).sum()
                 for (_, p), a, f in zip(ewc.params, ewc.anchors, ewc.fisher)) * 1.5
    np.testing.assert_allclose(ewc.penalty().item(), expect, rtol=1e-12)


@requires_torch
def test_ewc_fisher_is_mean_of_squared_batch_gradients_vs_torch():
    model = mlp64()
    data = source_batches(n=5, b=2)
    ewc = tl.EWC(model, data, lam=1.0)
    tnet = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(),
                               torch.nn.Linear(5, 3)).double()
    with torch.no_grad():
        for tp, (_, p) in zip(tnet.parameters(), model.named_parameters()):
            tp.copy_(torch.tensor(p.numpy()))
    sums = [torch.zeros_like(p) for p in tnet.parameters()]
    for x, y in data:
        tnet.zero_grad()
        torch.nn.functional.cross_entropy(tnet(torch.tensor(x.numpy())),
                                          torch.tensor(y.numpy())).backward()
        for s, p in zip(sums, tnet.parameters()):
            s += p.grad**2
    for f, s in zip(ewc.fisher, sums):
        np.testing.assert_allclose(f.numpy(), (s / len(data)).numpy(), rtol=1e-10, atol=1e-14)


def test_ewc_excludes_head_restores_flags_and_pulls_back():
    model = mlp64()
    model[0].weight.requires_grad = False
    model.train()
    ewc = tl.EWC(model, source_batches(), lam=1.0, exclude=("2.*",))
    assert [n for n, _ in ewc.params] == ["0.weight", "0.bias"]
    assert not model[0].weight.requires_grad and model.training
    # a gradient step on the penalty alone moves the weights back towards the anchor
    tl.unfreeze(model)
    perturb(model)
    start = ewc.penalty().item()
    opt = mt.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        ewc.penalty().backward()
        opt.step()
    assert ewc.penalty().item() < start
    state = ewc.state_dict()
    assert set(state) == {"fisher.0.weight", "fisher.0.bias", "anchor.0.weight",
                          "anchor.0.bias"}
    ewc.load_state_dict(state)


# ---- L2-SP ----------------------------------------------------------------------------------

def test_l2sp_zero_at_start_and_gradient_matches_finite_differences():
    model = mlp64()
    reg = tl.L2SP(model, alpha=0.7, head=("2.*",), beta=0.2)
    assert [n for n, _ in reg.anchored] == ["0.weight", "0.bias"]
    head_l2 = 0.1 * sum((p.numpy() ** 2).sum() for p in model[2].parameters())
    np.testing.assert_allclose(reg.penalty().item(), head_l2, rtol=1e-12)
    assert tl.L2SP(model, alpha=1.0).penalty().item() == 0.0
    perturb(model)
    fd_check(model, reg.penalty)
    w, w0 = model[0].weight.numpy(), reg.anchors[0].numpy()
    model[0].weight.grad = None
    reg.penalty().backward()
    np.testing.assert_allclose(model[0].weight.grad.numpy(), 0.7 * (w - w0), rtol=1e-12)


# ---- replay ---------------------------------------------------------------------------------

def target_loader(n_batches=25, b=8, seed=1):
    rng = np.random.default_rng(seed)
    return [(mt.tensor(rng.standard_normal((b, 3)).astype(np.float32)),
             mt.tensor(rng.integers(0, 2, b))) for _ in range(n_batches)]


def test_replay_ratio_and_structure():
    src_x = np.arange(40 * 3, dtype=np.float32).reshape(40, 3) + 1000
    src_y = np.full(40, 7)
    buf = tl.ReplayBuffer((src_x, src_y), ratio=0.2, seed=0)
    n_src = n_all = 0
    seen = []
    for x, y in buf.wrap(target_loader()):
        assert isinstance(x, mt.Tensor) and x.dtype == np.float32 and y.shape[0] == x.shape[0]
        is_src = y.numpy() == 7
        n_src += is_src.sum()
        n_all += len(is_src)
        assert (x.numpy()[is_src] >= 1000).all() and (x.numpy()[~is_src] < 1000).all()
        assert not is_src[:8].any()  # target examples first, all of them kept
        seen += list(x.numpy()[is_src][:, 0])
    assert n_all == 200 + 50 and n_src == 50  # 20 % of all examples, exactly
    assert abs(buf.realised_ratio - 0.2) < 1e-12
    assert sorted(seen[:40]) == sorted(src_x[:, 0])  # a full pass before any repeat


def test_replay_deterministic_with_seed():
    src = {"x": np.arange(30, dtype=np.float32)[:, None], "labels": np.arange(30)}

    def run(seed):
        buf = tl.ReplayBuffer(src, ratio=0.3, seed=seed)
        return [buf.mix({"x": np.zeros((4, 1), np.float32), "labels": np.zeros(4, int)})
                ["labels"].tolist() for _ in range(6)]

    assert run(0) == run(0) and run(0) != run(1)
    buf = tl.ReplayBuffer(src, ratio=0.3, seed=0)
    first = [buf.mix({"x": np.zeros((4, 1), np.float32), "labels": np.zeros(4, int)})
             ["labels"].tolist() for _ in range(6)]
    buf.reset()
    again = [buf.mix({"x": np.zeros((4, 1), np.float32), "labels": np.zeros(4, int)})
             ["labels"].tolist() for _ in range(6)]
    assert first == again
    assert tl.ReplayBuffer(src, ratio=0.0).mix({"x": np.zeros((2, 1)),
                                                "labels": np.zeros(2)})["x"].shape == (2, 1)
    with pytest.raises(ValueError):
        tl.ReplayBuffer(src, ratio=1.0)


def test_replay_pads_text_batches_and_collates_examples():
    src = {"input_ids": np.ones((10, 9), dtype=np.int64),
           "attention_mask": np.ones((10, 9), dtype=np.int64),
           "labels": np.ones((10, 9), dtype=np.int64)}
    tgt = {"input_ids": mt.tensor(np.full((4, 5), 2)),
           "attention_mask": mt.tensor(np.ones((4, 5), dtype=np.int64)),
           "labels": mt.tensor(np.full((4, 5), 3))}
    buf = tl.ReplayBuffer(src, ratio=0.5, pad_value={"labels": -100})
    out = buf.mix(tgt)
    assert out["input_ids"].shape == (8, 9)
    assert (out["attention_mask"].numpy()[:4, 5:] == 0).all()
    assert (out["labels"].numpy()[:4, 5:] == -100).all()
    assert (out["input_ids"].numpy()[:4, 5:] == 0).all()
    # a sequence of examples with a collate function
    examples = [(np.full(2, i, dtype=np.float32), i) for i in range(5)]

    def collate(items):
        return np.stack([a for a, _ in items]), np.array([b for _, b in items])

    buf = tl.ReplayBuffer(examples, ratio=0.5, collate_fn=collate, seed=3)
    x, y = buf.mix((np.zeros((3, 2), np.float32), np.full(3, -1)))
    assert x.shape == (6, 2) and (y[3:] >= 0).all() and (x[3:, 0] == y[3:]).all()
    loader = buf.wrap([(np.zeros((3, 2), np.float32), np.full(3, -1))] * 2)
    assert len(loader) == 2 and len(list(loader)) == 2
    loader.set_epoch(1)  # passes through (a list has none)


# ---- forgetting ledger ----------------------------------------------------------------------

@pytest.mark.parametrize("memory", ["tracemalloc", "rss", None])
def test_ledger_records_table_json_and_drift(tmp_path, memory):
    model = mlp64()
    tl.freeze(model, "0.*")
    state = {"src": 0.9, "tgt": 0.4}
    ledger = tl.ForgettingLedger(lambda m: {"accuracy": state["src"], "loss": 1.0},
                                 lambda m: {"accuracy": state["tgt"]}, model=model,
                                 memory=memory)
    ledger.record("before")
    for _ in range(3):
        with ledger.time_step():
            _ = np.ones((200, 200)) @ np.ones((200, 200))
        state["src"] -= 0.05
        state["tgt"] += 0.1
    ledger.record("during", step=3)
    ledger.add_step_time(0.5)
    row = ledger.record("after", step=4)
    ledger.close()
    assert row["trainable_params"] == 18 and row["total_params"] == 43
    assert row["step_time_s"] == 0.5 and ledger.records[1]["n_steps_timed"] == 3
    assert ledger.records[0]["step_time_s"] is None
    if memory is None:
        assert row["peak_memory_bytes"] is None
    else:
        assert all(r["peak_memory_bytes"] >= 0 for r in ledger.records)
    if memory == "tracemalloc":
        assert ledger.records[1]["peak_memory_bytes"] >= 200 * 200 * 8  # the matmul buffers
    drift = ledger.drift()
    assert drift["accuracy"] == pytest.approx(-0.15) and drift["loss"] == 0.0
    table = ledger.table()
    lines = table.splitlines()
    assert "src:accuracy" in lines[0] and "tgt:accuracy" in lines[0]
    assert "peak MB" in lines[0] and "step ms" in lines[0]
    assert lines[2].startswith("before") and lines[4].startswith("after")
    assert "500.00" in lines[4] and "-0.1500" in table
    path = tmp_path / "ledger.json"
    ledger.to_json(path)
    data = json.loads(path.read_text())
    assert [r["stage"] for r in data["records"]] == ["before", "during", "after"]
    assert data["drift"]["accuracy"] == pytest.approx(-0.15)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_ledger_needs_a_model_and_closes():
    import tracemalloc

    with tl.ForgettingLedger(lambda m: {}, lambda m: {}) as ledger:
        with pytest.raises(ValueError, match="no model"):
            ledger.record("before")
        ledger.record("before", model=nn.Linear(2, 2))
        assert ledger.drift() == {}
        assert tracemalloc.is_tracing()
    assert not tracemalloc.is_tracing()


def test_ewc_in_a_training_loop_reduces_source_drift():
    # Source task, then a target task with conflicting labels: the EWC run stays closer to
    # the source solution than plain fine-tuning.
    rng = np.random.default_rng(0)
    xs = mt.tensor(rng.standard_normal((64, 4)))
    ys = mt.tensor((xs.numpy()[:, 0] > 0).astype(np.int64))
    yt = mt.tensor((xs.numpy()[:, 1] > 0).astype(np.int64))

    def fit(model, y, steps, lr, penalty=None):
        opt = mt.optim.SGD(model.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(xs), y)
            if penalty is not None:
                loss = loss + penalty()
            loss.backward()
            opt.step()

    def src_acc(model):
        with mt.no_grad():
            return float((model(xs).numpy().argmax(-1) == ys.numpy()).mean())

    accs = []
    for use_ewc in (False, True):
        model = mlp64(seed=1)
        fit(model, ys, 30, lr=0.5)
        assert src_acc(model) == 1.0
        ewc = tl.EWC(model, [(xs[i:i + 1], ys[i:i + 1]) for i in range(64)], lam=300.0)
        fit(model, yt, 100, lr=0.1, penalty=ewc.penalty if use_ewc else None)
        accs.append(src_acc(model))
    assert accs[1] > accs[0] + 0.15  # (0.72 vs 0.47 with these seeds)
