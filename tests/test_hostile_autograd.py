"""Hostile checks of the autograd core: in-place writes to values saved for backward (version
counters), concurrent backward into shared parameters, and the sharp edges where minitl
used to differ from PyTorch silently (float sizes, views that copy, dtype promotion in
cat/stack/where and binary ops, matmul error text)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitl as mt
import minitl.nn as nn
import minitl.nn.functional as F
from minitl.function import Function
from minitl.io.gguf_quants import quantize
from minitl.nn.functional import nt_xent
from minitl.nn.utils.checkpoint import checkpoint
from minitl.ops.quant import quant_linear, quant_lora_linear

INPLACE = "modified by an inplace operation"

# ---- every op: an in-place write after forward raises or leaves the gradient right -------


@dataclass
class Case:
    """One recorded call of `op`: `fn(*inputs)` over inputs built from `specs`
    ("f" float in (0.1, 0.9) requiring grad, "c" float constant, "i<n>" int64 ids below n,
    "b" bool). `saves` lists the inputs (by position) and "out" whose in-place change
    must make backward raise; changing anything else must leave every gradient exact."""

    op: str
    fn: Callable[..., Any]
    specs: list[tuple[str, tuple[int, ...]]]
    saves: tuple[Any, ...] = ()
    label: str = ""

    @property
    def id(self) -> str:
        return self.op + (f"-{self.label}" if self.label else "")


def f(*shape: int) -> tuple[str, tuple[int, ...]]:
    return ("f", shape)


def c(*shape: int) -> tuple[str, tuple[int, ...]]:
    return ("c", shape)


def ids(n: int, *shape: int) -> tuple[str, tuple[int, ...]]:
    return (f"i{n}", shape)


def b(*shape: int) -> tuple[str, tuple[int, ...]]:
    return ("b", shape)


X = f(3, 4)
_Q8 = quantize(np.linspace(-1, 1, 64).reshape(2, 32), "Q8_0")  # a (2, 32) weight in Q8_0
CASES = [
    Case("Add", lambda a, b_: a + b_, [X, X]),
    Case("Sub", lambda a, b_: a - b_, [X, X]),
    Case("Mul", lambda a, b_: a * b_, [X, X], (0, 1)),
    Case("Mul", lambda a, b_: a * b_, [X, c(3, 4)], (0, 1), "constant"),
    Case("Div", lambda a, b_: a / b_, [X, X], (0, 1)),
    Case("Neg", lambda a: -a, [X]),
    Case("Pow", lambda a, b_: a ** b_, [X, X], (0, 1, "out")),
    Case("Exp", lambda a: a.exp(), [X], ("out",)),
    Case("Log", lambda a: a.log(), [X], (0,)),
    Case("Log1p", lambda a: a.log1p(), [X], (0,)),
    Case("Sqrt", lambda a: a.sqrt(), [X], ("out",)),
    Case("Rsqrt", lambda a: a.rsqrt(), [X], ("out",)),
    Case("Square", lambda a: a.square(), [X], (0,)),
    Case("Tanh", lambda a: a.tanh(), [X], ("out",)),
    Case("Sin", lambda a: a.sin(), [X], (0,)),
    Case("Cos", lambda a: a.cos(), [X], (0,)),
    Case("Abs", lambda a: a.abs(), [X], (0,)),
    Case("Relu", lambda a: a.relu(), [X], ("out",)),
    Case("Sigmoid", lambda a: a.sigmoid(), [X], ("out",)),
    Case("Erf", lambda a: a.erf(), [X], (0,)),
    Case("Clamp", lambda a: a.clamp(0.3, 0.7), [X]),
    Case("Maximum", lambda a, b_: mt.maximum(a, b_), [X, X], (0, 1)),
    Case("Minimum", lambda a, b_: mt.minimum(a, b_), [X, X], (0, 1)),
    Case("Where", lambda m, a, b_: mt.where(m, a, b_), [b(3, 4), X, X], (0,)),
    Case("MaskedFill", lambda a, m: a.masked_fill(m, 0.0), [X, b(3, 4)], (1,)),
    Case("Clone", lambda a: a.clone(), [X]),
    Case("Cast", lambda a: a.to(mt.float32), [X]),
    Case("GELU", lambda a: F.gelu(a), [X], (0,)),
    Case("SiLU", lambda a: F.silu(a), [X], (0,)),
    Case("LeakyReLU", lambda a: F.leaky_relu(a, 0.1), [X]),
    Case("Softmax", lambda a: F.softmax(a, dim=-1), [X], ("out",)),
    Case("Softmax", lambda a: F.softmax(a, dim=0), [X], ("out",), "dim0"),
    Case("LogSoftmax", lambda a: F.log_softmax(a, dim=-1), [X], ("out",)),
    Case("Dropout", lambda a: F.dropout(a, 0.5, training=True), [X]),
    Case("ScaledDotProductAttention", lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
         [f(2, 3, 4), f(2, 5, 4), f(2, 5, 4)], (0, 1, 2)),
    Case("FusedLoRALinear", lambda x, w, bias, a, bm: F.lora_linear(x, w, bias, a, bm, 2.0),
         [f(3, 4), f(5, 4), f(5), f(2, 4), f(5, 2)], (0, 1, 3, 4)),
    Case("Conv2d", lambda x, w, bias: F.conv2d(x, w, bias), [f(1, 2, 5, 5), f(3, 2, 3, 3), f(3)],
         (1,)),
    Case("MaxPool2d", lambda x: F.max_pool2d(x, 2), [f(1, 2, 4, 4)]),
    Case("AvgPool2d", lambda x: F.avg_pool2d(x, 2), [f(1, 2, 4, 4)]),
    Case("AdaptiveAvgPool2d", lambda x: F.adaptive_avg_pool2d(x, (2, 2)), [f(1, 2, 4, 4)]),
    Case("Embedding", lambda i, w: F.embedding(i, w), [ids(5, 2, 3), f(5, 4)], (0,)),
    Case("MatMul", lambda a, b_: a @ b_, [X, f(4, 2)], (0, 1)),
    Case("MatMul", lambda a, b_: a @ b_, [f(2, 3, 4), f(2, 4, 2)], (0, 1), "batched"),
    Case("Linear", lambda x, w, bias: F.linear(x, w, bias), [X, f(2, 4), f(2)], (0, 1)),
    Case("CrossEntropy", lambda x, t: F.cross_entropy(x, t), [f(3, 5), ids(5, 3)], (0, 1)),
    # probability targets: log-softmax is kept (a private array), the target is saved
    Case("CrossEntropy", lambda x, t: F.cross_entropy(x, t), [f(3, 5), f(3, 5)], (1,),
         "probabilities"),
    Case("NLLLoss", lambda x, t: F.nll_loss(x, t), [f(3, 5), ids(5, 3)]),
    Case("MSELoss", lambda a, b_: F.mse_loss(a, b_), [X, X]),
    Case("L1Loss", lambda a, b_: F.l1_loss(a, b_), [X, X]),
    Case("SmoothL1Loss", lambda a, b_: F.smooth_l1_loss(a, b_, beta=0.2), [X, X]),
    Case("BCEWithLogits", lambda a, b_: F.binary_cross_entropy_with_logits(a, b_), [X, X],
         (0, 1)),
    Case("BCELoss", lambda a, b_: F.binary_cross_entropy(a, b_), [X, X], (0, 1)),
    Case("Cat", lambda a, b_: mt.cat([a, b_], dim=1), [X, X]),
    Case("Stack", lambda a, b_: mt.stack([a, b_]), [X, X]),
    Case("Contiguous", lambda a: a.t().contiguous(), [X]),
    Case("Expand", lambda a: a.expand(3, 4), [f(1, 4)]),
    Case("Gather", lambda a, i: a.gather(1, i), [X, ids(4, 3, 2)], (1,)),
    Case("GetItem", lambda a: a[1:, ::2], [X], (), "basic"),
    Case("GetItem", lambda a, i: a[i], [X, ids(3, 5)], (1,), "advanced"),
    Case("Pad", lambda a: F.pad(a, (1, 2)), [X]),
    Case("Permute", lambda a: a.permute(1, 0), [X]),
    Case("Reshape", lambda a: a.reshape(6, 2), [X]),
    Case("View", lambda a: a.view(2, 6), [X]),
    # x is saved, as PyTorch saves it (not x - mean)
    Case("BatchNorm", lambda x, w, bias: F.batch_norm(x, None, None, w, bias, training=True),
         [f(4, 3, 2), f(3), f(3)], (0, 1)),
    Case("GroupNorm", lambda x, w, bias: F.group_norm(x, 2, w, bias), [f(2, 4, 3), f(4), f(4)],
         (1,)),
    Case("LayerNorm", lambda x, w, bias: F.layer_norm(x, (4,), w, bias), [X, f(4), f(4)], (0, 1)),
    Case("Normalize", lambda a: F.normalize(a, dim=1), [X], (0,)),
    Case("Amax", lambda a: a.amax(1), [X], (0, "out")),
    Case("LogSumExp", lambda a: a.logsumexp(1), [X], (0, "out")),
    Case("MaxDim", lambda a: a.max(1).values, [X]),
    Case("Mean", lambda a: a.mean(1), [X]),
    Case("Sum", lambda a: a.sum(0), [X]),
    Case("Var", lambda a: a.var(1), [X]),
    Case("Std", lambda a: a.std(1), [X], ("out",)),
    Case("NTXent", lambda a, b_: nt_xent(a, b_), [X, X]),
    Case("RMSNorm", lambda x, w: F.rms_norm(x, (4,), w), [X, f(4)], (1,)),
    Case("Rotary", lambda x, cos, sin: F.apply_rotary_emb(x, cos, sin), [X, c(3, 4), c(3, 4)],
         (1, 2)),
    Case("SwiGLU", lambda a, b_: F.swiglu(a, b_), [X, X], (0, 1)),
    # the blocks are a constant of the layer (frozen), not an input of the case
    Case("QuantLinear", lambda x, bias: quant_linear(x.to(mt.float32), _Q8, 8, bias.to(
        mt.float32)), [f(3, 32), f(2)]),
    Case("QuantLoRALinear", lambda x, a, bm: quant_lora_linear(x, _Q8, 8, None, a, bm, 2.0),
         [f(3, 32), f(4, 32), f(2, 4)], (0, 1, 2)),
    # checkpoint keeps its inputs and recomputes the function from them in backward
    Case("_Checkpoint", lambda a, b_: checkpoint(lambda x, y: (x * y).exp(), a, b_), [X, X],
         (0, 1)),
]
# Functions that a CPU-only run cannot record.
NOT_COVERED = {"ToDevice": "moves between host and GPU"}


def _all_functions() -> set[str]:
    import minitl

    for m in pkgutil.walk_packages(minitl.__path__, "minitl."):
        if not m.name.startswith(("minitl.cli", "minitl.recipes")):
            importlib.import_module(m.name)

    def subclasses(cls: type) -> Any:
        for s in cls.__subclasses__():
            yield s
            yield from subclasses(s)

    return {s.__name__ for s in subclasses(Function) if s.__module__.startswith("minitl.")}


def test_every_function_has_an_inplace_case() -> None:
    missing = _all_functions() - {case.op for case in CASES} - set(NOT_COVERED)
    assert not missing, f"add a Case for {sorted(missing)}"


def _make_inputs(specs: list[tuple[str, tuple[int, ...]]]) -> list[mt.Tensor]:
    rng = np.random.default_rng(7)
    out = []
    for kind, shape in specs:
        if kind in ("f", "c"):
            arr = rng.uniform(0.1, 0.9, shape)
            out.append(mt.tensor(arr, dtype=mt.float64, requires_grad=kind == "f"))
        elif kind == "b":
            out.append(mt.tensor(rng.random(shape) < 0.5))
        else:
            out.append(mt.tensor(rng.integers(0, int(kind[1:]), shape)))
    return out


def _mutate(t: mt.Tensor) -> None:
    """Change every value of `t` in place, staying inside each op's domain."""
    with mt.no_grad():
        if t.dtype == mt.bool_:
            t.copy_(~t.data)
        elif t.dtype.kind == "i":
            t.copy_(np.roll(t.numpy(), 1))
        else:
            t.copy_(1.0 - t.data)


def _run(case: Case, target: Any) -> tuple[list[Any], Any]:
    """Forward, change `target` (an input position, "out" or None) in place, backward.
    Returns (input gradients, the error backward raised or None)."""
    inputs = _make_inputs(case.specs)
    mt.manual_seed(0)  # dropout draws the same mask every run
    out = case.fn(*inputs)
    fns = _graph_functions(out)
    assert case.op in fns, f"{case.id}: {case.op} is not in the graph ({sorted(fns)})"
    grad = np.random.default_rng(3).standard_normal(out.shape).astype(out.dtype)
    if target == "out":
        _mutate(out)
    elif target is not None:
        _mutate(inputs[target])
    try:
        out.backward(gradient=mt.tensor(grad))
    except RuntimeError as e:
        return [], e
    return [None if t.grad is None else t.grad.numpy() for t in inputs], None


def _graph_functions(out: mt.Tensor) -> set[str]:
    seen, stack, names = set(), [out], set()
    while stack:
        t = stack.pop()
        if id(t) in seen or t._ctx is None:
            continue
        seen.add(id(t))
        names.add(t._ctx.fn.__name__)
        stack.extend(p for _, p in t._ctx.parents)
    return names


def _targets(case: Case) -> list[Any]:
    out = list(range(len(case.specs)))
    return out + ["out"] if case.op != "Expand" else out  # an expand()ed output is read-only


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_inplace_after_forward_raises_or_gradient_is_exact(case: Case) -> None:
    reference, err = _run(case, None)
    assert err is None, err
    for target in _targets(case):
        grads, err = _run(case, target)
        if target in case.saves:
            assert err is not None, f"{case.id}: changing {target} in place did not raise"
            assert INPLACE in str(err) and "version 1; expected version 0" in str(err)
        else:
            assert err is None, f"{case.id}: changing {target} raised {err}"
            for got, want in zip(grads, reference, strict=True):
                if want is not None:
                    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_error_names_the_op_shape_and_versions() -> None:
    x = mt.ones(2, 3, requires_grad=True)
    w = mt.ones(2, 3)
    y = (x * w).sum()
    w.add_(1)
    w.mul_(2)
    with pytest.raises(RuntimeError, match=r"float32 \[2, 3\]\], saved for backward by Mul "
                                           r".*is at version 2; expected version 0"):
        y.backward()


# ---- version counter bookkeeping -------------------------------------------------------------


def test_every_inplace_method_bumps_the_version() -> None:
    t = mt.zeros(2, 3)
    mask = mt.tensor([[True, False, True], [False, False, True]])
    writes = [lambda: t.zero_(), lambda: t.fill_(2.0), lambda: t.copy_(mt.ones(3)),
              lambda: t.add_(1.0), lambda: t.add_(mt.ones(2, 3), alpha=2), lambda: t.sub_(0.5),
              lambda: t.mul_(3.0), lambda: t.div_(2.0), lambda: t.clamp_(0.0, 1.0),
              lambda: t.clip_(max=0.5), lambda: t.masked_fill_(mask, 7.0),
              lambda: t.__setitem__((0, 1), 4.0), lambda: t.__setitem__(mask, 0.0),
              lambda: mt.autograd_state.increment_version(t)]
    for i, write in enumerate(writes, start=1):
        write()
        assert t._version == i


def test_views_share_a_counter_and_copies_do_not() -> None:
    base = mt.zeros(4, 6)
    views = [base[1:], base.T, base.view(24), base.reshape(2, 12), base.detach(),
             base.unsqueeze(0), base.permute(1, 0)[::2]]
    copies = [base.clone(), base.T.contiguous(), base.to(mt.float64), base + 0]
    views[1][0, 0] = 5.0  # write through the transpose
    assert base._version == 1 and all(v._version == 1 for v in views)
    assert all(c._version == 0 for c in copies)
    copies[0].add_(1)
    assert base._version == 1


def test_weight_changed_under_no_grad_between_forward_and_backward_raises() -> None:
    lin = nn.Linear(4, 3)
    loss = lin(mt.randn(2, 4)).relu().sum()
    with mt.no_grad():
        lin.weight.mul_(2)
    with pytest.raises(RuntimeError, match=f"{INPLACE}.*Linear"):
        loss.backward()


@pytest.mark.parametrize("make", [
    lambda ps: mt.optim.SGD(ps, lr=0.1),
    lambda ps: mt.optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: mt.optim.Adam(ps, lr=0.1),
    lambda ps: mt.optim.AdamW(ps, lr=0.1),
], ids=["sgd", "sgd-momentum", "adam", "adamw"])
def test_optimizer_step_bumps_and_a_stale_graph_raises(make: Any) -> None:
    lin = nn.Linear(4, 3)
    opt = make(lin.parameters())
    x = mt.randn(2, 4)
    lin(x).sum().backward()
    stale = lin(x).sum()  # saved the weight before the step
    versions = [p._version for p in lin.parameters()]
    opt.step()
    assert [p._version for p in lin.parameters()] == [v + 1 for v in versions]
    with pytest.raises(RuntimeError, match=INPLACE):
        stale.backward()
    opt.zero_grad()
    lin(x).sum().backward()  # the usual order (forward, backward, step) is untouched
    opt.step()


def test_init_load_state_dict_and_clipping_bump() -> None:
    lin = nn.Linear(3, 2)
    v = lin.weight._version
    nn.init.normal_(lin.weight)
    nn.init.zeros_(lin.bias)
    assert lin.weight._version == v + 1 and lin.bias._version >= 1
    loss = lin(mt.randn(4, 3)).sum()
    lin.load_state_dict(nn.Linear(3, 2).state_dict())
    with pytest.raises(RuntimeError, match=INPLACE):
        loss.backward()
    lin(mt.randn(4, 3)).sum().backward()
    g = lin.weight.grad
    v = g._version
    nn.utils.clip_grad_norm_(lin.parameters(), 1e-3)
    nn.utils.clip_grad_value_(lin.parameters(), 1e-4)
    assert g._version == v + 2


def test_retained_graph_then_inplace_then_second_backward_raises() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    c = mt.tensor([3.0, 4.0])
    y = (x * c).sum()
    y.backward(retain_graph=True)
    c[0] = 10.0
    with pytest.raises(RuntimeError, match=INPLACE):
        y.backward()


def test_inplace_on_a_tensor_that_requires_grad_still_needs_no_grad() -> None:
    w = mt.ones(2, requires_grad=True)
    for write in (lambda: w.add_(1), lambda: w.copy_(mt.zeros(2)), lambda: w.mul_(2)):
        with pytest.raises(RuntimeError, match="requires grad"):
            write()
    assert w._version == 0


def test_inplace_dtype_and_shape_errors() -> None:
    i = mt.tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match="cannot be cast"):
        i.add_(0.5)
    with pytest.raises(RuntimeError, match="cannot be cast"):
        i.div_(2)
    with pytest.raises(RuntimeError, match="add_"):
        mt.zeros(2, 3).add_(mt.ones(4))
    with pytest.raises(RuntimeError, match="read-only"):
        mt.zeros(1, 3).expand(2, 3).fill_(1.0)
    assert i._version == 0


# ---- concurrent backward ---------------------------------------------------------------------


def _concurrent_backward_round(threads_n: int, steps: int) -> None:
    d = 8
    w = mt.tensor(np.ones((d, d)), dtype=mt.float64, requires_grad=True)
    bias = mt.tensor(np.zeros(d), dtype=mt.float64, requires_grad=True)
    xs = [mt.tensor(np.arange(2.0 * d).reshape(2, d) + k, dtype=mt.float64)
          for k in range(threads_n)]
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def work(x: mt.Tensor) -> None:
        try:
            barrier.wait()
            for _ in range(steps):
                (x @ w + bias).sum().backward()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(x,)) for x in xs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # d/dw sum(x w + b) = x^T 1: each column holds the row sums of x.
    want_w = steps * sum(x.numpy().sum(axis=0)[:, None] * np.ones((1, d)) for x in xs)
    np.testing.assert_array_equal(w.grad.numpy(), want_w)
    np.testing.assert_array_equal(bias.grad.numpy(), np.full(d, 2.0 * steps * threads_n))


def test_concurrent_backward_accumulates_every_contribution() -> None:
    # Unlocked, a round loses an update about half the time; eight rounds catch it almost
    # surely, in well under a second.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unlocked update would race
    try:
        for _ in range(8):
            _concurrent_backward_round(threads_n=4, steps=300)
    finally:
        sys.setswitchinterval(old)


# ---- sizes must be ints -----------------------------------------------------------------------

BAD_SIZES = st.sampled_from([2.9, 2.0, True, False, np.float32(3.0), np.bool_(True), "3", None])


@settings(max_examples=40, deadline=None)
@given(bad=BAD_SIZES, pos=st.integers(0, 2))
def test_float_or_bool_sizes_raise_type_error(bad: Any, pos: int) -> None:
    size = [2, 3, 4]
    size[pos] = bad
    fns = {"zeros": lambda: mt.zeros(*size), "ones": lambda: mt.ones(size),
           "empty": lambda: mt.empty(*size), "rand": lambda: mt.rand(*size),
           "randn": lambda: mt.randn(tuple(size)), "full": lambda: mt.full(size, 1.0),
           "randint": lambda: mt.randint(0, 5, size)}
    for name, fn in fns.items():
        with pytest.raises(TypeError, match=rf"{name}\(\): argument 'size'.*pos {pos}"):
            fn()
    x = mt.zeros(24)
    for name, fn in {"reshape": lambda: x.reshape(size), "view": lambda: x.view(*size),
                     "expand": lambda: mt.zeros(1).expand(size)}.items():
        with pytest.raises(TypeError, match=rf"{name}\(\):.*pos {pos}"):
            fn()


def test_scalar_size_arguments() -> None:
    with pytest.raises(TypeError, match="zeros"):
        mt.zeros(2.9)
    for fn in (lambda: mt.eye(2.0), lambda: mt.eye(2, True), lambda: mt.randperm(3.0),
               lambda: mt.linspace(0, 1, 5.0), lambda: mt.randint(0, 5.5, (2,))):
        with pytest.raises(TypeError, match="must be int"):
            fn()
    # numpy integers and one-element integer tensors are ints
    assert mt.zeros(np.int64(2), np.int32(3)).shape == (2, 3)
    assert mt.ones(mt.tensor(4)).shape == (4,)
    assert mt.zeros(()).shape == () and mt.full((2,), 1).dtype == mt.int64
    assert mt.arange(2.5).shape == (3,)  # arange takes float bounds, as in PyTorch


# ---- view must alias ---------------------------------------------------------------------------

def _factorizations(n: int) -> list[tuple[int, ...]]:
    out = [(n,), (1, n), (n, 1)]
    for a in range(2, n):
        if n % a == 0:
            out.append((a, n // a))
            for b_ in range(2, n // a):
                if (n // a) % b_ == 0:
                    out.append((a, b_, n // a // b_))
    return out


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4), data=st.data())
def test_view_raises_exactly_where_pytorch_does(shape: list[int], data: Any) -> None:
    th = pytest.importorskip("torch")
    perm = data.draw(st.permutations(range(len(shape))))
    step = data.draw(st.sampled_from([1, 2]))
    base = np.arange(float(np.prod(shape))).reshape(shape)
    x, tx = mt.tensor(base).permute(*perm), th.tensor(base).permute(*perm)
    x, tx = x[::step], tx[::step]
    target = data.draw(st.sampled_from(_factorizations(x.numel()) if x.numel() else [(0,)]))
    try:
        want = tx.view(target)
    except RuntimeError:
        with pytest.raises(RuntimeError, match="view size is not compatible.*reshape"):
            x.view(target)
        np.testing.assert_array_equal(x.reshape(target).numpy(), tx.reshape(target).numpy())
        return
    got = x.view(target)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    got[(0,) * got.ndim] = -1.0  # a view writes through to its base
    assert float(x[(0,) * x.ndim]) == -1.0


def test_contiguous_then_view_and_its_gradient() -> None:
    x = mt.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        x.T.view(6)
    assert not x.T.is_contiguous() and x.is_contiguous() and x.contiguous() is x
    y = x.T.contiguous().view(6)
    (y * mt.arange(6.0)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.arange(6.0).reshape(3, 2).T)


def test_view_as_follows_view() -> None:
    with pytest.raises(RuntimeError, match="view size"):
        mt.zeros(2, 3).T.view_as(mt.zeros(6))


# ---- dtype promotion against PyTorch -----------------------------------------------------------

DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


def _pair(th: Any, dt: str, ndim: int) -> tuple[mt.Tensor, Any]:
    arr = np.ones((2,) * ndim, dtype=dt)
    return mt.tensor(arr), th.tensor(arr)


def _dtype_name(t: Any) -> str:
    return str(t.dtype).replace("torch.", "")


@settings(max_examples=80, deadline=None)
@given(a=st.sampled_from(DTYPES), b_=st.sampled_from(DTYPES), stack=st.booleans())
def test_cat_and_stack_promote_like_pytorch(a: str, b_: str, stack: bool) -> None:
    th = pytest.importorskip("torch")
    (x, tx), (y, ty) = _pair(th, a, 1), _pair(th, b_, 1)
    op, top = (mt.stack, th.stack) if stack else (mt.cat, th.cat)
    assert str(op([x, y]).dtype) == _dtype_name(top([tx, ty]))


@settings(max_examples=150, deadline=None)
@given(a=st.sampled_from(DTYPES), b_=st.sampled_from(DTYPES + ["int", "float", "bool-scalar"]),
       nda=st.integers(0, 1), ndb=st.integers(0, 1),
       op=st.sampled_from(["add", "mul", "where", "maximum"]))
def test_binary_ops_and_where_promote_like_pytorch(a: str, b_: str, nda: int, ndb: int,
                                                   op: str) -> None:
    th = pytest.importorskip("torch")
    x, tx = _pair(th, a, nda)
    if b_ in ("int", "float", "bool-scalar"):
        if op == "maximum":
            return  # torch.maximum takes tensors only
        y = ty = {"int": 2, "float": 2.5, "bool-scalar": True}[b_]
    else:
        y, ty = _pair(th, b_, ndb)
    if op == "add":
        got, want = x + y, tx + ty
    elif op == "mul":
        got, want = x * y, tx * ty
    elif op == "maximum":
        got, want = mt.maximum(x, y), th.maximum(tx, ty)
    else:
        cond = np.ones((2,) * max(nda, ndb), dtype=bool)
        got, want = mt.where(mt.tensor(cond), x, y), th.where(th.tensor(cond), tx, ty)
    assert str(got.dtype) == _dtype_name(want), (a, b_, nda, ndb, op)


def test_cat_gradients_come_back_in_each_inputs_dtype() -> None:
    a = mt.ones(2, dtype=mt.float32, requires_grad=True)
    b64 = mt.ones(3, dtype=mt.float64, requires_grad=True)
    out = mt.cat([a, b64, mt.tensor([1, 2])])
    assert out.dtype == mt.float64
    out.sum().backward()
    assert a.grad.dtype == mt.float32 and b64.grad.dtype == mt.float64


# ---- matmul errors --------------------------------------------------------------------------


@pytest.mark.parametrize("sa,sb,pattern", [
    ((2, 3), (4, 5), r"mat1 and mat2 shapes cannot be multiplied \(2x3 and 4x5\)"),
    ((3,), (4, 5), r"cannot be multiplied \(3 and 4x5\)"),
    ((2, 2, 3), (2, 4, 5), r"shapes \(2, 2, 3\) and \(2, 4, 5\) cannot be multiplied"),
    ((2, 2, 3), (3, 3, 5), (r"\(2, 2, 3\) and \(3, 3, 5\) do not broadcast: the size of "
                            r"tensor a \(2\) must match the size of tensor b \(3\) at "
                            r"non-singleton dimension 0")),
    ((5, 2, 3), (1, 4, 3, 2), (r"tensor a \(5\) must match the size of tensor b \(4\) at "
                               r"non-singleton dimension 1")),
])
def test_matmul_errors_name_both_shapes(sa: tuple, sb: tuple, pattern: str) -> None:
    with pytest.raises(RuntimeError, match=pattern) as info:
        mt.zeros(*sa) @ mt.zeros(*sb)
    assert "remapped" not in str(info.value)
