"""CPU kernels from the native extension `minitl._C` (C++, pybind11, OpenMP).

The extension is imported on first use, not at `import minitl`. When it is missing (a source
tree that was never built, a broken toolchain) `native_module()` warns once with the import
error and returns None, and `backend/__init__.py` keeps the numpy references: a missing build
costs speed, never correctness.

The wrappers here are where Python's view of an array (dtype, strides, transposes) meets the
kernels' view (contiguous float32 buffers and sizes, see csrc/bindings.cpp): anything the
kernels do not take (float64, other ranks, other array types) goes to the numpy reference, and
strided views are made contiguous first. `native_kernels()` names the kernels that are built and
agree with their references on a small self-check; `backend/__init__.py` selects only those.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from types import ModuleType
from typing import Any

import numpy as np

from minitl import env
from minitl.backend import reference
from minitl.backend.guards import checked_indices

_UNSET: Any = object()
_module: Any = _UNSET
_lock = threading.Lock()


CPU_ISAS = ("auto", "avx512", "avx2", "generic")


def cpu_isa_setting() -> str:
    """MINITL_CPU_ISA (default auto); ValueError naming the choices for any other value. The
    extension reads the variable itself and would ignore a misspelling, so it is checked here
    before the extension loads."""
    isa = os.environ.get("MINITL_CPU_ISA", "auto")
    if isa not in CPU_ISAS:
        raise ValueError(f"MINITL_CPU_ISA must be one of {', '.join(CPU_ISAS)} (the widest SIMD "
                         f"instruction set the native kernels may use), got {isa!r}")
    return isa


def share_blas_pool_setting() -> bool:
    """MINITL_SHARE_BLAS_POOL (default 1: numpy's OpenBLAS runs its parallel work on minitl's
    OpenMP team, see minitl/threads.py); ValueError for anything but 0 or 1."""
    return env.switch("MINITL_SHARE_BLAS_POOL", "numpy's OpenBLAS keeps its own threads",
                      "it runs on minitl's OpenMP team")


def _import_native() -> ModuleType:
    cpu_isa_setting()
    share_blas_pool_setting()
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
                if _module is not None and share_blas_pool_setting():
                    from minitl.threads import share_blas_pool

                    share_blas_pool(True)  # False, changing nothing, where it cannot
    return _module


def native_available() -> bool:
    """True when `minitl._C` imports."""
    return native_module() is not None


def cpu_features() -> dict[str, Any]:
    """What the CPU offers and which paths run: {"avx2", "fma", "avx512f", "openmp_threads",
    "gemm_path", "quant_path", "isa"} ("isa": the widest SIMD set the kernels use, after the
    MINITL_CPU_ISA cap), or {"gemm_path": "reference"} without the extension."""
    mod = native_module()
    if mod is None:
        return {"gemm_path": "reference"}
    return dict(mod.cpu_features())


def _all_float32(*arrays: Any) -> bool:
    return all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in arrays)


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
    if mod is None or not _all_float32(a, b) or a.ndim != 2 or b.ndim != 2:
        return reference.gemm(a, b, trans_a, trans_b)
    a, trans_a = _as_kernel_operand(a, trans_a)
    b, trans_b = _as_kernel_operand(b, trans_b)
    return mod.gemm(a, b, trans_a, trans_b)


def gemm_batched(a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False
                 ) -> np.ndarray:
    """C[i] = op(A[i]) @ op(B[i]) on the C++ kernel (one product per thread) for 3-D float32
    arrays; other dtypes and ranks go to the numpy reference."""
    mod = native_module()
    if mod is None or not _all_float32(a, b) or a.ndim != 3 or b.ndim != 3:
        return reference.gemm_batched(a, b, trans_a, trans_b)
    return mod.gemm_batched(np.ascontiguousarray(a), np.ascontiguousarray(b), trans_a, trans_b)


# ---- LoRA linear (csrc/cpu/lora.cpp) ------------------------------------------------------


def lora_linear_fwd(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, a: np.ndarray,
                    bm: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(y, xa) with y = x W^T + b + scale (x A^T) B^T on the fused C++ kernel for float32 x
    (N, Din), w (Dout, Din), b (Dout,) or None, a (r, Din), bm (Dout, r); anything else goes to
    the numpy reference."""
    mod = native_module()
    operands = (x, w, a, bm) if b is None else (x, w, b, a, bm)
    if mod is None or not _all_float32(*operands) or x.ndim != 2:
        return reference.lora_linear_fwd(x, w, b, a, bm, scale)
    c = np.ascontiguousarray
    return mod.lora_linear_fwd(c(x), c(w), None if b is None else c(b), c(a), c(bm),
                               float(scale))


def lora_linear_bwd(g: np.ndarray, x: np.ndarray, w: np.ndarray, a: np.ndarray,
                    bm: np.ndarray, xa: np.ndarray, scale: float,
                    needs: tuple[bool, bool, bool, bool, bool]) -> tuple[np.ndarray | None, ...]:
    """(dx, dW, db, dA, dB) of lora_linear_fwd on the C++ kernel; a gradient `needs` does not
    ask for is None and is never computed. Non-float32 operands go to the numpy reference."""
    mod = native_module()
    if mod is None or not _all_float32(g, x, w, a, bm, xa) or x.ndim != 2:
        return reference.lora_linear_bwd(g, x, w, a, bm, xa, scale, needs)
    c = np.ascontiguousarray
    return tuple(mod.lora_linear_bwd(c(g), c(x), c(w), c(a), c(bm), c(xa), float(scale),
                                     tuple(bool(v) for v in needs)))


# ---- quantized linear (csrc/cpu/qgemm.cpp) -------------------------------------------------

_QUANT_TYPES = (2, 3, 8)  # Q4_0, Q4_1, Q8_0; F16/F32 rows and the rest run the reference


def quant_linear_fwd(x: np.ndarray, q: np.ndarray, qtype: int, bias: np.ndarray | None
                     ) -> np.ndarray:
    """y = x W^T + bias on the C++ dequantize-GEMM for float32 x (N, k) and Q4_0/Q4_1/Q8_0
    blocks q of W (n, k); other types and dtypes go to the numpy reference."""
    mod = native_module()
    operands = (x,) if bias is None else (x, bias)
    if mod is None or int(qtype) not in _QUANT_TYPES or not _all_float32(*operands) \
            or x.ndim != 2 or not isinstance(q, np.ndarray) or q.dtype != np.uint8:
        return reference.quant_linear_fwd(x, q, qtype, bias)
    c = np.ascontiguousarray
    return mod.quant_linear_fwd(c(x), c(q), int(qtype), None if bias is None else c(bias))


def quant_linear_bwd(g: np.ndarray, q: np.ndarray, qtype: int) -> np.ndarray:
    """dx = g W on the C++ kernel (see quant_linear_fwd)."""
    mod = native_module()
    if mod is None or int(qtype) not in _QUANT_TYPES or not _all_float32(g) or g.ndim != 2 \
            or not isinstance(q, np.ndarray) or q.dtype != np.uint8:
        return reference.quant_linear_bwd(g, q, qtype)
    return mod.quant_linear_bwd(np.ascontiguousarray(g), np.ascontiguousarray(q), int(qtype))


def _native_quant(q: Any, qtype: int) -> bool:
    return int(qtype) in _QUANT_TYPES and isinstance(q, np.ndarray) and q.dtype == np.uint8


def quant_lora_linear_fwd(x: np.ndarray, q: np.ndarray, qtype: int, b: np.ndarray | None,
                          a: np.ndarray, bm: np.ndarray, scale: float
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(y, xa) of QLoRA's layer on the C++ kernel (csrc/cpu/lora.cpp, qgemm.cpp)."""
    mod = native_module()
    operands = (x, a, bm) if b is None else (x, b, a, bm)
    if mod is None or not _native_quant(q, qtype) or not _all_float32(*operands) or x.ndim != 2:
        return reference.quant_lora_linear_fwd(x, q, qtype, b, a, bm, scale)
    c = np.ascontiguousarray
    return mod.quant_lora_linear_fwd(c(x), c(q), int(qtype), None if b is None else c(b), c(a),
                                     c(bm), float(scale))


def quant_lora_linear_bwd(g: np.ndarray, x: np.ndarray, q: np.ndarray, qtype: int,
                          a: np.ndarray, bm: np.ndarray, xa: np.ndarray, scale: float,
                          needs: tuple[bool, bool, bool, bool]) -> tuple[np.ndarray | None, ...]:
    """(dx, db, dA, dB) of quant_lora_linear_fwd on the C++ kernel; unneeded ones are None."""
    mod = native_module()
    if mod is None or not _native_quant(q, qtype) or not _all_float32(g, x, a, bm, xa) \
            or x.ndim != 2:
        return reference.quant_lora_linear_bwd(g, x, q, qtype, a, bm, xa, scale, needs)
    c = np.ascontiguousarray
    return tuple(mod.quant_lora_linear_bwd(c(g), c(x), c(q), int(qtype), c(a), c(bm), c(xa),
                                           float(scale), tuple(bool(v) for v in needs)))


def gelu_fwd(x: np.ndarray, approximate: str) -> np.ndarray:
    """GELU on the vectorised C++ kernel (csrc/cpu/gelu.cpp) for float32; else the reference."""
    mod = native_module()
    if mod is None or not _all_float32(x):
        return reference.gelu_fwd(x, approximate)
    return mod.gelu_fwd(np.ascontiguousarray(x), approximate != "tanh")


def gelu_bwd(g: np.ndarray, x: np.ndarray, approximate: str) -> np.ndarray:
    """dx of gelu_fwd on the C++ kernel for float32 g and x of one shape; else the reference."""
    mod = native_module()
    if mod is None or not _all_float32(g, x) or g.shape != x.shape:
        return reference.gelu_bwd(g, x, approximate)
    return mod.gelu_bwd(np.ascontiguousarray(g), np.ascontiguousarray(x), approximate != "tanh")


def dequantize_rows(q: np.ndarray, qtype: int, ids: np.ndarray) -> np.ndarray:
    """W[ids] from the blocks q; the ids are checked on a private int64 copy first."""
    mod = native_module()
    if mod is None or int(qtype) not in _QUANT_TYPES or not isinstance(q, np.ndarray) \
            or q.dtype != np.uint8 or q.ndim != 2:
        return reference.dequantize_rows(q, qtype, ids)
    own = checked_indices("dequantize_rows", ids, q.shape[0], "rows")
    return mod.dequantize_rows(np.ascontiguousarray(q), int(qtype), own)


# ---- self-check --------------------------------------------------------------------------

_OWN_KERNELS = ("gemm", "gemm_batched", "lora_linear_fwd", "lora_linear_bwd",
                "quant_linear_fwd", "quant_linear_bwd", "quant_lora_linear_fwd",
                "quant_lora_linear_bwd", "dequantize_rows", "gelu_fwd", "gelu_bwd")
# Modules beside this one that wrap a kernel file of their own; each has KERNELS (the names it
# wraps) and self_check() -> {name: agrees with the reference}.
_KERNEL_HOMES = ("cpu_conv", "cpu_rowwise", "cpu_embedding", "cpu_attention",
                 "cpu_batchnorm")


def _home(module: str) -> ModuleType:
    return importlib.import_module(f"minitl.backend.{module}")


def _homes() -> dict[str, str]:
    """kernel name -> the module of minitl.backend that wraps it."""
    homes = dict.fromkeys(_OWN_KERNELS, "cpu")
    for module in _KERNEL_HOMES:
        homes.update(dict.fromkeys(_home(module).KERNELS, module))
    return homes


def native_kernel(name: str) -> Any:
    """The wrapper of native kernel `name` (it sends operands the kernel does not take to the
    reference itself)."""
    return getattr(_home(_homes()[name]), name)


NATIVE_DTYPES = (np.dtype(np.float32),)  # what csrc/cpu is compiled for
_verified: tuple[str, ...] | None = None


def float32_draws(rng: np.random.Generator) -> Any:
    """rand(*shape): standard-normal float32 arrays from `rng`, for the self-checks."""
    def rand(*shape: int) -> np.ndarray:
        return np.asarray(rng.standard_normal(shape), dtype=np.float32)

    return rand


def all_close(got: Any, want: Any, rtol: float = 1e-4, atol: float = 1e-4) -> bool:
    """Each array of `got` within tolerance of its partner in `want` (a self-check's test)."""
    return all(np.allclose(g, w, rtol=rtol, atol=atol) for g, w in zip(got, want))


def _self_check() -> dict[str, bool]:
    """Each native kernel against its reference on shapes that cut micro-tiles (a few ms)."""
    rng = np.random.default_rng(0)

    rand, close = float32_draws(rng), all_close

    a, b = rand(37, 13), rand(19, 37)
    ok = {"gemm": close([gemm(a, b, True, True), gemm(b, a)],
                        [reference.gemm(a, b, True, True), reference.gemm(b, a)])}
    ab, bb = rand(3, 13, 37), rand(3, 19, 37)
    ok["gemm_batched"] = close([gemm_batched(ab, bb, False, True)],
                               [reference.gemm_batched(ab, bb, False, True)])
    x, w, bias, g = rand(9, 21), rand(18, 21), rand(18), rand(9, 18)
    la, lb = rand(3, 21), rand(18, 3)  # LoRA's A (r, in) and B (out, r), r = 3
    y, xa = lora_linear_fwd(x, w, bias, la, lb, 0.5)
    ok["lora_linear_fwd"] = close((y, xa), reference.lora_linear_fwd(x, w, bias, la, lb, 0.5))
    needs = (True, True, True, True, True)
    ok["lora_linear_bwd"] = close(lora_linear_bwd(g, x, w, la, lb, xa, 0.5, needs),
                                  reference.lora_linear_bwd(g, x, w, la, lb, xa, 0.5, needs))
    # Q4_1 blocks of a (13, 64) weight, built by hand: scale, minimum, random nibbles; m = 2
    # takes the dot-product kernel and m = 9 the blocked GEMM
    blocks = np.concatenate([np.full((26, 2), [0, 48], np.uint8), np.full((26, 2), [0, 188],
                             np.uint8), rng.integers(0, 256, (26, 16), dtype=np.uint8)], axis=1)
    q = blocks.reshape(13, 40)
    qb = rand(13)
    ok["quant_linear_fwd"] = all(
        close([quant_linear_fwd(xq, q, 3, qb)], [reference.quant_linear_fwd(xq, q, 3, qb)])
        for xq in (rand(2, 64), rand(9, 64)))
    g2 = rand(9, 13)
    ok["quant_linear_bwd"] = close([quant_linear_bwd(g2, q, 3)],
                                   [reference.quant_linear_bwd(g2, q, 3)])
    la2, lb2 = rand(3, 64), rand(13, 3)
    ok["quant_lora_linear_fwd"] = all(
        close(quant_lora_linear_fwd(xq, q, 3, qb, la2, lb2, 0.5),
              reference.quant_lora_linear_fwd(xq, q, 3, qb, la2, lb2, 0.5))
        for xq in (rand(2, 64), rand(9, 64)))
    xq = rand(9, 64)
    xa2 = xq @ la2.T
    ok["quant_lora_linear_bwd"] = close(
        quant_lora_linear_bwd(g2, xq, q, 3, la2, lb2, xa2, 0.5, (True,) * 4),
        reference.quant_lora_linear_bwd(g2, xq, q, 3, la2, lb2, xa2, 0.5, (True,) * 4))
    ids = np.array([12, 0, 5])
    ok["dequantize_rows"] = bool(np.array_equal(dequantize_rows(q, 3, ids),
                                                reference.dequantize_rows(q, 3, ids)))
    xg = rand(7, 129) * 4  # tails of both signs, a size that cuts the SIMD width
    for form in ("none", "tanh"):
        ok[f"gelu_fwd_{form}"] = close([gelu_fwd(xg, form)], [reference.gelu_fwd(xg, form)])
        ok[f"gelu_bwd_{form}"] = close([gelu_bwd(g := rand(7, 129), xg, form)],
                                       [reference.gelu_bwd(g, xg, form)])
    ok["gelu_fwd"] = ok.pop("gelu_fwd_none") and ok.pop("gelu_fwd_tanh")
    ok["gelu_bwd"] = ok.pop("gelu_bwd_none") and ok.pop("gelu_bwd_tanh")
    for module in _KERNEL_HOMES:  # they import this module: not at the top
        home = _home(module)
        try:
            ok.update(home.self_check())
        except AttributeError:
            # an extension built from older sources lacks the kernel: leave it to the reference
            # (native_kernels() warns, naming it) rather than fail every op that would use it
            ok.update(dict.fromkeys(home.KERNELS, False))
    return ok


def native_kernels() -> tuple[str, ...]:
    """Names of the kernels whose native version is built and matches its reference; the
    self-check runs once per process. A kernel that disagrees is left out with a warning."""
    global _verified
    if _verified is None:
        if native_module() is None:
            _verified = ()
        else:
            ok = _self_check()
            names = tuple(_homes())
            bad = [name for name in names if not ok.get(name, False)]
            if bad:
                warnings.warn(f"minitl: native CPU kernels {bad} disagree with their numpy "
                              f"references on this machine ({cpu_features().get('gemm_path')}); "
                              "using the references for them.", RuntimeWarning, stacklevel=2)
            _verified = tuple(name for name in names if ok.get(name, False))
    return _verified
