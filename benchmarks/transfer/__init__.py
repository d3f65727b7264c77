"""Transfer-learning experiments on real data with the real all-MiniLM-L6-v2 weights.

    python -m benchmarks.transfer.data_efficiency [--quick]   # accuracy vs number of labels
    python -m benchmarks.transfer.cross_domain [--quick]      # movie reviews -> tweets, ...
    python -m benchmarks.transfer.forgetting [--quick]        # full vs EWC vs replay: drift

Each writes a markdown report with its measured table and a plot into `docs/` and its raw
numbers as JSON into `benchmarks/results/`. The runs go through `minitl.recipes`, the same
code as `minitl demo` and `minitl finetune`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="the smallest version (a few minutes on two cores): fewer sizes/seeds")
    p.add_argument("--eval-size", type=int, default=None, help="eval sentences per domain")
    p.add_argument("--docs", default=str(DOCS), help="where the markdown report and plot go")
    p.add_argument("--backbone", default="minilm-l6", help="pretrained encoder")
    p.add_argument("--progress", action="store_true", help="per-step training progress")
    return p


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def fmt_ms(xs: Sequence[float]) -> str:
    """'0.712 ± 0.013 (3)': mean, sample standard deviation and the number of runs."""
    if not xs:
        return "-"
    m, s = mean_std(xs)
    return f"{m:.3f}" if len(xs) == 1 else f"{m:.3f} ± {s:.3f} ({len(xs)})"


def machine() -> str:
    """One line: CPU, cores, load average now, Python and numpy."""
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (f"{cpu}, {os.cpu_count()} cores (load average {load:.1f} at the start), "
            f"Python {platform.python_version()}, numpy {np.__version__}")


def save_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def command_line() -> str:
    mod = Path(sys.argv[0]).stem
    return " ".join([f"python -m benchmarks.transfer.{mod}", *sys.argv[1:]])
