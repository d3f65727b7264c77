"""Tensor factories: tensor, zeros, ones, full, randn, rand, arange, ... and the seed.

Sizes must be ints, as in PyTorch: `zeros(2.9)` raises TypeError naming the argument
instead of truncating to 2 elements.
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

import numpy as np

from minitl.tensor import Device, Tensor, _as_sequence, get_default_dtype

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed the generator behind randn, rand, randint, dropout and init."""
    global _rng
    _rng = np.random.default_rng(seed)


def default_generator() -> np.random.Generator:
    return _rng


def _finish(arr: np.ndarray, dtype: Any, device: Any, requires_grad: bool) -> Tensor:
    if dtype is not None:
        arr = arr.astype(np.dtype(dtype), copy=False)
    if device is not None and Device(str(device)).type != "cpu":
        from minitl.backend import get_backend

        arr = get_backend(str(device)).xp.asarray(arr)
    return Tensor(arr, requires_grad=requires_grad)


def tensor(data: Any, dtype: Any = None, device: Any = None,
           requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of `data`. Python floats become float32 (the default
    dtype), Python ints int64, bools bool; numpy arrays keep their dtype."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, (np.ndarray, np.generic)) or hasattr(data, "__cuda_array_interface__"):
        arr = data.copy() if not isinstance(data, np.generic) else np.asarray(data)
    else:
        arr = np.array(data)
        if arr.dtype.kind == "f" and dtype is None:
            arr = arr.astype(get_default_dtype())
        elif arr.dtype.kind in "iu" and dtype is None:
            arr = arr.astype(np.int64)
        elif arr.dtype.kind not in "fiub":
            raise TypeError(f"tensor(): cannot build a tensor from {type(data).__name__} "
                            f"(numpy made dtype {arr.dtype})")
    return _finish(arr, dtype, device, requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    return tensor(data, dtype=dtype, device=device)


def from_numpy(arr: np.ndarray) -> Tensor:
    """A tensor sharing memory with `arr`."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(arr).__name__}")
    return Tensor(arr)


def _int_arg(value: Any, op: str, arg: str) -> int:
    """A scalar argument that must be an int (numpy integers too; never a bool or a float)."""
    if isinstance(value, (bool, np.bool_, float, np.floating)):
        raise TypeError(f"{op}(): argument '{arg}' must be int, not {type(value).__name__}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}(): argument '{arg}' must be int, not "
                        f"{type(value).__name__}") from None


def _dt(dtype: Any) -> np.dtype:
    return get_default_dtype() if dtype is None else np.dtype(dtype)


def zeros(*size: Any, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    return _finish(np.zeros(_as_sequence(size, "zeros"), dtype=_dt(dtype)), None, device,
                   requires_grad)


def ones(*size: Any, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    return _finish(np.ones(_as_sequence(size, "ones"), dtype=_dt(dtype)), None, device,
                   requires_grad)


def empty(*size: Any, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    return _finish(np.zeros(_as_sequence(size, "empty"), dtype=_dt(dtype)), None, device,
                   requires_grad)


def full(size: Sequence[int], fill_value: float, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    if dtype is None:
        dtype = (np.int64 if isinstance(fill_value, (int, np.integer)) and
                 not isinstance(fill_value, bool) else
                 np.bool_ if isinstance(fill_value, bool) else get_default_dtype())
    shape = _as_sequence((size,), "full")
    return _finish(np.full(shape, fill_value, dtype=np.dtype(dtype)), None, device,
                   requires_grad)


def _like(x: Tensor, fn: Any, dtype: Any, requires_grad: bool, *args: Any) -> Tensor:
    out = fn(x.shape, *args, dtype=x.dtype if dtype is None else dtype, device=x.device)
    out.requires_grad = requires_grad
    return out


def zeros_like(x: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return _like(x, zeros, dtype, requires_grad)


def ones_like(x: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return _like(x, ones, dtype, requires_grad)


def full_like(x: Tensor, fill_value: float, dtype: Any = None,
              requires_grad: bool = False) -> Tensor:
    return _like(x, full, dtype, requires_grad, fill_value)


def randn(*size: Any, dtype: Any = None, device: Any = None,
          requires_grad: bool = False) -> Tensor:
    arr = _rng.standard_normal(_as_sequence(size, "randn")).astype(_dt(dtype))
    return _finish(arr, None, device, requires_grad)


def rand(*size: Any, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    arr = _rng.random(_as_sequence(size, "rand")).astype(_dt(dtype))
    return _finish(arr, None, device, requires_grad)


def randint(low: int, high: int | None = None, size: Sequence[int] = (), dtype: Any = None,
            device: Any = None) -> Tensor:
    if high is None:
        low, high = 0, low
    low, high = _int_arg(low, "randint", "low"), _int_arg(high, "randint", "high")
    shape = _as_sequence((size,), "randint")
    arr = _rng.integers(low, high, size=shape).astype(np.int64 if dtype is None else dtype)
    return _finish(arr, None, device, False)


def randn_like(x: Tensor, dtype: Any = None) -> Tensor:
    return randn(x.shape, dtype=x.dtype if dtype is None else dtype, device=x.device)


def randperm(n: int, device: Any = None) -> Tensor:
    n = _int_arg(n, "randperm", "n")
    return _finish(_rng.permutation(n).astype(np.int64), None, device, False)


def arange(start: float, end: float | None = None, step: float = 1, dtype: Any = None,
           device: Any = None, requires_grad: bool = False) -> Tensor:
    if end is None:
        start, end = 0, start
    ints = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    dt = (np.int64 if ints else get_default_dtype()) if dtype is None else dtype
    return _finish(np.arange(start, end, step).astype(dt), None, device, requires_grad)


def linspace(start: float, end: float, steps: int, dtype: Any = None, device: Any = None,
             requires_grad: bool = False) -> Tensor:
    steps = _int_arg(steps, "linspace", "steps")
    return _finish(np.linspace(start, end, steps).astype(_dt(dtype)), None, device,
                   requires_grad)


def eye(n: int, m: int | None = None, dtype: Any = None, device: Any = None) -> Tensor:
    n = _int_arg(n, "eye", "n")
    m = None if m is None else _int_arg(m, "eye", "m")
    return _finish(np.eye(n, m, dtype=_dt(dtype)), None, device, False)


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    from minitl.backend import array_module

    xp = array_module(x.data)
    keep = xp.tril(xp.ones(x.shape[-2:], dtype=bool), diagonal)
    return x.masked_fill(Tensor._wrap(~keep), 0)


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    from minitl.backend import array_module

    xp = array_module(x.data)
    keep = xp.triu(xp.ones(x.shape[-2:], dtype=bool), diagonal)
    return x.masked_fill(Tensor._wrap(~keep), 0)
