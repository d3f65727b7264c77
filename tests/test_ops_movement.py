"""Movement and indexing ops (minitl/ops/movement.py): reshape/view, permute, transpose, t,
expand, unsqueeze/squeeze, flatten, getitem (basic, integer-array and boolean), split,
chunk, cat, stack, pad, gather, index_select and repeat. Float64 central differences on
hypothesis-drawn shapes, parity with PyTorch, and the errors bad dims and shapes raise."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import check_op, gradcheck
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt
from minitl.ops.movement import pad

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # parity tests skip through check_op
    torch = TF = None

MAX_NUMEL = 150
FAST = settings(max_examples=12)


# ---- strategies --------------------------------------------------------------------------


@st.composite
def shapes(draw: Any, min_rank: int = 0, max_rank: int = 4, max_side: int = 5) -> tuple:
    """A shape with sides 1..max_side and at most MAX_NUMEL elements."""
    rank = draw(st.integers(min_rank, max_rank))
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=rank, max_size=rank)))
    while int(np.prod(shape)) > MAX_NUMEL:
        i = shape.index(max(shape))
        shape = shape[:i] + (shape[i] - 1,) + shape[i + 1:]
    return shape


def _values(draw: Any, shape: tuple) -> np.ndarray:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1))).uniform(-2, 2, size=shape)


def _both(fn: Callable[[Any], Any], x: np.ndarray) -> None:
    """Finite differences and PyTorch parity for a one-input op written for both libraries."""
    gradcheck(fn, [x])
    check_op(fn, fn, [x])


def _shape_re(shape: tuple) -> str:
    return re.escape(str(tuple(shape)))


# ---- reshape / view ----------------------------------------------------------------------

TARGETS: dict[str, Callable[[tuple], tuple]] = {
    "flat": lambda s: (-1,),
    "reversed": lambda s: tuple(reversed(s)),
    "first_then_rest": lambda s: (s[0], -1) if s else (1, -1),
    "padded_ones": lambda s: (1, *s, 1),
    "rest_then_last": lambda s: (-1, s[-1]) if s else (-1,),
}


@pytest.mark.parametrize("method", ["reshape", "view"])
@FAST
@given(data=st.data())
def test_reshape_and_view_with_minus_one(method: str, data: Any) -> None:
    shape = data.draw(shapes())
    target = TARGETS[data.draw(st.sampled_from(sorted(TARGETS)))](shape)
    x = _values(data.draw, shape)
    _both(lambda t: getattr(t, method)(target), x)
    if target:  # torch's view() needs at least one positional size
        _both(lambda t: getattr(t, method)(*target), x)


def test_view_as_and_expand_as() -> None:
    x, y = np.arange(6.0).reshape(2, 3), np.zeros((3, 2))
    check_op(lambda a, b: a.view_as(b), lambda a, b: a.view_as(b), [x, y])
    check_op(lambda a, b: a[:1].expand_as(b.T), lambda a, b: a[:1].expand_as(b.T), [x, y])


@pytest.mark.parametrize("bad", [(4, 2), (-1, 4), (-1, -1)])
def test_reshape_invalid_shape_names_it(bad: tuple) -> None:
    with pytest.raises(RuntimeError, match=re.escape(str(bad))):
        mt.zeros(2, 3).reshape(*bad)


# ---- permute / transpose / t -------------------------------------------------------------


@FAST
@given(data=st.data())
def test_permute(data: Any) -> None:
    shape = data.draw(shapes())
    perm = data.draw(st.permutations(range(len(shape))))
    perm = [p - len(shape) if data.draw(st.booleans()) else p for p in perm]
    x = _values(data.draw, shape)
    _both(lambda t: t.permute(perm), x)
    if perm:  # torch's permute() needs at least one positional dim
        _both(lambda t: t.permute(*perm), x)


@FAST
@given(data=st.data())
def test_transpose(data: Any) -> None:
    shape = data.draw(shapes(min_rank=1))
    d0, d1 = (data.draw(st.integers(-len(shape), len(shape) - 1)) for _ in range(2))
    _both(lambda t: t.transpose(d0, d1), _values(data.draw, shape))


@pytest.mark.parametrize("shape", [(3, 4), (4,), ()])
def test_t_and_T(shape: tuple) -> None:
    x = np.random.default_rng(0).standard_normal(shape)
    _both(lambda t: t.t(), x)
    if len(shape) == 2:
        _both(lambda t: t.T, x)
    gradcheck(lambda t: t.T, [x])  # torch deprecates .T off 2-D; numpy is the reference
    np.testing.assert_array_equal(mt.tensor(x).T.numpy(), x.T)


def test_T_reverses_all_dims_like_numpy() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    np.testing.assert_array_equal(mt.tensor(x).T.numpy(), x.T)
    gradcheck(lambda t: t.T, [x])


def test_mT_on_batched() -> None:
    _both(lambda t: t.mT, np.random.default_rng(0).standard_normal((2, 3, 4)))


# ---- expand ------------------------------------------------------------------------------

EXPANDS = [((1, 3), (4, 3)), ((3, 1), (3, 5)), ((2,), (3, 4, 2)), ((3, 1), (-1, 4)),
           ((3, 1), (2, -1, 4)), ((1, 1), (2, 3)), ((), (2, 3)), ((2, 3), (2, 3))]


@pytest.mark.parametrize("src,target", EXPANDS, ids=[f"{a}->{b}" for a, b in EXPANDS])
def test_expand(src: tuple, target: tuple) -> None:
    x = np.random.default_rng(0).standard_normal(src)
    _both(lambda t: t.expand(*target), x)
    _both(lambda t: t.expand(target), x)


def test_expand_errors() -> None:
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        mt.zeros(2, 3).expand(4, 3)
    with pytest.raises(RuntimeError):
        mt.zeros(2, 3).expand(3)


def test_expand_minus_one_in_new_leading_dim_raises_clearly() -> None:
    # torch: "The expanded size of the tensor (-1) isn't allowed in a leading, non-existing
    # dimension"; a RuntimeError naming the shapes, not numpy's broadcast ValueError.
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        mt.zeros(2, 3).expand(-1, 2, 3)


# ---- unsqueeze / squeeze / flatten -------------------------------------------------------


@FAST
@given(data=st.data())
def test_unsqueeze(data: Any) -> None:
    shape = data.draw(shapes())
    dim = data.draw(st.integers(-len(shape) - 1, len(shape)))
    _both(lambda t: t.unsqueeze(dim), _values(data.draw, shape))


@FAST
@given(data=st.data())
def test_squeeze(data: Any) -> None:
    shape = data.draw(shapes(max_side=2))  # many size-1 axes
    n = len(shape)
    dim = data.draw(st.one_of(st.none(), st.integers(-n, n - 1) if n else st.none(),
                              st.lists(st.integers(0, n - 1), unique=True, min_size=1)
                              .map(tuple) if n else st.none()))
    x = _values(data.draw, shape)
    _both((lambda t: t.squeeze()) if dim is None else (lambda t: t.squeeze(dim)), x)


@FAST
@given(data=st.data())
def test_flatten(data: Any) -> None:
    shape = data.draw(shapes(min_rank=1))
    n = len(shape)
    s = data.draw(st.integers(0, n - 1))
    e = data.draw(st.integers(s, n - 1))
    s, e = (s - n if data.draw(st.booleans()) else s), (e - n if data.draw(st.booleans()) else e)
    x = _values(data.draw, shape)
    _both(lambda t: t.flatten(s, e), x)
    _both(lambda t: t.flatten(), x)


def test_flatten_0d() -> None:
    _both(lambda t: t.flatten(), np.array(3.0))


# ---- getitem -----------------------------------------------------------------------------

MASK0 = np.array([True, False, True, True])
MASK01 = np.random.default_rng(9).random((4, 5)) > 0.5
MASK_FULL = np.random.default_rng(8).random((4, 5, 6)) > 0.5

# id -> index builder; T turns a numpy index array into the library's tensor
INDEXES: dict[str, Callable[[Callable], Any]] = {
    "int": lambda T: 1,
    "neg_int": lambda T: -1,
    "slice": lambda T: slice(1, 3),
    "step": lambda T: slice(None, None, 2),
    "slices_steps_negative_bounds": lambda T: (slice(1, None, 2), slice(None), slice(-4, -1)),
    "ellipsis_int": lambda T: (Ellipsis, 1),
    "none": lambda T: (None, 1, Ellipsis, None),
    "none_mid": lambda T: (slice(None), None, 2),
    "int_list_repeats": lambda T: [0, 0, 2, 0],
    "int_array_repeats": lambda T: T(np.array([3, 0, 3, 3])),
    "neg_int_array": lambda T: T(np.array([-1, -4, -1])),
    "2d_int_array": lambda T: T(np.array([[0, 1], [1, 1]])),
    "two_arrays": lambda T: ([0, 2, 2], [1, 1, 4]),
    "array_second_axis": lambda T: (slice(None), T(np.array([1, 1, 3]))),
    "int_array_slice_mixed": lambda T: (1, [0, 2, 0], slice(None, None, 2)),
    "ellipsis_array": lambda T: (Ellipsis, [0, 0, 5]),
    "0d_tensor": lambda T: T(np.array(2)),
    "bool_first_axis": lambda T: T(MASK0),
    "bool_two_axes_then_slice": lambda T: (T(MASK01), slice(0, 4, 3)),
    "bool_full": lambda T: T(MASK_FULL),
    "slice_then_bool": lambda T: (slice(1, 3), T(np.array([True, False, False, True, True]))),
}


def _indexer(key: str) -> Callable[[Any], Any]:
    def fn(t: Any) -> Any:
        conv = mt.tensor if isinstance(t, mt.Tensor) else torch.from_numpy
        return t[INDEXES[key](conv)]

    return fn


@pytest.mark.parametrize("key", list(INDEXES))
def test_getitem_matches_torch_and_gradcheck(key: str) -> None:
    x = np.random.default_rng(0).standard_normal((4, 5, 6))
    _both(_indexer(key), x)


@pytest.mark.parametrize("index", [(slice(None, None, -1),), (slice(None), slice(None, None, -2)),
                                   (slice(3, 0, -1), 0)])
def test_getitem_negative_steps_match_numpy(index: tuple) -> None:
    # torch has no negative steps; numpy is the reference here.
    x = np.random.default_rng(0).standard_normal((4, 5, 6))
    np.testing.assert_array_equal(mt.tensor(x)[index].numpy(), x[index])
    gradcheck(lambda t: t[index], [x])


def test_getitem_repeated_indices_scatter_add() -> None:
    x = mt.tensor(np.zeros((4, 2)), requires_grad=True)
    x[[0, 0, 3, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[3, 3], [0, 0], [0, 0], [1, 1]])
    y = mt.tensor(np.zeros(5), requires_grad=True)
    y[mt.tensor([[1, 1], [4, 1]])].sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [0, 3, 0, 0, 1])


def test_getitem_errors() -> None:
    x = mt.zeros(4, 5)
    with pytest.raises(IndexError, match=r"\(4, 5\)"):
        x[4]
    with pytest.raises(IndexError):
        x[:, [0, 7]]
    with pytest.raises(IndexError, match="integer or bool"):
        x[mt.tensor([0.0, 1.0])]


# ---- split / chunk -----------------------------------------------------------------------

SPLITS = [(2, 0), (2, 1), (3, -1), (5, 1), ([1, 3], 0), ([2, 0, 3], 1), ([6], -1), (1, 2)]


@pytest.mark.parametrize("arg,dim", SPLITS, ids=[f"{a}-d{d}" for a, d in SPLITS])
def test_split(arg: Any, dim: int) -> None:
    x = np.random.default_rng(0).standard_normal((4, 5, 6))
    if isinstance(arg, list) and sum(arg) != x.shape[dim]:
        arg = arg[:-1] + [x.shape[dim] - sum(arg[:-1])]
    _both(lambda t: t.split(arg, dim), x)
    _both(lambda t: t.split(arg, dim=dim), x)
    if torch is not None:
        check_op(lambda t: mt.split(t, arg, dim), lambda t: torch.split(t, arg, dim), [x])


@pytest.mark.parametrize("chunks,dim", [(2, 0), (3, 1), (4, -1), (6, 1), (1, 0)])
def test_chunk(chunks: int, dim: int) -> None:
    x = np.random.default_rng(0).standard_normal((4, 5, 6))
    _both(lambda t: t.chunk(chunks, dim), x)
    if torch is not None:
        check_op(lambda t: mt.chunk(t, chunks, dim), lambda t: torch.chunk(t, chunks, dim), [x])


def test_split_errors() -> None:
    with pytest.raises(RuntimeError, match=r"\[1, 2\].*2"):
        mt.zeros(3, 2).split([1, 2], dim=1)
    with pytest.raises(ValueError):
        mt.zeros(3).split(0)


# ---- cat / stack -------------------------------------------------------------------------


def _cat(dim: int) -> Callable[..., Any]:
    def fn(*ts: Any) -> Any:
        return mt.cat(list(ts), dim) if isinstance(ts[0], mt.Tensor) else torch.cat(ts, dim)

    return fn


def _stack(dim: int) -> Callable[..., Any]:
    def fn(*ts: Any) -> Any:
        return (mt.stack(list(ts), dim=dim) if isinstance(ts[0], mt.Tensor)
                else torch.stack(ts, dim=dim))

    return fn


@FAST
@given(data=st.data())
def test_cat(data: Any) -> None:
    base = data.draw(shapes(min_rank=1, max_rank=3, max_side=4))
    dim = data.draw(st.integers(-len(base), len(base) - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    xs = [_values(data.draw, base[:dim % len(base)] + (n,) + base[dim % len(base) + 1:])
          for n in sizes]
    gradcheck(_cat(dim), xs)
    check_op(_cat(dim), _cat(dim), xs)


def test_cat_input_without_grad() -> None:
    rng = np.random.default_rng(0)
    a, b, c = rng.standard_normal((2, 3)), rng.standard_normal((1, 3)), rng.standard_normal((2, 3))
    gradcheck(_cat(0), [a, b, c], wrt=[0, 2])


@FAST
@given(data=st.data())
def test_stack(data: Any) -> None:
    base = data.draw(shapes(max_rank=3, max_side=4))
    dim = data.draw(st.integers(-len(base) - 1, len(base)))
    xs = [_values(data.draw, base) for _ in range(data.draw(st.integers(1, 3)))]
    gradcheck(_stack(dim), xs)
    check_op(_stack(dim), _stack(dim), xs)


def test_cat_and_stack_shape_errors_name_both_shapes() -> None:
    with pytest.raises(RuntimeError, match=r"\(2, 3\).*\(4, 5\)"):
        mt.cat([mt.zeros(2, 3), mt.zeros(4, 5)])
    with pytest.raises(RuntimeError, match=r"\(2, 3\).*\(2, 3, 1\)"):
        mt.cat([mt.zeros(2, 3), mt.zeros(2, 3, 1)], dim=0)
    with pytest.raises(RuntimeError, match=r"\(2, 3\).*\(3, 2\)"):
        mt.stack([mt.zeros(2, 3), mt.zeros(3, 2)])
    with pytest.raises(RuntimeError, match="non-empty"):
        mt.cat([])


# ---- pad / gather / index_select / repeat ------------------------------------------------

PADS = [((1, 2), 0.0), ((0, 1, 2, 0), -1.5), ((1, 1, 1, 1, 1, 1), 2.0), ((0, 0), 0.0),
        ((3, 0, 0, 0), 0.0)]


@pytest.mark.parametrize("widths,value", PADS, ids=[str(p) for p, _ in PADS])
def test_pad_matches_torch(widths: tuple, value: float) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    gradcheck(lambda t: pad(t, widths, value=value), [x])
    check_op(lambda t: pad(t, widths, value=value),
             lambda t: TF.pad(t, widths, value=value), [x])


def test_pad_errors() -> None:
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        pad(mt.zeros(2, 3), (1, 1, 1, 1, 1, 1))
    with pytest.raises(NotImplementedError, match="reflect"):
        pad(mt.zeros(2, 3), (1, 1), mode="reflect")


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_gather_with_repeated_indices(dim: int) -> None:
    rng = np.random.default_rng(dim % 3)
    x = rng.standard_normal((3, 4, 5))
    shape = list(x.shape)
    shape[dim] = 6  # more picks than the axis holds, so indices repeat
    index = rng.integers(0, x.shape[dim], size=shape)
    def fn(t: Any, i: Any) -> Any:
        return t.gather(dim, i)

    gradcheck(fn, [x, index])
    check_op(fn, fn, [x, index])
    check_op(lambda t, i: mt.gather(t, dim, i), lambda t, i: torch.gather(t, dim, i), [x, index])


def test_gather_index_smaller_than_input_on_other_dims() -> None:
    # torch allows index.size(d) <= input.size(d) for d != dim; the output has index's shape.
    x = np.random.default_rng(0).standard_normal((3, 4))
    for index in (np.array([[0, 1], [2, 3]]), np.array([[3, 0]])):
        check_op(lambda t, i: t.gather(1, i), lambda t, i: t.gather(1, i), [x, index])


def test_gather_errors() -> None:
    with pytest.raises(RuntimeError, match="integer"):
        mt.zeros(2, 3).gather(1, mt.zeros(2, 3))
    with pytest.raises(RuntimeError, match="same number of dims"):
        mt.zeros(2, 3).gather(1, mt.tensor([0, 1]))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_index_select_with_repeats(dim: int) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    index = np.array([2, 0, 2, 1, 2])

    def fn(t: Any, i: Any) -> Any:
        return t.index_select(dim, i)

    gradcheck(fn, [x, index])
    check_op(fn, fn, [x, index])


@pytest.mark.parametrize("sizes", [(2, 1), (1, 3), (2, 2), (3, 1, 2), (1, 1, 1, 2), (1, 1)])
def test_repeat(sizes: tuple) -> None:
    _both(lambda t: t.repeat(*sizes), np.random.default_rng(0).standard_normal((2, 3)))


def test_repeat_with_fewer_sizes_than_dims_raises() -> None:
    with pytest.raises(RuntimeError):
        mt.zeros(2, 3).repeat(2)


# ---- dims out of range raise IndexError (as in torch) ------------------------------------

BAD_DIMS: dict[str, Callable[[Any], Any]] = {
    "transpose": lambda x: x.transpose(0, 2),
    "unsqueeze": lambda x: x.unsqueeze(3),
    "unsqueeze_neg": lambda x: x.unsqueeze(-4),
    "split": lambda x: x.split(1, dim=2),
    "chunk": lambda x: x.chunk(2, dim=-3),
    "cat": lambda x: mt.cat([x, x], dim=2),
    "cat_neg": lambda x: mt.cat([x, x], dim=-3),
    "stack": lambda x: mt.stack([x, x], dim=3),
    "stack_neg": lambda x: mt.stack([x, x], dim=-4),
    "permute": lambda x: x.permute(0, 2),
    "squeeze": lambda x: x.squeeze(2),
    "flatten": lambda x: x.flatten(0, 2),
    "gather": lambda x: x.gather(2, mt.zeros(2, 3, dtype=mt.int64)),
    "index_select": lambda x: x.index_select(2, mt.tensor([0])),
}


@pytest.mark.parametrize("op", list(BAD_DIMS))
def test_dim_out_of_range_raises_index_error(op: str) -> None:
    with pytest.raises(IndexError):
        BAD_DIMS[op](mt.zeros(2, 3))
