"""Wrappers of BatchNorm's passes in the native extension (csrc/cpu/batchnorm.cpp), for the
BatchNorm op (minitl/ops/norm.py), which calls them directly for float32 CPU arrays once
`native()` says they are built and agree with numpy; other operands run the op's numpy code.

Activations are (N, C, L) views of (N, C, *spatial); per-channel factors are (C,) float32.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from minitl.backend.cpu import native_module
from minitl.types import Array

KERNELS = ("batchnorm_stats", "batchnorm_affine", "batchnorm_bwd_sums", "batchnorm_bwd_dx")


def _f32(*arrays: Array) -> bool:
    return all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.dtype.isnative
               for a in arrays)


def native(*arrays: Array) -> ModuleType | None:
    """The extension when the passes may run on these operands (float32 numpy arrays, the
    kernels built, self-checked and not switched off by MINITL_KERNELS), else None."""
    from minitl.backend import cpu, kernel_mode

    if not _f32(*arrays) or kernel_mode() == "reference" \
            or "batchnorm_stats" not in cpu.native_kernels():
        return None
    return native_module()


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def stats(mod: ModuleType, x3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, biased var) float64 (C,) of x (N, C, L)."""
    return mod.batchnorm_stats(_c(x3))  # type: ignore[no-any-return]


def affine(mod: ModuleType, x3: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """x s[c] + t[c]."""
    return mod.batchnorm_affine(_c(x3), _c(s), _c(t))  # type: ignore[no-any-return]


def bwd_sums(mod: ModuleType, g3: np.ndarray, x3: np.ndarray, mean: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """(sum g, sum g (x - mean)) float64 (C,)."""
    return mod.batchnorm_bwd_sums(_c(g3), _c(x3), _c(mean))  # type: ignore[no-any-return]


def bwd_dx(mod: ModuleType, g3: np.ndarray, x3: np.ndarray, mean: np.ndarray, a: np.ndarray,
           b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """a[c] g + b[c] (x - mean[c]) + d[c]."""
    out = mod.batchnorm_bwd_dx(_c(g3), _c(x3), _c(mean), _c(a), _c(b), _c(d))
    return out  # type: ignore[no-any-return]


def self_check() -> dict[str, bool]:
    """Each pass against numpy in float64 on a (3, 5, 37) batch: a row length that cuts the
    SIMD width, channels spread apart so a wrong channel stride shows."""
    mod = native_module()
    if mod is None:
        return dict.fromkeys(KERNELS, False)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 5, 37)) + np.arange(5)[:, None] * 3).astype(np.float32)
    g = rng.standard_normal((3, 5, 37)).astype(np.float32)
    v = [rng.standard_normal(5).astype(np.float32) for _ in range(4)]
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    mean, var = stats(mod, x)
    want_mean = x64.mean(axis=(0, 2))
    sums = bwd_sums(mod, g, x, v[0])

    def close(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.allclose(a, b, rtol=1e-5, atol=1e-5))

    return {
        "batchnorm_stats": close(mean, want_mean) and close(var, x64.var(axis=(0, 2))),
        "batchnorm_affine": close(affine(mod, x, v[0], v[1]),
                                  x64 * v[0][:, None] + v[1][:, None]),
        "batchnorm_bwd_sums": close(sums[0], g64.sum(axis=(0, 2)))
        and close(sums[1], (g64 * (x64 - v[0][:, None])).sum(axis=(0, 2))),
        "batchnorm_bwd_dx": close(bwd_dx(mod, g, x, *v),
                                  v[1][:, None] * g64 + v[2][:, None] * (x64 - v[0][:, None])
                                  + v[3][:, None]),
    }
