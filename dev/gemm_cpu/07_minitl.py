"""07 minitl: the production kernel, csrc/cpu/gemm.cpp through minitl._C.gemm, on the same sizes.

What steps 04-06 leave out and gemm.cpp adds: packing that walks each operand in its storage
order (and transposed operands), a hand-unrolled k loop in the AVX2 kernel, prefetch of the
C tile, a static tm x tn grid of C rectangles per thread, two B buffers so a thread that
finishes a slice early packs the next one, and a barrier that yields its core. The path is
picked at run time; both x86 paths are timed here, plus numpy's BLAS for an outside yardstick.

Usage: python 07_minitl.py [M N K] [repeats]   (threads: OMP_NUM_THREADS, set before start)
Prints the same line as the C++ steps (dev/gemm_cpu/common.h):
  step | M N K | threads | GFLOP/s | min-max | GFLOP/cpu-s | max rel err | ok | CPU
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import minitl._C as C
import numpy as np


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


Gemm = Callable[[np.ndarray, np.ndarray], np.ndarray]


def sampled_error(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """common.h's check: 4096 entries against float64 dot products, relative to sum |a b|.
    Elementwise, not a float64 matmul: BLAS threads left spinning after one would steal the
    cores from the OpenMP team being timed next."""
    rng = np.random.default_rng(7)
    i, j = rng.integers(0, c.shape[0], 4096), rng.integers(0, c.shape[1], 4096)
    terms = a[i].astype(np.float64) * b[:, j].T.astype(np.float64)  # (4096, K)
    return float(np.max(np.abs(c[i, j] - terms.sum(1)) / (np.abs(terms).sum(1) + 1e-30)))


def bench(name: str, fn: Gemm, a: np.ndarray, b: np.ndarray, reps: int) -> bool:
    c = fn(a, b)  # warm-up
    flop = 2.0 * a.shape[0] * b.shape[1] * a.shape[1]
    rates, per_cpu = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        c = fn(a, b)
        t1, c1 = time.perf_counter(), time.process_time()
        rates.append(flop / (t1 - t0) / 1e9)
        per_cpu.append(flop / max(c1 - c0, 1e-9) / 1e9)
    err = sampled_error(a, b, c)  # after the timed calls, as in common.h
    rates.sort()
    per_cpu.sort()
    m, k = a.shape
    threads = os.environ.get("OMP_NUM_THREADS", str(C.cpu_features()["openmp_threads"]))
    ok = err < 1e-5
    print(f"{name} | {m} {b.shape[1]} {k} | {threads} | {rates[len(rates) // 2]:.2f} | "
          f"{rates[0]:.2f}-{rates[-1]:.2f} | {per_cpu[len(per_cpu) // 2]:.2f} | {err:.1e} | "
          f"{'ok' if ok else 'FAILED'} | {cpu_model()}")
    return ok


def main(argv: list[str]) -> int:
    m, n, k = (int(v) for v in argv[1:4]) if len(argv) >= 4 else (1024, 1024, 1024)
    reps = int(argv[4]) if len(argv) == 5 else int(argv[1]) if len(argv) == 2 else 5
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    feats = C.cpu_features()
    ok = True
    paths = ["avx2"] + (["avx512"] if feats["avx512f"] else []) if feats["avx2"] else ["generic"]
    for path in paths:
        C.set_gemm_path(path)
        ok &= bench(f"07_minitl_{C.cpu_features()['gemm_path']}", C.gemm, a, b, reps)
    C.set_gemm_path("auto")
    ok &= bench("numpy_blas", np.matmul, a, b, reps)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
