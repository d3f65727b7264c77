"""In-place writes to a Tensor (`x[i] = v`, `copy_`, `add_`, ...) and its version counter.

These run outside the autograd graph: on a tensor that requires grad (or has a grad_fn)
they raise unless grad mode is off, as for a leaf in PyTorch. Every write bumps the version
counter of the tensor's storage (minitl/autograd_state.py), which every view of that
storage shares, so `backward()` refuses to use a value saved for backward that a write
changed afterwards. Code that writes into `.data` directly calls `increment_version`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from minitl import autograd_state
from minitl.backend import array_module

if TYPE_CHECKING:
    from minitl.tensor import Tensor


def _raw(value: Any) -> Any:
    return value.data if isinstance(value, TensorInplace) else value


class TensorInplace:
    __slots__ = ()
    data: Any
    _requires_grad: bool
    _ctx: Any

    @property
    def _version(self) -> int:
        """How many in-place writes this tensor's storage has seen (shared by its views)."""
        return autograd_state.version_of(self.data)

    def _check_inplace(self, op: str) -> None:
        if autograd_state.is_grad_enabled() and (self._requires_grad or self._ctx is not None):
            raise RuntimeError(
                f"{op}: in-place change of a tensor that requires grad; "
                "wrap it in `with mt.no_grad():` or use the out-of-place op"
            )

    def _write(self, op: str, fn: Any, *args: Any) -> Tensor:
        """Run `fn(self.data, *args)`, an in-place array update, as the `op` method."""
        self._check_inplace(op)
        if not getattr(self.data.flags, "writeable", True):
            # e.g. an expand()ed tensor: several elements share one memory location
            raise RuntimeError(f"{op}: this tensor is a read-only view (an expand() or a "
                               f"broadcast); clone() it before writing")
        try:
            fn(self.data, *args)
        except TypeError as e:  # numpy's UFuncTypeError: float into an integer tensor
            raise RuntimeError(f"{op}: the result cannot be cast to the tensor's dtype "
                               f"{self.data.dtype}: {e}") from None
        except ValueError as e:
            raise RuntimeError(f"{op}: {e} (tensor of shape {tuple(self.data.shape)})"
                               ) from None
        autograd_state.bump_version(self.data)
        return self  # type: ignore[return-value]

    def zero_(self) -> Tensor:
        return self._write("zero_", _assign, 0)

    def fill_(self, value: Any) -> Tensor:
        return self._write("fill_", _assign, _raw(value))

    def copy_(self, src: Any) -> Tensor:
        xp = array_module(self.data)
        src_data = xp.asarray(_raw(src))
        try:
            src_data = xp.broadcast_to(src_data, self.data.shape)
        except ValueError as e:
            raise RuntimeError(f"copy_: source shape {tuple(src_data.shape)} does not "
                               f"broadcast to {tuple(self.data.shape)}") from e
        return self._write("copy_", _assign, src_data)

    def __setitem__(self, index: Any, value: Any) -> None:
        self._check_inplace("__setitem__")
        if isinstance(index, tuple):
            index = tuple(_raw(i) for i in index)
        else:
            index = _raw(index)
        self.data[index] = _raw(value)
        autograd_state.bump_version(self.data)

    def add_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        """self += alpha * other."""
        other = _raw(other)
        return self._write("add_", _iadd, other if alpha == 1 else alpha * other)

    def sub_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        """self -= alpha * other."""
        other = _raw(other)
        return self._write("sub_", _isub, other if alpha == 1 else alpha * other)

    def mul_(self, other: Any) -> Tensor:
        return self._write("mul_", _imul, _raw(other))

    def div_(self, other: Any) -> Tensor:
        return self._write("div_", _idiv, _raw(other))

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:
        if min is None and max is None:
            raise ValueError("clamp_: at least one of min and max must be given")
        return self._write("clamp_", _iclamp, _raw(min), _raw(max))

    clip_ = clamp_

    def masked_fill_(self, mask: Any, value: Any) -> Tensor:
        mask = _raw(mask)
        if mask.dtype.kind != "b":
            raise RuntimeError(f"masked_fill_: mask must be a bool tensor, got {mask.dtype}")
        return self._write("masked_fill_", _imasked_fill, mask, _raw(value))


# numpy's in-place operators refuse unsafe casts (float into int) with a TypeError, which
# `_write` turns into PyTorch's RuntimeError.
def _assign(a: Any, v: Any) -> None:
    a[...] = v


def _iadd(a: Any, v: Any) -> None:
    a += v


def _isub(a: Any, v: Any) -> None:
    a -= v


def _imul(a: Any, v: Any) -> None:
    a *= v


def _idiv(a: Any, v: Any) -> None:
    if a.dtype.kind not in "fc":
        raise TypeError(f"true division into {a.dtype}")
    a /= v


def _iclamp(a: Any, lo: Any, hi: Any) -> None:
    array_module(a).clip(a, lo, hi, out=a)


def _imasked_fill(a: Any, mask: Any, value: Any) -> None:
    a[array_module(a).broadcast_to(mask, a.shape)] = value
