"""Shared benchmark harness: warm-up, interleaved A/B timing, medians, the machine report and
JSON rows under `benchmarks/results/`.

Timing discipline. On a small shared machine one run of A followed by one run of B mostly
measures who else was busy. So each subject is timed in rounds: every round runs each
candidate in turn (the order rotating from round to round) for a few calls after one
untimed warm-up call, and the reported time is the median over all rounds. Ratios come
from the medians of the same interleaved rounds, so a noisy minute slows A and B alike.
Between candidates the harness pauses: worker threads keep polling for a while after a
parallel call (OpenBLAS's for ~0.25 s, measured here: minitl's 256^3 GEMM took 4-8 ms instead
of 0.3 ms during that window), and without the pause one library's polling threads would take
the cores the next candidate needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SETTLE_S = 0.3  # pause between candidates so the previous pool's polling threads sleep


# ---- timing ------------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], calls: int) -> list[float]:
    """Seconds per call for `calls` timed calls after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def interleaved(candidates: dict[str, Callable[[], Any]], rounds: int = 5, calls: int = 3,
                settle_s: float = SETTLE_S) -> dict[str, float]:
    """Median seconds per call of each candidate, timed in interleaved rounds."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            time.sleep(settle_s)
            samples[name] += time_calls(candidates[name], calls)
    return {name: statistics.median(ts) for name, ts in samples.items()}


# ---- machine report ----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    try:
        config = np.show_config(mode="dicts")  # numpy >= 1.25
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - older numpy: the name is only informative
        return "unknown"


def machine_info() -> dict[str, Any]:
    """CPU, cores, library versions and the kernel path minitl takes."""
    from minitl.backend import cpu, get_backend

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": f"{np.__version__} ({_blas()})",
        "minitl_kernels": get_backend("cpu").paths,
        "minitl_cpu": cpu.cpu_features(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import torch

        info["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        info["torch"] = None
    return info


def print_machine(info: dict[str, Any]) -> None:
    feats = info["minitl_cpu"]
    print(f"machine : {info['cpu']}, {info['cores']} cores, load {info['load_avg_1min']:.2f}")
    print(f"versions: python {info['python']}, numpy {info['numpy']}, torch {info['torch']}")
    print(f"minitl  : gemm path {feats.get('gemm_path')}, "
          f"{feats.get('openmp_threads', 1)} OpenMP threads, kernels {info['minitl_kernels']}")
    print()


# ---- rows --------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a benchmark table; times in seconds, `extra` for per-subject numbers."""

    subject: str
    shape: str
    minitl_s: float
    other_s: float
    other: str = "torch"
    gflop: float | None = None  # work per call, for GFLOP/s
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """minitl time / other time: below 1 means minitl is faster."""
        return self.minitl_s / self.other_s

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def print_rows(rows: Sequence[Row]) -> None:
    """`subject | shape | minitl | other | ratio | GFLOP/s` with times in milliseconds."""
    head = (f"{'subject':<30} | {'shape':<24} | {'minitl ms':>9} | {'other ms':>14} | "
            f"{'ratio':>5} | {'GFLOP/s minitl/other':>20}")
    print(head)
    print("-" * len(head))
    for r in rows:
        other = f"{r.other_s * 1e3:8.2f} {r.other:<5}"
        rate = ""
        if r.gflop:
            rate = f"{r.gflop / r.minitl_s:8.1f} / {r.gflop / r.other_s:8.1f}"
        print(f"{r.subject:<30} | {r.shape:<24} | {r.minitl_s * 1e3:9.2f} | {other:>14} | "
              f"{r.ratio:5.2f} | {rate:>20}")
    print()


def save_rows(name: str, rows: Sequence[Row], info: dict[str, Any],
              args: argparse.Namespace | None = None) -> Path:
    """Write {machine, args, rows} to benchmarks/results/<name>-<UTC time>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    payload = {"benchmark": name, "machine": info,
               "args": vars(args) if args is not None else {},
               "rows": [r.as_json() for r in rows]}
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"saved {path.relative_to(RESULTS.parent.parent)}")
    return path


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, few rounds: a smoke run")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per subject")
    p.add_argument("--calls", type=int, default=None, help="timed calls per round")
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    return p
