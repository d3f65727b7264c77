"""Function and Context: the unit of differentiation.

An op is one `Function` subclass whose `forward` and `backward` sit side by side.
`forward` receives raw arrays (numpy on the CPU, CuPy on the GPU) for every Tensor
argument and plain Python values for everything else; `backward` receives the
gradient of the output and returns one gradient per positional argument of
`forward` (None where there is none). `Function.apply` does the bookkeeping that
every op shares: device checks and graph recording; the backward engine
(minitl/autograd/engine.py) sums each gradient back to its input's shape (`unbroadcast`).

What `forward` passes to `ctx.save_for_backward` is checked at backward: if an array saved
there (an input, the output, or a view of either) was modified in place after the forward
pass, backward raises instead of differentiating the new values (see the version counters
in minitl/autograd_state.py). An op that keeps an input for backward must therefore save it
through `save_for_backward`, not as a `ctx` attribute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from minitl import autograd_state
from minitl.backend import Backend, get_backend
from minitl.types import Array


class Context:
    """Per-call scratch space handed to forward and backward."""

    def __init__(self, backend: Backend, needs_input_grad: tuple[bool, ...]) -> None:
        self.backend = backend
        self.xp = backend.xp
        self.needs_input_grad = needs_input_grad
        self.saved: tuple[Any, ...] = ()
        # Filled in by Function.apply when the call is recorded in the graph.
        self.fn: type[Function] | None = None
        self.parents: tuple[Any, ...] = ()  # (position, Tensor) for each Tensor input
        self.input_shapes: tuple[tuple[int, ...], ...] = ()
        self.saved_versions: tuple[tuple[int, int, int], ...] = ()
        self.released = False

    if TYPE_CHECKING:
        # ops keep arbitrary per-call values on ctx (ctx.axes, ctx.shape, ...), as in PyTorch.
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...

    def save_for_backward(self, *values: Any) -> None:
        """Keep `values` (arrays, None or plain Python values) for backward as `ctx.saved`."""
        self.saved = values

    def check_saved_versions(self) -> None:
        """Raise if an array saved for backward has been written in place since forward."""
        stale = autograd_state.stale_saved(self.saved_versions)
        if stale is None:
            return
        i, then, now = stale
        arr = self.saved[i]
        name = self.fn.__name__ if self.fn is not None else "an op"
        raise RuntimeError(
            f"one of the variables needed for gradient computation has been modified by an "
            f"inplace operation: [{arr.dtype} {list(arr.shape)}], saved for backward by "
            f"{name} (saved value {i}), is at version {now}; expected version {then} "
            f"instead. Hint: the tensor was changed (e.g. by copy_, __setitem__, a *_ method, "
            f"an optimizer step or nn.init) after {name}'s forward pass; clone it before "
            f"changing it, or change it after backward()."
        )

    def release(self) -> None:
        """Drop saved arrays and parent links so memory is returned after backward."""
        self.saved = ()
        self.parents = ()
        self.released = True


def unbroadcast(xp: Any, grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum `grad` down to `shape`: the adjoint of numpy broadcasting."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    if grad.shape != shape:
        raise RuntimeError(f"internal error: cannot unbroadcast gradient {grad.shape} to {shape}")
    return grad


class Function:
    """Base class of every differentiable op."""

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> Array:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad: Array) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        from minitl.tensor import Tensor  # tensor.py imports ops lazily; avoid a cycle

        device = None
        for a in args:
            if isinstance(a, Tensor):
                if device is None:
                    device = a.device
                elif a.device != device:
                    raise RuntimeError(
                        f"{cls.__name__}: expected all tensors on the same device, "
                        f"got {device} and {a.device}"
                    )
        if device is None:
            raise TypeError(f"{cls.__name__}: expected at least one Tensor argument")

        record = autograd_state.is_grad_enabled() and any(
            isinstance(a, Tensor) and a.requires_grad for a in args
        )
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = Context(get_backend(device), needs)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = cls.forward(ctx, *raw, **kwargs)
        result = Tensor._wrap(out, requires_grad=record)
        if record:
            ctx.fn = cls
            ctx.parents = tuple((i, a) for i, a in enumerate(args) if isinstance(a, Tensor))
            ctx.input_shapes = tuple(a.shape for _, a in ctx.parents)
            if ctx.saved:
                ctx.saved_versions = autograd_state.saved_versions(ctx.saved)
            result._ctx = ctx
        return result
