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
from xml.sax.saxutils import escape

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
    path written."""
    if fmt not in ("auto", "png", "svg"):
        raise ValueError(f"fmt must be 'auto', 'png' or 'svg', got {fmt!r}")
    records = read_jsonl(jsonl_path)
    train = [(r["step"], r["loss"]) for r in records if r.get("type") == "train"]
    evals = [(r["step"], r["eval_loss"]) for r in records
             if r.get("type") == "eval" and "eval_loss" in r]
    stem = os.path.splitext(os.fspath(path))[0]
    if fmt != "svg":
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            if fmt == "png":
                raise
        else:
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
            fig.savefig(stem + ".png")
            return stem + ".png"
    _svg_loss(stem + ".svg", train, evals)
    return stem + ".svg"


def _svg_loss(path: str, train: list[tuple[int, float]], evals: list[tuple[int, float]]) -> None:
    """The same plot as plain SVG: a polyline per series over gridlines with tick labels."""
    w, h, x0, x1, y0, y1 = 600, 400, 64, 584, 350, 30  # plot area: x0..x1, y1 (top)..y0
    points = [p for p in train + evals if math.isfinite(p[1])]
    xs, ys = [p[0] for p in points] or [0, 1], [p[1] for p in points] or [0.0, 1.0]
    xlo, xhi = min(xs), max(max(xs), min(xs) + 1)
    ylo, yhi = min(ys), max(ys)
    pad = 0.05 * (yhi - ylo or 1.0)
    ylo, yhi = ylo - pad, yhi + pad

    def pt(x: float, y: float) -> tuple[str, str]:
        return (f"{x0 + (x - xlo) / (xhi - xlo) * (x1 - x0):.1f}",
                f"{y0 - (y - ylo) / (yhi - ylo) * (y0 - y1):.1f}")

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="11">'),
           f'<rect width="{w}" height="{h}" fill="white"/>']
    for i in range(5):  # gridlines and tick labels, 5 per axis
        yv, xv = ylo + (yhi - ylo) * i / 4, xlo + (xhi - xlo) * i / 4
        y = y0 - (y0 - y1) * i / 4
        x = x0 + (x1 - x0) * i / 4
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
        out.append(f'<text x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">{xv:.0f}</text>')
    out.append(f'<path d="M{x0},{y1} V{y0} H{x1}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{h - 12}" text-anchor="middle">'
               'optimizer step</text>')
    out.append(f'<text x="16" y="{(y0 + y1) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(y0 + y1) / 2})">loss</text>')
    for i, (name, series, color) in enumerate((("train loss", train, "#4C72B0"),
                                               ("eval loss", evals, "#DD8452"))):
        finite = [p for p in series if math.isfinite(p[1])]
        if not finite:
            continue
        out.append(f'<polyline points="{" ".join(",".join(pt(*p)) for p in finite)}" fill="none" '
                   f'stroke="{color}" stroke-width="{1 if i == 0 else 2}"/>')
        if i == 1:  # evaluations are few: mark each
            out += [f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>'
                    for cx, cy in (pt(*p) for p in finite)]
        out.append(f'<rect x="{x1 - 110}" y="{y1 + 8 + 16 * i}" width="10" height="10" '
                   f'fill="{color}"/><text x="{x1 - 96}" y="{y1 + 17 + 16 * i}">'
                   f'{escape(name)}</text>')
    out.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
