"""PyTorch names around the autograd engine and the runtime: mt.autograd.grad,
Tensor.retain_grad, mt.autograd.gradcheck, mt.inference_mode, mt.set_num_threads /
get_num_threads, mt.device and mt.cuda.is_available, against torch where it has them."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import requires_torch, torch

import minitl as mt
from minitl import nn
from minitl.autograd import GradcheckError
from minitl.function import Context, Function

# ---- a small graph built the same way in both libraries ---------------------------------

def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(3, 4)), "w": rng.normal(size=(4, 2)), "b": rng.normal(size=2)}


def _graph(lib, x, w, b):
    """h = tanh(x @ w + b) (a non-leaf), y = sum(h^2 * sigmoid(x[:, :2])), z = mean(h)."""
    h = (x @ w + b).tanh()
    y = (h * h * x[:, :2].sigmoid()).sum()
    z = h.mean()
    return h, y, z


def _leaves(lib, arrays, requires_grad=True):
    make = (lambda a: mt.tensor(a, requires_grad=requires_grad)) if lib is mt else \
        (lambda a: torch.tensor(a, requires_grad=requires_grad))
    return [make(arrays[k]) for k in ("x", "w", "b")]


def _np(t) -> np.ndarray:
    return t.detach().numpy()


@requires_torch
def test_grad_matches_torch_and_leaves_dot_grad_alone() -> None:
    arrays = _arrays()
    mx, mw, mb = _leaves(mt, arrays)
    tx, tw, tb = _leaves(torch, arrays)
    mh, my, _ = _graph(mt, mx, mw, mb)
    th, ty, _ = _graph(torch, tx, tw, tb)
    ours = mt.autograd.grad(my, [mx, mw, mb, mh])  # a non-leaf among the inputs
    theirs = torch.autograd.grad(ty, [tx, tw, tb, th])
    assert len(ours) == 4
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.numpy(), t.numpy(), rtol=1e-10, atol=1e-12)
    assert all(t.grad is None for t in (mx, mw, mb))


@requires_torch
def test_grad_with_several_outputs_and_grad_outputs_matches_torch() -> None:
    arrays = _arrays(1)
    mx, mw, mb = _leaves(mt, arrays)
    tx, tw, tb = _leaves(torch, arrays)
    mh, my, mz = _graph(mt, mx, mw, mb)
    th, ty, tz = _graph(torch, tx, tw, tb)
    gh = np.random.default_rng(2).normal(size=(3, 2))
    ours = mt.autograd.grad([mh, my, mz], [mw, mx], grad_outputs=[mt.tensor(gh), None,
                                                                  mt.tensor(0.5)])
    theirs = torch.autograd.grad([th, ty, tz], [tw, tx], grad_outputs=[torch.tensor(gh), None,
                                                                         torch.tensor(0.5)])
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.numpy(), t.numpy(), rtol=1e-10, atol=1e-12)


def test_grad_equals_backward_and_retain_graph() -> None:
    arrays = _arrays(3)
    x, w, b = _leaves(mt, arrays)
    _, y, _ = _graph(mt, x, w, b)
    gx, gw = mt.autograd.grad(y, [x, w], retain_graph=True)
    y.backward()  # the graph survived the first call
    np.testing.assert_allclose(gx.numpy(), x.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gw.numpy(), w.grad.numpy(), rtol=1e-12)
    _, y2, _ = _graph(mt, x, w, b)
    mt.autograd.grad(y2, [x])
    with pytest.raises(RuntimeError, match="second time"):
        mt.autograd.grad(y2, [x])


def test_grad_unused_inputs_and_errors() -> None:
    arrays = _arrays(4)
    x, w, b = _leaves(mt, arrays)
    other = mt.ones(3, dtype=mt.float64, requires_grad=True)
    _, y, _ = _graph(mt, x, w, b)
    with pytest.raises(RuntimeError, match="allow_unused"):
        mt.autograd.grad(y, [x, other], retain_graph=True)
    gx, gother = mt.autograd.grad(y, [x, other], retain_graph=True, allow_unused=True)
    assert gother is None and gx.shape == x.shape
    _, gz = mt.autograd.grad(y, [x, other], retain_graph=True, materialize_grads=True)
    assert gz.shape == other.shape and not gz.numpy().any()
    with pytest.raises(RuntimeError, match="does not require grad"):
        mt.autograd.grad(y, [mt.ones(2)], retain_graph=True)
    h, _, _ = _graph(mt, x, w, b)
    with pytest.raises(RuntimeError, match="scalar outputs"):
        mt.autograd.grad(h, [x])
    with pytest.raises(NotImplementedError):
        mt.autograd.grad(y, [x], create_graph=True)


@requires_torch
def test_retain_grad_matches_torch() -> None:
    arrays = _arrays(5)
    mx, mw, mb = _leaves(mt, arrays)
    tx, tw, tb = _leaves(torch, arrays)
    mh, my, _ = _graph(mt, mx, mw, mb)
    th, ty, _ = _graph(torch, tx, tw, tb)
    mh.retain_grad()
    th.retain_grad()
    mx.retain_grad()  # a leaf: nothing changes
    assert mh.retains_grad and not mx.retains_grad
    my.backward()
    ty.backward()
    np.testing.assert_allclose(mh.grad.numpy(), th.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-10)


def test_non_leaf_without_retain_grad_has_no_grad() -> None:
    x, w, b = _leaves(mt, _arrays(6))
    h, y, _ = _graph(mt, x, w, b)
    y.backward()
    assert h.grad is None and x.grad is not None
    with pytest.raises(RuntimeError, match="requires_grad=False"):
        mt.ones(2).retain_grad()


# ---- gradcheck --------------------------------------------------------------------------

class _WrongSquare(Function):
    """y = x^2 with a deliberately wrong gradient (x instead of 2x)."""

    @staticmethod
    def forward(ctx: Context, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Context, g):
        (x,) = ctx.saved
        return g * x


def test_gradcheck_passes_on_the_op_set() -> None:
    x, w, b = _leaves(mt, _arrays(7))
    assert mt.autograd.gradcheck(lambda x, w, b: _graph(mt, x, w, b), (x, w, b))
    assert x.grad is None  # gradcheck itself leaves .grad alone


def test_gradcheck_reports_the_worst_mismatch() -> None:
    x = mt.tensor(np.linspace(0.5, 2.0, 6).reshape(2, 3), requires_grad=True)
    with pytest.raises(GradcheckError, match="Jacobian mismatch for output 0 with respect to "
                                             "input 0: worst at output element 5, input "
                                             "element 5"):
        mt.autograd.gradcheck(_WrongSquare.apply, (x,))
    assert mt.autograd.gradcheck(_WrongSquare.apply, (x,), raise_exception=False) is False
    with pytest.raises(ValueError, match="require gradient"):
        mt.autograd.gradcheck(lambda a: a * 2, (mt.ones(2, dtype=mt.float64),))


@requires_torch
def test_gradcheck_agrees_with_torch() -> None:
    arrays = _arrays(8)
    assert mt.autograd.gradcheck(lambda *a: _graph(mt, *a), tuple(_leaves(mt, arrays)))
    assert torch.autograd.gradcheck(lambda *a: _graph(torch, *a),
                                    tuple(_leaves(torch, arrays)))
    # x * x.detach() has gradient x where x^2 has 2x: both libraries must reject it
    x = np.linspace(0.5, 2.0, 6)
    assert not mt.autograd.gradcheck(lambda a: a * a.detach(),
                                     (mt.tensor(x, requires_grad=True),), raise_exception=False)
    assert not torch.autograd.gradcheck(lambda a: a * a.detach(),
                                        (torch.tensor(x, requires_grad=True),),
                                        raise_exception=False)


# ---- inference_mode -----------------------------------------------------------------------

def test_inference_mode_context_and_decorators() -> None:
    w = mt.ones(3, requires_grad=True)
    with mt.inference_mode():
        y = w * 2
        assert mt.is_inference_mode_enabled() and not mt.is_grad_enabled()
    assert not y.requires_grad and mt.is_grad_enabled() and not mt.is_inference_mode_enabled()

    @mt.inference_mode
    def bare(t):
        return t * 2

    @mt.inference_mode()
    def called(t):
        return t * 2

    @mt.inference_mode(False)
    def off(t):
        return t * 2

    assert not bare(w).requires_grad and not called(w).requires_grad
    assert off(w).requires_grad and bare.__name__ == "bare"
    with mt.no_grad(), mt.inference_mode(False):  # mode=False leaves grad mode alone
        assert not mt.is_grad_enabled()
    assert (w * 2).requires_grad


@requires_torch
def test_inference_mode_requires_grad_like_torch() -> None:
    w, tw = mt.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    for mode in (True, False):
        with mt.inference_mode(mode):
            ours = (w * 2).requires_grad
        with torch.inference_mode(mode):
            theirs = (tw * 2).requires_grad
        assert ours == theirs


def test_inference_mode_restores_state_after_an_exception() -> None:
    with pytest.raises(ZeroDivisionError), mt.inference_mode():
        1 / 0  # noqa: B018
    assert mt.is_grad_enabled() and not mt.is_inference_mode_enabled()


# ---- threads ------------------------------------------------------------------------------

def test_set_num_threads_controls_the_native_openmp_pool() -> None:
    from minitl.backend.cpu import cpu_features, native_available

    before = mt.get_num_threads()
    try:
        mt.set_num_threads(1)
        assert mt.get_num_threads() == 1
        if native_available():
            assert cpu_features()["openmp_threads"] == 1
            mt.set_num_threads(before + 1)
            assert mt.get_num_threads() == before + 1
            assert cpu_features()["openmp_threads"] == before + 1
        numba = pytest.importorskip("numba")
        assert numba.get_num_threads() <= numba.config.NUMBA_NUM_THREADS
    finally:
        mt.set_num_threads(before)
    assert mt.get_num_threads() == before
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            mt.set_num_threads(bad)


# ---- device -------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["cpu", "cuda", "cuda:0", "cuda:3", ("cuda", 1), ("cpu", 0)])
def test_device_fields_like_torch(spec) -> None:
    d = mt.device(*spec) if isinstance(spec, tuple) else mt.device(spec)
    if torch is not None:
        t = torch.device(*spec) if isinstance(spec, tuple) else torch.device(spec)
        assert (d.type, d.index, str(d), repr(d)) == (t.type, t.index, str(t), repr(t))
    assert d == str(d) and mt.device(d) == d and hash(d) == hash(str(d))


def test_device_equality_and_errors() -> None:
    assert mt.device("cuda") != mt.device("cuda:0")
    assert mt.device("cuda", 0) == "cuda:0" and mt.device("cpu") == "cpu"
    assert {mt.device("cpu"): 1}["cpu"] == 1
    for bad in ("tpu", "cuda:x", "cuda:-1"):
        with pytest.raises(ValueError, match="device"):
            mt.device(bad)
    with pytest.raises(ValueError, match="already has an index"):
        mt.device("cuda:0", 1)


def test_device_is_accepted_where_a_string_is() -> None:
    cpu = mt.device("cpu")
    for make in (lambda: mt.zeros(2, device=cpu), lambda: mt.tensor([1.0], device=cpu),
                 lambda: mt.randn(2, device=cpu), lambda: mt.arange(3, device=cpu)):
        t = make()
        assert t.device == cpu and t.device.type == "cpu"
    x = mt.ones(2)
    assert x.to(cpu) is x and x.to(device=cpu) is x
    m = nn.Linear(2, 2).to(cpu)
    assert m.weight.device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        mt.zeros(2, device="tpu")


# ---- cuda -------------------------------------------------------------------------------

def test_cuda_is_available_without_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    assert mt.cuda.is_available() is False
    assert mt.cuda.device_count() == 0


def test_cuda_is_available_when_the_driver_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    def broken() -> int:
        raise RuntimeError("cudaErrorInsufficientDriver")

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=broken)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert mt.cuda.is_available() is False
    fake.cuda.runtime.getDeviceCount = lambda: 2
    assert mt.cuda.is_available() is True and mt.cuda.device_count() == 2
