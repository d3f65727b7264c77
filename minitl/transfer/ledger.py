"""The forgetting ledger: what fine-tuning cost on the source task, next to what it bought
on the target task and what it took to get there.

    ledger = ForgettingLedger(src_eval, tgt_eval, model=model)
    ledger.record("before")
    for step, batch in enumerate(loader):
        with ledger.time_step():
            ...                                   # one training step
        if step % 100 == 0:
            ledger.record("during", step)
    ledger.record("after", step)
    print(ledger.table()); ledger.to_json("ledger.json"); ledger.drift()

Each record holds the source and target metrics (whatever the two callables return,
`{"accuracy": 0.91, ...}`), the trainable and total parameter counts, the mean training
step time since the previous record, and a peak memory figure whose meaning `memory` sets:

- `memory="tracemalloc"` (the default): the peak of Python-heap allocations, numpy array
  buffers included, between two records; tracing is started by the ledger if needed and
  costs some speed on allocation-heavy code. It leaves out the interpreter, the libraries
  and native buffers, so it is well below what the operating system sees.
- `memory="rss"`: the process's peak resident set size so far (`resource.getrusage`
  `ru_maxrss`, KiB on Linux and bytes on macOS, reported in bytes): the figure
  `/usr/bin/time -v` calls "maximum resident set size", everything included. It never
  decreases from one record to the next.
- `memory=None` records nothing.

`to_dict()["peak_memory"]` says in words which one a ledger holds. Neither sees GPU memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

from minitl.nn.module import Module
from minitl.transfer.freeze import count_parameters

__all__ = ["ForgettingLedger"]

Eval = Callable[[Module], Mapping[str, float]]


def _maxrss_bytes() -> int:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


_MEMORY_UNIT: dict[str | None, str] = {"rss": " (RSS)", "tracemalloc": " (heap)"}
_MEMORY_MEANING: dict[str | None, str] = {
    "rss": "process peak resident set size since it started (ru_maxrss), in bytes",
    "tracemalloc": "peak of Python-heap allocations since the previous record (tracemalloc)",
    None: "not measured",
}


class ForgettingLedger:
    """Records source/target metrics, parameter counts, peak memory and step time.

    Args:
        source_eval: `model -> {metric: value}` on the source task.
        target_eval: `model -> {metric: value}` on the target task.
        model: the model (or pass it to each `record`).
        memory: "tracemalloc", "rss" or None (see the module docstring).
    """

    def __init__(self, source_eval: Eval, target_eval: Eval, model: Module | None = None,
                 memory: str | None = "tracemalloc") -> None:
        if memory not in ("tracemalloc", "rss", None):
            raise ValueError(f"memory must be 'tracemalloc', 'rss' or None, got {memory!r}")
        self.source_eval, self.target_eval = source_eval, target_eval
        self.model, self.memory = model, memory
        self.records: list[dict[str, Any]] = []
        self._step_times: list[float] = []
        self._started_tracing = False
        if memory == "tracemalloc":
            if not tracemalloc.is_tracing():
                tracemalloc.start()
                self._started_tracing = True
            tracemalloc.reset_peak()

    # ---- measuring ----------------------------------------------------------------------

    @contextlib.contextmanager
    def time_step(self) -> Iterator[None]:
        """Time one training step (wrap the forward, backward and optimizer step)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._step_times.append(time.perf_counter() - t0)

    def add_step_time(self, seconds: float) -> None:
        """Record a step time measured elsewhere (e.g. by the Trainer)."""
        self._step_times.append(float(seconds))

    def _peak_memory(self) -> int | None:
        if self.memory == "tracemalloc":
            if not tracemalloc.is_tracing():
                return None
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            return int(peak)
        if self.memory == "rss":
            return _maxrss_bytes()
        return None

    def record(self, stage: str, step: int | None = None,
               model: Module | None = None) -> dict[str, Any]:
        """Evaluate both tasks and append a row. `stage` is "before", "during", "after"
        (or any label); `step` the training step it was taken at.

        The memory peak covers everything since the previous record, this record's
        evaluations included (they run before the peak is read)."""
        model = model if model is not None else self.model
        if model is None:
            raise ValueError("ForgettingLedger.record: no model (pass model= here or to the "
                             "constructor)")
        src = {k: float(v) for k, v in self.source_eval(model).items()}
        tgt = {k: float(v) for k, v in self.target_eval(model).items()}
        trainable, total = count_parameters(model)
        times = self._step_times
        row = {
            "stage": stage, "step": step, "source": src, "target": tgt,
            "trainable_params": trainable, "total_params": total,
            "peak_memory_bytes": self._peak_memory(),
            "step_time_s": sum(times) / len(times) if times else None,
            "n_steps_timed": len(times),
        }
        self._step_times = []
        self.records.append(row)
        return row

    def close(self) -> None:
        """Stop tracemalloc if this ledger started it (also on leaving a `with` block)."""
        if self._started_tracing and tracemalloc.is_tracing():
            tracemalloc.stop()
        self._started_tracing = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reporting ----------------------------------------------------------------------

    def _first(self, stage: str) -> dict[str, Any] | None:
        return next((r for r in self.records if r["stage"] == stage), None)

    def drift(self) -> dict[str, float]:
        """Source metric after - before, per metric (negative accuracy drift = forgetting).
        "before" is the first row with that stage (else the first row), "after" the last
        row with that stage (else the last row)."""
        if not self.records:
            return {}
        before = self._first("before") or self.records[0]
        after = next((r for r in reversed(self.records) if r["stage"] == "after"),
                     self.records[-1])
        return {k: after["source"][k] - v for k, v in before["source"].items()
                if k in after["source"]}

    def table(self) -> str:
        """The records as an aligned text table (one row per record)."""
        src_keys = list(dict.fromkeys(k for r in self.records for k in r["source"]))
        tgt_keys = list(dict.fromkeys(k for r in self.records for k in r["target"]))
        head = (["stage", "step"] + [f"src:{k}" for k in src_keys]
                + [f"tgt:{k}" for k in tgt_keys]
                + ["trainable", "total", "peak MB" + _MEMORY_UNIT.get(self.memory, ""),
                   "step ms"])

        def num(v: Any, fmt: str) -> str:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return "-"
            return format(v, fmt)

        rows = [[str(r["stage"]), num(r["step"], "d")]
                + [num(r["source"].get(k), ".4f") for k in src_keys]
                + [num(r["target"].get(k), ".4f") for k in tgt_keys]
                + [num(r["trainable_params"], ",d"), num(r["total_params"], ",d"),
                   num(None if r["peak_memory_bytes"] is None
                       else r["peak_memory_bytes"] / 2**20, ".1f"),
                   num(None if r["step_time_s"] is None else r["step_time_s"] * 1e3, ".2f")]
                for r in self.records]
        widths = [max(len(x) for x in col) for col in zip(head, *rows)]

        def fmt_row(cells: list[str]) -> str:
            return " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(cells, widths)))

        lines = [fmt_row(head), "-+-".join("-" * w for w in widths)]
        lines += [fmt_row(r) for r in rows]
        drift = self.drift()
        if drift and len(self.records) > 1:
            lines.append("source drift (after - before): "
                         + ", ".join(f"{k} {v:+.4f}" for k, v in drift.items()))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "drift": self.drift(), "memory": self.memory,
                "peak_memory": _MEMORY_MEANING[self.memory]}

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write `to_dict()` as JSON atomically (temporary file, then rename)."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".ledger-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
