"""The Tensor methods that are one-line wrappers over ops (`x.exp()`, `x.sum(dim)`, ...).

They live in a mixin so tensor.py keeps the engine, and so every method has a real, typed
definition (no attributes attached at run time). The ops modules import `Tensor`, so each
method imports its op when called; after the first call that is a dictionary lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from minitl.ops.reduce import MaxResult
    from minitl.tensor import Tensor

Dim = int | Sequence[int] | None


class TensorMethods:
    __slots__ = ()

    # ---- unary math (minitl/ops/elementwise.py) ----------------------------------------

    def exp(self) -> Tensor:
        from minitl.ops.elementwise import Exp
        return Exp.apply(self)

    def log(self) -> Tensor:
        from minitl.ops.elementwise import Log
        return Log.apply(self)

    def log1p(self) -> Tensor:
        from minitl.ops.elementwise import Log1p
        return Log1p.apply(self)

    def sqrt(self) -> Tensor:
        from minitl.ops.elementwise import Sqrt
        return Sqrt.apply(self)

    def rsqrt(self) -> Tensor:
        from minitl.ops.elementwise import Rsqrt
        return Rsqrt.apply(self)

    def square(self) -> Tensor:
        from minitl.ops.elementwise import Square
        return Square.apply(self)

    def tanh(self) -> Tensor:
        from minitl.ops.elementwise import Tanh
        return Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        from minitl.ops.elementwise import Sigmoid
        return Sigmoid.apply(self)

    def relu(self) -> Tensor:
        from minitl.ops.elementwise import Relu
        return Relu.apply(self)

    def abs(self) -> Tensor:
        from minitl.ops.elementwise import Abs
        return Abs.apply(self)

    def sin(self) -> Tensor:
        from minitl.ops.elementwise import Sin
        return Sin.apply(self)

    def cos(self) -> Tensor:
        from minitl.ops.elementwise import Cos
        return Cos.apply(self)

    def erf(self) -> Tensor:
        from minitl.ops.elementwise import Erf
        return Erf.apply(self)

    # ---- binary, clamp, selection ----------------------------------------------------

    def add(self, other: Any) -> Tensor:
        return self + other  # type: ignore[operator, no-any-return]

    def sub(self, other: Any) -> Tensor:
        return self - other  # type: ignore[operator, no-any-return]

    def mul(self, other: Any) -> Tensor:
        return self * other  # type: ignore[operator, no-any-return]

    def div(self, other: Any) -> Tensor:
        return self / other  # type: ignore[operator, no-any-return]

    def pow(self, exponent: Any) -> Tensor:
        return self ** exponent  # type: ignore[operator, no-any-return]

    def neg(self) -> Tensor:
        return -self  # type: ignore[operator, no-any-return]

    def matmul(self, other: Any) -> Tensor:
        from minitl.ops.linalg import matmul
        return matmul(self, other)

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        from minitl.ops.elementwise import clamp
        return clamp(self, min, max)  # type: ignore[arg-type]

    clip = clamp

    def maximum(self, other: Any) -> Tensor:
        from minitl.ops.elementwise import maximum
        return maximum(self, other)  # type: ignore[arg-type]

    def minimum(self, other: Any) -> Tensor:
        from minitl.ops.elementwise import minimum
        return minimum(self, other)  # type: ignore[arg-type]

    def masked_fill(self, mask: Tensor, value: float) -> Tensor:
        from minitl.ops.elementwise import masked_fill
        return masked_fill(self, mask, value)  # type: ignore[arg-type]

    def where(self, condition: Tensor, other: Any) -> Tensor:
        """x.where(cond, y) is cond ? x : y, as in PyTorch."""
        from minitl.ops.elementwise import where
        return where(self, condition, other)  # type: ignore[arg-type]

    # ---- reductions (minitl/ops/reduce.py) -----------------------------------------

    def sum(self, dim: Dim = None, keepdim: bool = False) -> Tensor:
        from minitl.ops import reduce
        return reduce.sum(self, dim, keepdim)  # type: ignore[arg-type]

    def mean(self, dim: Dim = None, keepdim: bool = False) -> Tensor:
        from minitl.ops import reduce
        return reduce.mean(self, dim, keepdim)  # type: ignore[arg-type]

    def var(self, dim: Dim = None, unbiased: bool | None = None, keepdim: bool = False,
            correction: int | None = None) -> Tensor:
        from minitl.ops import reduce
        return reduce.var(self, dim, unbiased, keepdim, correction)  # type: ignore[arg-type]

    def std(self, dim: Dim = None, unbiased: bool | None = None, keepdim: bool = False,
            correction: int | None = None) -> Tensor:
        from minitl.ops import reduce
        return reduce.std(self, dim, unbiased, keepdim, correction)  # type: ignore[arg-type]

    def max(self, dim: int | None = None, keepdim: bool = False) -> Tensor | MaxResult:
        """The maximum; with `dim`, a (values, indices) named tuple as in PyTorch."""
        from minitl.ops import reduce
        return reduce.max(self, dim, keepdim)  # type: ignore[arg-type, no-any-return]

    def min(self, dim: int | None = None, keepdim: bool = False) -> Tensor | MaxResult:
        from minitl.ops import reduce
        return reduce.min(self, dim, keepdim)  # type: ignore[arg-type, no-any-return]

    def amax(self, dim: Dim = None, keepdim: bool = False) -> Tensor:
        from minitl.ops import reduce
        return reduce.amax(self, dim, keepdim)  # type: ignore[arg-type]

    def amin(self, dim: Dim = None, keepdim: bool = False) -> Tensor:
        from minitl.ops import reduce
        return reduce.amin(self, dim, keepdim)  # type: ignore[arg-type]

    def logsumexp(self, dim: Dim, keepdim: bool = False) -> Tensor:
        from minitl.ops import reduce
        return reduce.logsumexp(self, dim, keepdim)  # type: ignore[arg-type]

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        from minitl.ops import reduce
        return reduce.argmax(self, dim, keepdim)  # type: ignore[arg-type]

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        from minitl.ops import reduce
        return reduce.argmin(self, dim, keepdim)  # type: ignore[arg-type]

    def softmax(self, dim: int | None = None, dtype: Any = None) -> Tensor:
        from minitl.ops import activation
        return activation.softmax(self, dim, dtype)  # type: ignore[arg-type]

    def log_softmax(self, dim: int | None = None, dtype: Any = None) -> Tensor:
        from minitl.ops import activation
        return activation.log_softmax(self, dim, dtype)  # type: ignore[arg-type]

    # ---- movement (minitl/ops/movement.py) ------------------------------------------

    def reshape(self, *shape: Any) -> Tensor:
        from minitl.ops import movement
        return movement.reshape(self, *shape)  # type: ignore[arg-type]

    def view(self, *shape: Any) -> Tensor:
        from minitl.ops import movement
        return movement.view(self, *shape)  # type: ignore[arg-type]

    def view_as(self, other: Tensor) -> Tensor:
        from minitl.ops import movement
        return movement.view_as(self, other)  # type: ignore[arg-type]

    def contiguous(self) -> Tensor:
        from minitl.ops import movement
        return movement.contiguous(self)  # type: ignore[arg-type]

    def is_contiguous(self) -> bool:
        from minitl.ops import movement
        return movement.is_contiguous(self)  # type: ignore[arg-type]

    def permute(self, *dims: Any) -> Tensor:
        from minitl.ops import movement
        return movement.permute(self, *dims)  # type: ignore[arg-type]

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        from minitl.ops import movement
        return movement.transpose(self, dim0, dim1)  # type: ignore[arg-type]

    def t(self) -> Tensor:
        from minitl.ops import movement
        return movement.t(self)  # type: ignore[arg-type]

    def expand(self, *shape: Any) -> Tensor:
        from minitl.ops import movement
        return movement.expand(self, *shape)  # type: ignore[arg-type]

    def expand_as(self, other: Tensor) -> Tensor:
        from minitl.ops import movement
        return movement.expand_as(self, other)  # type: ignore[arg-type]

    def unsqueeze(self, dim: int) -> Tensor:
        from minitl.ops import movement
        return movement.unsqueeze(self, dim)  # type: ignore[arg-type]

    def squeeze(self, dim: int | Sequence[int] | None = None) -> Tensor:
        from minitl.ops import movement
        return movement.squeeze(self, dim)  # type: ignore[arg-type]

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        from minitl.ops import movement
        return movement.flatten(self, start_dim, end_dim)  # type: ignore[arg-type]

    def split(self, split_size_or_sections: int | Sequence[int], dim: int = 0
              ) -> tuple[Tensor, ...]:
        from minitl.ops import movement
        return movement.split(self, split_size_or_sections, dim)  # type: ignore[arg-type]

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        from minitl.ops import movement
        return movement.chunk(self, chunks, dim)  # type: ignore[arg-type]

    def gather(self, dim: int, index: Tensor) -> Tensor:
        from minitl.ops import movement
        return movement.gather(self, dim, index)  # type: ignore[arg-type]

    def index_select(self, dim: int, index: Tensor) -> Tensor:
        from minitl.ops import movement
        return movement.index_select(self, dim, index)  # type: ignore[arg-type]

    def repeat(self, *sizes: Any) -> Tensor:
        from minitl.ops import movement
        return movement.repeat(self, *sizes)  # type: ignore[arg-type]
