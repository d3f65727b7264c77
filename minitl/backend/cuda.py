"""CUDA backend: CuPy arrays plus minitl's own kernels (csrc/cuda/*.cu through cupy.RawModule).

`make_backend()` is what `get_backend("cuda")` returns: `xp` is cupy, and each kernel named in
`backend.KERNELS` is the wrapper below (GEMM, LoRA) or in `cuda_fused.py` (LayerNorm,
softmax/cross-entropy, GELU, AdamW, embedding backward, im2col), or the numpy reference run on
CuPy arrays where minitl has no CUDA kernel. `MINITL_KERNELS=reference` uses the references
(CuPy / cuBLAS) throughout.

Safety: every compiled kernel instantiation is checked against its reference on small, ragged
shapes before its first real use. One that fails to compile or disagrees is dropped with a
RuntimeWarning and the reference runs instead, so a broken kernel costs speed, never a wrong
answer. Wrappers also hand anything they were not written for (float64, other ranks) to the
reference.

Matmul precision (as torch.set_float32_matmul_precision): "highest" (default) runs float32
GEMMs on the SIMT SGEMM; "high" uses TF32 tensor cores and "medium" BF16 tensor cores (FP32
accumulate), through `set_matmul_precision` or `MINITL_CUDA_MATMUL`. On compute capability 9.0
the tensor-core path is the wgmma + TMA kernel when it compiles for sm_90a, else mma.sync.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from minitl.backend import cuda_src, reference
from minitl.backend import cuda_tune as tune
from minitl.types import Array

_NULL = np.uint64(0)  # a null pointer argument
_lock = threading.Lock()
_verified: dict[str, bool] = {}  # expression or kernel name -> passed its self-check
_tuner: tune.Autotuner | None = None
_precision = os.environ.get("MINITL_CUDA_MATMUL", "highest").lower()
PRECISIONS = ("highest", "high", "medium")


def cupy() -> Any:
    import cupy as cp

    return cp


# ---- matmul precision ----------------------------------------------------------------------------


def set_matmul_precision(precision: str) -> None:
    """'highest' (FP32 SIMT), 'high' (TF32 tensor cores) or 'medium' (BF16 tensor cores)."""
    global _precision
    if precision not in PRECISIONS:
        raise ValueError(f"matmul precision must be one of {PRECISIONS}, got {precision!r}")
    _precision = precision


def matmul_precision() -> str:
    if _precision not in PRECISIONS:
        raise ValueError(f"MINITL_CUDA_MATMUL must be one of {PRECISIONS}, got {_precision!r}")
    return _precision


# ---- launch helpers ------------------------------------------------------------------------------


def i32(v: int) -> np.int32:
    return np.int32(v)


def f32(v: float) -> np.float32:
    return np.float32(v)


def ptr(a: Array | None) -> Any:
    return _NULL if a is None else a


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def device_info() -> dict[str, Any]:
    """Name, compute capability and SM count of the current GPU."""
    cp = cupy()
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props.get("name", b"")
    return {"name": name.decode() if isinstance(name, bytes) else str(name),
            "cc": int(dev.compute_capability), "sms": int(props.get("multiProcessorCount", 1))}


_info: dict[str, Any] | None = None


def info() -> dict[str, Any]:
    global _info
    if _info is None:
        _info = device_info()
    return _info


def tuner() -> tune.Autotuner:
    global _tuner
    if _tuner is None:
        _tuner = tune.Autotuner(info()["name"])
    return _tuner


def get_kernel(source: str, expr: str) -> Any:
    """The compiled kernel `expr` of csrc/cuda/`source`: one module per template
    instantiation (a shape compiles only the tiles it uses); plain extern "C" kernels share
    the module of their file."""
    return cuda_src.kernel(source, expr, (expr,) if "<" in expr else ())


def launch(fn: Any, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...],
           smem: int = 0) -> None:
    if smem > 48 * 1024 and getattr(fn, "_minitl_smem", 0) < smem:
        fn.max_dynamic_shared_size_bytes = smem  # opt in above the 48 KB default
        fn._minitl_smem = smem
    fn(grid, block, args, shared_mem=smem)


def verified(key: str, check: Callable[[], bool], family: str) -> bool:
    """Run `check` once for `key`; a False or an exception disables nothing else but `key`
    (and warns). Returns whether `key` may be used."""
    ok = _verified.get(key)
    if ok is None:
        try:
            ok = bool(check())
            why = "disagrees with its reference"
        except Exception as err:  # noqa: BLE001 - compile or launch errors of any kind
            ok, why = False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        _verified[key] = ok
        if not ok:
            warnings.warn(f"minitl: CUDA kernel {key} ({family}) {why}; not using it",
                          RuntimeWarning, stacklevel=3)
    return ok


def is_f32(*arrays: Array | None) -> bool:
    cp = cupy()
    return all(a is None or (isinstance(a, cp.ndarray) and a.dtype == np.float32)
               for a in arrays)


def rand(*shape: int, seed: int = 0) -> Array:
    cp = cupy()
    return cp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def close(got: Array, want: Array, tol: float = 1e-4) -> bool:
    cp = cupy()
    return got.shape == want.shape and bool(cp.allclose(got, want, rtol=tol, atol=tol))


# ---- GEMM ----------------------------------------------------------------------------------------


def operand(x: Array, trans: bool) -> tuple[Array, bool]:
    """A C-contiguous array and transpose flag with the same op(x); a transposed view is
    passed as its base with the flag flipped, anything else is copied once."""
    if x.flags.c_contiguous:
        return x, trans
    if x.flags.f_contiguous:
        return x.T, not trans
    return cupy().ascontiguousarray(x), trans


class Up:
    """The epilogue term up_scale * U V^T: U(m, j) = u[m*su_m + j*su_k], V(n, j) likewise."""

    def __init__(self, u: Array, su: tuple[int, int], v: Array, sv: tuple[int, int], rank: int,
                 scale: float) -> None:
        self.u, self.su, self.v, self.sv, self.rank, self.scale = u, su, v, sv, rank, scale

    def args(self) -> tuple[Any, ...]:
        return (self.u, i32(self.su[0]), i32(self.su[1]), self.v, i32(self.sv[0]),
                i32(self.sv[1]), i32(self.rank), f32(self.scale))


NO_UP_ARGS = (_NULL, i32(0), i32(0), _NULL, i32(0), i32(0), i32(0), f32(0.0))


def sgemm_launch(tile: str, a: Array, ta: bool, b: Array, tb: bool, c: Array, m: int, n: int,
                 k: int, *, alpha: float = 1.0, bias: Array | None = None, up: Up | None = None,
                 lora: tuple[Array, Array, int] | None = None, splits: tuple[int, int] | None
                 = None) -> None:
    """One launch of sgemm<tile, ta, tb, lr>; `lora` = (D, XA, rank tile) for the fused
    down-projection (lora.cu). With splits = (z, k_split) > 1, c must be zeroed first."""
    lr = 0 if lora is None else lora[2]
    expr = tune.sgemm_expr(tile, ta, tb, lr)
    fn = get_kernel("lora.cu" if lr else "sgemm.cu", expr)
    bm, bn = tune.SIMT_TILES[tile][:2]
    z, ksplit = splits if splits is not None else (1, k)
    d_args = (_NULL, i32(0), _NULL) if lora is None else (lora[0], i32(lora[0].shape[1]),
                                                          lora[1])
    args = (a, b, c, i32(m), i32(n), i32(k), i32(a.shape[1]), i32(b.shape[1]), i32(c.shape[1]),
            f32(alpha), f32(0.0), ptr(bias), *(NO_UP_ARGS if up is None else up.args()),
            *d_args, i32(ksplit))
    launch(fn, (cdiv(n, bn), cdiv(m, bm), z), (tune.simt_threads(tile), 1, 1), args,
           tune.simt_smem_bytes(tile, lr))


def _check_sgemm(tile: str, ta: bool, tb: bool) -> bool:
    """The instantiation against cuBLAS on ragged shapes, with bias, up-projection, split-K."""
    cp = cupy()
    ok = True
    for m, n, k in ((37, 29, 53), (133, 70, 130), (5, 131, 2500)):
        a = rand(*((k, m) if ta else (m, k)), seed=1)
        b = rand(*((n, k) if tb else (k, n)), seed=2)
        want = reference.gemm(a, b, ta, tb)
        c = cp.zeros((m, n), cp.float32)
        sgemm_launch(tile, a, ta, b, tb, c, m, n, k)
        ok &= close(c, want, 1e-3)
        per = cdiv(cdiv(k, 3), 16) * 16  # three K slices, whole BK tiles
        c = cp.zeros((m, n), cp.float32)
        sgemm_launch(tile, a, ta, b, tb, c, m, n, k, splits=(cdiv(k, per), per))
        ok &= close(c, want, 1e-3)
        bias, u, v = rand(n, seed=3), rand(m, 3, seed=4), rand(3, n, seed=5)
        c = cp.empty((m, n), cp.float32)
        sgemm_launch(tile, a, ta, b, tb, c, m, n, k, alpha=0.5, bias=bias,
                     up=Up(u, (3, 1), v, (1, n), 3, 2.0))
        ok &= close(c, 0.5 * want + bias + 2.0 * (u @ v), 1e-3)
    return ok


def simt_gemm(a: Array, ta: bool, b: Array, tb: bool, m: int, n: int, k: int, *,
              alpha: float = 1.0, bias: Array | None = None, up: Up | None = None) -> Array:
    """C = alpha op(A) op(B) + bias + up on the autotuned SIMT tile (split-K for skinny
    outputs without an epilogue term)."""
    cp = cupy()
    cands = [t for t in tune.simt_candidates(m, n, k)
             if verified(tune.sgemm_expr(t, ta, tb), partial(_check_sgemm, t, ta, tb), "sgemm")]
    if not cands:
        return reference.gemm(a, b, ta, tb) * alpha + (0 if bias is None else bias) + (
            0 if up is None else _up_reference(up, m, n))

    def splits_for(tile: str) -> tuple[int, int]:
        bm, bn, bk = tune.SIMT_TILES[tile][:3]
        if bias is not None or up is not None:
            return 1, k
        return tune.split_k(cdiv(m, bm) * cdiv(n, bn), k, bk, info()["sms"])

    def run(tile: str, out: Array) -> None:
        sp = splits_for(tile)
        if sp[0] > 1:
            out.fill(0)
        sgemm_launch(tile, a, ta, b, tb, out, m, n, k, alpha=alpha, bias=bias, up=up,
                     splits=sp)

    def bench(tile: str) -> float:
        scratch = cp.empty((m, n), cp.float32)
        return time_it(lambda: run(tile, scratch))

    tile = tuner().choose(f"sgemm|{int(ta)}{int(tb)}|{tune.shape_class(m, n, k)}", cands, bench)
    c = cp.empty((m, n), cp.float32)
    run(tile, c)
    return c


def _up_reference(up: Up, m: int, n: int) -> Array:
    cp = cupy()
    u = cp.lib.stride_tricks.as_strided(up.u, (m, up.rank),
                                        (up.su[0] * 4, up.su[1] * 4))
    v = cp.lib.stride_tricks.as_strided(up.v, (n, up.rank), (up.sv[0] * 4, up.sv[1] * 4))
    return up.scale * (u @ v.T)


def time_it(fn: Callable[[], Any], reps: int = 3) -> float:
    """Seconds per call of `fn` on the current stream (after one warm-up call)."""
    cp = cupy()
    try:
        fn()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return cp.cuda.get_elapsed_time(start, end) / 1e3 / reps
    except Exception:  # noqa: BLE001 - a candidate that cannot launch is never chosen
        return float("inf")


# ---- tensor cores ------------------------------------------------------------------------------


def gemm_ex(a: Array, ta: bool, b: Array, tb: bool, m: int, n: int, k: int, *,
            alpha: float = 1.0, bias: Array | None = None, up: Up | None = None) -> Array:
    """The GEMM every wrapper uses: tensor cores when the precision asks for them and the
    path passed its checks, else the SIMT SGEMM."""
    prec = matmul_precision()
    if prec != "highest":
        from minitl.backend import cuda_tc

        c = cuda_tc.tc_gemm(a, ta, b, tb, m, n, k, bf16=(prec == "medium"), alpha=alpha,
                            bias=bias, up=up)
        if c is not None:
            return c
    return simt_gemm(a, ta, b, tb, m, n, k, alpha=alpha, bias=bias, up=up)


def gemm(a: Array, b: Array, trans_a: bool = False, trans_b: bool = False) -> Array:
    """C = op(A) op(B) for 2-D float32 CuPy arrays of any strides; anything else goes to the
    reference (cuBLAS through cupy.matmul)."""
    if (not is_f32(a, b) or a.ndim != 2 or b.ndim != 2
            or (a.shape[0] if trans_a else a.shape[1]) != (b.shape[1] if trans_b else b.shape[0])):
        return reference.gemm(a, b, trans_a, trans_b)
    m = a.shape[1] if trans_a else a.shape[0]
    k = a.shape[0] if trans_a else a.shape[1]
    n = b.shape[0] if trans_b else b.shape[1]
    if m == 0 or n == 0 or k == 0:
        return cupy().zeros((m, n), np.float32)
    a, trans_a = operand(a, trans_a)
    b, trans_b = operand(b, trans_b)
    return gemm_ex(a, trans_a, b, trans_b, m, n, k)


# ---- LoRA linear ---------------------------------------------------------------------------------


def _check_lora_fwd(tile: str, rt: int) -> bool:
    cp = cupy()
    n, din, dout, r = 70, 45, 133, max(1, rt - 3)
    x, w, b = rand(n, din, seed=1), rand(dout, din, seed=2), rand(dout, seed=3)
    a, bm = rand(r, din, seed=4), rand(dout, r, seed=5)
    y, xa = cp.empty((n, dout), cp.float32), cp.empty((n, r), cp.float32)
    sgemm_launch(tile, x, False, w, True, y, n, dout, din, bias=b,
                 up=Up(_NULL, (0, 0), bm, (r, 1), r, 0.5), lora=(a, xa, rt))
    want_y, want_xa = reference.lora_linear_fwd(x, w, b, a, bm, 0.5)
    return close(y, want_y, 1e-3) and close(xa, want_xa, 1e-3)


def lora_linear_fwd(x: Array, w: Array, b: Array | None, a: Array, bm: Array,
                    scale: float) -> tuple[Array, Array]:
    """(y, xa) with y = x W^T + b + scale (x A^T) B^T: the fused kernel (x tiles shared by
    the base product and the down-projection) or the two-pass form, whichever the autotuner
    measured faster for the shape; tensor cores use the two-pass form."""
    if not is_f32(x, w, b, a, bm) or x.ndim != 2:
        return reference.lora_linear_fwd(x, w, b, a, bm, scale)
    cp = cupy()
    c = cp.ascontiguousarray
    x, w, a, bm = c(x), c(w), c(a), c(bm)
    b = None if b is None else c(b)
    n, din = x.shape
    dout, r = w.shape[0], a.shape[0]
    if n == 0 or r == 0:
        return reference.lora_linear_fwd(x, w, b, a, bm, scale)

    def two_pass() -> tuple[Array, Array]:
        xa = gemm_ex(x, False, a, True, n, r, din)  # (N, r), skinny
        y = gemm_ex(x, False, w, True, n, dout, din, bias=b,
                    up=Up(xa, (r, 1), bm, (r, 1), r, scale))
        return y, xa

    rt = tune.rank_tile(r)
    if matmul_precision() != "highest" or rt is None:
        return two_pass()
    fused = [t for t in tune.LORA_TILES
             if verified(tune.sgemm_expr(t, False, True, rt), partial(_check_lora_fwd, t, rt),
                         "lora")]

    def run(choice: str) -> tuple[Array, Array]:
        if choice == "two-pass":
            return two_pass()
        y, xa = cp.empty((n, dout), cp.float32), cp.empty((n, r), cp.float32)
        sgemm_launch(choice, x, False, w, True, y, n, dout, din, bias=b,
                     up=Up(_NULL, (0, 0), bm, (r, 1), r, scale), lora=(a, xa, rt))
        return y, xa

    key = f"lora_fwd|r{rt}|{tune.shape_class(n, dout, din)}"
    choice = tuner().choose(key, [*fused, "two-pass"], lambda t: time_it(lambda: run(t)))
    return run(choice)


def _check_lora_bwd(rt: int) -> bool:
    cp = cupy()
    n, dout, r = 131, 70, max(1, rt - 5)
    g, bm, xa = rand(n, dout, seed=1), rand(dout, r, seed=2), rand(n, r, seed=3)
    gb, db_ = cp.empty((n, r), cp.float32), cp.zeros((dout, r), cp.float32)
    dbias = cp.zeros(dout, cp.float32)
    launch(get_kernel("lora.cu", tune.lora_bwd_expr(rt)), (cdiv(n, 64), 1, 1), (256, 1, 1),
           (g, bm, xa, gb, db_, dbias, i32(n), i32(dout), i32(r), f32(0.5)),
           tune.lora_bwd_smem_bytes(rt))
    return (close(gb, g @ bm, 1e-3) and close(db_, 0.5 * (g.T @ xa), 1e-3)
            and close(dbias, g.sum(axis=0), 1e-3))


def lora_linear_bwd(g: Array, x: Array, w: Array, a: Array, bm: Array, xa: Array, scale: float,
                    needs: tuple[bool, bool, bool, bool, bool]) -> tuple[Array | None, ...]:
    """(dx, dW, db, dA, dB). One pass over g gives gB = g B, dB and db; then
    dx = g W + s gB A is one GEMM with the rank-r term in its epilogue, dA = s gB^T x a skinny
    GEMM, and dW = g^T x runs only when W trains."""
    if not is_f32(g, x, w, a, bm, xa) or x.ndim != 2:
        return reference.lora_linear_bwd(g, x, w, a, bm, xa, scale, needs)
    cp = cupy()
    need_x, need_w, need_b, need_a, need_bm = needs
    n, din = x.shape
    dout, r = w.shape[0], a.shape[0]
    rt = tune.rank_tile(r, tune.LORA_BWD_RANKS)
    if rt is None or n == 0:
        return reference.lora_linear_bwd(g, x, w, a, bm, xa, scale, needs)
    expr = tune.lora_bwd_expr(rt)
    if not verified(expr, partial(_check_lora_bwd, rt), "lora"):
        return reference.lora_linear_bwd(g, x, w, a, bm, xa, scale, needs)
    c = cp.ascontiguousarray
    g, x, w, a, bm, xa = c(g), c(x), c(w), c(a), c(bm), c(xa)
    gb = cp.empty((n, r), cp.float32)
    dbm = cp.zeros((dout, r), cp.float32)
    db = cp.zeros(dout, cp.float32) if need_b else None
    launch(get_kernel("lora.cu", expr), (cdiv(n, 64), 1, 1), (256, 1, 1),
           (g, bm, xa, gb, dbm, ptr(db), i32(n), i32(dout), i32(r), f32(scale)),
           tune.lora_bwd_smem_bytes(rt))
    # dx = g W + s gB A: V(n=i, j) = A[j, i], strides (1, Din)
    dx = gemm_ex(g, False, w, False, n, din, dout, up=Up(gb, (r, 1), a, (1, din), r, scale)) \
        if need_x else None
    dw = gemm_ex(g, True, x, False, dout, din, n) if need_w else None
    da = gemm_ex(gb, True, x, False, r, din, n, alpha=scale) if need_a else None
    return dx, dw, db, da, (dbm if need_bm else None)


# ---- the backend ---------------------------------------------------------------------------------

OWN_KERNELS = ("gemm", "lora_linear_fwd", "lora_linear_bwd")


def make_kernels(names: tuple[str, ...], mode: str) -> tuple[dict[str, Any], dict[str, str]]:
    """name -> callable and name -> path ("cuda" for minitl's kernels, "cupy" for a reference
    running on CuPy) for every kernel in `names`. minitl's own kernels run behind the shape
    checks csrc/bindings.cpp applies to the C++ ones (backend/shape_checks.py)."""
    from minitl.backend import cuda_fused
    from minitl.backend.shape_checks import checked

    kernels: dict[str, Any] = {}
    paths: dict[str, str] = {}
    for name in names:
        own = None
        if mode != "reference":
            own = globals().get(name) if name in OWN_KERNELS else getattr(cuda_fused, name, None)
        kernels[name] = checked(name, own) if own is not None else getattr(reference, name)
        paths[name] = "cuda" if own is not None else "cupy"
    return kernels, paths


def status() -> dict[str, Any]:
    """Which kernels passed their self-check (False: dropped for the reference), the matmul
    precision, the autotuner's choices (for `minitl bench` and bug reports)."""
    from minitl.backend import cuda_tc

    return {"verified": dict(_verified),
            "precision": matmul_precision(),
            "autotune": {} if _tuner is None else dict(_tuner.choices),
            "wgmma": cuda_tc.wgmma_status()}
