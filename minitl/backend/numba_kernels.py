"""numba kernels for the CPU, compiled lazily on first use and cached on disk.

Only math numpy lacks lives here for now (erf); the fused light ops join later.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

_erf_impl: Callable[..., Any] | None = None


def provided_kernels() -> tuple[str, ...]:
    """Names of backend kernels (see backend.KERNELS) implemented here, when numba imports."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return ()
    return ()


def _build_erf() -> Callable[..., Any]:
    try:
        import numba
    except ImportError:  # numba is a runtime dependency; this guards broken installs
        vec = np.vectorize(math.erf, otypes=[np.float64])
        return lambda x: vec(x)

    @numba.vectorize(["float64(float64)", "float32(float32)"], cache=True)
    def erf(x):  # type: ignore[no-untyped-def]
        return math.erf(x)

    return erf


def erf(x: np.ndarray) -> np.ndarray:
    """Elementwise erf, exact to the libm in float64 (float32 is computed in float32)."""
    global _erf_impl
    if _erf_impl is None:
        _erf_impl = _build_erf()
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return _erf_impl(x)
