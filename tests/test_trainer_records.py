"""What a new user meets in a Trainer run: fit's records (train and eval), one epoch
numbering on the console and in metrics.jsonl, a rate and ETA that ignore warm-up, log
lines on a clock when there is no terminal, announced phases, the loss plot without
matplotlib, and a peak memory figure that is the process's own."""

from __future__ import annotations

import builtins
import io
import json
import re
import sys
from typing import Any

import numpy as np
import pytest

import minitl
import minitl.nn.functional as F
from minitl import nn
from minitl import transfer as tl
from minitl.data import DataLoader, TensorDataset
from minitl.optim import SGD
from minitl.train import Checkpoint, FitResult, ProgressDisplay, Trainer, plot_loss


def dataset(n: int = 64, seed: int = 0) -> TensorDataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return TensorDataset(minitl.tensor(x), minitl.tensor((x[:, 0] > 0).astype(np.int64)))


def trainer(log_dir: Any = None, **kw: Any) -> Trainer:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    kw.setdefault("progress", False)
    return Trainer(model, SGD(model.parameters(), lr=0.1), F.cross_entropy,
                   DataLoader(dataset(64), 16), DataLoader(dataset(32, seed=1), 16),
                   max_epochs=2, metrics=["accuracy"], log_dir=log_dir, **kw)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ---- fit's records ---------------------------------------------------------------------------


def test_fit_returns_train_and_eval_records_in_log_order(tmp_path: Any) -> None:
    t = trainer(tmp_path)
    result = t.fit()
    assert isinstance(result, FitResult)
    assert [(r["type"], r["step"]) for r in result] == [
        ("train", 1), ("train", 2), ("train", 3), ("train", 4), ("eval", 4),
        ("train", 5), ("train", 6), ("train", 7), ("train", 8), ("eval", 8)]
    assert result.train == t.history and result.eval == t.eval_history
    assert result.final_eval is result.eval[-1] and "eval_accuracy" in result.final_eval
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line) for line in f] == json.loads(json.dumps(list(result)))


def test_fit_without_evaluation_is_the_train_records() -> None:
    t = trainer()
    t.eval_loader = None
    result = t.fit()
    assert result == result.train == t.history and result.eval == [] and result.final_eval == {}


# ---- one epoch numbering -----------------------------------------------------------------------


def test_console_jsonl_and_checkpoint_name_the_same_epochs(tmp_path: Any) -> None:
    out = io.StringIO()
    ckpt = Checkpoint(tmp_path / "ckpt", every_n_steps=4,
                      filename="e{epoch}-s{step}.safetensors", save_on_train_end=True)
    t = trainer(tmp_path, progress=True, stream=out, log_every=1, callbacks=[ckpt])
    result = t.fit()
    console = {}  # step -> epoch, from the train lines; eval lines apart
    evals = []
    for line in out.getvalue().splitlines():
        if m := re.match(r"epoch (\d+) \| step (\d+)/8 ", line):
            console[int(m[2])] = int(m[1])
        elif m := re.match(r"eval \| epoch (\d+) \| step (\d+) ", line):
            evals.append((int(m[2]), int(m[1])))
    assert console == {r["step"]: r["epoch"] for r in result.train}
    assert console == {1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 6: 1, 7: 1, 8: 1}  # from 0
    assert evals == [(r["step"], r["epoch"]) for r in result.eval] == [(4, 0), (8, 1)]
    # the file written at step 8 (end of the second epoch) says epoch 1, as the log does
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == \
        ["e0-s4.safetensors", "e1-s8.safetensors"]
    assert t.epoch == 2 and t.epoch_of_step == 1  # epochs completed / epoch of the last step


# ---- rate and ETA over a window ----------------------------------------------------------------


def test_eta_ignores_a_slow_first_step() -> None:
    clock = FakeClock()
    bar = ProgressDisplay(total_steps=100, stream=io.StringIO(), tty=False, clock=clock)
    clock.now = 120.0  # step 1 pays for imports and JIT compilation: two minutes
    bar.update(1, loss=1.0, samples=10)
    assert np.isnan(bar.rates(1)[1])  # no whole step measured yet: ETA unknown
    for step in range(2, 11):  # then 0.5 s per step
        clock.now += 0.5
        bar.update(step, loss=1.0, samples=10)
    speed, eta = bar.rates(10)
    assert speed == pytest.approx(20.0)  # 10 samples / 0.5 s
    assert eta == pytest.approx(90 * 0.5)  # not 90 * 12.45 s as a cumulative rate says


def test_rate_window_moves_and_skips_evaluation_time() -> None:
    clock = FakeClock()
    bar = ProgressDisplay(total_steps=100, tty=False, stream=io.StringIO(), window=5,
                          clock=clock)
    for step in range(1, 31):  # 1 s per step for 20 steps, then 0.1 s
        clock.now += 1.0 if step <= 20 else 0.1
        bar.update(step, loss=1.0, samples=1)
    assert bar.rates(30)[1] == pytest.approx(70 * 0.1)  # only the last 5 steps count
    clock.now += 60.0  # an evaluation
    bar.skip_time()
    clock.now += 0.1
    bar.update(31, loss=1.0, samples=1)
    assert bar.rates(31)[1] == pytest.approx(69 * 0.1)


# ---- log lines without a terminal -------------------------------------------------------------


def test_plain_lines_come_on_a_clock_not_every_quarter() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressDisplay(total_steps=1586, stream=out, tty=False, log_interval_s=10.0,
                          clock=clock)
    for step in range(1, 1587):  # 0.25 s per step: a line every 40 steps, and the last
        clock.now += 0.25
        bar.update(step, loss=1.0, samples=8, epoch=0)
    steps = [int(re.search(r"step (\d+)/", line)[1])  # type: ignore[index]
             for line in out.getvalue().splitlines()]
    assert steps[:3] == [40, 80, 120] and steps[-1] == 1586
    assert len(steps) == 1586 // 40 + 1


def test_log_every_still_counts_steps() -> None:
    out = io.StringIO()
    bar = ProgressDisplay(total_steps=12, stream=out, tty=False, log_every=5)
    for step in range(1, 13):
        bar.update(step, loss=1.0, samples=8)
    assert [line.split(" | ")[0] for line in out.getvalue().splitlines()] == \
        ["step 5/12", "step 10/12", "step 12/12"]


def test_phase_is_announced_timed_and_kept_out_of_the_rate() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressDisplay(total_steps=10, stream=out, tty=False, clock=clock)
    for step in (1, 2):
        clock.now += 1.0
        bar.update(step, loss=1.0, samples=4)
    with bar.phase("encoding 8,454 sentences"):
        clock.now += 75.0
    clock.now += 1.0
    bar.update(3, loss=1.0, samples=4)
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["encoding 8,454 sentences ...", "encoding 8,454 sentences: done in 1:15"]
    assert lines[2].startswith("step 3/10 ") and lines[2].endswith(" | 4.0 samples/s | eta 0:07")
    assert bar.rates(3) == pytest.approx((4.0, 7.0))  # 1 s per step, 75 s of phase left out
    quiet = io.StringIO()
    ProgressDisplay(stream=quiet, enabled=False).phase("nothing to see")
    assert quiet.getvalue() == ""


# ---- the loss plot ------------------------------------------------------------------------------


def test_loss_plot_falls_back_to_svg_without_matplotlib(tmp_path: Any, monkeypatch: Any) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kw: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    trainer(tmp_path).fit()
    assert not (tmp_path / "loss.png").exists()
    svg = (tmp_path / "loss.svg").read_text()
    assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
    assert svg.count("<polyline") == 2 and "train loss" in svg and "eval loss" in svg
    with pytest.raises(ImportError):
        plot_loss(tmp_path / "metrics.jsonl", tmp_path / "again.png", fmt="png")


def test_svg_on_request_and_png_with_matplotlib(tmp_path: Any) -> None:
    trainer(tmp_path).fit()
    path = plot_loss(tmp_path / "metrics.jsonl", tmp_path / "curve.png", fmt="svg")
    assert path == str(tmp_path / "curve.svg") and (tmp_path / "curve.svg").stat().st_size
    pytest.importorskip("matplotlib")
    assert (tmp_path / "loss.png").stat().st_size > 0 and not (tmp_path / "loss.svg").exists()


# ---- peak memory ---------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_rss_peak_is_the_process_peak() -> None:
    ledger = tl.ForgettingLedger(lambda m: {}, lambda m: {}, model=nn.Linear(2, 2),
                                 memory="rss")
    ledger.record("before")
    big = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    rss_with_big = _rss_bytes()
    del big
    row = ledger.record("after")
    # the whole process at its peak, not the growth since the previous record (the kernel
    # folds per-thread page counts into the peak in batches: a few hundred KiB of slack)
    assert row["peak_memory_bytes"] >= rss_with_big - 2**20
    assert rss_with_big > 64 * 2**20
    assert ledger.records[0]["peak_memory_bytes"] <= row["peak_memory_bytes"]
    assert "resident set" in ledger.to_dict()["peak_memory"]
    assert "peak MB (RSS)" in ledger.table().splitlines()[0]
