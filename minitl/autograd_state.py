"""Global autograd state: grad mode (`no_grad`, `enable_grad`), the version counters that
catch in-place writes to values saved for backward, and the lock around `.grad`
accumulation.

Version counters. Every storage (the buffer an array views: numpy and CuPy lead each view
to it through `.base`) has a counter, bumped by every in-place write minitl makes to it:
`Tensor.__setitem__` and the `*_` methods, optimizer steps, `nn.init`, `load_state_dict`.
A recorded op notes the counter of each array it saved for backward; `backward()` compares
them again before it runs the op's backward and raises instead of computing a gradient
from values that changed. Keying the counters by storage rather than by Tensor means every
view of a buffer (a slice, a transpose, `.detach()`, a reshape made inside an op) shares
one counter without any bookkeeping when the view is made, as views share PyTorch's
VariableVersion. A storage that was never written has no entry and is at version 0, so the
table only holds storages that someone modified in place.
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class _GradMode(threading.local):
    grad_enabled: bool = True
    inference: bool = False


_mode = _GradMode()


def __getattr__(name: str) -> Any:
    # `autograd_state.grad_enabled` reads the current thread's flag.
    if name == "grad_enabled":
        return _mode.grad_enabled
    raise AttributeError(name)


def is_grad_enabled() -> bool:
    return _mode.grad_enabled


def set_grad_enabled(mode: bool) -> None:
    _mode.grad_enabled = bool(mode)


class _GradModeContext:
    """Context manager and decorator that sets grad mode and restores it on exit."""

    enabled: bool

    def __new__(cls, func: Any = None) -> Any:
        self = super().__new__(cls)
        # `@mt.no_grad` without parentheses decorates the function directly.
        return self(func) if callable(func) else self

    def __init__(self, func: Any = None) -> None:
        pass

    def __enter__(self) -> None:
        self._prev = _mode.grad_enabled
        _mode.grad_enabled = self.enabled

    def __exit__(self, *exc: object) -> None:
        _mode.grad_enabled = self._prev

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


class no_grad(_GradModeContext):
    """Disable graph recording: `with mt.no_grad(): ...` or `@mt.no_grad()`."""

    enabled = False


class enable_grad(_GradModeContext):
    enabled = True


class inference_mode(_GradModeContext):
    """`torch.inference_mode`: no graph is recorded, so tensors made inside do not require
    grad (`with mt.inference_mode(): ...`, `@mt.inference_mode()` or `@mt.inference_mode`).

    In minitl it is no_grad under PyTorch's name: PyTorch also drops version counters and
    forbids using the results in autograd later, savings that minitl's numpy tensors do not
    have to gain. `inference_mode(False)` changes nothing, as in PyTorch.
    """

    def __new__(cls, mode: Any = True) -> Any:
        self = object.__new__(cls)
        self.mode = True
        # `@mt.inference_mode` without parentheses decorates the function directly.
        return self(mode) if callable(mode) else self

    def __init__(self, mode: Any = True) -> None:
        self.mode = bool(mode)

    def __enter__(self) -> None:
        self._prev = _mode.grad_enabled
        self._prev_inference = _mode.inference
        if self.mode:
            _mode.grad_enabled = False
            _mode.inference = True

    def __exit__(self, *exc: object) -> None:
        _mode.grad_enabled = self._prev
        _mode.inference = self._prev_inference

    def __call__(self, fn: F) -> F:
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with inference_mode(mode):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def is_inference_mode_enabled() -> bool:
    """True inside `inference_mode()` (in this thread)."""
    return _mode.inference


# ---- version counters -------------------------------------------------------------------

# id(storage) -> number of in-place writes. An entry leaves with its storage (a weakref
# finalizer), so an id the allocator hands out again starts over at 0.
_versions: dict[int, int] = {}
_NOT_ARRAY = object()
# storage_version(id(storage), 0): the counter of a storage; the table is never replaced, so
# the hot loop in backward binds this once.
storage_version = _versions.get


def storage_of(arr: Any) -> Any:
    """The object that owns `arr`'s memory: the end of its chain of `.base` links."""
    base = arr.base
    while base is not None:
        arr = base
        base = getattr(arr, "base", None)
    return arr


def version_of(arr: Any) -> int:
    """How many in-place writes the storage under `arr` has seen."""
    return _versions.get(id(storage_of(arr)), 0)


def bump_version(arr: Any) -> None:
    """Record an in-place write to the array `arr` (for a Tensor: `increment_version`).

    Call it after every write that bypasses the ops, so that a value saved for backward
    cannot change unnoticed. Two threads bumping at once may count one write, which is
    still a change: the check only asks whether the counter moved.
    """
    root = storage_of(arr)
    key = id(root)
    v = _versions.get(key)
    if v is None:
        try:
            weakref.finalize(root, _versions.pop, key, None)
        except TypeError:  # a storage without weakrefs (bytes): keep its entry for good
            pass
        v = 0
    _versions[key] = v + 1


def saved_versions(values: tuple[Any, ...]) -> tuple[tuple[int, int, int], ...]:
    """(position, storage id, version) of every array in `values`; other values (None,
    Python numbers, slices) cannot be written in place and are skipped. The saved array
    keeps its storage alive, so the id stays valid until backward."""
    out = []
    get = _versions.get
    for i, v in enumerate(values):
        if v is None:
            continue
        base = getattr(v, "base", _NOT_ARRAY)
        if base is _NOT_ARRAY:
            continue
        root = v
        while base is not None:
            root = base
            base = getattr(base, "base", None)
        key = id(root)
        out.append((i, key, get(key, 0)))
    return tuple(out)


def stale_saved(recorded: tuple[tuple[int, int, int], ...]) -> tuple[int, int, int] | None:
    """(position, version then, version now) of the first saved array written in place
    since it was saved, or None: one dictionary lookup per saved array."""
    get = _versions.get
    for i, key, v in recorded:
        now = get(key, 0)
        if now != v:
            return i, v, now
    return None


def increment_version(tensor: Any) -> None:
    """Mark `tensor` as modified in place (`torch.autograd.graph.increment_version`): for
    code that writes into `tensor.data` directly."""
    bump_version(tensor.data)


# ---- gradient accumulation ----------------------------------------------------------------

# Held only around the read-modify-write of a leaf's `.grad`, so backward passes running in
# several threads over shared parameters add every contribution (as PyTorch's engine does).
grad_accumulation_lock = threading.Lock()
