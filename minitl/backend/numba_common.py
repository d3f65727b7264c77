"""What the numba kernel modules share: the guarded numba import, the jit decorator (compiled
lazily, cached on disk), and the launch rule that keeps small problems on one thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import numba
    from numba import prange
except ImportError:  # numba is a runtime dependency; this guards broken installs
    numba = None  # type: ignore[assignment]
    prange = range  # type: ignore[misc]

Array = np.ndarray
_FM = {"reassoc", "nsz", "arcp", "contract", "afn"}  # fast-math without nnan / ninf
_PAR_MIN = 1 << 15  # below this many elements a parallel region costs more than it saves


def _jit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    def wrap(fn: Callable[..., Any]) -> Any:
        if numba is None:
            return fn
        return numba.njit(cache=True, **options)(fn)

    return wrap


def _launch(kernel: Any, work: int, *args: Any) -> Any:
    """Run a parallel kernel, on one thread when `work` (about one unit per element) is below
    _PAR_MIN: waking the pool costs more than it saves there, and on a busy machine waiting for
    a descheduled worker costs a whole time slice (PyTorch's at::parallel_for uses the same
    grain size)."""
    if work >= _PAR_MIN or numba is None or numba.get_num_threads() == 1:
        return kernel(*args)
    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(prev)


def _chunks(m: int) -> int:
    """Row chunks for kernels that reduce over rows. A fixed count, not one per thread, so the
    summation order (and every bit of the result) is the same whatever the thread count."""
    return max(1, min(m, 32))


def _c(a: Array) -> Array:
    return np.ascontiguousarray(a)


def _rows2d(a: Array | None, d: int, dtype: Any) -> Array:
    """A (D,) parameter, or an empty dummy when absent (the kernels take a flag)."""
    return np.empty(0, dtype=dtype) if a is None else _c(a).reshape(d)
