"""Movement and indexing: reshape/view, permute/transpose, expand, squeeze/unsqueeze,
flatten, cat, stack, split/chunk, pad, gather, and `__getitem__` with slices and
integer arrays (whose gradient is a scatter-add, so repeated indices accumulate).

`view` always aliases its input and raises where the new shape cannot be expressed over
the input's strides (a transposed tensor flattened, say), as in PyTorch; `reshape` copies
then. `cat` and `stack` promote mixed dtypes with PyTorch's rule (float32 with int64 is
float32).
"""

from __future__ import annotations

import builtins
from typing import Any, Sequence

import numpy as np

from minitl.autograd_state import storage_of
from minitl.dtypes import result_type
from minitl.function import Context, Function
from minitl.tensor import Tensor, _as_sequence, get_default_dtype
from minitl.types import Array


def wrap_dim(dim: int, ndim: int, op: str) -> int:
    """A non-negative axis for `dim`, or PyTorch's IndexError when it is out of range."""
    n = builtins.max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: dim {dim} is out of range (expected to be in range "
                         f"[{-n}, {n - 1}])")
    return dim % n


def _resolve_shape(shape: tuple[int, ...], numel: int, op: str, src: tuple[int, ...]) -> tuple:
    if shape.count(-1) > 1:
        raise RuntimeError(f"{op}: only one dimension can be -1, got {shape}")
    known = 1
    for s in shape:
        if s != -1:
            if s < 0:
                raise RuntimeError(f"{op}: invalid size {s} in shape {shape}")
            known *= s
    if -1 in shape:
        if known == 0 or numel % known:
            raise RuntimeError(f"{op}: shape {shape} is invalid for input of shape {src}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    elif known != numel:
        raise RuntimeError(f"{op}: shape {shape} is invalid for input of shape {src} "
                           f"({numel} elements)")
    return shape


class Reshape(Function):
    """z = x viewed with a new shape;  dx = g reshaped back."""

    @staticmethod
    def forward(ctx: Context, x: Array, shape: tuple[int, ...]) -> Array:
        ctx.shape = x.shape
        return x.reshape(_resolve_shape(shape, x.size, "reshape", tuple(x.shape)))

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        return g.reshape(ctx.shape), None


class View(Function):
    """z = x with a new shape over the same memory;  dx = g reshaped back.

    numpy's reshape copies exactly when no strides over x's memory give the new shape;
    PyTorch's view raises then, since a view must alias its base.
    """

    @staticmethod
    def forward(ctx: Context, x: Array, shape: tuple[int, ...]) -> Array:
        ctx.shape = x.shape
        z = x.reshape(_resolve_shape(shape, x.size, "view", tuple(x.shape)))
        if not x.flags.c_contiguous and x.size > 1 and storage_of(z) is not storage_of(x):
            raise RuntimeError(
                f"view size is not compatible with input tensor's size and stride (at least "
                f"one dimension spans across two contiguous subspaces): viewing "
                f"{tuple(x.shape)} with strides {_elem_strides(x)} as {shape}. "
                f"Use .reshape(...) instead.")
        return z

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        return g.reshape(ctx.shape), None


def _elem_strides(x: Array) -> tuple[int, ...]:
    return tuple(s // x.itemsize for s in x.strides)


class Contiguous(Function):
    """z = a C-ordered copy of x;  dx = g."""

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        return ctx.xp.ascontiguousarray(x)

    @staticmethod
    def backward(ctx: Context, g: Array) -> Array:
        return g


class Permute(Function):
    """z = x with axes reordered;  dx = g with the inverse permutation."""

    @staticmethod
    def forward(ctx: Context, x: Array, dims: tuple[int, ...]) -> Array:
        if len(dims) != x.ndim:
            raise RuntimeError(f"permute: dims {dims} do not match the {x.ndim} dims of "
                               f"shape {tuple(x.shape)}")
        dims = tuple(wrap_dim(d, x.ndim, "permute") for d in dims)
        if len(set(dims)) != len(dims):
            raise RuntimeError(f"permute: dims {dims} repeat an axis")
        ctx.inverse = tuple(np.argsort(dims))
        return x.transpose(dims)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        return g.transpose(ctx.inverse), None


class Expand(Function):
    """z = x broadcast to a larger shape;  dx = g summed over the broadcast axes."""

    @staticmethod
    def forward(ctx: Context, x: Array, shape: tuple[int, ...]) -> Array:
        lead = len(shape) - x.ndim
        if lead < 0:
            raise RuntimeError(f"expand: target shape {shape} has fewer dims than the "
                               f"input {tuple(x.shape)}")
        target = tuple(x.shape[i - lead] if (s == -1 and i >= lead) else s
                       for i, s in enumerate(shape))
        if builtins.min(target, default=0) < 0:
            raise RuntimeError(f"expand: -1 is not allowed in a new leading dim: expanding "
                               f"{tuple(x.shape)} to {shape}")
        for i, s in enumerate(x.shape):
            if s != 1 and s != target[i + lead]:
                raise RuntimeError(f"expand: the size {s} of dim {i} of shape "
                                   f"{tuple(x.shape)} must match {target[i + lead]} in {shape}")
        return ctx.xp.broadcast_to(x, target)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        return g, None  # summed back to x's shape by unbroadcast


def _has_advanced(index: tuple[Any, ...]) -> bool:
    return any(not isinstance(i, (int, np.integer, slice, type(None), type(Ellipsis)))
               for i in index)


class GetItem(Function):
    """z = x[index];  dx = zeros with g scattered (added) at index."""

    @staticmethod
    def forward(ctx: Context, x: Array, index: tuple[Any, ...]) -> Array:
        ctx.shape, ctx.dtype = x.shape, x.dtype
        # Saved, not kept as an attribute: index arrays are the caller's tensors, and
        # backward must notice if they are written in place before it scatters by them.
        ctx.save_for_backward(*index)
        try:
            return x[index]
        except IndexError as e:
            raise IndexError(f"index {index} is invalid for a tensor of shape "
                             f"{tuple(x.shape)}: {e}") from None

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None]:
        xp = ctx.xp
        index = ctx.saved
        out = xp.zeros(ctx.shape, dtype=g.dtype)
        if _has_advanced(index):
            if xp is np:
                np.add.at(out, index, g)
            else:  # pragma: no cover - GPU only
                import cupyx

                cupyx.scatter_add(out, index, g)
        else:
            out[index] = g
        return out, None


def _normalize_index(index: Any) -> tuple[Any, ...]:
    if not isinstance(index, tuple):
        index = (index,)
    out = []
    for i in index:
        if isinstance(i, Tensor):
            i = i.data
        elif isinstance(i, list):
            i = np.asarray(i)
        if hasattr(i, "dtype") and getattr(i, "ndim", 0) >= 0 and not isinstance(i, np.generic):
            if i.dtype.kind == "f":
                raise IndexError(f"tensors used as indices must be integer or bool, got {i.dtype}")
        out.append(i)
    return tuple(out)


def getitem(x: Tensor, index: Any) -> Tensor:
    return GetItem.apply(x, _normalize_index(index))


class Cat(Function):
    """z = concatenate(xs, dim);  each dx_i = the matching slice of g."""

    @staticmethod
    def forward(ctx: Context, dim: int, *xs: Array) -> Array:
        ref = xs[0]
        axis = wrap_dim(dim, ref.ndim, "cat")
        for x in xs[1:]:
            if x.ndim != ref.ndim or any(a != b for i, (a, b) in enumerate(zip(x.shape, ref.shape))
                                         if i != axis):
                raise RuntimeError(f"cat: shapes {tuple(ref.shape)} and {tuple(x.shape)} "
                                   f"differ outside dim {dim}")
        ctx.axis = axis
        ctx.bounds = np.cumsum([x.shape[axis] for x in xs])[:-1]
        return ctx.xp.concatenate(xs, axis=axis)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Any, ...]:
        return (None, *ctx.xp.split(g, ctx.bounds, axis=ctx.axis))


class Stack(Function):
    """z = stack(xs, dim);  each dx_i = g indexed at i along dim."""

    @staticmethod
    def forward(ctx: Context, dim: int, *xs: Array) -> Array:
        for x in xs[1:]:
            if x.shape != xs[0].shape:
                raise RuntimeError(f"stack: expects each tensor to be equal size, got "
                                   f"{tuple(xs[0].shape)} and {tuple(x.shape)}")
        axis = wrap_dim(dim, xs[0].ndim + 1, "stack")
        ctx.axis = axis
        return ctx.xp.stack(xs, axis=axis)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Any, ...]:
        return (None, *(ctx.xp.take(g, i, axis=ctx.axis) for i in range(g.shape[ctx.axis])))


class Pad(Function):
    """Constant padding; pad = (last_lo, last_hi, prev_lo, prev_hi, ...) as in F.pad."""

    @staticmethod
    def forward(ctx: Context, x: Array, pad: tuple[int, ...], value: float) -> Array:
        if len(pad) % 2 or len(pad) // 2 > x.ndim:
            raise RuntimeError(f"pad: padding {pad} does not fit a tensor of shape "
                               f"{tuple(x.shape)}")
        if builtins.min(pad, default=0) < 0:
            raise RuntimeError(f"pad: negative padding {pad} is not supported")
        widths = [(0, 0)] * x.ndim
        for i in range(len(pad) // 2):
            widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
        ctx.slices = tuple(slice(lo, lo + s) for (lo, _), s in zip(widths, x.shape))
        return ctx.xp.pad(x, widths, constant_values=value)

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None]:
        return g[ctx.slices], None, None


class Gather(Function):
    """z[i][j] = x[i][index[i][j]] along dim;  dx = scatter-add of g at index."""

    @staticmethod
    def forward(ctx: Context, x: Array, dim: int, index: Array) -> Array:
        if index.dtype.kind not in "iu":
            raise RuntimeError(f"gather: index must be an integer tensor, got {index.dtype}")
        if index.ndim != x.ndim:
            raise RuntimeError(f"gather: index {tuple(index.shape)} and input "
                               f"{tuple(x.shape)} must have the same number of dims")
        axis = wrap_dim(dim, x.ndim, "gather")
        for d, (n_idx, n_x) in enumerate(zip(index.shape, x.shape)):
            if d != axis and n_idx > n_x:
                raise RuntimeError(f"gather: index {tuple(index.shape)} is larger than input "
                                   f"{tuple(x.shape)} in dim {d}")
        if index.size and (index.min() < -x.shape[axis] or index.max() >= x.shape[axis]):
            raise IndexError(f"gather: index out of range for dim {dim} of size "
                             f"{x.shape[axis]}")
        # PyTorch's gather reads only the leading index.shape block of the other dims.
        grid = list(ctx.xp.indices(index.shape, sparse=True))
        grid[axis] = index
        ctx.shape = x.shape
        ctx.save_for_backward(*grid)  # holds the caller's index: checked at backward
        return x[tuple(grid)]

    @staticmethod
    def backward(ctx: Context, g: Array) -> tuple[Array, None, None]:
        xp = ctx.xp
        grid = ctx.saved
        out = xp.zeros(ctx.shape, dtype=g.dtype)
        if xp is np:
            np.add.at(out, grid, g)
        else:  # pragma: no cover - GPU only
            import cupyx

            cupyx.scatter_add(out, grid, g)
        return out, None, None


# ---- Tensor methods and functional forms ------------------------------------------------


def reshape(self: Tensor, *shape: Any) -> Tensor:
    """A view where the strides allow one, else a copy."""
    return Reshape.apply(self, _as_sequence(shape, "reshape", "shape"))


def view(self: Tensor, *shape: Any) -> Tensor:
    """The same memory with a new shape; RuntimeError where that needs a copy."""
    return View.apply(self, _as_sequence(shape, "view", "size"))


def is_contiguous(self: Tensor) -> bool:
    return bool(self.data.flags.c_contiguous)


def contiguous(self: Tensor) -> Tensor:
    """self when already C-contiguous, else a C-ordered copy (in the graph)."""
    return self if self.data.flags.c_contiguous else Contiguous.apply(self)


def view_as(self: Tensor, other: Tensor) -> Tensor:
    return View.apply(self, other.shape)


def permute(self: Tensor, *dims: Any) -> Tensor:
    return Permute.apply(self, _as_sequence(dims, "permute", "dims"))


def transpose(self: Tensor, dim0: int, dim1: int) -> Tensor:
    n = self.ndim
    for d in (dim0, dim1):
        if not -builtins.max(n, 1) <= d < builtins.max(n, 1):
            raise IndexError(f"transpose: dim {d} is out of range for shape {self.shape}")
    if n < 2:
        return self
    dims = list(range(n))
    dims[dim0 % n], dims[dim1 % n] = dims[dim1 % n], dims[dim0 % n]
    return Permute.apply(self, tuple(dims))


def t(self: Tensor) -> Tensor:
    if self.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dims, got shape {self.shape}")
    return transpose(self, 0, 1) if self.ndim == 2 else self


def expand(self: Tensor, *shape: Any) -> Tensor:
    return Expand.apply(self, _as_sequence(shape, "expand", "size"))


def expand_as(self: Tensor, other: Tensor) -> Tensor:
    return Expand.apply(self, other.shape)


def unsqueeze(self: Tensor, dim: int) -> Tensor:
    n = self.ndim + 1
    if not -n <= dim < n:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for shape {self.shape}")
    dim %= n
    return Reshape.apply(self, self.shape[:dim] + (1,) + self.shape[dim:])


def squeeze(self: Tensor, dim: int | Sequence[int] | None = None) -> Tensor:
    if dim is None:
        shape = tuple(s for s in self.shape if s != 1)
    else:
        dims = {wrap_dim(d, self.ndim, "squeeze")
                for d in ((dim,) if isinstance(dim, int) else dim)}
        shape = tuple(s for i, s in enumerate(self.shape) if not (i in dims and s == 1))
    return Reshape.apply(self, shape)


def flatten(self: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if self.ndim == 0:
        return Reshape.apply(self, (1,))
    s, e = wrap_dim(start_dim, self.ndim, "flatten"), wrap_dim(end_dim, self.ndim, "flatten")
    if s > e:
        raise RuntimeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    n = 1
    for d in self.shape[s:e + 1]:
        n *= d
    return Reshape.apply(self, self.shape[:s] + (n,) + self.shape[e + 1:])


def split(self: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple:
    dim = wrap_dim(dim, self.ndim, "split")
    size = self.shape[dim]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0:
            raise ValueError(f"split: split_size must be positive, got {step}")
        sections = [builtins.min(step, size - i) for i in range(0, size, step)] or [0]
    else:
        sections = list(split_size_or_sections)
        if builtins.sum(sections) != size:
            raise RuntimeError(f"split: sections {sections} do not add up to {size}, the size "
                               f"of dim {dim}")
    out, start = [], 0
    lead = (slice(None),) * dim
    for n in sections:
        out.append(self[lead + (slice(start, start + n),)])
        start += n
    return tuple(out)


def chunk(self: Tensor, chunks: int, dim: int = 0) -> tuple:
    if chunks <= 0:
        raise RuntimeError(f"chunk: chunks must be positive, got {chunks}")
    size = self.shape[wrap_dim(dim, self.ndim, "chunk")]
    return split(self, -(-size // chunks) if size else 1, dim)


def gather(self: Tensor, dim: int, index: Tensor) -> Tensor:
    return Gather.apply(self, dim, index.data if isinstance(index, Tensor) else index)


def index_select(self: Tensor, dim: int, index: Tensor) -> Tensor:
    return self[(slice(None),) * wrap_dim(dim, self.ndim, "index_select") + (index,)]


def repeat(self: Tensor, *sizes: Any) -> Tensor:
    reps = _as_sequence(sizes, "repeat", "repeats")
    if len(reps) < self.ndim:
        raise RuntimeError(f"repeat: {len(reps)} repeat sizes given for a tensor with "
                           f"{self.ndim} dims; give at least one per dim")
    x = self.reshape((1,) * (len(reps) - self.ndim) + self.shape)
    out = x
    for d, r in enumerate(reps):
        if r != 1:
            out = cat([out] * r, dim=d)
    return out


def _promoted(tensors: list[Tensor]) -> list[Tensor]:
    """The tensors cast to PyTorch's result dtype of the list (float32 + int64 -> float32,
    where numpy's concatenate gives float64); the casts are graph ops, so each gradient
    comes back in its input's dtype."""
    first = tensors[0].dtype
    if all(t.dtype == first for t in tensors):
        return tensors
    dt = result_type(*tensors, default_float=get_default_dtype())
    return [t if t.dtype == dt else t.to(dt) for t in tensors]


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("cat: expected a non-empty list of tensors")
    return Cat.apply(dim, *_promoted(tensors))


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack: expected a non-empty list of tensors")
    return Stack.apply(dim, *_promoted(tensors))


def pad(x: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    if mode != "constant":
        raise NotImplementedError(f"pad: mode {mode!r} is not supported (only 'constant')")
    return Pad.apply(x, tuple(pad), value)
