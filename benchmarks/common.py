"""Shared benchmark harness: warm-up, interleaved A/B timing, medians and their spread, the
machine report (with a warning when the machine is already busy) and JSON rows under
`benchmarks/results/`.

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
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def _results_dir() -> Path:
    """benchmarks/results/ of a source checkout; installed (minitl._benchmarks, where the
    package directory is no place for output) ./benchmark-results; MINITL_BENCH_RESULTS
    overrides both."""
    if os.environ.get("MINITL_BENCH_RESULTS"):
        return Path(os.environ["MINITL_BENCH_RESULTS"])
    here = Path(__file__).resolve().parent
    if (here.parent / "pyproject.toml").is_file():
        return here / "results"
    return Path.cwd() / "benchmark-results"


RESULTS = _results_dir()
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


class Timings(dict[str, float]):
    """Median seconds per call of each candidate; `.samples` keeps every timed call, so a
    table can say how much the calls scattered around the median."""

    def __init__(self, samples: dict[str, list[float]]) -> None:
        super().__init__({name: statistics.median(ts) for name, ts in samples.items()})
        self.samples = samples

    def spread(self, name: str) -> float:
        """Half the interquartile range over the median (0.05: the middle half of the calls
        lies within about ±5% of the reported time); nan for fewer than 2 calls or an
        absent candidate."""
        ts = self.samples.get(name, [])
        if len(ts) < 2:
            return float("nan")
        q1, q3 = np.percentile(ts, [25, 75])
        return float((q3 - q1) / 2 / self[name])

    def spreads(self, mine: str = "minitl", other: str = "torch") -> tuple[float, float]:
        return self.spread(mine), self.spread(other)


def interleaved(candidates: dict[str, Callable[[], Any]], rounds: int = 5, calls: int = 3,
                settle_s: float = SETTLE_S) -> Timings:
    """Median seconds per call of each candidate, timed in interleaved rounds."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            time.sleep(settle_s)
            samples[name] += time_calls(candidates[name], calls)
    return Timings(samples)


def spread_of(times: Sequence[float]) -> float:
    """`Timings.spread` for a plain list of per-call times."""
    return Timings({"x": list(times)}).spread("x")


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
        name = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - older numpy: the name is only informative
        return "unknown"
    try:  # the kernel set OpenBLAS picked at run time (SkylakeX, Haswell, ...)
        import threadpoolctl

        arch = [i.get("architecture") for i in threadpoolctl.threadpool_info()
                if i.get("internal_api") == "openblas"]
        return f"{name}, {arch[0]}" if arch and arch[0] else name
    except Exception:  # noqa: BLE001 - threadpoolctl is optional
        return name


ISA_ENV = ("MINITL_CPU_ISA", "OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
           "MKL_ENABLE_INSTRUCTIONS")


def machine_info() -> dict[str, Any]:
    """CPU, cores, library versions and the kernel path minitl takes."""
    from minitl import memory, threads
    from minitl.backend import cpu, get_backend, kernel_mode

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": f"{np.__version__} ({_blas()})",
        # plus the kernels ops call directly when built (CPU only, not backend kernels)
        "minitl_kernels": {**get_backend("cpu").paths,
                           **{k: "native" for k in ("attention_fwd", "attention_bwd")
                              if kernel_mode() == "auto" and k in cpu.native_kernels()}},
        "minitl_cpu": cpu.cpu_features(),
        "numpy_blas_pool": ("minitl's OpenMP team" if threads.blas_pool_shared()
                            else "OpenBLAS's own threads"),
        "malloc": ("freed memory retained (minitl.memory)" if memory.memory_retained()
                   else "the C library's defaults"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        # what narrows each library's SIMD set (docs/cpu_speed.md: AVX2-only runs on AVX-512)
        "isa_env": {k: os.environ[k] for k in ISA_ENV if k in os.environ},
    }
    try:
        import torch

        info["torch"] = (f"{torch.__version__} ({torch.get_num_threads()} threads, SIMD "
                         f"{torch.backends.cpu.get_cpu_capability()})")
    except ImportError:
        info["torch"] = None
    return info


def busy_warning(load: float | None, cores: int | None) -> str | None:
    """A line for a machine already busy before the benchmark starts, else None: with the
    1-minute load at or above the core count every timing competes with other work, and two
    runs can differ several-fold."""
    if load is None or not cores or load < cores:
        return None
    return (f"WARNING: load {load:.2f} on {cores} cores before the benchmark started: other "
            f"work is running, so times (and, less so, ratios) are unreliable; rerun on an "
            f"idle machine to report them")


def print_machine(info: dict[str, Any]) -> None:
    feats = info["minitl_cpu"]
    print(f"machine : {info['cpu']}, {info['cores']} cores, load {info['load_avg_1min']:.2f}")
    warning = busy_warning(info["load_avg_1min"], info["cores"])
    if warning:
        print(warning)
    print(f"versions: python {info['python']}, numpy {info['numpy']}, torch {info['torch']}")
    if info.get("isa_env"):
        print("SIMD cap: " + " ".join(f"{k}={v}" for k, v in info["isa_env"].items()))
    print(f"minitl  : SIMD {feats.get('isa')}, "
          f"gemm path {feats.get('gemm_path')}, {feats.get('openmp_threads', 1)} OpenMP "
          f"threads, kernels {info['minitl_kernels']}")
    print(f"numpy's BLAS runs on {info.get('numpy_blas_pool')}; malloc: {info.get('malloc')}")
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
    spread: tuple[float, float] | None = None  # Timings.spread of minitl and of the other

    @property
    def ratio(self) -> float:
        """minitl time / other time: below 1 means minitl is faster."""
        return self.minitl_s / self.other_s

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def print_rows(rows: Sequence[Row]) -> None:
    """`subject | shape | minitl | other | ratio | GFLOP/s` with times in milliseconds."""
    head = (f"{'subject':<30} | {'shape':<24} | {'minitl ms':>9} | {'other ms':>14} | "
            f"{'ratio':>5} | {'spread':>11} | {'GFLOP/s minitl/other':>20}")
    print(head)
    print("-" * len(head))
    for r in rows:
        other = f"{r.other_s * 1e3:8.2f} {r.other:<5}"
        rate = ""
        if r.gflop:
            rate = f"{r.gflop / r.minitl_s:8.1f} / {r.gflop / r.other_s:8.1f}"
        spread = ""
        if r.spread is not None:
            spread = "/".join("-" if math.isnan(v) else f"±{100 * v:.0f}%" for v in r.spread)
        print(f"{r.subject:<30} | {r.shape:<24} | {r.minitl_s * 1e3:9.2f} | {other:>14} | "
              f"{r.ratio:5.2f} | {spread:>11} | {rate:>20}")
    print("spread: half the interquartile range of the timed calls over their median, "
          "minitl/other")
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
    print(f"saved {path}")
    return path


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, few rounds: a smoke run")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per subject")
    p.add_argument("--calls", type=int, default=None, help="timed calls per round")
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    return p
