"""Trainer, callbacks, metrics, checkpoints and progress output.

The central promise: a run killed mid-epoch and resumed from its checkpoint produces the
same per-step losses, bit for bit, as the run that was never interrupted.
"""

from __future__ import annotations

import io
import json
import math
import os
from typing import Any

import numpy as np
import pytest
from helpers import requires_torch, torch

import minitl as mt
import minitl.nn.functional as F
from minitl import nn
from minitl.data import DataLoader, TensorDataset, default_collate
from minitl.optim import SGD, AdamW, lr_scheduler
from minitl.train import (
    Accuracy,
    Callback,
    Checkpoint,
    EarlyStopping,
    LambdaCallback,
    MacroF1,
    Perplexity,
    ProgressDisplay,
    Trainer,
    accuracy,
    confusion_matrix,
    load_state,
    macro_f1,
    model_state_dict,
    perplexity,
    read_jsonl,
    save_state,
)

# ---- data and models -------------------------------------------------------------------------


def blobs(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three gaussian clusters in 6-d; a small MLP separates them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.5, (3, 6))
    y = rng.integers(0, 3, n)
    x = centres[y] + rng.normal(0, 1.0, (n, 6))
    return x.astype(np.float32), y.astype(np.int64)


def dataset(n: int = 256, seed: int = 0, flip: bool = False) -> TensorDataset:
    x, y = blobs(n, seed)
    return TensorDataset(mt.tensor(x), mt.tensor((y + 1) % 3 if flip else y))


def mlp(dropout: float = 0.0, seed: int = 0) -> nn.Module:
    mt.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 3))


def weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def quiet(**kw: Any) -> dict[str, Any]:
    return {"progress": False, **kw}


# ---- metrics ----------------------------------------------------------------------------------


def test_accuracy_and_macro_f1_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 1, 2, -100])
    p = np.array([0, 1, 1, 1, 0, 0, 2])
    assert accuracy(p, y) == pytest.approx(3 / 6)
    # class 0: tp 1 fp 2 fn 1 -> 2/5; class 1: tp 2 fp 1 fn 1 -> 4/6; class 2: tp 0 -> 0
    assert macro_f1(p, y) == pytest.approx((2 / 5 + 4 / 6 + 0) / 3)
    np.testing.assert_array_equal(confusion_matrix(p, y), [[1, 1, 0], [1, 2, 0], [1, 0, 0]])
    logits = np.eye(3)[p] * 5.0  # argmax recovers p
    assert accuracy(logits, y) == accuracy(p, y)
    assert math.isnan(accuracy(p[-1:], y[-1:]))


def test_macro_f1_matches_a_direct_count_and_streams() -> None:
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 5, 300), rng.integers(0, 4, 300)  # class 4 is never predicted
    scores = []
    for c in sorted(set(y) | set(p)):
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    assert macro_f1(p, y) == pytest.approx(np.mean(scores))
    f1, acc = MacroF1(), Accuracy()
    for i in range(0, 300, 64):  # batches that each miss some classes
        f1.update(p[i:i + 64], y[i:i + 64])
        acc.update(p[i:i + 64], y[i:i + 64])
    assert f1.compute() == pytest.approx(macro_f1(p, y))
    assert acc.compute() == pytest.approx(accuracy(p, y))


@requires_torch
def test_perplexity_is_exp_of_mean_token_loss() -> None:
    rng = np.random.default_rng(2)
    logits, labels = rng.standard_normal((3, 5, 11)), rng.integers(0, 11, (3, 5))
    labels[0, :2] = -100
    ce = torch.nn.functional.cross_entropy(torch.tensor(logits).reshape(-1, 11),
                                           torch.tensor(labels).reshape(-1))
    ppl = Perplexity()
    ppl.update(logits[:2], labels[:2])
    ppl.update(logits[2:], labels[2:])
    assert ppl.compute() == pytest.approx(math.exp(ce.item()), rel=1e-10)
    assert perplexity(ce.item()) == pytest.approx(ppl.compute(), rel=1e-10)
    from_loss = Perplexity()
    from_loss.update(None, labels, loss=ce.item())
    assert from_loss.compute() == pytest.approx(ppl.compute(), rel=1e-10)
    assert perplexity(1e6) == math.inf


# ---- learning, accumulation, clipping, schedules, evaluation ---------------------------------


def test_tiny_model_learns_and_evaluates_each_epoch() -> None:
    model = mlp(dropout=0.1)
    opt = AdamW(model.parameters(), lr=1e-2)
    trainer = Trainer(model, opt, F.cross_entropy, DataLoader(dataset(), 32, shuffle=True),
                      DataLoader(dataset(128, seed=0), 64), max_epochs=4,
                      metrics=["accuracy", "macro_f1"], **quiet())
    history = trainer.fit()
    assert len(history.train) == trainer.step == 4 * 8
    assert [r["step"] for r in history.eval] == [8, 16, 24, 32]
    assert history.eval == trainer.eval_history
    last = trainer.eval_history[-1]
    assert last["eval_accuracy"] >= 0.95 and last["eval_macro_f1"] >= 0.95
    assert last["eval_loss"] < trainer.eval_history[0]["eval_loss"]
    train = history.train
    assert np.mean([r["loss"] for r in train[-8:]]) < np.mean([r["loss"] for r in train[:8]])
    assert model.training


def test_evaluation_runs_in_eval_mode_without_grad() -> None:
    seen = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x: mt.Tensor) -> mt.Tensor:
            seen.append((self.training, mt.is_grad_enabled()))
            return self.fc(x)

    model = Probe()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), F.cross_entropy,
                      DataLoader(dataset(8), 4), DataLoader(dataset(8), 8), **quiet())
    trainer.fit()
    assert seen == [(True, True), (True, True), (False, False)]
    assert model.training


@pytest.mark.parametrize("n", [128, 40])  # 40: the last group of the epoch is short
def test_grad_accumulation_equals_one_big_batch(n: int) -> None:
    data = dataset(n)
    runs = []
    for batch, accum in ((8, 4), (32, 1)):
        model = mlp()
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        trainer = Trainer(model, opt, F.cross_entropy,
                          DataLoader(data, batch, shuffle=True, seed=3), max_epochs=2,
                          grad_accum_steps=accum, **quiet())
        runs.append(([r["loss"] for r in trainer.fit()], weights(model)))
    (small_losses, small_w), (big_losses, big_w) = runs
    assert len(small_losses) == len(big_losses) == 2 * math.ceil(n / 32)
    np.testing.assert_allclose(small_losses, big_losses, rtol=1e-6)
    for k in big_w:
        np.testing.assert_allclose(small_w[k], big_w[k], atol=1e-6, err_msg=k)


def test_grad_accumulation_with_a_loader_of_unknown_length() -> None:
    class Stream:
        """Batches from an iterable without len(): the last group's size shows only at the
        end, so its gradient is rescaled then."""

        def __init__(self, loader: DataLoader) -> None:
            self.loader = loader

        def __iter__(self) -> Any:
            return iter(self.loader)

    data = dataset(40)
    runs = []
    for loader, accum in ((Stream(DataLoader(data, 8)), 2), (DataLoader(data, 16), 1)):
        model = mlp()
        trainer = Trainer(model, SGD(model.parameters(), lr=0.1), F.cross_entropy, loader,
                          grad_accum_steps=accum, **quiet())
        runs.append(([r["loss"] for r in trainer.fit()], weights(model)))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-6)
    for k in runs[0][1]:
        np.testing.assert_allclose(runs[0][1][k], runs[1][1][k], atol=1e-6, err_msg=k)
    model = mlp()
    with pytest.raises(ValueError, match="no batches"):
        Trainer(model, SGD(model.parameters(), lr=0.1), F.cross_entropy, [],
                max_steps=5, **quiet()).fit()


def test_clipping_and_schedule_per_optimizer_step() -> None:
    model = mlp()
    before = weights(model)
    opt = SGD(model.parameters(), lr=1.0)
    sched = lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    trainer = Trainer(model, opt, F.cross_entropy, DataLoader(dataset(64), 8), None, sched,
                      max_steps=3, grad_accum_steps=2, clip_grad_norm=1e-3, **quiet())
    history = trainer.fit()
    assert [r["step"] for r in history] == [1, 2, 3]
    assert [r["lr"] for r in history] == pytest.approx([1.0, 1 / 2, 1 / 3])
    assert sched.last_epoch == 3 and trainer.batch_in_epoch == 6
    assert all(r["grad_norm"] > 1e-3 for r in history)  # so every step was clipped
    moved = math.sqrt(sum(((weights(model)[k] - before[k]) ** 2).sum() for k in before))
    assert moved <= 1e-3 * (1 + 1 / 2 + 1 / 3) + 1e-7


def test_model_that_returns_its_loss() -> None:
    class LM(nn.Module):
        """Predicts the next token with an embedding and a linear head."""

        def __init__(self) -> None:
            super().__init__()
            self.emb, self.head = nn.Embedding(10, 16), nn.Linear(16, 10)

        def forward(self, input_ids: mt.Tensor, labels: mt.Tensor) -> dict[str, mt.Tensor]:
            logits = self.head(self.emb(input_ids))  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, 10), labels.reshape(-1))
            return {"loss": loss, "logits": logits}

    seqs = (np.arange(12)[None, :] + np.arange(32)[:, None]) % 10  # 0 1 2 ... wrapping
    rows = [{"input_ids": s[:-1], "labels": s[1:]} for s in seqs]
    model = LM()
    trainer = Trainer(model, AdamW(model.parameters(), lr=5e-2), None,
                      DataLoader(rows, 8, shuffle=True), DataLoader(rows, 16), max_epochs=6,
                      metrics=["perplexity", "accuracy"], **quiet())
    trainer.fit()
    first, last = trainer.eval_history[0], trainer.eval_history[-1]
    assert last["eval_perplexity"] == pytest.approx(math.exp(last["eval_loss"]), rel=1e-5)
    assert last["eval_perplexity"] < first["eval_perplexity"]
    assert last["eval_accuracy"] > 0.9


# ---- callbacks ----------------------------------------------------------------------------------


def test_early_stopping_restores_best_weights() -> None:
    # Evaluating on flipped labels: the better the model fits the train set, the worse the
    # eval loss, so the best weights are those of the first evaluation.
    model = mlp()
    per_epoch: list[dict[str, np.ndarray]] = []
    keep = LambdaCallback(on_epoch_end=lambda t, m: per_epoch.append(weights(t.model)))
    stopper = EarlyStopping("eval_loss", mode="min", patience=2)
    trainer = Trainer(model, AdamW(model.parameters(), lr=1e-2), F.cross_entropy,
                      DataLoader(dataset(), 32, shuffle=True), DataLoader(dataset(flip=True), 64),
                      max_epochs=20, callbacks=[keep, stopper], **quiet())
    trainer.fit()
    losses = [r["eval_loss"] for r in trainer.eval_history]
    assert len(losses) == 3 and losses[0] < losses[1] < losses[2]
    assert trainer.epoch == 3 and stopper.best_step == 8 and stopper.stopped_step == 24
    for k, v in weights(model).items():
        np.testing.assert_array_equal(v, per_epoch[0][k], err_msg=k)
        assert not np.array_equal(v, per_epoch[-1][k])

    with pytest.raises(KeyError, match="eval_accuracy"):
        Trainer(mlp(), SGD(mlp().parameters(), lr=0.1), F.cross_entropy,
                DataLoader(dataset(16), 8), DataLoader(dataset(16), 8),
                callbacks=[EarlyStopping("eval_accuracy", "max")], **quiet()).fit()


def test_checkpoint_every_n_steps(tmp_path: Any) -> None:
    model = mlp()
    ckpt = Checkpoint(tmp_path / "ckpt", every_n_steps=3, keep_last=2)
    trainer = Trainer(model, AdamW(model.parameters(), lr=1e-2), F.cross_entropy,
                      DataLoader(dataset(80), 8), max_epochs=1, callbacks=[ckpt], **quiet())
    trainer.fit()
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["checkpoint-0000006.safetensors",
                                                     "checkpoint-0000009.safetensors"]
    state = load_state(ckpt.last_path)
    assert state["trainer"]["step"] == 9 and state["trainer"]["batch_in_epoch"] == 9
    assert state["callbacks"][0]["state"]["saved"][-1] == ckpt.last_path
    assert set(state["optimizer"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    fresh = mlp(seed=1)
    fresh.load_state_dict(model_state_dict(ckpt.last_path))
    assert not np.array_equal(weights(fresh)["0.weight"], weights(mlp(seed=1))["0.weight"])


def test_state_round_trip_keeps_types(tmp_path: Any) -> None:
    tree = {"a": (1, 2.5, "x"), "ints": {0: np.arange(3), 7: {"b": None}},
            "list": [np.float32(1.5), mt.ones(2, 2), [True, math.inf]],
            "big": 2**100, "__odd": 1}
    save_state(tree, tmp_path / "s.safetensors")
    back = load_state(tmp_path / "s.safetensors")
    assert back["a"] == (1, 2.5, "x") and back["big"] == 2**100 and back["__odd"] == 1
    np.testing.assert_array_equal(back["ints"][0], np.arange(3))
    assert back["ints"][7] == {"b": None}
    np.testing.assert_array_equal(back["list"][1], np.ones((2, 2), np.float32))
    assert back["list"][2] == [True, math.inf]
    with pytest.raises(TypeError, match="object"):
        save_state({"bad": object()}, tmp_path / "bad.safetensors")


# ---- exact resume -------------------------------------------------------------------------------


class Killed(Exception):
    pass


def noisy_collate(samples: list[Any]) -> Any:
    """Input noise drawn from minitl's generator: resuming must restore that stream too,
    after the already-used batches are skipped."""
    x, y = default_collate(samples)
    noise = mt.creation.default_generator().normal(0, 0.1, x.shape).astype(np.float32)
    return mt.tensor(x.numpy() + noise), y


def build(log_dir: Any, callbacks: list[Callback]) -> Trainer:
    """Fresh objects for the same run: dropout, AdamW, warmup + cosine, shuffling, input
    noise, accumulation, clipping, early stopping (patient) and a checkpoint callback."""
    model = mlp(dropout=0.2)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    sched = lr_scheduler.get_cosine_schedule_with_warmup(opt, 3, 40)
    train = DataLoader(dataset(160), 16, shuffle=True, seed=7, collate_fn=noisy_collate)
    return Trainer(model, opt, F.cross_entropy, train, DataLoader(dataset(64, seed=1), 32),
                   sched, max_epochs=2, grad_accum_steps=2, clip_grad_norm=1.0,
                   metrics=["accuracy"], callbacks=[EarlyStopping(patience=5), *callbacks],
                   log_dir=log_dir, seed=123, **quiet())


def test_resume_after_stop_reproduces_the_uninterrupted_run(tmp_path: Any) -> None:
    full = build(tmp_path / "full", [])
    reference = [r["loss"] for r in full.fit().train]  # 2 epochs x 5 steps
    assert len(reference) == 10

    def stop_at_3(t: Trainer, record: Any) -> None:
        if t.step == 3:
            t.should_stop = True

    first = build(tmp_path / "cut", [LambdaCallback(on_step_end=stop_at_3)])
    first.fit()
    assert first.step == 3 and first.epoch == 0 and first.batch_in_epoch == 6
    first.save_checkpoint(tmp_path / "cut.safetensors")

    second = build(tmp_path / "cut", [LambdaCallback()])
    resumed = [r["loss"] for r in second.resume(tmp_path / "cut.safetensors").train]
    assert resumed == reference[3:]  # bit for bit
    for k, v in weights(full.model).items():
        np.testing.assert_array_equal(weights(second.model)[k], v, err_msg=k)
    assert [r["eval_loss"] for r in second.eval_history] == \
        [r["eval_loss"] for r in full.eval_history]


def test_resume_after_kill_from_periodic_checkpoint(tmp_path: Any) -> None:
    reference = [r["loss"] for r in build(tmp_path / "full", []).fit().train]

    def kill_at_7(t: Trainer, record: Any) -> None:
        if t.step == 7:
            raise Killed

    ckpt = Checkpoint(tmp_path / "ckpt", every_n_steps=4)
    with pytest.raises(Killed):
        build(tmp_path / "run", [ckpt, LambdaCallback(on_step_end=kill_at_7)]).fit()
    assert ckpt.last_path is not None and ckpt.last_path.endswith("0000004.safetensors")

    again = build(tmp_path / "run", [Checkpoint(tmp_path / "ckpt", 4), LambdaCallback()])
    resumed = [r["loss"] for r in again.resume(ckpt.last_path).train]
    assert resumed == reference[4:]
    # The log holds every step once: the records of steps 5-7 from before the kill are gone.
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    train = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 11))
    assert [r["loss"] for r in train] == reference


def test_resume_rejects_a_different_setup(tmp_path: Any) -> None:
    trainer = build(None, [])
    trainer.max_epochs = 0
    trainer.fit()
    trainer.save_checkpoint(tmp_path / "c.safetensors")
    other = build(None, [])
    other.grad_accum_steps = 1
    with pytest.raises(ValueError, match="grad_accum_steps"):
        other.load_checkpoint(tmp_path / "c.safetensors")
    other = build(None, [LambdaCallback()])
    with pytest.raises(ValueError, match="callbacks"):
        other.load_checkpoint(tmp_path / "c.safetensors")


# ---- logs and progress --------------------------------------------------------------------------


def test_jsonl_log_and_plot(tmp_path: Any) -> None:
    model = mlp()
    trainer = Trainer(model, AdamW(model.parameters(), lr=1e-2), F.cross_entropy,
                      DataLoader(dataset(64), 16), DataLoader(dataset(32), 16), max_epochs=2,
                      metrics=["accuracy"], log_dir=tmp_path, **quiet())
    trainer.fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["type"], r["step"]) for r in records] == [
        ("train", 1), ("train", 2), ("train", 3), ("train", 4), ("eval", 4),
        ("train", 5), ("train", 6), ("train", 7), ("train", 8), ("eval", 8)]
    assert {"loss", "lr", "epoch", "samples", "samples_per_s"} <= set(records[0])
    assert records[0]["samples"] == 16 and records[0]["epoch"] == 0
    assert {"eval_loss", "eval_accuracy"} <= set(records[4])
    assert [r["loss"] for r in records if r["type"] == "train"] == \
        [r["loss"] for r in trainer.history]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (tmp_path / "loss.png").exists()  # silently skipped
    else:
        assert (tmp_path / "loss.png").stat().st_size > 0


def test_plain_log_lines_when_not_a_terminal(capsys: Any) -> None:
    model = mlp()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), F.cross_entropy,
                      DataLoader(dataset(96), 8), DataLoader(dataset(16), 16), max_epochs=1,
                      log_every=5)
    trainer.fit()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.strip().splitlines()
    steps = [line for line in lines if line.startswith("epoch")]
    assert [line.split(" | ")[1] for line in steps] == ["step 5/12", "step 10/12", "step 12/12"]
    assert all("loss " in s and "samples/s" in s and "eta " in s for s in steps)
    assert lines[-1].startswith("eval | epoch 0 | step 12 | eval_loss ")


def test_single_updating_line_on_a_terminal() -> None:
    out = io.StringIO()
    bar = ProgressDisplay(total_steps=3, stream=out, tty=True, refresh_s=0.0)
    for step in (1, 2, 3):
        bar.update(step, loss=1.0 / step, samples=32, epoch=1)
    bar.log("eval | done")
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 2
    assert "step 3/3 | loss 0.3333" in text and "samples/s" in text and "eta 0:00" in text
    assert text.endswith("\neval | done\n")
