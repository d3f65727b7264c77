"""Tensor: an array plus the autograd graph that produced it.

`Tensor.data` is a numpy array (CuPy on the GPU). Every differentiable operation
is a `Function` (minitl/function.py); the Tensor methods below are one-line
wrappers over them, and the in-place writes live in minitl/tensor_inplace.py.
`backward()` walks the recorded graph in reverse topological order with an
explicit stack (no recursion, so a 10,000-op chain is fine), checks before each
node's backward that nothing it saved was written in place since forward, adds
into each leaf's `.grad` under a lock (so threads may run backward over shared
parameters), and releases each node's saved arrays as soon as they are used.
"""

from __future__ import annotations

import builtins
import itertools
import operator
from collections.abc import Callable
from typing import Any, Iterator, Sequence

import numpy as np

from minitl.backend import array_module, device_of
from minitl.device import Device
from minitl.dtypes import bool_, float32, float64, int64, result_type
from minitl.tensor_inplace import TensorInplace
from minitl.tensor_methods import TensorMethods
from minitl.types import Array

_default_dtype = float32


def get_default_dtype() -> np.dtype:
    return _default_dtype


def set_default_dtype(dtype: Any) -> None:
    global _default_dtype
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"set_default_dtype: only floating point dtypes are allowed, got {dt}")
    _default_dtype = dt


CPU = Device("cpu")


def _check_grad_dtype(dtype: np.dtype, what: str = "tensor") -> None:
    if dtype.kind not in "fc":
        raise RuntimeError(
            f"only floating point tensors can require gradients; this {what} has dtype {dtype}"
        )


class Tensor(TensorMethods, TensorInplace):
    """An n-dimensional array with reverse-mode automatic differentiation."""

    __slots__ = ("data", "_grad", "_requires_grad", "_ctx", "__weakref__", "__dict__")
    data: Any  # numpy.ndarray on the CPU, cupy.ndarray on the GPU
    _retains_grad = False  # set on the instance by retain_grad(); a class default reads fast
    # set on the instance by register_post_accumulate_grad_hook(); empty by default
    _post_accumulate_grad_hooks: dict[int, Callable[[Tensor], None]] | None = None

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            data = data.data
        elif isinstance(data, np.generic):
            data = np.asarray(data)
        elif not isinstance(data, np.ndarray) and array_module(data) is np:
            data = np.asarray(data)
            if data.dtype.kind == "f":  # Python floats take the default dtype, as in PyTorch
                data = data.astype(_default_dtype)
        self.data = data
        self._grad: Tensor | None = None
        self._ctx: Any = None
        self._requires_grad = False
        if requires_grad:
            self.requires_grad = True

    @classmethod
    def _wrap(cls, data: Array, requires_grad: bool = False) -> Tensor:
        t = Tensor.__new__(Tensor)
        # numpy reductions and indexing return scalars for 0-d results; keep arrays throughout.
        t.data = np.asarray(data) if isinstance(data, np.generic) else data
        t._grad = None
        t._ctx = None
        t._requires_grad = requires_grad
        return t

    # ---- attributes ---------------------------------------------------------------

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value:
            _check_grad_dtype(self.data.dtype)
        elif self._ctx is not None:
            raise RuntimeError(
                "you can only change requires_grad of leaf tensors; use .detach() instead"
            )
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    @property
    def grad(self) -> Tensor | None:
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"grad must be a Tensor or None, got {type(value).__name__}")
            if value.shape != self.shape:
                raise RuntimeError(
                    f"assigned grad has shape {value.shape} but the tensor has shape {self.shape}"
                )
        self._grad = value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def device(self) -> Device:
        return CPU if isinstance(self.data, np.ndarray) else Device(device_of(self.data))

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def grad_fn(self) -> str | None:
        return None if self._ctx is None else f"{self._ctx.fn.__name__}Backward"

    @property
    def T(self) -> Tensor:
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:
        return self.transpose(-2, -1)

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self[i]

    __hash__ = object.__hash__

    # ---- conversion -----------------------------------------------------------------

    def numpy(self) -> np.ndarray:
        if not isinstance(self.data, np.ndarray):
            raise TypeError(f"can't convert a {self.device} tensor to numpy; call .cpu() first")
        return self.data

    def item(self) -> Any:
        if self.data.size != 1:
            raise ValueError(f"item(): a Tensor with {self.data.size} elements cannot be "
                             "converted to a Python scalar")
        return self.data.reshape(()).item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        # Lets a one-element integer tensor serve as a size or an index, as in PyTorch.
        if self.data.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError(f"only integer tensors of a single element can be converted to "
                            f"an index, got dtype {self.data.dtype} with {self.data.size} "
                            f"elements")
        return int(self.item())

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a Tensor with {self.data.size} elements "
                               "is ambiguous")
        return bool(self.item())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def detach(self) -> Tensor:
        return Tensor._wrap(self.data)

    def detach_(self) -> Tensor:
        self._ctx = None
        self._requires_grad = False
        return self

    def clone(self) -> Tensor:
        return ops.elementwise.Clone.apply(self)

    def to(self, *args: Any, **kwargs: Any) -> Tensor:
        """`.to(device)`, `.to(dtype)` or `.to(device, dtype)`; a no-op when nothing changes."""
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"to() got unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, str):
                device = a
            elif isinstance(a, Tensor):
                device, dtype = a.device, a.dtype
            else:
                dtype = a
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = ops.elementwise.Cast.apply(out, np.dtype(dtype))
        if device is not None and Device(str(device)).type != self.device.type:
            out = ops.elementwise.ToDevice.apply(out, str(device))
        return out

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self) -> Tensor:
        return self.to("cuda")

    def float(self) -> Tensor:
        return self.to(float32)

    def double(self) -> Tensor:
        return self.to(float64)

    def long(self) -> Tensor:
        return self.to(int64)

    def bool(self) -> Tensor:
        return self.to(bool_)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    # ---- autograd -------------------------------------------------------------------

    def backward(self, gradient: Tensor | None = None, retain_graph: builtins.bool = False) -> None:
        """Accumulate d(self)/d(leaf) into `leaf.grad` for every leaf that requires grad."""
        if not self._requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no "
                               "grad_fn (did you call it under no_grad or on a detached tensor?)")
        xp = array_module(self.data)
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward(): grad can be created implicitly only for scalar outputs; "
                    f"this output has shape {self.shape}, pass gradient= explicitly"
                )
            g = xp.ones_like(self.data)
        else:
            g = gradient.data if isinstance(gradient, Tensor) else xp.asarray(gradient)
            if tuple(g.shape) != self.shape:
                raise RuntimeError(f"backward(): gradient has shape {tuple(g.shape)} but the "
                                   f"output has shape {self.shape}")
            g = g.astype(self.dtype, copy=False)
        from minitl.autograd.engine import run_backward

        run_backward([self], [g], retain_graph)

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in `.grad` after `backward()` (leaves always
        keep theirs)."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on a tensor that has requires_grad=False")
        if self._ctx is not None:
            self._retains_grad = True

    def register_post_accumulate_grad_hook(self, hook: Callable[[Tensor], None]) -> Any:
        """Call `hook(self)` each time backward() has added this leaf's gradient into
        `.grad` (once per backward, after all its uses are summed), as in PyTorch. Data
        parallel training starts reducing a gradient bucket from here, while the rest of
        backward still runs. Returns a handle whose `.remove()` unregisters the hook."""
        if self._ctx is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf "
                               "tensors")
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self._post_accumulate_grad_hooks is None:
            self._post_accumulate_grad_hooks = {}
        return _HookHandle(self._post_accumulate_grad_hooks, hook)

    @property
    def retains_grad(self) -> builtins.bool:
        """True for a non-leaf tensor after `retain_grad()`."""
        return self._ctx is not None and self._retains_grad

    # ---- operators ------------------------------------------------------------------

    def __add__(self, o: Any) -> Tensor:
        return ops.elementwise.Add.apply(*_promote(self, _operand(o, self)))

    def __radd__(self, o: Any) -> Tensor:
        return ops.elementwise.Add.apply(*_promote(_operand(o, self), self))

    def __sub__(self, o: Any) -> Tensor:
        return ops.elementwise.Sub.apply(*_promote(self, _operand(o, self)))

    def __rsub__(self, o: Any) -> Tensor:
        return ops.elementwise.Sub.apply(*_promote(_operand(o, self), self))

    def __mul__(self, o: Any) -> Tensor:
        return ops.elementwise.Mul.apply(*_promote(self, _operand(o, self)))

    def __rmul__(self, o: Any) -> Tensor:
        return ops.elementwise.Mul.apply(*_promote(_operand(o, self), self))

    def __truediv__(self, o: Any) -> Tensor:
        return ops.elementwise.Div.apply(*_true_div_operands(self, _operand(o, self)))

    def __rtruediv__(self, o: Any) -> Tensor:
        return ops.elementwise.Div.apply(*_true_div_operands(_operand(o, self), self))

    def __pow__(self, o: Any) -> Tensor:
        return ops.elementwise.Pow.apply(*_promote(self, _operand(o, self)))

    def __rpow__(self, o: Any) -> Tensor:
        return ops.elementwise.Pow.apply(*_promote(_operand(o, self), self))

    def __matmul__(self, o: Any) -> Tensor:
        return ops.linalg.matmul(self, o)

    def __rmatmul__(self, o: Any) -> Tensor:
        return ops.linalg.matmul(o, self)

    def __neg__(self) -> Tensor:
        return ops.elementwise.Neg.apply(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return self.abs()

    def _compare(self, o: Any, op: str) -> Tensor:
        other = o.data if isinstance(o, Tensor) else o
        return Tensor._wrap(getattr(self.data, op)(other))

    def __eq__(self, o: Any) -> Tensor:  # type: ignore[override]
        return self._compare(o, "__eq__")

    def __ne__(self, o: Any) -> Tensor:  # type: ignore[override]
        return self._compare(o, "__ne__")

    def __lt__(self, o: Any) -> Tensor:
        return self._compare(o, "__lt__")

    def __le__(self, o: Any) -> Tensor:
        return self._compare(o, "__le__")

    def __gt__(self, o: Any) -> Tensor:
        return self._compare(o, "__gt__")

    def __ge__(self, o: Any) -> Tensor:
        return self._compare(o, "__ge__")

    def __invert__(self) -> Tensor:
        return Tensor._wrap(~self.data)

    def __and__(self, o: Any) -> Tensor:
        return self._compare(o, "__and__")

    def __or__(self, o: Any) -> Tensor:
        return self._compare(o, "__or__")

    def __xor__(self, o: Any) -> Tensor:
        return self._compare(o, "__xor__")

    def __getitem__(self, index: Any) -> Tensor:
        return ops.movement.getitem(self, index)

    def __repr__(self) -> str:
        body = np.array2string(np.asarray(self.data) if self.device == "cpu" else
                               self.data.get(), separator=", ", precision=4, prefix="tensor(")
        extra = []
        if self.dtype not in (_default_dtype, int64, bool_):
            extra.append(f"dtype=minitl.{self.dtype}")
        if self.device != "cpu":
            extra.append(f"device='{self.device}'")
        if self._ctx is not None:
            extra.append(f"grad_fn=<{self.grad_fn}>")
        elif self._requires_grad:
            extra.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extra) + ")"


_PY_NUMBERS = (int, float)


class _HookHandle:
    """`.remove()` unregisters the hook it was returned for."""

    _next_id = itertools.count()

    def __init__(self, hooks: dict[int, Any], hook: Any) -> None:
        self.hooks, self.id = hooks, next(_HookHandle._next_id)
        hooks[self.id] = hook

    def remove(self) -> None:
        self.hooks.pop(self.id, None)


def _promote(a: Any, b: Any) -> tuple[Any, Any]:
    """Cast tensor operands to PyTorch's result dtype (minitl.dtypes.result_type): a float
    tensor meeting an int tensor keeps its float dtype, `int64_tensor * 0.5` is float32, and
    Python scalars never widen a tensor (numpy would give float64 in the first two cases)."""
    # The common cases, decided without the full rule: equal dtypes, or a float tensor with
    # a Python number (which keeps the tensor's dtype).
    if isinstance(a, Tensor):
        if isinstance(b, Tensor):
            if a.data.dtype == b.data.dtype:
                return a, b
        elif type(b) in _PY_NUMBERS and a.data.dtype.kind == "f":
            return a, b
    elif type(a) in _PY_NUMBERS and isinstance(b, Tensor) and b.data.dtype.kind == "f":
        return a, b
    dt = result_type(a, b, default_float=_default_dtype)
    if isinstance(a, Tensor) and a.data.dtype != dt:
        a = a.to(dt)
    if isinstance(b, Tensor) and b.data.dtype != dt:
        b = b.to(dt)
    return a, b


def _true_div_operands(a: Any, b: Any) -> tuple[Any, Any]:
    """True division of integers gives the default float dtype (numpy would give float64)."""
    a, b = _promote(a, b)
    t = a if isinstance(a, Tensor) else b
    if t.data.dtype.kind not in "fc":
        if isinstance(a, Tensor):
            a = a.to(_default_dtype)
        if isinstance(b, Tensor):
            b = b.to(_default_dtype)
    return a, b


def _operand(o: Any, like: Tensor) -> Any:
    """Python scalars stay scalars (numpy treats them as weakly typed); arrays become Tensors."""
    if isinstance(o, Tensor) or isinstance(o, (int, float, bool)):
        return o
    xp = array_module(like.data)
    return Tensor._wrap(xp.asarray(o))


def _as_sequence(shape: Sequence[Any], op: str = "view", arg: str = "size") -> tuple[int, ...]:
    """`f(2, 3)` or `f((2, 3))` as a tuple of ints. As in PyTorch, a size must be an int
    (a numpy integer or anything with `__index__` will do, a bool will not): `zeros(2.9)`
    raises TypeError rather than silently making 2 elements."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    out = []
    for i, s in enumerate(shape):
        if isinstance(s, int) and not isinstance(s, bool):
            out.append(s)
            continue
        if not isinstance(s, (bool, np.bool_, float, np.floating)):
            try:
                out.append(operator.index(s))
                continue
            except TypeError:
                pass
        raise TypeError(f"{op}(): argument '{arg}' must be a tuple of ints, but found element "
                        f"of type {type(s).__name__} at pos {i}")
    return tuple(out)


# The op modules import Tensor, so they come after it; importing them here binds
# minitl.ops.<module> once for every Tensor method (tensor_methods.py) and operator above.
import minitl.ops.activation  # noqa: E402
import minitl.ops.elementwise  # noqa: E402
import minitl.ops.linalg  # noqa: E402
import minitl.ops.movement  # noqa: E402
import minitl.ops.reduce  # noqa: E402, F401
from minitl import ops  # noqa: E402
