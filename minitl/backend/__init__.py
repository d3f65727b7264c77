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
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from minitl.backend import reference
from minitl.backend.guards import NUMBA_DTYPES, guarded

# Kernels a backend provides; each has a reference implementation of the same name.
KERNELS = ("gemm", "gemm_batched", "lora_linear_fwd", "lora_linear_bwd", "im2col", "col2im",
           "im2col_cm", "col2im_cm", "layernorm_fwd", "layernorm_bwd", "softmax_xent_fwd",
           "softmax_xent_bwd",
           "softmax_fwd", "softmax_bwd", "gelu_fwd", "gelu_bwd", "embedding_bwd", "adamw_step",
           "quant_linear_fwd", "quant_linear_bwd", "quant_lora_linear_fwd",
           "quant_lora_linear_bwd", "dequantize_rows", "erf")
# Kernels of training loops that run beside the autograd ops, not inside them (word2vec's SGD
# step over (center, context) pairs): CPU only, so they stay out of KERNELS, whose every entry
# also has a CUDA path and takes the all-kernel input checks of the test suite.
CPU_LOOP_KERNELS = ("sgns_update",)
# Whole conv2d passes (csrc/cpu/conv.cpp, one image per thread): CPU only, with their numpy
# reference beside the wrappers in cpu_conv.py. A backend without them (CUDA) runs Conv2d as
# im2col_cm + GEMM + col2im_cm.
CPU_CONV_KERNELS = ("conv2d_fwd", "conv2d_bwd")


class Backend:
    """A device's array module plus the chosen implementation of each kernel.

    Kernels are chosen on first use, one by one (`resolve(name) -> (fn, path)`): a program
    that never multiplies matrices never runs the native self-check, and one that never
    needs a numba kernel never imports numba, so `mt.ones(2) + 1` costs no kernel loading.
    `paths` resolves every kernel."""

    def __init__(self, device: str, xp: ModuleType,
                 resolve: Callable[[str], tuple[Callable[..., Any], str]],
                 names: tuple[str, ...]) -> None:
        self.device = device
        self.xp = xp
        self._resolve = resolve
        self._names = names
        self._paths: dict[str, str] = {}  # kernel name -> "reference" | "native" | "numba" | ...

    def __getattr__(self, name: str) -> Callable[..., Any]:
        # only reached for attributes not set yet: a kernel's first use
        if name.startswith("_") or name not in self.__dict__.get("_names", ()):
            raise AttributeError(f"Backend has no kernel {name!r}")
        fn, path = self._resolve(name)
        setattr(self, name, fn)
        self._paths[name] = path
        return fn

    @property
    def paths(self) -> dict[str, str]:
        """kernel name -> the implementation that runs it, every kernel resolved."""
        for name in self._names:
            if name not in self._paths:
                getattr(self, name)
        return dict(self._paths)

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
    names = KERNELS + CPU_LOOP_KERNELS + CPU_CONV_KERNELS
    mode = kernel_mode()

    def resolve(name: str) -> tuple[Callable[..., Any], str]:
        if name in CPU_CONV_KERNELS:
            from minitl.backend import cpu, cpu_conv

            # the wrappers send operands other than float32 arrays to the reference themselves
            if mode != "reference" and name in cpu.native_kernels():
                return cpu.native_kernel(name), "native"
            return getattr(cpu_conv, f"{name}_reference"), "reference"
        ref = getattr(reference, name)
        if mode == "reference":
            return ref, "reference"
        # The C++ kernels (csrc/cpu) run wherever minitl._C is built and each has passed its
        # self-check against the reference (run once, at the first native kernel asked
        # for); their wrappers send float64 and non-2-D operands to the reference, so this
        # choice never changes an answer.
        from minitl.backend import cpu

        if name in cpu.native_kernels():
            return guarded(name, cpu.native_kernel(name), ref, cpu.NATIVE_DTYPES), "native"
        # numba kernels fill in what C++ does not provide; they compile lazily on first call.
        # numba has no float16 (and no byte-swapped arrays): those run the reference.
        from minitl.backend import numba_kernels

        if name in numba_kernels.provided_kernels():
            return guarded(name, getattr(numba_kernels, name), ref, NUMBA_DTYPES), "numba"
        return ref, "reference"

    return Backend("cpu", np, resolve, names)


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
    except Exception as e:
        raise RuntimeError(
            f"device 'cuda': CuPy is installed but cannot reach a GPU ({type(e).__name__}: "
            f"{e}); check the NVIDIA driver and CUDA_VISIBLE_DEVICES"
        ) from e
    if count < 1:
        raise RuntimeError("device 'cuda': CuPy is installed but no CUDA GPU is visible "
                           "(check the NVIDIA driver and CUDA_VISIBLE_DEVICES)")
    from minitl.backend import cuda

    kernels, paths = cuda.make_kernels(KERNELS, kernel_mode())
    return Backend("cuda", cupy, lambda name: (kernels[name], paths[name]), KERNELS)


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
