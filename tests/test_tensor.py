"""The autograd engine (minitl/tensor.py, function.py, creation.py, autograd_state.py):
factories and dtypes, backward and gradient accumulation, retain_graph, no_grad, detach,
deep and diamond graphs, memory released after backward, in-place guards, conversions,
comparisons, repr, casts and device errors."""

from __future__ import annotations

import gc
import importlib.util
import threading
import tracemalloc
import weakref
from typing import Any

import numpy as np
import pytest
from helpers import check_op

import minitl as mt

HAS_CUPY = importlib.util.find_spec("cupy") is not None


# ---- factories and dtypes ----------------------------------------------------------------


@pytest.mark.parametrize("data,dtype", [
    (1.5, mt.float32), ([1.0, 2.0], mt.float32), ([[1, 2.5]], mt.float32),
    (3, mt.int64), ([1, 2, 3], mt.int64), (True, mt.bool_), ([True, False], mt.bool_),
])
def test_tensor_dtype_from_python_values(data: Any, dtype: Any) -> None:
    t = mt.tensor(data)
    assert t.dtype == dtype
    assert t.shape == np.shape(data)
    np.testing.assert_array_equal(t.numpy(), np.asarray(data))


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.uint8, np.bool_])
def test_tensor_from_numpy_array_keeps_dtype_and_copies(dtype: Any) -> None:
    src = np.arange(6).reshape(2, 3).astype(dtype)
    t = mt.tensor(src)
    assert t.dtype == dtype and t.shape == (2, 3)
    src[0, 0] = 1
    assert t.numpy()[0, 0] == 0  # mt.tensor copies


def test_tensor_from_numpy_scalar_keeps_dtype() -> None:
    assert mt.tensor(np.float64(1.5)).dtype == mt.float64
    assert mt.tensor(np.int32(3)).dtype == mt.int32


def test_from_numpy_shares_memory() -> None:
    src = np.zeros(3)
    t = mt.from_numpy(src)
    src[1] = 5.0
    assert t.tolist() == [0.0, 5.0, 0.0] and t.dtype == mt.float64
    with pytest.raises(TypeError):
        mt.from_numpy([1.0, 2.0])


def test_float64_is_allowed_and_propagates() -> None:
    x = mt.tensor([1.0, 2.0], dtype=mt.float64, requires_grad=True)
    y = (x * 2.5 + 1).exp().sum()
    assert x.dtype == y.dtype == mt.float64
    y.backward()
    assert x.grad.dtype == mt.float64


@pytest.mark.parametrize("make", [
    lambda: mt.tensor([1, 2], requires_grad=True),
    lambda: mt.zeros(2, dtype=mt.int64, requires_grad=True),
    lambda: mt.arange(3, requires_grad=True),
    lambda: mt.tensor([True], requires_grad=True),
    lambda: mt.tensor([1, 2]).requires_grad_(),
])
def test_requires_grad_on_integer_or_bool_tensor_raises(make: Any) -> None:
    with pytest.raises(RuntimeError, match="floating point"):
        make()


def test_shape_factories() -> None:
    for fn in (mt.zeros, mt.ones, mt.empty, mt.randn, mt.rand):
        for args in ((2, 3), ((2, 3),), ([2, 3],)):
            t = fn(*args)
            assert t.shape == (2, 3) and t.dtype == mt.float32, fn.__name__
        assert fn(2, dtype=mt.float64).dtype == mt.float64
        assert fn(2, requires_grad=True).requires_grad
    assert mt.zeros(2, 3).numpy().sum() == 0 and mt.ones(4).numpy().sum() == 4
    r = mt.rand(1000).numpy()
    assert 0 <= r.min() and r.max() < 1
    assert mt.zeros(0, 3).shape == (0, 3) and mt.zeros(()).shape == ()


def test_full_arange_linspace_eye_and_likes() -> None:
    assert mt.full((2, 2), 3).dtype == mt.int64
    assert mt.full((2, 2), 3.0).dtype == mt.float32
    assert mt.full((2,), True).dtype == mt.bool_
    assert mt.full((2,), 1, dtype=mt.float64).tolist() == [1.0, 1.0]
    assert mt.arange(5).dtype == mt.int64 and mt.arange(5).tolist() == [0, 1, 2, 3, 4]
    assert mt.arange(1, 7, 2).tolist() == [1, 3, 5]
    a = mt.arange(0.0, 1.0, 0.25)
    assert a.dtype == mt.float32 and a.tolist() == [0.0, 0.25, 0.5, 0.75]
    np.testing.assert_allclose(mt.linspace(0, 1, 5).numpy(), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(mt.eye(3).numpy(), np.eye(3))
    x = mt.zeros(2, 3, dtype=mt.float64)
    for like in (mt.zeros_like(x), mt.ones_like(x), mt.full_like(x, 7.0), mt.randn_like(x)):
        assert like.shape == (2, 3) and like.dtype == mt.float64 and not like.requires_grad
    assert mt.ones_like(x, dtype=mt.int64).dtype == mt.int64
    assert mt.zeros_like(x, requires_grad=True).requires_grad
    assert sorted(mt.randperm(5).tolist()) == [0, 1, 2, 3, 4]
    ri = mt.randint(2, 5, (100,))
    assert ri.dtype == mt.int64 and 2 <= ri.numpy().min() and ri.numpy().max() < 5


def test_manual_seed_makes_random_factories_reproducible() -> None:
    mt.manual_seed(123)
    a = (mt.randn(3).tolist(), mt.rand(2).tolist(), mt.randint(10, size=(4,)).tolist())
    mt.manual_seed(123)
    b = (mt.randn(3).tolist(), mt.rand(2).tolist(), mt.randint(10, size=(4,)).tolist())
    assert a == b


def test_set_default_dtype() -> None:
    old = mt.get_default_dtype()
    try:
        mt.set_default_dtype(mt.float64)
        assert mt.tensor([1.0]).dtype == mt.float64 and mt.zeros(1).dtype == mt.float64
        with pytest.raises(TypeError):
            mt.set_default_dtype(mt.int64)
    finally:
        mt.set_default_dtype(old)
    assert mt.tensor([1.0]).dtype == mt.float32


def test_int_tensor_with_python_float_gives_default_float() -> None:
    assert (mt.tensor([1, 2]) + 0.5).dtype == mt.float32
    assert (mt.tensor([1, 2]) / 2).dtype == mt.float32


# ---- backward ----------------------------------------------------------------------------


def test_grad_is_a_tensor_of_the_leaf_shape_and_dtype() -> None:
    x = mt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert x.grad is None and x.is_leaf and x.grad_fn is None
    y = (x @ x.T).relu().sum()
    assert not y.is_leaf and y.grad_fn == "SumBackward"
    y.backward()
    assert isinstance(x.grad, mt.Tensor)
    assert x.grad.shape == x.shape and x.grad.dtype == mt.float32
    assert not x.grad.requires_grad
    check_op(lambda t: (t @ t.T).relu().sum(), lambda t: (t @ t.T).relu().sum(),
             [x.numpy().astype(np.float64)])
    v = mt.tensor([1.0, 2.0], requires_grad=True)  # float32 leaf, float64 graph
    (v * mt.tensor([3.0, 4.0], dtype=mt.float64)).sum().backward()
    assert v.grad.dtype == mt.float32  # cast back to the leaf's dtype
    np.testing.assert_allclose(v.grad.numpy(), [3.0, 4.0])


def test_zero_dim_results_are_arrays() -> None:
    # Full reductions, 0-d arithmetic and scalar indexing must still give a Tensor whose
    # .numpy() works (numpy returns scalars, not 0-d arrays, from these operations).
    x = mt.tensor([1.0, 2.0])
    for out in (x.sum(), x.mean(), x[0], mt.tensor(1.0) + mt.tensor(2.0), mt.tensor(2.0).exp()):
        assert out.shape == ()
        assert isinstance(out.numpy(), np.ndarray)


def test_backward_with_explicit_gradient() -> None:
    x = mt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).backward(mt.tensor([1.0, 0.5, -1.0]))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0, -6.0])
    x.grad = None
    (x * 3).backward(np.ones(3))
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0, 3.0])
    with pytest.raises(RuntimeError, match=r"\(2,\).*\(3,\)"):
        (x * 3).backward(mt.ones(2))


def test_backward_errors_and_leaf_backward() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar outputs"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        mt.tensor([1.0]).sum().backward()
    s = mt.tensor(2.0, requires_grad=True)
    s.backward()
    assert s.grad.item() == 1.0


def test_gradients_accumulate_across_backward_calls() -> None:
    x = mt.tensor([1.0, -2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3 + 2, 3 - 4])
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3, 3])


def test_only_leaves_that_require_grad_get_grad() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    c = mt.tensor([5.0, 6.0])
    h = x * c
    (h * 2).sum().backward()
    assert h.grad is None and c.grad is None
    np.testing.assert_allclose(x.grad.numpy(), [10.0, 12.0])


def test_grad_setter_checks_type_and_shape() -> None:
    x = mt.zeros(2, requires_grad=True)
    with pytest.raises(TypeError):
        x.grad = np.zeros(2)
    with pytest.raises(RuntimeError, match=r"\(3,\).*\(2,\)"):
        x.grad = mt.zeros(3)


# ---- retain_graph ------------------------------------------------------------------------


def test_second_backward_without_retain_graph_raises() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_retain_graph_allows_a_second_backward() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    h = x.exp() * x  # Mul saves both operands
    y = h.sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    assert h._ctx.saved != () and h._ctx.parents != ()  # kept for the second call
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-6)
    assert h._ctx.saved == () and h._ctx.parents == ()


def test_shared_subgraph_is_freed_by_the_first_backward() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    h = x.exp()
    h.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        (h * 2).sum().backward()


# ---- deep and diamond graphs -------------------------------------------------------------


def test_10000_op_chain_backward_has_no_recursion_error() -> None:
    x = mt.tensor([1.0, 2.0], dtype=mt.float64, requires_grad=True)
    y = x
    for i in range(10_000):
        y = y * 1.0001 if i % 2 else y + 0.5
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 5000] * 2, rtol=1e-10)


def test_dropping_a_deep_graph_without_backward() -> None:
    x = mt.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y + 1.0
    r = weakref.ref(y)
    del y
    gc.collect()
    assert r() is None


def test_diamond_graph_accumulates() -> None:
    x = mt.tensor([1.5, -2.0], dtype=mt.float64, requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 1)
    z = mt.tensor([0.5, 3.0], dtype=mt.float64, requires_grad=True)
    (z + z + z * z).sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), 2 + 2 * z.numpy())


def test_deeper_diamond_matches_torch() -> None:
    def fn(x: Any) -> Any:
        a = x.exp()
        b = a * a
        c = b + a.tanh()
        d = (c * a).sum(0) + x.sum(0)
        return d * b[0] - a[1]

    x = np.random.default_rng(0).uniform(-1, 1, size=(3, 4))
    check_op(fn, fn, [x])


# ---- memory ------------------------------------------------------------------------------


def _train_step(params: list[mt.Tensor], x: mt.Tensor, y: mt.Tensor) -> float:
    w1, b1, w2, b2 = params
    out = (x @ w1 + b1).relu() @ w2 + b2  # (32, 4)
    loss = ((out - y) ** 2).mean()
    loss.backward()
    with mt.no_grad():
        for p in params:
            p.copy_(p - 0.01 * p.grad)
            p.grad = None
    return loss.item()


def test_memory_is_flat_across_training_steps() -> None:
    rng = np.random.default_rng(0)
    x = mt.tensor(rng.standard_normal((32, 8)).astype(np.float32))
    y = mt.tensor(rng.standard_normal((32, 4)).astype(np.float32))
    params = [mt.tensor(0.1 * rng.standard_normal(s).astype(np.float32), requires_grad=True)
              for s in ((8, 16), (16,), (16, 4), (4,))]
    tracemalloc.start()
    try:
        losses = [_train_step(params, x, y) for _ in range(50)]
        gc.collect()
        after_50 = tracemalloc.get_traced_memory()[0]
        losses += [_train_step(params, x, y) for _ in range(150)]
        gc.collect()
        after_200 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert losses[-1] < losses[0]  # it trains
    # One leaked activation per step would be 150 * 2 KiB here.
    assert after_200 - after_50 < 64 * 1024, (after_50, after_200)


def test_backward_releases_saved_arrays() -> None:
    x = mt.tensor(np.random.default_rng(0).standard_normal((4, 5)), requires_grad=True)
    h = (x * 2).tanh()  # Tanh saves its output array
    ref = weakref.ref(h.data)
    ctx = h._ctx
    loss = h.sum()
    del h
    gc.collect()
    assert ref() is not None and ctx.saved != ()  # alive: the graph still needs it
    loss.backward()
    gc.collect()
    assert ctx.saved == () and ctx.parents == ()
    assert ref() is None


# ---- grad mode ---------------------------------------------------------------------------


def test_no_grad_context_records_nothing() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    assert mt.is_grad_enabled()
    with mt.no_grad():
        assert not mt.is_grad_enabled()
        y = (x * 2).exp().sum()
    assert mt.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    with pytest.raises(ValueError), mt.no_grad():  # the mode is restored after an exception
        raise ValueError("boom")
    assert mt.is_grad_enabled()



def test_no_grad_decorator() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)

    @mt.no_grad()
    def f(t: mt.Tensor) -> mt.Tensor:
        """docstring kept"""
        return t * 2

    assert not f(x).requires_grad
    assert f.__doc__ == "docstring kept" and f.__name__ == "f"
    assert mt.is_grad_enabled() and (x * 2).requires_grad


def test_no_grad_decorator_without_parentheses() -> None:
    @mt.no_grad
    def f(t: mt.Tensor) -> mt.Tensor:
        return t * 2

    assert not f(mt.tensor([1.0], requires_grad=True)).requires_grad


def test_enable_grad_inside_no_grad_and_set_grad_enabled() -> None:
    x = mt.tensor([1.0], requires_grad=True)
    with mt.no_grad():
        with mt.enable_grad():
            assert (x * 2).requires_grad
        assert not (x * 2).requires_grad
    mt.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        mt.set_grad_enabled(True)
    assert (x * 2).requires_grad


def test_grad_mode_is_per_thread() -> None:
    seen = []
    with mt.no_grad():
        t = threading.Thread(target=lambda: seen.append(mt.is_grad_enabled()))
        t.start()
        t.join()
    assert seen == [True]


# ---- detach / requires_grad --------------------------------------------------------------


def test_detach_shares_data_and_stops_gradient() -> None:
    x = mt.tensor([1.0, 3.0], requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    assert np.shares_memory(d.numpy(), x.numpy())
    (x * x.detach()).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 3.0])  # not 2x


def test_requires_grad_setter() -> None:
    x = mt.zeros(2)
    assert x.requires_grad_() is x and x.requires_grad
    y = x * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad = False
    x.requires_grad = False
    assert not (x * 2).requires_grad


def test_clone_stays_in_graph() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    c = x.clone()
    assert not np.shares_memory(c.numpy(), x.numpy())
    (c * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


# ---- in-place guards ---------------------------------------------------------------------

INPLACE = {
    "zero_": lambda t: t.zero_(),
    "fill_": lambda t: t.fill_(1.0),
    "copy_": lambda t: t.copy_(mt.ones(2)),
    "setitem": lambda t: t.__setitem__(0, 5.0),
}


@pytest.mark.parametrize("op", list(INPLACE))
def test_inplace_on_tensor_requiring_grad_raises(op: str) -> None:
    leaf = mt.zeros(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        INPLACE[op](leaf)
    with pytest.raises(RuntimeError, match="in-place"):
        INPLACE[op](leaf * 2)


@pytest.mark.parametrize("op", list(INPLACE))
def test_inplace_allowed_under_no_grad_and_on_plain_tensors(op: str) -> None:
    leaf = mt.full((2,), 3.0, requires_grad=True)
    with mt.no_grad():
        INPLACE[op](leaf)
    assert leaf.tolist() != [3.0, 3.0]
    plain = mt.full((2,), 3.0)
    INPLACE[op](plain)
    assert plain.tolist() != [3.0, 3.0]


def test_copy_and_setitem_values() -> None:
    x = mt.zeros(2, 3)
    x.copy_(mt.tensor([1.0, 2.0, 3.0]))  # broadcast
    assert x.tolist() == [[1, 2, 3], [1, 2, 3]]
    x[mt.tensor([True, False])] = mt.tensor(7.0)
    assert x.tolist() == [[7, 7, 7], [1, 2, 3]]
    with pytest.raises(RuntimeError, match=r"\(4,\).*\(2, 3\)"):
        x.copy_(mt.zeros(4))


# ---- conversions -------------------------------------------------------------------------


def test_item_tolist_numpy() -> None:
    f = mt.tensor([2.5])
    assert f.item() == 2.5 and isinstance(f.item(), float)
    i = mt.tensor([[7]])
    assert i.item() == 7 and isinstance(i.item(), int)
    assert isinstance(mt.tensor(True).item(), bool)
    with pytest.raises((ValueError, RuntimeError), match="2 elements"):
        mt.tensor([1.0, 2.0]).item()
    t = mt.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]] and mt.tensor(3).tolist() == 3
    arr = t.numpy()
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(t), arr)
    assert float(mt.tensor(1.5)) == 1.5 and int(mt.tensor(4)) == 4
    assert bool(mt.tensor([1.0])) is True
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(mt.tensor([1.0, 2.0]))


def test_shape_helpers() -> None:
    t = mt.zeros(2, 3, 4)
    assert t.shape == (2, 3, 4) and t.size() == (2, 3, 4) and t.size(1) == 3
    assert t.ndim == t.dim() == 3 and t.numel() == 24 and len(t) == 2
    assert [s.shape for s in t] == [(3, 4), (3, 4)]
    with pytest.raises(TypeError):
        len(mt.tensor(1.0))


# ---- comparisons -------------------------------------------------------------------------

COMPARE = ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"]


@pytest.mark.parametrize("op", COMPARE)
def test_comparisons_return_bool_tensors(op: str) -> None:
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    x = mt.tensor(a, requires_grad=True)
    for other, ref in ((mt.tensor(b), b), (2.0, 2.0), (2, 2)):
        out = getattr(x, op)(other)
        assert isinstance(out, mt.Tensor) and out.dtype == mt.bool_
        assert not out.requires_grad
        np.testing.assert_array_equal(out.numpy(), getattr(a, op)(ref))


def test_logical_ops_on_bool_tensors() -> None:
    p, q = mt.tensor([True, True, False]), mt.tensor([True, False, False])
    assert (p & q).tolist() == [True, False, False]
    assert (p | q).tolist() == [True, True, False]
    assert (p ^ q).tolist() == [False, True, False]
    assert (~p).tolist() == [False, False, True]
    assert ((mt.tensor([1.0, 5.0]) > 2) & (mt.tensor([1.0, 5.0]) < 9)).tolist() == [False, True]


# ---- repr --------------------------------------------------------------------------------


def test_repr() -> None:
    assert repr(mt.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(mt.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(mt.tensor([1.0], requires_grad=True)) == "tensor([1.], requires_grad=True)"
    assert repr(mt.tensor([1.0], dtype=mt.float64)) == "tensor([1.], dtype=minitl.float64)"
    assert repr(mt.tensor([1.0], requires_grad=True) * 2) == "tensor([2.], grad_fn=<MulBackward>)"
    assert repr(mt.tensor(2.5)) == "tensor(2.5)"
    assert "\n" in repr(mt.zeros(2, 2))


# ---- casts and devices -------------------------------------------------------------------


def test_to_dtype_and_gradient_flows_back() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    y = x.to(mt.float64)
    assert y.dtype == mt.float64 and y.grad_fn == "CastBackward"
    (y * y).sum().backward()
    assert x.grad.dtype == mt.float32
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
    assert x.to(mt.float32) is x and x.to("cpu") is x and x.cpu() is x
    assert x.to(dtype=mt.float64).dtype == mt.float64
    assert x.to("cpu", mt.float64).dtype == mt.float64
    assert x.to(mt.zeros(1, dtype=mt.float64)).dtype == mt.float64
    assert x.double().dtype == mt.float64 and x.double().float().dtype == mt.float32
    assert x.long().dtype == mt.int64 and x.long().tolist() == [1, 2]
    assert mt.tensor([0.0, 2.0]).bool().tolist() == [False, True]
    assert x.type_as(mt.zeros(1, dtype=mt.float64)).dtype == mt.float64
    with pytest.raises(TypeError):
        x.to(mt.float64, copy=True)


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed; the error path cannot be reached")
def test_cuda_without_cupy_raises_a_clear_error() -> None:
    x = mt.zeros(2)
    with pytest.raises(RuntimeError, match="CuPy"):
        x.to("cuda")
    with pytest.raises(RuntimeError, match="CuPy"):
        x.cuda()
    with pytest.raises(RuntimeError, match="CuPy"):
        mt.zeros(2, device="cuda")


def test_device_is_cpu_and_unknown_devices_raise() -> None:
    x = mt.zeros(2)
    assert x.device == "cpu" and x.device.type == "cpu"
    assert "device" not in repr(x)
    with pytest.raises(ValueError, match="tpu"):
        x.to("tpu")
