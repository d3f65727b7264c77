"""`mt.set_num_threads` / `mt.get_num_threads`: the size of minitl's CPU thread pools.

minitl runs CPU work in two pools: the OpenMP team of the native extension `minitl._C` (GEMM,
LoRA and quantized kernels; the benchmarks report it as "N OpenMP threads") and numba's
parallel kernels. numpy's own BLAS pool (OpenBLAS) would be a third: after a numpy matrix
product its workers spin for a while waiting for more work, and on a small machine they take
the cores minitl's next kernel wanted (a minitl GEMM right after a numpy one ran at half speed
on 2 cores of a Zen 4 and of a Zen 5). So when the extension loads, minitl hands numpy's
OpenBLAS a callback that runs OpenBLAS's parallel jobs on minitl's OpenMP team
(`share_blas_pool`; OpenBLAS 0.3.27 or newer): one pool, whose threads the next kernel finds
idle. The cost: OpenBLAS still runs the asynchronous jobs of its parallel LU on its own
threads, so numpy.linalg.solve and inv mix the two pools and ran 1.3-1.5x slower (n = 1500, 2
cores of a Zen 5); matrix products, Cholesky, eigh and SVD were unchanged.
MINITL_SHARE_BLAS_POOL=0 (or `share_blas_pool(False)`) leaves numpy's pool alone; then
`blas_threads(1)` around numpy's products, or OPENBLAS_NUM_THREADS=1 before Python starts,
keeps its workers quiet. minitl's own ops never call numpy's BLAS on the CPU (ops.linalg.bmm).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["blas_threads", "blas_pool_shared", "get_blas_threads", "get_num_threads",
           "set_num_threads", "share_blas_pool"]

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
        # Probe with a count the extension does not report now: probing with this runtime's
        # own count + 1 gave a false match when another runtime (torch's libgomp, which the
        # extension had bound to, at 2 threads) already stood at that count.
        target = native.cpu_features()["openmp_threads"] + 1
        before = lib.omp_get_max_threads()
        lib.omp_set_num_threads(target)
        seen = native.cpu_features()["openmp_threads"]
        lib.omp_set_num_threads(before)
        if seen == target:
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


# numpy's wheels bundle OpenBLAS with a symbol prefix and 64-bit ints; older builds did not.
_OPENBLAS_SYMBOLS = ("scipy_openblas_{}64_", "openblas_{}64_", "openblas_{}")


@functools.cache
def _openblas_library() -> tuple[Any, str] | None:
    """(the OpenBLAS numpy loaded, its symbol pattern), or None (another BLAS, not Linux)."""
    import numpy as np

    np.ones(2) @ np.ones(2)  # make sure numpy's BLAS is loaded
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower()})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pattern in _OPENBLAS_SYMBOLS:
            if hasattr(lib, pattern.format("set_num_threads")):
                return lib, pattern
    return None


@functools.cache
def _openblas() -> tuple[Any, Any] | None:
    """(set_num_threads, get_num_threads) of the OpenBLAS numpy loaded, or None."""
    found = _openblas_library()
    if found is None:
        return None
    lib, pattern = found
    set_n, get_n = (getattr(lib, pattern.format(f"{op}_num_threads")) for op in ("set", "get"))
    set_n.argtypes, get_n.restype = [ctypes.c_int], ctypes.c_int
    return set_n, get_n


_blas_pool_shared = False


def share_blas_pool(enabled: bool = True) -> bool:
    """Run numpy's OpenBLAS parallel work on minitl's OpenMP team (`enabled`), or hand it back
    to OpenBLAS's own threads; returns whether the pool is now shared. False, doing nothing,
    when numpy's BLAS is not an OpenBLAS with the threads callback (0.3.27+) or the native
    extension is not built. Called with True when the extension loads, unless
    MINITL_SHARE_BLAS_POOL=0 (see the module docstring)."""
    global _blas_pool_shared
    from minitl.backend.cpu import native_module

    native = native_module()
    found = _openblas_library()
    if native is None or found is None or not hasattr(native, "blas_jobs_callback"):
        return False  # (the last: an extension built before the callback existed)
    lib, pattern = found
    try:
        set_callback = getattr(lib, pattern.format("set_threads_callback_function"))
    except AttributeError:
        return False
    set_callback.argtypes, set_callback.restype = [ctypes.c_void_p], None
    set_callback(native.blas_jobs_callback() if enabled else None)
    _blas_pool_shared = bool(enabled)
    return _blas_pool_shared


def blas_pool_shared() -> bool:
    """True while numpy's OpenBLAS runs its parallel work on minitl's OpenMP team."""
    return _blas_pool_shared


def get_blas_threads() -> int | None:
    """Threads of numpy's OpenBLAS pool, or None when numpy's BLAS is not a known OpenBLAS."""
    found = _openblas()
    return None if found is None else int(found[1]())


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[int | None]:
    """Hold numpy's OpenBLAS pool at `n` threads inside the block (restored after); yields
    the previous count, or None and does nothing when numpy's BLAS is not a known OpenBLAS.

        with mt.threads.blas_threads(1):
            features = x_np @ w_np       # numpy's product: no spinning workers afterwards
            loss = model(mt.tensor(features)).sum()
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"blas_threads: expected a positive integer, got {n!r}")
    found = _openblas()
    if found is None:
        yield None
        return
    set_n, get_n = found
    before = int(get_n())
    set_n(int(n))
    try:
        yield before
    finally:
        set_n(before)
