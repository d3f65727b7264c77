"""`mt.set_num_threads` / `mt.get_num_threads`: the size of minitl's CPU thread pools.

minitl runs CPU work in two pools: the OpenMP team of the native extension `minitl._C`
(GEMM, LoRA and quantized kernels; the benchmarks report it as "N OpenMP threads") and
numba's parallel kernels. numpy's own BLAS pool (OpenBLAS, MKL) is neither: set it with
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS before Python starts.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any

__all__ = ["get_num_threads", "set_num_threads"]

_OPENMP_NAMES = ("libgomp", "libomp", "libiomp")


@functools.cache
def _openmp_runtime() -> Any:
    """The OpenMP runtime `minitl._C` runs on, or None (no extension, not Linux).

    The extension is loaded with RTLD_LOCAL, so its OpenMP symbols are not global; opening the
    same library again by path hands back the handle already loaded, and with it the one
    thread-count setting the kernels read. A process can hold several OpenMP runtimes (torch
    and numba bring their own), so each candidate is probed: the right one is the runtime
    whose setting the extension's `cpu_features()` then reports."""
    from minitl.backend.cpu import native_module

    native = native_module()
    if native is None or not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        if not path.rsplit("/", 1)[-1].startswith(_OPENMP_NAMES):
            continue
        try:
            lib = ctypes.CDLL(path)
            lib.omp_set_num_threads.argtypes = [ctypes.c_int]
            lib.omp_get_max_threads.restype = ctypes.c_int
        except (OSError, AttributeError):
            continue
        before = lib.omp_get_max_threads()
        lib.omp_set_num_threads(before + 1)
        seen = native.cpu_features()["openmp_threads"]
        lib.omp_set_num_threads(before)
        if seen == before + 1:
            return lib
    return None


def _numba() -> Any:
    try:
        import numba
    except ImportError:
        return None
    return numba


def set_num_threads(n: int) -> None:
    """Use `n` threads for minitl's CPU kernels, as `torch.set_num_threads` does for
    PyTorch's intra-op pool.

    It sets the OpenMP team size of the native extension (`omp_set_num_threads`, in the
    calling thread, as OpenMP defines it) and numba's thread count. numba cannot grow past
    the NUMBA_NUM_THREADS it started with, so its count is capped there. numpy's BLAS pool is
    not touched (see the module docstring).
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    n = int(n)
    numba = _numba()
    if numba is not None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    # After numba: its OpenMP threading layer calls omp_set_num_threads on the same runtime,
    # so setting numba last would leave the native kernels at numba's capped count.
    omp = _openmp_runtime()
    if omp is not None:
        omp.omp_set_num_threads(n)


def get_num_threads() -> int:
    """Threads minitl's CPU kernels may use: the native extension's OpenMP team size, or
    numba's thread count without the extension (1 with neither)."""
    omp = _openmp_runtime()
    if omp is not None:
        return int(omp.omp_get_max_threads())
    numba = _numba()
    return int(numba.get_num_threads()) if numba is not None else 1
