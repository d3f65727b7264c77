"""The benchmark harness's bookkeeping: medians and their spread, the busy-machine warning,
and the spread column of the printed table."""

from __future__ import annotations

import math

import pytest

from benchmarks import common


def test_timings_median_and_spread() -> None:
    t = common.Timings({"minitl": [5.0, 1.0, 3.0, 2.0, 4.0], "torch": [2.0, 2.0], "one": [1.0]})
    assert t["minitl"] == 3.0 and t["torch"] == 2.0
    assert t.spread("minitl") == pytest.approx((4.0 - 2.0) / 2 / 3.0)  # quartiles 2 and 4
    assert t.spread("torch") == 0.0
    assert math.isnan(t.spread("one")) and math.isnan(t.spread("absent"))
    assert t.spreads() == (t.spread("minitl"), 0.0)
    assert common.spread_of([5.0, 1.0, 3.0, 2.0, 4.0]) == t.spread("minitl")


def test_interleaved_keeps_every_call() -> None:
    t = common.interleaved({"a": lambda: None, "b": lambda: None}, rounds=3, calls=2,
                           settle_s=0.0)
    assert set(t) == {"a", "b"} and all(len(v) == 6 for v in t.samples.values())


@pytest.mark.parametrize("load,cores,warns", [(2.5, 2, True), (2.0, 2, True), (1.2, 2, False),
                                              (None, 2, False), (3.0, None, False)])
def test_busy_warning(load: float | None, cores: int | None, warns: bool) -> None:
    line = common.busy_warning(load, cores)
    assert (line is not None) == warns
    if warns:
        assert f"load {load:.2f} on {cores} cores" in line


def test_rows_print_the_spread(capsys: pytest.CaptureFixture[str]) -> None:
    common.print_rows([common.Row("op", "4x4", 0.002, 0.004, spread=(0.05, float("nan"))),
                       common.Row("other", "4x4", 0.002, 0.001)])
    out = capsys.readouterr().out.splitlines()
    op = next(ln for ln in out if ln.startswith("op "))
    assert "±5%/-" in op and "0.50" in op
    other = next(ln for ln in out if ln.startswith("other "))
    assert "±" not in other and "2.00" in other
