"""What a training run shows and leaves behind: the progress display, the JSONL metrics
log and the loss-curve plot.

On a terminal (`stream.isatty()`) progress is one line rewritten in place with the step,
loss, throughput (samples/s) and ETA; into a file or a pipe it becomes plain log lines
every `log_every` steps, so CI logs stay readable. `MetricsLog` appends one JSON object
per line to `metrics.jsonl` (train steps and evaluations) and `plot_loss` draws
`loss.png` from that file when matplotlib is installed (nothing happens otherwise).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["MetricsLog", "ProgressDisplay", "format_duration", "plot_loss", "read_jsonl"]


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
        log_every: in log-line mode, print every this many steps.
        refresh_s: in single-line mode, redraw at most this often.
        enabled: False writes nothing at all.
    """

    def __init__(self, total_steps: int | None = None, stream: TextIO | None = None,
                 tty: bool | None = None, log_every: int = 10, refresh_s: float = 0.1,
                 enabled: bool = True) -> None:
        self.total_steps, self.enabled = total_steps, enabled
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty, self.log_every, self.refresh_s = tty, max(1, log_every), refresh_s
        self._line_open = False
        self.start(0)

    def start(self, step: int) -> None:
        """(Re)start the clock; throughput and ETA count from `step` (0, or a resumed step)."""
        self._t0 = time.perf_counter()
        self._step0 = step
        self._samples = 0
        self._last_draw = -math.inf

    def rates(self, step: int) -> tuple[float, float]:
        """(samples per second, seconds left) since `start`."""
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        done = step - self._step0
        eta = math.nan
        if self.total_steps is not None and done > 0:
            eta = (self.total_steps - step) * elapsed / done
        return self._samples / elapsed, eta

    def update(self, step: int, loss: float, samples: int, epoch: int | None = None,
               lr: float | None = None) -> None:
        """Report one optimizer step that consumed `samples` examples."""
        self._samples += samples
        if not self.enabled:
            return
        now = time.perf_counter()
        last = self.total_steps is not None and step >= self.total_steps
        if self.tty:
            if now - self._last_draw < self.refresh_s and not last:
                return
            self._last_draw = now
            self.stream.write("\r" + self._describe(step, loss, epoch, lr) + "\x1b[K")
            self._line_open = True
        elif step % self.log_every == 0 or last:
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

    def close(self) -> None:
        if self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False


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


def plot_loss(jsonl_path: str | os.PathLike[str], png_path: str | os.PathLike[str]) -> bool:
    """Draw train loss per step (and eval loss at its steps) from a metrics.jsonl into
    `png_path`. Returns False, writing nothing, when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    records = read_jsonl(jsonl_path)
    train = [(r["step"], r["loss"]) for r in records if r.get("type") == "train"]
    evals = [(r["step"], r["eval_loss"]) for r in records
             if r.get("type") == "eval" and "eval_loss" in r]
    # Figure + Agg canvas directly: no pyplot state, the user's backend is left alone.
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    return True
