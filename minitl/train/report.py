"""Reporting: aligned text tables, markdown tables, and bar / line charts (the recipes'
results, the Trainer's loss curve).

Charts are PNG through matplotlib when it is installed and otherwise SVG from the small
self-contained writer below (matplotlib is not a runtime dependency). `fmt="svg"` forces
the SVG writer, which the docs use so that their plots do not depend on the machine.

    print(text_table(["strategy", "acc"], [["full", "0.812"]]))
    path = bar_chart("out/accuracy", ["head", "full"], {"accuracy": [0.71, 0.81]})
    path = line_chart("out/curve", {"full": ([50, 100], [0.6, 0.7], [0.02, 0.01])}, logx=True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

__all__ = ["bar_chart", "have_matplotlib", "line_chart", "markdown_table", "text_table"]

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3",
           "#8C8C8C", "#CCB974", "#64B5CD")

Series = Mapping[str, Sequence[float]]
Lines = Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float] | None]]


# ---- tables --------------------------------------------------------------------------------

def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; the first left-aligned, the rest right."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)]
                     + [line(r) for r in cells[1:]])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; every column but the first right-aligned."""
    out = ["| " + " | ".join(str(h) for h in headers) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


# ---- the SVG writer ------------------------------------------------------------------------

def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    mag = 10 ** math.floor(math.log10((hi - lo) / n))
    step = min((m * mag for m in (1, 2, 5, 10)), key=lambda st: abs((hi - lo) / st - n))
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


class _Svg:
    """Just enough SVG: a plot area with a y axis, text, rectangles, lines and markers."""

    def __init__(self, width: int, height: int, left: int = 64, right: int = 24, top: int = 44,
                 bottom: int = 72) -> None:
        self.w, self.h = width, height
        self.x0, self.x1, self.y0, self.y1 = left, width - right, height - bottom, top
        self.items: list[str] = []

    def add(self, tag: str, text: str = "", **attrs: object) -> None:
        a = " ".join(f'{k.rstrip("_").replace("_", "-")}="{escape(str(v), {chr(34): "&quot;"})}"'
                     for k, v in attrs.items())
        self.items.append(f"<{tag} {a}>{escape(text)}</{tag}>" if text else f"<{tag} {a}/>")

    def text(self, x: float, y: float, s: str, size: int = 12, anchor: str = "middle",
             rotate: float = 0, weight: str = "normal") -> None:
        extra = {"transform": f"rotate({rotate} {x:.1f} {y:.1f})"} if rotate else {}
        self.add("text", s, x=f"{x:.1f}", y=f"{y:.1f}", font_size=size, text_anchor=anchor,
                 font_weight=weight, **extra)

    def line(self, x1: float, y1: float, x2: float, y2: float, color: str = "#333",
             width: float = 1, dash: str = "") -> None:
        extra = {"stroke_dasharray": dash} if dash else {}
        self.add("line", x1=f"{x1:.1f}", y1=f"{y1:.1f}", x2=f"{x2:.1f}", y2=f"{y2:.1f}",
                 stroke=color, stroke_width=width, **extra)

    def y_axis(self, lo: float, hi: float, label: str) -> None:
        for t in nice_ticks(lo, hi):
            y = self.ymap(t, lo, hi)
            self.line(self.x0, y, self.x1, y, "#ddd")
            self.text(self.x0 - 6, y + 4, _fmt(t), 11, "end")
        self.line(self.x0, self.y0, self.x0, self.y1)
        self.line(self.x0, self.y0, self.x1, self.y0)
        self.text(16, (self.y0 + self.y1) / 2, label, 12, rotate=-90)

    def ymap(self, v: float, lo: float, hi: float) -> float:
        return self.y0 - (v - lo) / (hi - lo) * (self.y0 - self.y1)

    def legend(self, names: Sequence[str]) -> None:
        """One row under the title, centred over the plot area."""
        widths = [24 + 6.5 * len(n) for n in names]
        x, y = (self.x0 + self.x1 - sum(widths)) / 2, self.y1 - 16
        for i, (name, w) in enumerate(zip(names, widths)):
            self.add("rect", x=f"{x:.1f}", y=y, width=10, height=10,
                     fill=PALETTE[i % len(PALETTE)])
            self.text(x + 14, y + 9, name, 11, "start")
            x += w

    def save(self, path: str, title: str) -> None:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" font-family="Helvetica, Arial, sans-serif">')
        body = [f'<rect width="{self.w}" height="{self.h}" fill="white"/>']
        if title:
            body.append(f'<text x="{self.w / 2:.1f}" y="22" font-size="14" text-anchor="middle" '
                        f'font-weight="bold">{escape(title)}</text>')
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join([head, *body, *self.items, "</svg>"]) + "\n")


def _limits(values: Sequence[float], ylim: tuple[float, float] | None) -> tuple[float, float]:
    if ylim is not None:
        return ylim
    finite = [v for v in values if math.isfinite(v)] or [0.0, 1.0]
    lo, hi = min(0.0, min(finite)), max(finite)
    return lo, hi + 0.08 * (hi - lo or 1.0)


def _svg_bars(path: str, categories: Sequence[str], series: Series, errors: Series | None,
              title: str, ylabel: str, ylim: tuple[float, float] | None,
              labels: bool) -> None:
    names = list(series)
    ups = [v + (errors[n][i] if errors and n in errors else 0.0)
           for n in names for i, v in enumerate(series[n])]
    lo, hi = _limits(ups, ylim)
    longest = max((len(c) for c in categories), default=0)
    svg = _Svg(max(480, 70 * len(categories) * max(1, len(names)) // 2 + 120),
               320 + int(3.3 * longest), top=44 + 16 * (len(names) > 1),
               bottom=24 + int(3.3 * longest))
    svg.y_axis(lo, hi, ylabel)
    slot = (svg.x1 - svg.x0) / len(categories)
    bw = slot * 0.75 / len(names)
    for ci, cat in enumerate(categories):
        for si, name in enumerate(names):
            v = series[name][ci]
            if not math.isfinite(v):
                continue
            x = svg.x0 + ci * slot + slot * 0.125 + si * bw
            top, base = svg.ymap(min(max(v, lo), hi), lo, hi), svg.ymap(max(lo, 0.0), lo, hi)
            svg.add("rect", x=f"{x:.1f}", y=f"{min(top, base):.1f}", width=f"{bw * 0.92:.1f}",
                    height=f"{abs(base - top):.1f}", fill=PALETTE[si % len(PALETTE)])
            if errors and name in errors and errors[name][ci] > 0:
                e = errors[name][ci]
                xm = x + bw * 0.46
                svg.line(xm, svg.ymap(max(lo, v - e), lo, hi), xm, svg.ymap(min(hi, v + e), lo, hi))
            if labels:
                svg.text(x + bw * 0.46, top - 4, f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}", 10)
        svg.text(svg.x0 + (ci + 0.5) * slot, svg.y0 + 14, cat, 11, "end", rotate=-30)
    if len(names) > 1:
        svg.legend(names)
    svg.save(path, title)


def _svg_lines(path: str, lines: Lines, title: str, xlabel: str, ylabel: str,
               logx: bool, ylim: tuple[float, float] | None, markers: bool = True) -> None:
    def tx(v: float) -> float:
        return math.log10(v) if logx else v

    xs = [tx(x) for xsr, _, _ in lines.values() for x in xsr]
    ys = [y + (e or 0) * s for _, ysr, er in lines.values()
          for i, y in enumerate(ysr) for e in [er[i] if er else 0] for s in (-1, 1)]
    lo, hi = _limits(ys, ylim) if ylim else (min(ys) - 0.02, max(ys) + 0.02)
    xlo, xhi = min(xs), max(xs)
    pad = 0.05 * (xhi - xlo or 1.0)
    xlo, xhi = xlo - pad, xhi + pad
    svg = _Svg(640, 400, top=60)
    svg.y_axis(lo, hi, ylabel)

    def xmap(v: float) -> float:
        return svg.x0 + (tx(v) - xlo) / (xhi - xlo) * (svg.x1 - svg.x0)

    ticks = sorted({x for xsr, _, _ in lines.values() for x in xsr})
    if len(ticks) > 12:  # a curve of many points (a loss per step): round ticks instead
        ticks = [t for t in nice_ticks(xlo, xhi, 6) if xlo <= t <= xhi]
    for t in ticks:
        svg.line(xmap(t), svg.y0, xmap(t), svg.y0 + 4)
        svg.text(xmap(t), svg.y0 + 18, _fmt(t), 11)
    svg.text((svg.x0 + svg.x1) / 2, svg.h - 22, xlabel + (" (log scale)" if logx else ""), 12)
    for i, (xsr, ysr, er) in enumerate(lines.values()):
        color = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{xmap(x):.1f},{svg.ymap(y, lo, hi):.1f}" for x, y in zip(xsr, ysr))
        svg.add("polyline", points=pts, fill="none", stroke=color, stroke_width=2)
        if not markers and len(xsr) > 1:
            continue
        for j, (x, y) in enumerate(zip(xsr, ysr)):
            svg.add("circle", cx=f"{xmap(x):.1f}", cy=f"{svg.ymap(y, lo, hi):.1f}", r=3.5,
                    fill=color)
            if er and er[j] > 0:
                svg.line(xmap(x), svg.ymap(y - er[j], lo, hi), xmap(x),
                         svg.ymap(y + er[j], lo, hi), color, 1.5)
    svg.legend(list(lines))
    svg.save(path, title)


# ---- public entry points -------------------------------------------------------------------

def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _target(stem: str, fmt: str) -> tuple[str, bool]:
    stem = os.fspath(stem)
    base, ext = os.path.splitext(stem)
    if ext in (".png", ".svg"):
        stem, fmt = base, ext[1:] if fmt == "auto" else fmt
    if fmt not in ("auto", "png", "svg"):
        raise ValueError(f"fmt must be 'auto', 'png' or 'svg', got {fmt!r}")
    use_png = fmt == "png" or (fmt == "auto" and have_matplotlib())
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    return stem + (".png" if use_png else ".svg"), use_png


def _figure():  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=110)
    FigureCanvasAgg(fig)  # no pyplot state: the user's backend is left alone
    return fig, fig.add_subplot(1, 1, 1)


def bar_chart(stem: str, categories: Sequence[str], series: Series, *,
              errors: Series | None = None, title: str = "", ylabel: str = "",
              ylim: tuple[float, float] | None = None, value_labels: bool = True,
              fmt: str = "auto") -> str:
    """Bars per category, one colour per series (error bars from `errors`). Writes
    `stem.png` (matplotlib) or `stem.svg` and returns the path written."""
    path, png = _target(stem, fmt)
    if not png:
        _svg_bars(path, categories, series, errors, title, ylabel, ylim, value_labels)
        return path
    fig, ax = _figure()
    n = len(series)
    for i, (name, vals) in enumerate(series.items()):
        xs = [c + (i - (n - 1) / 2) * 0.8 / n for c in range(len(categories))]
        err = list(errors[name]) if errors and name in errors else None
        bars = ax.bar(xs, vals, 0.8 / n, yerr=err, label=name, color=PALETTE[i % len(PALETTE)])
        if value_labels:
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(categories)), list(categories), rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    if n > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def line_chart(stem: str, lines: Lines, *, title: str = "", xlabel: str = "",
               ylabel: str = "", logx: bool = False, ylim: tuple[float, float] | None = None,
               fmt: str = "auto", markers: bool = True) -> str:
    """One line per series, `{name: (xs, ys, errors or None)}`. Returns the path written.
    `markers=False` draws plain lines (a point marker only on a one-point series)."""
    path, png = _target(stem, fmt)
    if not png:
        _svg_lines(path, lines, title, xlabel, ylabel, logx, ylim, markers)
        return path
    fig, ax = _figure()
    for i, (name, (xs, ys, err)) in enumerate(lines.items()):
        ax.errorbar(xs, ys, yerr=None if err is None else list(err),
                    marker="o" if markers or len(xs) == 1 else None, capsize=3,
                    label=name, color=PALETTE[i % len(PALETTE)])
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path
