"""Kernel selection: the ONE place that decides which implementation runs.

`get_backend(device)` returns a `Backend` whose attributes are the kernels ops
may call (`gemm`, `lora_linear_fwd`, ...) plus `xp`, the array module (numpy or
CuPy). Each kernel has a numpy reference in `reference.py`; native versions
(C++ through `minitl._C`, numba) replace a reference only when they are built
and selected. `MINITL_KERNELS=reference` forces the references everywhere.

Every native CPU kernel is installed behind `guards.guarded`: operands of a dtype it was not
compiled for (float16, byte-swapped, mixed dtypes) run the reference instead, and a float-only
kernel given integers raises TypeError. Kernels that index memory with data (embedding ids,
class targets) check those indices themselves, in every implementation.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from minitl.backend import reference
from minitl.backend.guards import NUMBA_DTYPES, guarded

# Kernels a backend provides; each has a reference implementation of the same name.
KERNELS = ("gemm", "gemm_batched", "lora_linear_fwd", "lora_linear_bwd", "im2col", "col2im", "im2col_cm",
           "col2im_cm", "layernorm_fwd", "layernorm_bwd", "softmax_xent_fwd", "softmax_xent_bwd",
           "softmax_fwd", "softmax_bwd", "gelu_fwd", "gelu_bwd", "embedding_bwd", "adamw_step",
           "quant_linear_fwd", "quant_linear_bwd", "quant_lora_linear_fwd",
           "quant_lora_linear_bwd", "dequantize_rows", "erf")
# Kernels of training loops that run beside the autograd ops, not inside them (word2vec's SGD
# step over (center, context) pairs): CPU only, so they stay out of KERNELS, whose every entry
# also has a CUDA path and takes the all-kernel input checks of the test suite.
CPU_LOOP_KERNELS = ("sgns_update",)


class Backend:
    """A device's array module plus the chosen implementation of each kernel."""

    def __init__(self, device: str, xp: ModuleType, kernels: dict[str, Callable[..., Any]],
                 paths: dict[str, str]) -> None:
        self.device = device
        self.xp = xp
        self.paths = paths  # kernel name -> "reference" | "native" | "numba" | "cupy"
        for name, fn in kernels.items():
            setattr(self, name, fn)

    if TYPE_CHECKING:
        # One attribute per name in KERNELS, set in __init__.
        def __getattr__(self, name: str) -> Callable[..., Any]: ...

    def __repr__(self) -> str:
        return f"Backend(device={self.device!r}, paths={self.paths})"


_cache: dict[str, Backend] = {}


def kernel_mode() -> str:
    """MINITL_KERNELS: `auto` (default) takes each kernel's native version where it is built
    and passed its self-check; `reference` forces the numpy references everywhere."""
    mode = os.environ.get("MINITL_KERNELS", "auto").lower()
    if mode not in ("auto", "reference"):
        raise ValueError(f"MINITL_KERNELS must be auto or reference, got {mode!r}")
    return mode


def _cpu_backend() -> Backend:
    names = KERNELS + CPU_LOOP_KERNELS
    kernels = {name: getattr(reference, name) for name in names}
    paths = {name: "reference" for name in names}
    if kernel_mode() != "reference":
        # The C++ kernels (csrc/cpu) run wherever minitl._C is built and each has passed its
        # self-check against the reference; their wrappers send float64 and non-2-D operands
        # to the reference, so this choice never changes an answer.
        from minitl.backend import cpu

        for name in cpu.native_kernels():
            kernels[name] = guarded(name, getattr(cpu, name), getattr(reference, name),
                                    cpu.NATIVE_DTYPES)
            paths[name] = "native"
        # numba kernels fill in what C++ does not provide; they compile lazily on first call.
        # numba has no float16 (and no byte-swapped arrays): those run the reference.
        from minitl.backend import numba_kernels

        for name in numba_kernels.provided_kernels():
            if paths.get(name) == "reference":
                kernels[name] = guarded(name, getattr(numba_kernels, name),
                                        getattr(reference, name), NUMBA_DTYPES)
                paths[name] = "numba"
    return Backend("cpu", np, kernels, paths)


def _cuda_backend() -> Backend:
    """CuPy as the array module plus minitl's CUDA kernels (backend/cuda.py); RuntimeError
    when CuPy is missing or sees no GPU."""
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError(
            "device 'cuda' needs CuPy and an NVIDIA GPU, but CuPy is not installed: "
            f"pip install 'minitl[cuda]' ({type(e).__name__}: {e})"
        ) from e
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError without a driver, among others
        raise RuntimeError(
            f"device 'cuda': CuPy is installed but cannot reach a GPU ({type(e).__name__}: "
            f"{e}); check the NVIDIA driver and CUDA_VISIBLE_DEVICES"
        ) from e
    if count < 1:
        raise RuntimeError("device 'cuda': CuPy is installed but no CUDA GPU is visible "
                           "(check the NVIDIA driver and CUDA_VISIBLE_DEVICES)")
    from minitl.backend import cuda

    kernels, paths = cuda.make_kernels(KERNELS, kernel_mode())
    return Backend("cuda", cupy, kernels, paths)


def get_backend(device: str = "cpu") -> Backend:
    key = str(device)
    backend = _cache.get(key)
    if backend is None:
        if key == "cpu":
            backend = _cpu_backend()
        elif key.startswith("cuda"):
            backend = _cuda_backend()
        else:
            raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
        _cache[key] = backend
    return backend


def reset_backends() -> None:
    """Forget chosen kernels (after changing MINITL_KERNELS in tests)."""
    _cache.clear()


def array_module(arr: Any) -> ModuleType:
    """numpy for numpy arrays, cupy for CuPy arrays."""
    if isinstance(arr, np.ndarray) or np.isscalar(arr):
        return np
    mod = type(arr).__module__
    if mod.startswith("cupy"):
        import cupy

        return cupy
    return np


def device_of(arr: Any) -> str:
    return "cpu" if array_module(arr) is np else "cuda"
