"""Global autograd switches: grad mode (`no_grad`, `enable_grad`)."""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class _GradMode(threading.local):
    grad_enabled: bool = True


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
