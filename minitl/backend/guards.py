"""Argument guards in front of the kernels.

Native kernels (numba, C++) are compiled for a few dtypes and index raw memory without bounds
checks, so what reaches them must be checked first, and cheaply:

- `guarded()` wraps a native kernel for `backend/__init__.py`: operands of a dtype the kernel
  was not compiled for (float16, byte-swapped, mixed) run the numpy reference instead, and a
  float-only kernel given integer, bool or complex data raises TypeError (the reference
  cannot do that either: it would round a LayerNorm to integers without a word).
- `check_indices()` is called by every kernel wrapper that indexes memory with data (the
  embedding gradient's ids, cross-entropy's targets) before the kernel runs: one min/max pass
  over the ids, IndexError naming the first bad one. Ids are checked again in backward because
  the array saved by forward can be changed in place in between (a `from_numpy` buffer, an
  in-place op on the target tensor); without the check that crashes the process or writes
  another row's gradient.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from minitl.types import Array

# Kernel name -> the parameters that carry floating-point data. A native kernel runs only when
# all of them that are present share one dtype the kernel was built for.
OPERANDS: dict[str, tuple[str, ...]] = {
    "gemm": ("a", "b"),
    "gemm_batched": ("a", "b"),
    "lora_linear_fwd": ("x", "w", "b", "a", "bm"),
    "lora_linear_bwd": ("g", "x", "w", "a", "bm", "xa"),
    "im2col": ("x",),
    "col2im": ("cols",),
    "im2col_cm": ("x",),
    "col2im_cm": ("cols",),
    "layernorm_fwd": ("x", "weight", "bias"),
    "layernorm_bwd": ("g", "x", "mean", "rstd", "weight"),
    "softmax_xent_fwd": ("x", "weight"),
    "softmax_xent_bwd": ("x", "lse", "weight"),
    "softmax_fwd": ("x",),
    "softmax_bwd": ("g", "y"),
    "gelu_fwd": ("x",),
    "gelu_bwd": ("g", "x"),
    "embedding_bwd": ("g",),
    "adamw_step": ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    # the quantized weight q is uint8 blocks by design; only the float operands count
    "quant_linear_fwd": ("x", "bias"),
    "quant_linear_bwd": ("g",),
    "quant_lora_linear_fwd": ("x", "b", "a", "bm"),
    "quant_lora_linear_bwd": ("g", "x", "a", "bm", "xa"),
    "dequantize_rows": (),
    "erf": ("x",),
}
# The same for the CPU training-loop kernels (backend.CPU_LOOP_KERNELS).
LOOP_OPERANDS: dict[str, tuple[str, ...]] = {"sgns_update": ("w_in", "w_out")}

# Kernels whose arithmetic only means something on floating-point data (exp, sqrt, division);
# an embedding's gradient is a gradient (scale_grad_by_freq divides it). gemm, LoRA (a linear
# layer, exact on integers as F.linear is) and im2col/col2im run on integers in the reference.
FLOAT_ONLY = frozenset({"layernorm_fwd", "layernorm_bwd", "softmax_xent_fwd", "softmax_xent_bwd",
                        "softmax_fwd", "softmax_bwd", "gelu_fwd", "gelu_bwd", "embedding_bwd",
                        "adamw_step", "quant_linear_fwd", "quant_linear_bwd",
                        "quant_lora_linear_fwd", "quant_lora_linear_bwd", "sgns_update"})

NUMBA_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def require_float(op: str, *arrays: Array | None) -> None:
    """TypeError unless every array given (None skipped) holds floating-point data."""
    for a in arrays:
        if a is not None and getattr(a, "dtype", np.dtype(np.float64)).kind != "f":
            raise TypeError(f"{op}: expected floating point data, got dtype {a.dtype} (integer, "
                            "bool and complex inputs are not supported)")


def _operand_dtype(name: str, arrays: list[Any]) -> np.dtype | None:
    """The one dtype all present operands share, or None when they differ or one is not an
    array. Raises TypeError for non-float data given to a float-only kernel."""
    if name in FLOAT_ONLY:
        require_float(name, *arrays)
    found: np.dtype | None = None
    for a in arrays:
        if a is None:
            continue
        dt = getattr(a, "dtype", None)
        if dt is None or (found is not None and dt != found):
            return None
        found = dt
    return found


def guarded(name: str, native: Callable[..., Any], fallback: Callable[..., Any],
            dtypes: tuple[np.dtype, ...]) -> Callable[..., Any]:
    """`native` for operands of one of `dtypes` in native byte order, else `fallback` (the
    reference); see the module docstring. The check costs a few attribute reads per call."""
    params = list(inspect.signature(fallback).parameters)
    operands = OPERANDS[name] if name in OPERANDS else LOOP_OPERANDS[name]
    where = [(p, params.index(p)) for p in operands]
    if not where:  # no float operands (a lookup into uint8 blocks): the kernel checks its own
        return native

    @functools.wraps(native)
    def run(*args: Any, **kwargs: Any) -> Any:
        arrays = [kwargs[p] if p in kwargs else args[i] if i < len(args) else None
                  for p, i in where]
        dt = _operand_dtype(name, arrays)
        if dt is not None and dt in dtypes and dt.isnative:
            return native(*args, **kwargs)
        return fallback(*args, **kwargs)

    return run


def check_indices(op: str, ids: Array, n: int, what: str = "rows",
                  ignore_index: int | None = None, backward: bool = False) -> None:
    """Raise unless every id lies in [0, n) or equals ignore_index: TypeError for non-integer
    ids, IndexError naming the first bad id and its position (`backward` adds the likely
    cause). One min/max pass in the common case; works on numpy and CuPy arrays."""
    kind = getattr(getattr(ids, "dtype", None), "kind", None)
    if kind not in ("i", "u"):
        raise TypeError(f"{op}: indices must be an integer array, got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.size == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if 0 <= lo and hi < n:
        return
    bad = (ids < 0) | (ids >= n)
    if ignore_index is not None and kind == "i":
        bad &= ids != ignore_index
    flat = bad.reshape(-1)
    if not bool(flat.any()):
        return
    pos = int(flat.argmax())
    value = int(ids.reshape(-1)[pos])
    allowed = f"0..{n - 1}" if n > 0 else "none: there are 0"
    extra = "" if ignore_index is None else f" or ignore_index={ignore_index}"
    why = ("; the indices saved by the forward pass were changed in place before backward"
           if backward else "")
    raise IndexError(f"{op}: index {value} at position {pos} is out of range for {n} {what} "
                     f"(valid: {allowed}{extra}){why}")


def checked_indices(op: str, ids: Array, n: int, what: str = "rows",
                    ignore_index: int | None = None, backward: bool = False) -> Array:
    """`check_indices` on a private flat C-contiguous int64 copy of `ids`, which is returned
    for the kernel: it then reads exactly the values that were checked, even if another
    thread changes the caller's array in the meantime. One copy and one min/max pass."""
    kind = getattr(getattr(ids, "dtype", None), "kind", None)
    if kind not in ("i", "u"):
        check_indices(op, ids, n, what)  # raises the TypeError
    from minitl.backend import array_module

    xp = array_module(ids)
    if kind == "u" and ids.dtype.itemsize >= 8:  # beyond int64 is out of range for any n
        ids = xp.minimum(ids, np.iinfo(np.int64).max)
    own = xp.array(ids, dtype=np.int64, order="C", copy=True).reshape(-1)
    check_indices(op, own, n, what, ignore_index, backward)
    return own


def check_same_shape(op: str, **arrays: Array) -> None:
    """ValueError unless the named arrays all have the same shape (kernels index one by the
    other's extent, so a mismatch would read past the end of the smaller one)."""
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"{op}: shapes must agree, got {desc}")


def check_length(op: str, name: str, a: Array, n: int) -> None:
    """ValueError unless `a` holds exactly n elements."""
    if a.size != n:
        raise ValueError(f"{op}: {name} has {a.size} elements, expected {n} "
                         f"(shape {tuple(a.shape)})")
