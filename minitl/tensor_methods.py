"""The Tensor methods that are one-line wrappers over ops (`x.exp()`, `x.sum(dim)`, ...).

They live in a mixin so tensor.py keeps the engine, and so every method has a real, typed
definition (no attributes attached at run time). The ops modules import `Tensor`, so they
cannot be imported before it exists: methods reach them as `ops.<module>.<op>`, attributes
of the `minitl.ops` package that tensor.py binds once, right after defining Tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from minitl import ops

if TYPE_CHECKING:
    from minitl.ops.reduce import MaxResult
    from minitl.tensor import Tensor

Dim = int | Sequence[int] | None


class TensorMethods:
    __slots__ = ()

    # ---- unary math (minitl/ops/elementwise.py) ----------------------------------------

    def exp(self) -> Tensor:
        return ops.elementwise.Exp.apply(self)

    def log(self) -> Tensor:
        return ops.elementwise.Log.apply(self)

    def log1p(self) -> Tensor:
        return ops.elementwise.Log1p.apply(self)

    def sqrt(self) -> Tensor:
        return ops.elementwise.Sqrt.apply(self)

    def rsqrt(self) -> Tensor:
        return ops.elementwise.Rsqrt.apply(self)

    def square(self) -> Tensor:
        return ops.elementwise.Square.apply(self)

    def tanh(self) -> Tensor:
        return ops.elementwise.Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        return ops.elementwise.Sigmoid.apply(self)

    def relu(self) -> Tensor:
        return ops.elementwise.Relu.apply(self)

    def abs(self) -> Tensor:
        return ops.elementwise.Abs.apply(self)

    def sin(self) -> Tensor:
        return ops.elementwise.Sin.apply(self)

    def cos(self) -> Tensor:
        return ops.elementwise.Cos.apply(self)

    def erf(self) -> Tensor:
        return ops.elementwise.Erf.apply(self)

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
        return ops.linalg.matmul(self, other)

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        return ops.elementwise.clamp(self, min, max)  # type: ignore[arg-type]

    clip = clamp

    def maximum(self, other: Any) -> Tensor:
        return ops.elementwise.maximum(self, other)  # type: ignore[arg-type]

    def minimum(self, other: Any) -> Tensor:
        return ops.elementwise.minimum(self, other)  # type: ignore[arg-type]

    def masked_fill(self, mask: Tensor, value: float) -> Tensor:
        return ops.elementwise.masked_fill(self, mask, value)  # type: ignore[arg-type]

    def where(self, condition: Tensor, other: Any) -> Tensor:
        """x.where(cond, y) is cond ? x : y, as in PyTorch."""
        return ops.elementwise.where(self, condition, other)  # type: ignore[arg-type]

    # ---- reductions (minitl/ops/reduce.py) -----------------------------------------

    def sum(self, dim: Dim = None, keepdim: bool = False) -> Tensor:
        return ops.reduce.sum(self, dim, keepdim)  # type: ignore[arg-type]

    def mean(self, dim: Dim = None, keepdim: bool = False) -> Tensor:
        return ops.reduce.mean(self, dim, keepdim)  # type: ignore[arg-type]

    def var(self, dim: Dim = None, unbiased: bool | None = None, keepdim: bool = False,
            correction: int | None = None) -> Tensor:
        return ops.reduce.var(self, dim, unbiased, keepdim, correction)  # type: ignore[arg-type]

    def std(self, dim: Dim = None, unbiased: bool | None = None, keepdim: bool = False,
            correction: int | None = None) -> Tensor:
        return ops.reduce.std(self, dim, unbiased, keepdim, correction)  # type: ignore[arg-type]

    def max(self, dim: int | None = None, keepdim: bool = False) -> Tensor | MaxResult:
        """The maximum; with `dim`, a (values, indices) named tuple as in PyTorch."""
        return ops.reduce.max(self, dim, keepdim)  # type: ignore[arg-type, no-any-return]

    def min(self, dim: int | None = None, keepdim: bool = False) -> Tensor | MaxResult:
        return ops.reduce.min(self, dim, keepdim)  # type: ignore[arg-type, no-any-return]

    def amax(self, dim: Dim = None, keepdim: bool = False) -> Tensor:
        return ops.reduce.amax(self, dim, keepdim)  # type: ignore[arg-type]

    def amin(self, dim: Dim = None, keepdim: bool = False) -> Tensor:
        return ops.reduce.amin(self, dim, keepdim)  # type: ignore[arg-type]

    def logsumexp(self, dim: Dim, keepdim: bool = False) -> Tensor:
        return ops.reduce.logsumexp(self, dim, keepdim)  # type: ignore[arg-type]

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return ops.reduce.argmax(self, dim, keepdim)  # type: ignore[arg-type]

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return ops.reduce.argmin(self, dim, keepdim)  # type: ignore[arg-type]

    def softmax(self, dim: int | None = None, dtype: Any = None) -> Tensor:
        return ops.activation.softmax(self, dim, dtype)  # type: ignore[arg-type]

    def log_softmax(self, dim: int | None = None, dtype: Any = None) -> Tensor:
        return ops.activation.log_softmax(self, dim, dtype)  # type: ignore[arg-type]

    # ---- movement (minitl/ops/movement.py) ------------------------------------------

    def reshape(self, *shape: Any) -> Tensor:
        return ops.movement.reshape(self, *shape)  # type: ignore[arg-type]

    def view(self, *shape: Any) -> Tensor:
        return ops.movement.view(self, *shape)  # type: ignore[arg-type]

    def view_as(self, other: Tensor) -> Tensor:
        return ops.movement.view_as(self, other)  # type: ignore[arg-type]

    def contiguous(self) -> Tensor:
        return ops.movement.contiguous(self)  # type: ignore[arg-type]

    def is_contiguous(self) -> bool:
        return ops.movement.is_contiguous(self)  # type: ignore[arg-type]

    def permute(self, *dims: Any) -> Tensor:
        return ops.movement.permute(self, *dims)  # type: ignore[arg-type]

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return ops.movement.transpose(self, dim0, dim1)  # type: ignore[arg-type]

    def t(self) -> Tensor:
        return ops.movement.t(self)  # type: ignore[arg-type]

    def expand(self, *shape: Any) -> Tensor:
        return ops.movement.expand(self, *shape)  # type: ignore[arg-type]

    def expand_as(self, other: Tensor) -> Tensor:
        return ops.movement.expand_as(self, other)  # type: ignore[arg-type]

    def unsqueeze(self, dim: int) -> Tensor:
        return ops.movement.unsqueeze(self, dim)  # type: ignore[arg-type]

    def squeeze(self, dim: int | Sequence[int] | None = None) -> Tensor:
        return ops.movement.squeeze(self, dim)  # type: ignore[arg-type]

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return ops.movement.flatten(self, start_dim, end_dim)  # type: ignore[arg-type]

    def split(self, split_size_or_sections: int | Sequence[int], dim: int = 0
              ) -> tuple[Tensor, ...]:
        return ops.movement.split(self, split_size_or_sections, dim)  # type: ignore[arg-type]

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        return ops.movement.chunk(self, chunks, dim)  # type: ignore[arg-type]

    def gather(self, dim: int, index: Tensor) -> Tensor:
        return ops.movement.gather(self, dim, index)  # type: ignore[arg-type]

    def index_select(self, dim: int, index: Tensor) -> Tensor:
        return ops.movement.index_select(self, dim, index)  # type: ignore[arg-type]

    def repeat(self, *sizes: Any) -> Tensor:
        return ops.movement.repeat(self, *sizes)  # type: ignore[arg-type]
