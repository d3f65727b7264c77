"""Tensor-core GEMM paths of the CUDA backend: mma.sync TF32/BF16 (csrc/cuda/gemm_mma.cu,
sm_80+) and wgmma + TMA (csrc/cuda/gemm_wgmma.cu, sm_90a only).

Both kernels take K-contiguous operands, A (M, K) and B (N, K), with 16-byte aligned rows:
`k_major` makes a transposed or ragged operand so (one copy, padded with zeros), and BF16
operands are converted once by a small kernel (CuPy has no bfloat16 dtype; they travel as
uint16). `tc_gemm` returns None when no tensor-core kernel passed its self-check, and the
caller then runs the SIMT SGEMM.

The Hopper path needs CUtensorMap descriptors, which only the driver API builds
(cuTensorMapEncodeTiled, called through ctypes on libcuda); they are copied to device memory
next to each launch. `MINITL_CUDA_WGMMA=0` turns the Hopper path off.
"""

from __future__ import annotations

import ctypes
import os
from functools import partial
from typing import Any

import numpy as np

from minitl.backend import cuda as cu
from minitl.backend import cuda_src, reference
from minitl.backend import cuda_tune as tune
from minitl.types import Array

_wgmma_state: dict[str, Any] = {}


def to_bf16(x: Array) -> Array:
    """float32 -> bfloat16 bits (uint16), round to nearest even."""
    cp = cu.cupy()
    x = cp.ascontiguousarray(x)
    out = cp.empty(x.shape, cp.uint16)
    n = x.size
    if n:
        cu.launch(cu.get_kernel("gemm_mma.cu", "f32_to_bf16_kernel"),
                  (min(cu.cdiv(n, 256), 65535), 1, 1), (256, 1, 1), (x, out, np.int64(n)))
    return out


def bf16_to_f32(h: Array) -> Array:
    cp = cu.cupy()
    return (h.astype(cp.uint32) << 16).view(cp.float32)


def k_major(x: Array, rows: int, k: int, esz: int) -> tuple[Array, int]:
    """(array, leading dim) holding the logical (rows, k) operand `x` K-contiguous, rows
    16-byte aligned; x itself when it already is."""
    cp = cu.cupy()
    align = 16 // esz
    if x.flags.c_contiguous and k % align == 0 and x.data.ptr % 16 == 0:
        return x, k
    kp = cu.cdiv(k, align) * align
    out = cp.zeros((rows, kp), cp.float32)
    out[:, :k] = x
    return out, kp


# ---- mma.sync ------------------------------------------------------------------------------------


def mma_launch(tile: str, a: Array, lda: int, b: Array, ldb: int, c: Array, m: int, n: int,
               k: int, bf16: bool, alpha: float = 1.0, bias: Array | None = None,
               up: cu.Up | None = None) -> None:
    bm, bn = tune.MMA_TILES[tile][:2]
    args = (a, b, c, cu.i32(m), cu.i32(n), cu.i32(k), cu.i32(lda), cu.i32(ldb),
            cu.i32(c.shape[1]), cu.f32(alpha), cu.f32(0.0), cu.ptr(bias),
            *(cu.NO_UP_ARGS if up is None else up.args()))
    cu.launch(cu.get_kernel("gemm_mma.cu", tune.mma_expr(tile, bf16)),
              (cu.cdiv(n, bn), cu.cdiv(m, bm), 1), (tune.mma_threads(tile), 1, 1), args,
              tune.mma_smem_bytes(tile))


def _operands(a: Array, ta: bool, b: Array, tb: bool, m: int, n: int, k: int, bf16: bool
              ) -> tuple[Array, int, Array, int]:
    esz = 2 if bf16 else 4
    A, lda = k_major(a.T if ta else a, m, k, esz)  # op(a) is (m, k)
    B, ldb = k_major(b if tb else b.T, n, k, esz)  # op(b)^T is (n, k)
    if bf16:
        A, B = to_bf16(A), to_bf16(B)
    return A, lda, B, ldb


def _reference_rounded(a: Array, ta: bool, b: Array, tb: bool, bf16: bool) -> Array:
    if bf16:
        a, b = bf16_to_f32(to_bf16(a)), bf16_to_f32(to_bf16(b))
    return reference.gemm(a, b, ta, tb)


def _check_mma(tile: str, bf16: bool) -> bool:
    cp = cu.cupy()
    ok = True
    for m, n, k, ta, tb in ((37, 29, 53, False, True), (133, 70, 200, True, False),
                            (130, 257, 64, False, False)):
        a = cu.rand(*((k, m) if ta else (m, k)), seed=1)
        b = cu.rand(*((n, k) if tb else (k, n)), seed=2)
        A, lda, B, ldb = _operands(a, ta, b, tb, m, n, k, bf16)
        c = cp.empty((m, n), cp.float32)
        bias, u, v = cu.rand(n, seed=3), cu.rand(m, 2, seed=4), cu.rand(n, 2, seed=5)
        mma_launch(tile, A, lda, B, ldb, c, m, n, k, bf16, alpha=0.5, bias=bias,
                   up=cu.Up(u, (2, 1), v, (2, 1), 2, 3.0))
        want = 0.5 * _reference_rounded(a, ta, b, tb, bf16) + bias + 3.0 * (u @ v.T)
        # tf32 keeps 10 mantissa bits of each input (the reference rounds only for bf16)
        ok &= cu.close(c, want, 2e-3 if bf16 else 3e-2)
    return ok


# ---- wgmma + TMA (Hopper) -----------------------------------------------------------------------

_CU_TENSOR_MAP_FLOAT32, _CU_TENSOR_MAP_BFLOAT16 = 7, 9
_SWIZZLE_128B, _L2_PROMOTION_128B = 3, 2


def tensor_map(x: Array, rows: int, k: int, ld: int, bf16: bool) -> bytes:
    """The 128-byte CUtensorMap of a (rows, k) K-contiguous operand with leading dim `ld`,
    read in 128-row x 128-byte boxes with the 128-byte swizzle gemm_wgmma.cu expects."""
    lib = ctypes.CDLL("libcuda.so.1")
    esz = 2 if bf16 else 4
    raw = ctypes.create_string_buffer(128 + 64)
    addr = (ctypes.addressof(raw) + 63) & ~63  # CUtensorMap is 64-byte aligned
    u64x2, u64x1, u32x2 = ctypes.c_uint64 * 2, ctypes.c_uint64 * 1, ctypes.c_uint32 * 2
    res = lib.cuTensorMapEncodeTiled(
        ctypes.c_void_p(addr), ctypes.c_int(_CU_TENSOR_MAP_BFLOAT16 if bf16
                                            else _CU_TENSOR_MAP_FLOAT32),
        ctypes.c_uint32(2), ctypes.c_void_p(x.data.ptr), u64x2(k, rows), u64x1(ld * esz),
        u32x2(128 // esz, 128), u32x2(1, 1), ctypes.c_int(0), ctypes.c_int(_SWIZZLE_128B),
        ctypes.c_int(_L2_PROMOTION_128B), ctypes.c_int(0))
    if res != 0:
        raise RuntimeError(f"cuTensorMapEncodeTiled failed with CUresult {res}")
    return ctypes.string_at(addr, 128)


def _wgmma_kernel(bf16: bool) -> Any:
    exprs = [tune.wgmma_expr(True), tune.wgmma_expr(False)]
    mod, lowered = cuda_src.load_module_for_arch("gemm_wgmma.cu", "sm_90a", exprs)
    return mod.get_function(lowered[tune.wgmma_expr(bf16)])


def wgmma_launch(a: Array, lda: int, b: Array, ldb: int, c: Array, m: int, n: int, k: int,
                 bf16: bool, alpha: float = 1.0, bias: Array | None = None,
                 up: cu.Up | None = None) -> None:
    cp = cu.cupy()
    maps = cp.asarray(np.frombuffer(tensor_map(a, m, k, lda, bf16)
                                    + tensor_map(b, n, k, ldb, bf16), dtype=np.uint8))
    base = maps.data.ptr
    args = (np.uint64(base), np.uint64(base + 128), c, cu.i32(m), cu.i32(n), cu.i32(k),
            cu.i32(c.shape[1]), cu.f32(alpha), cu.f32(0.0), cu.ptr(bias),
            *(cu.NO_UP_ARGS if up is None else up.args()))
    cu.launch(_wgmma_kernel(bf16), (cu.cdiv(n, 128), cu.cdiv(m, 128), 1), (256, 1, 1), args,
              tune.wgmma_smem_bytes())
    _wgmma_state["keepalive"] = maps  # freed (stream-ordered) at the next launch


def _check_wgmma(bf16: bool) -> bool:
    cp = cu.cupy()
    ok = True
    for m, n, k, ta, tb in ((37, 29, 53, False, True), (200, 260, 300, True, False)):
        a = cu.rand(*((k, m) if ta else (m, k)), seed=1)
        b = cu.rand(*((n, k) if tb else (k, n)), seed=2)
        A, lda, B, ldb = _operands(a, ta, b, tb, m, n, k, bf16)
        c = cp.empty((m, n), cp.float32)
        bias = cu.rand(n, seed=3)
        wgmma_launch(A, lda, B, ldb, c, m, n, k, bf16, alpha=0.5, bias=bias)
        want = 0.5 * _reference_rounded(a, ta, b, tb, bf16) + bias
        ok &= cu.close(c, want, 2e-3 if bf16 else 3e-2)
    cp.cuda.get_current_stream().synchronize()
    return ok


def wgmma_usable(bf16: bool) -> bool:
    if os.environ.get("MINITL_CUDA_WGMMA", "1") == "0" or cu.info()["cc"] != 90:
        return False
    return cu.verified(tune.wgmma_expr(bf16), lambda: _check_wgmma(bf16), "wgmma")


def wgmma_status() -> str:
    if not _wgmma_state and not any(k.startswith("gemm_wgmma") for k in cu._verified):
        return "not tried"
    return ", ".join(f"{k}: {'ok' if v else 'failed'}" for k, v in cu._verified.items()
                     if k.startswith("gemm_wgmma")) or "not tried"


# ---- dispatch ------------------------------------------------------------------------------------


def tc_gemm(a: Array, ta: bool, b: Array, tb: bool, m: int, n: int, k: int, *, bf16: bool,
            alpha: float = 1.0, bias: Array | None = None, up: cu.Up | None = None
            ) -> Array | None:
    """C = alpha op(A) op(B) + bias + up on tensor cores (wgmma on sm_90a, else the autotuned
    mma.sync tile), or None when no tensor-core kernel is usable here."""
    cp = cu.cupy()
    if cu.info()["cc"] < 80:
        return None
    use_wgmma = wgmma_usable(bf16)
    cands = [] if use_wgmma else [
        t for t in tune.mma_candidates(m, n, k)
        if cu.verified(tune.mma_expr(t, bf16), partial(_check_mma, t, bf16), "mma")]
    if not use_wgmma and not cands:
        return None
    A, lda, B, ldb = _operands(a, ta, b, tb, m, n, k, bf16)
    c = cp.empty((m, n), cp.float32)
    if use_wgmma:
        wgmma_launch(A, lda, B, ldb, c, m, n, k, bf16, alpha, bias, up)
        return c

    def bench(tile: str) -> float:
        return cu.time_it(lambda: mma_launch(tile, A, lda, B, ldb, c, m, n, k, bf16, alpha,
                                             bias, up))

    key = f"mma|{'bf16' if bf16 else 'tf32'}|{tune.shape_class(m, n, k)}"
    tile = cu.tuner().choose(key, cands, bench)
    mma_launch(tile, A, lda, B, ldb, c, m, n, k, bf16, alpha, bias, up)
    return c
