"""Top-level functional forms (`mt.cat`, `mt.where`, `mt.exp`, ...) of the op set."""

from __future__ import annotations

from typing import Any

from minitl.ops.elementwise import Where
from minitl.ops.linalg import matmul
from minitl.ops.movement import cat, stack
from minitl.tensor import Tensor


def where(condition: Tensor, x: Any, y: Any) -> Tensor:
    """cond ? x : y, broadcasting all three; gradients flow to x and y. Two Python
    scalars promote as in PyTorch (floats: the default dtype), and the condition must be
    bool, through the same path as tensors."""
    return Where.apply(condition, x, y)


def _method(name: str) -> Any:
    def fn(x: Tensor, *args: Any, **kwargs: Any) -> Any:
        return getattr(x, name)(*args, **kwargs)

    fn.__name__ = name
    fn.__doc__ = f"mt.{name}(x, ...) is x.{name}(...)."
    return fn


exp, log, sqrt, tanh, sigmoid, relu = (_method(n) for n in
                                       ("exp", "log", "sqrt", "tanh", "sigmoid", "relu"))
sum, mean, logsumexp, clamp = (_method(n) for n in ("sum", "mean", "logsumexp", "clamp"))
maximum, minimum, split, chunk, gather = (_method(n) for n in
                                          ("maximum", "minimum", "split", "chunk", "gather"))
softmax = _method("softmax")

__all__ = ["where", "matmul", "cat", "stack", "exp", "log", "sqrt", "tanh", "sigmoid", "relu",
           "sum", "mean", "logsumexp", "clamp", "maximum", "minimum", "split", "chunk",
           "gather", "softmax"]
