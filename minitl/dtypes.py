"""dtype names in PyTorch spelling; they are numpy dtypes (CuPy uses the same ones).

Also PyTorch's type promotion (`promote_types`, `result_type`), which differs from numpy's
in two ways that matter: the higher category (bool < integer < floating < complex) wins
outright, so `float32 op int64` is float32 where numpy says float64; and operands rank by
kind, dimensioned tensors over 0-d tensors over Python scalars, so a 0-d float64 tensor or
a Python float does not widen a float32 tensor.
"""

from typing import Any

import numpy as np

float16 = half = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = double = np.dtype(np.float64)
int8 = np.dtype(np.int8)
int16 = np.dtype(np.int16)
int32 = np.dtype(np.int32)
int64 = long = np.dtype(np.int64)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)

__all__ = ["float16", "half", "float32", "float64", "double", "int8", "int16", "int32", "int64",
           "long", "uint8", "bool_", "promote_types", "result_type"]

_CATEGORY = {"b": 0, "i": 1, "u": 1, "f": 2, "c": 3}


def promote_types(a: np.dtype, b: np.dtype) -> np.dtype:
    """`torch.promote_types`: the dtype of higher category wins (int64 + float16 -> float16);
    within one category numpy's rule applies (int8 + uint8 -> int16)."""
    if a == b:
        return a
    ca, cb = _CATEGORY[a.kind], _CATEGORY[b.kind]
    if ca != cb:
        return a if ca > cb else b
    return np.promote_types(a, b)


def _combine(higher: np.dtype | None, lower: np.dtype | None) -> np.dtype | None:
    """c10's combine_categories: a lower-priority operand only matters when it is of a
    higher category (an int tensor meeting a Python float becomes the float dtype)."""
    if higher is None:
        return lower
    if lower is None:
        return higher
    ch, cl = _CATEGORY[higher.kind], _CATEGORY[lower.kind]
    if ch >= 2 and ch >= cl:
        return higher
    if ch == 0 or cl > ch:
        return promote_types(higher, lower)
    return higher


def result_type(*operands: Any, default_float: np.dtype = float32) -> np.dtype:
    """`torch.result_type` over tensors, arrays and Python scalars.

    Operands with a `.dtype` count as tensors (0-d ones in the lower tier); Python bools,
    ints and floats are bool, int64 and `default_float` in the lowest tier.
    """
    dim = zero = wrapped = None
    for o in operands:
        dt = getattr(o, "dtype", None)
        if dt is not None:
            if getattr(o, "ndim", 0):
                dim = dt if dim is None else promote_types(dim, dt)
            else:
                zero = dt if zero is None else promote_types(zero, dt)
            continue
        if isinstance(o, bool):
            dt = bool_
        elif isinstance(o, int):
            dt = int64
        elif isinstance(o, float):
            dt = np.dtype(default_float)
        elif isinstance(o, complex):
            dt = np.dtype(np.complex64)
        else:
            continue  # None and other non-numbers take no part
        wrapped = dt if wrapped is None else promote_types(wrapped, dt)
    out = _combine(dim, _combine(zero, wrapped))
    if out is None:
        raise TypeError("result_type: no tensor or number among the operands")
    return out
