"""What a training run shows and leaves behind: the progress display, the JSONL metrics
log, the records `Trainer.fit` returns, and the loss-curve plot.

On a terminal (`stream.isatty()`) progress is one line rewritten in place with the epoch,
step, loss, throughput (samples/s) and ETA; into a file or a pipe it becomes plain log
lines every `log_interval_s` seconds (or every `log_every` steps when that is given), so
a CI log shows a long run moving without drowning in lines. Throughput and ETA are
measured over a moving window of the last `window` steps that leaves out the first
`warmup_steps` (which pay for imports, JIT compilation and first-touch allocation), so a
2-second run does not promise two minutes. `phase("encoding 8,454 sentences")` announces
work that is not optimizer steps (an embedding cache, a tokenizer pass) and keeps its
time out of the rate.

`MetricsLog` appends one JSON object per line to `metrics.jsonl` (train steps and
evaluations) and `plot_loss` draws the loss curve from that file: `loss.png` with
matplotlib, otherwise `loss.svg` from the small writer at the end of this file.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, TextIO

__all__ = ["FitResult", "MetricsLog", "ProgressDisplay", "format_duration", "plot_loss",
           "read_jsonl"]


def format_duration(seconds: float) -> str:
    """1:02:03 / 2:03 style; "?" when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)


class ProgressDisplay:
    """Training progress on `stream` (stderr by default).

    Args:
        total_steps: optimizer steps in the whole run, for the ETA; None if unknown.
        stream: where to write.
        tty: force the single-line (True) or the log-line (False) mode; by default
            `stream.isatty()`.
        log_every: in log-line mode, print every this many steps; None (the default)
            prints on a clock instead, every `log_interval_s` seconds.
        refresh_s: in single-line mode, redraw at most this often.
        enabled: False writes nothing at all.
        log_interval_s: in log-line mode without `log_every`, seconds between lines.
        window: steps in the moving window that throughput and ETA are measured over.
        warmup_steps: first steps after `start` left out of that window.
        clock: seconds as a float (`time.perf_counter`); tests pass a fake one.
    """

    def __init__(self, total_steps: int | None = None, stream: TextIO | None = None,
                 tty: bool | None = None, log_every: int | None = None,
                 refresh_s: float = 0.1, enabled: bool = True, *,
                 log_interval_s: float = 10.0, window: int = 20, warmup_steps: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.total_steps, self.enabled = total_steps, enabled
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty, self.refresh_s = tty, refresh_s
        self.log_every = None if log_every is None else max(1, log_every)
        self.log_interval_s, self.warmup_steps = log_interval_s, max(0, warmup_steps)
        self.clock = clock
        # (time, step, samples so far) after each step of the window; 2 points = 1 interval
        self._window: deque[tuple[float, int, int]] = deque(maxlen=max(2, window + 1))
        self._line_open = False
        self.start(0)

    def start(self, step: int) -> None:
        """(Re)start the clock; throughput and ETA count from `step` (0, or a resumed step)."""
        self._t0 = self._last_line = self.clock()
        self._step0 = self._step = step
        self._samples = self._updates = 0
        self._last_draw = -math.inf
        self._window.clear()
        if self.warmup_steps == 0:
            self._window.append((self._t0, step, 0))

    def skip_time(self) -> None:
        """Leave the time since the last step out of the rate (an evaluation, a phase):
        the window's next interval starts now."""
        if self._window:
            self._window.clear()
            self._window.append((self.clock(), self._step, self._samples))

    def rates(self, step: int) -> tuple[float, float]:
        """(samples per second, seconds left) over the moving window; before the window
        holds a whole step, samples/s since `start` and an unknown (nan) ETA."""
        if len(self._window) < 2:
            elapsed = max(self.clock() - self._t0, 1e-9)
            return self._samples / elapsed, math.nan
        (t_a, step_a, n_a), (t_b, step_b, n_b) = self._window[0], self._window[-1]
        dt = max(t_b - t_a, 1e-9)
        eta = math.nan
        if self.total_steps is not None and step_b > step_a:
            eta = max(self.total_steps - step, 0) * dt / (step_b - step_a)
        return (n_b - n_a) / dt, eta

    def update(self, step: int, loss: float, samples: int, epoch: int | None = None,
               lr: float | None = None) -> None:
        """Report one optimizer step that consumed `samples` examples."""
        self._samples += samples
        self._updates += 1
        self._step = step
        now = self.clock()
        if self._updates >= self.warmup_steps:
            self._window.append((now, step, self._samples))
        if not self.enabled:
            return
        last = self.total_steps is not None and step >= self.total_steps
        if self.tty:
            if now - self._last_draw < self.refresh_s and not last:
                return
            self._last_draw = now
            self.stream.write("\r" + self._describe(step, loss, epoch, lr) + "\x1b[K")
            self._line_open = True
        else:
            due = (step % self.log_every == 0 if self.log_every is not None
                   else now - self._last_line >= self.log_interval_s)
            if not (due or last):
                return
            self._last_line = now
            self.stream.write(self._describe(step, loss, epoch, lr) + "\n")
        self.stream.flush()

    def _describe(self, step: int, loss: float, epoch: int | None, lr: float | None) -> str:
        speed, eta = self.rates(step)
        total = f"/{self.total_steps}" if self.total_steps is not None else ""
        parts = [] if epoch is None else [f"epoch {epoch}"]
        parts += [f"step {step}{total}", f"loss {loss:.4f}"]
        if lr is not None:
            parts.append(f"lr {lr:.3g}")
        parts.append(f"{speed:.1f} samples/s")
        if self.total_steps is not None:
            parts.append(f"eta {format_duration(eta)}")
        return " | ".join(parts)

    def log(self, message: str) -> None:
        """A permanent line (evaluation results, notices), below the live line."""
        if not self.enabled:
            return
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False
        self.stream.write(message + "\n")
        self.stream.flush()

    def log_metrics(self, prefix: str, metrics: Mapping[str, Any]) -> None:
        self.log(" | ".join([prefix] + [f"{k} {_fmt(v)}" for k, v in metrics.items()]))

    def phase(self, message: str) -> _Phase:
        """Announce work that is not an optimizer step: prints `message ...` now; as a
        context manager it also prints the time taken when the block ends, and that time
        is left out of the step rate.

            with progress.phase(f"encoding {len(texts):,} sentences"):
                cache = encode(texts)
        """
        self.log(f"{message} ...")
        return _Phase(self, message)

    def close(self) -> None:
        if self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False


class _Phase:
    """What `ProgressDisplay.phase` returns: a context manager timing the phase."""

    def __init__(self, display: ProgressDisplay, message: str) -> None:
        self.display, self.message, self.t0 = display, message, display.clock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            seconds = self.display.clock() - self.t0
            self.display.log(f"{self.message}: done in {format_duration(seconds)}")
        self.display.skip_time()


class FitResult(list[dict[str, Any]]):
    """What `Trainer.fit` returns: every record of the run in the order written to
    metrics.jsonl, each with "type" "train" (one per optimizer step: step, epoch, loss,
    lr, samples, samples_per_s, grad_norm with clipping) or "eval" (one per evaluation:
    step, epoch, eval_loss, eval_<metric>). `.train` and `.eval` are the two kinds apart;
    `.final_eval` is the last evaluation ({} without one)."""

    @property
    def train(self) -> list[dict[str, Any]]:
        return [r for r in self if r.get("type") == "train"]

    @property
    def eval(self) -> list[dict[str, Any]]:
        return [r for r in self if r.get("type") == "eval"]

    @property
    def final_eval(self) -> dict[str, Any]:
        evals = self.eval
        return evals[-1] if evals else {}


class MetricsLog:
    """`log_dir/metrics.jsonl`: one JSON object per line, flushed as it is written.

    `keep_lines` truncates an existing file to its first lines (a resumed run drops the
    records written after its checkpoint); None starts a new file.
    """

    def __init__(self, log_dir: str | os.PathLike[str], keep_lines: int | None = None) -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.path = os.path.join(log_dir, "metrics.jsonl")
        kept: list[str] = []
        if keep_lines is not None and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                kept = [line for _, line in zip(range(keep_lines), f)]
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._file.writelines(kept)
        self._file.flush()
        self.lines = len(kept)

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(record, default=_json_default) + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> None:
        self._file.close()


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / 0-d array scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_loss(jsonl_path: str | os.PathLike[str], path: str | os.PathLike[str],
              fmt: str = "auto") -> str:
    """Draw train loss per step (and eval loss at its steps) from a metrics.jsonl. `fmt`
    "png" needs matplotlib, "svg" needs nothing, "auto" (the default) is PNG when
    matplotlib imports and SVG otherwise; `path`'s extension is set to match. Returns the
    path written. The chart is `minitl.train.report.line_chart`'s."""
    from minitl.train.report import line_chart

    if fmt not in ("auto", "png", "svg"):
        raise ValueError(f"fmt must be 'auto', 'png' or 'svg', got {fmt!r}")
    records = read_jsonl(jsonl_path)
    train = [(r["step"], r["loss"]) for r in records
             if r.get("type") == "train" and math.isfinite(r["loss"])]
    evals = [(r["step"], r["eval_loss"]) for r in records
             if r.get("type") == "eval" and math.isfinite(r.get("eval_loss", math.nan))]
    lines = {name: ([p[0] for p in pts], [p[1] for p in pts], None)
             for name, pts in (("train loss", train), ("eval loss", evals)) if pts}
    if not lines:  # nothing finite to draw: an empty chart, not an error
        lines = {"train loss": ([0], [0.0], None)}
    stem = os.path.splitext(os.fspath(path))[0]
    return line_chart(stem, lines, xlabel="optimizer step", ylabel="loss", fmt=fmt,
                      markers=False)


