"""CPU kernels from the native extension `minitl._C` (C++, pybind11, OpenMP).

The extension is imported on first use, not at `import minitl`. When it is missing (a source
tree that was never built, a broken toolchain) `native_module()` warns once with the import
error and returns None, and `backend/__init__.py` keeps the numpy references: a missing build
costs speed, never correctness.

The wrappers here are where Python's view of an array (dtype, strides, transposes) meets the
kernels' view (contiguous float32 buffers and sizes, see csrc/bindings.cpp).
"""

from __future__ import annotations

import importlib
import threading
import warnings
from types import ModuleType
from typing import Any

import numpy as np

_UNSET: Any = object()
_module: Any = _UNSET
_lock = threading.Lock()


def _import_native() -> ModuleType:
    return importlib.import_module("minitl._C")


def native_module() -> ModuleType | None:
    """`minitl._C`, or None (after one RuntimeWarning) when it cannot be imported."""
    global _module
    if _module is _UNSET:
        with _lock:
            if _module is _UNSET:
                try:
                    _module = _import_native()
                except ImportError as err:
                    _module = None
                    warnings.warn(
                        f"minitl: native CPU kernels unavailable ({type(err).__name__}: {err}); "
                        "using the numpy reference kernels. Build them with `pip install .` "
                        "or `python setup.py build_ext --inplace`.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
    return _module


def native_available() -> bool:
    """True when `minitl._C` imports."""
    return native_module() is not None


def cpu_features() -> dict[str, Any]:
    """What the CPU offers and which GEMM path runs: {"avx2", "fma", "avx512f",
    "openmp_threads", "gemm_path"}, or {"gemm_path": "reference"} without the extension."""
    mod = native_module()
    if mod is None:
        return {"gemm_path": "reference"}
    return dict(mod.cpu_features())


def _as_kernel_operand(x: np.ndarray, trans: bool) -> tuple[np.ndarray, bool]:
    """A C-contiguous array and transpose flag with the same op(x); a transposed view
    (F-contiguous) is handed over as its C-contiguous base with the flag flipped, not copied."""
    if x.flags.c_contiguous:
        return x, trans
    if x.flags.f_contiguous:
        return x.T, not trans
    return np.ascontiguousarray(x), trans


def gemm(a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False
         ) -> np.ndarray:
    """C = op(A) @ op(B) on the C++ kernel for 2-D float32 arrays of any strides; other
    dtypes and ranks go to the numpy reference (the kernel is float32-only)."""
    mod = native_module()
    if (mod is None or not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray)
            or a.dtype != np.float32 or b.dtype != np.float32 or a.ndim != 2 or b.ndim != 2):
        from minitl.backend import reference

        return reference.gemm(a, b, trans_a, trans_b)
    a, trans_a = _as_kernel_operand(a, trans_a)
    b, trans_b = _as_kernel_operand(b, trans_b)
    return mod.gemm(a, b, trans_a, trans_b)
