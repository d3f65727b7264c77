"""Kernels under hostile input: index arrays changed between forward and backward, ids out of
range, dtypes the native kernels were not compiled for, and shapes that disagree.

Anything that could crash the interpreter (an unchecked native kernel reading or writing out
of bounds) runs in one child process per kernel mode, which reports each case's outcome; the
test asserts the child was not killed by a signal and that every case raised the expected
error. The dtype cases are safe in-process (a numba typing error is an exception)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from minitl import backend
from minitl.backend import guards, reference
from minitl.io.gguf_quants import quantize

# ---- crash-prone cases, in a child process ---------------------------------------------------

_CHILD = textwrap.dedent("""
    import json, sys, traceback
    import numpy as np
    import minitl as mt
    import minitl.nn.functional as F
    from minitl import backend
    from minitl.backend import reference

    b = backend.get_backend("cpu")
    cases = {}

    def case(name):
        def wrap(fn):
            cases[name] = fn
            return fn
        return wrap

    def emb_mutated(bad):
        ids = np.array([1, 2, 3, 0], dtype=np.int64)
        w = mt.randn(5, 4, requires_grad=True)
        y = F.embedding(mt.from_numpy(ids), w)
        ids[2] = bad  # after forward, before backward
        y.sum().backward()

    def xent_mutated(bad, smoothing=0.0, weighted=False):
        t = np.array([1, 2, -100, 0], dtype=np.int64)
        x = mt.randn(4, 5, requires_grad=True)
        wt = mt.rand(5) if weighted else None
        loss = F.cross_entropy(x, mt.from_numpy(t), weight=wt, label_smoothing=smoothing)
        t[1] = bad
        loss.backward()

    for bad in (10**9, -(10**9), 5, 7, -1, -99, -101):
        case(f"embedding mutated to {bad}")(lambda bad=bad: emb_mutated(bad))
        case(f"cross_entropy mutated to {bad}")(lambda bad=bad: xent_mutated(bad))
    case("cross_entropy smoothed+weighted mutated")(lambda: xent_mutated(10**9, 0.1, True))

    @case("cross_entropy mutated, 3-D logits")
    def _():
        t = np.zeros((2, 3), dtype=np.int64)
        x = mt.randn(2, 5, 3, requires_grad=True)
        loss = F.cross_entropy(x, mt.from_numpy(t), reduction="sum")
        t[1, 2] = 1 << 40
        loss.backward()

    @case("embedding int32 ids mutated")
    def _():
        ids = np.array([0, 1], dtype=np.int32)
        w = mt.randn(3, 2, requires_grad=True)
        y = F.embedding(mt.from_numpy(ids), w)
        ids[0] = 2**31 - 1
        y.sum().backward()

    # the kernels called directly, as other ops or users may
    g = np.ones((3, 4), np.float32)
    x = np.zeros((3, 5), np.float32)
    lse = np.zeros(3, np.float32)
    for ids in ([0, 1, 9], [0, -1, 2], [0, 1, 1 << 62]):
        ids = np.array(ids)
        case(f"embedding_bwd {ids.tolist()}")(
            lambda ids=ids: b.embedding_bwd(g, ids, 5, None, False))
        case(f"softmax_xent_fwd {ids.tolist()}")(
            lambda ids=ids: b.softmax_xent_fwd(x, ids, None, -100, 0.0))
        case(f"softmax_xent_bwd {ids.tolist()}")(
            lambda ids=ids: b.softmax_xent_bwd(x, lse, ids, None, -100, 0.0, lse))
    case("embedding_bwd uint64 2**64-1")(lambda: b.embedding_bwd(
        g, np.array([0, 1, 2**64 - 1], np.uint64), 5, None, False))
    case("embedding_bwd ids shorter than g")(lambda: b.embedding_bwd(
        g, np.array([0]), 5, None, False))
    case("embedding_bwd float ids")(lambda: b.embedding_bwd(
        g, np.array([0.0, 1.0, 2.0]), 5, None, False))
    case("softmax_xent_bwd short target")(lambda: b.softmax_xent_bwd(
        x, lse, np.array([0]), None, -100, 0.0, lse))
    case("softmax_xent_fwd short target")(lambda: b.softmax_xent_fwd(
        x, np.array([0]), None, -100, 0.0))
    case("gelu_bwd short g")(lambda: b.gelu_bwd(np.ones(2, np.float32),
                                                np.ones(10**6, np.float32), "none"))
    case("softmax_bwd short g")(lambda: b.softmax_bwd(np.ones((1, 2), np.float32),
                                                      np.ones((300, 400), np.float32)))
    case("layernorm_bwd short g")(lambda: b.layernorm_bwd(
        np.ones((7, 4), np.float32), np.ones((300, 4), np.float32),
        np.ones((300, 1), np.float32), np.ones((300, 1), np.float32), None, (True,) * 3))
    case("adamw_step short grad")(lambda: b.adamw_step(
        np.ones(10**5, np.float32), np.ones(3, np.float32), np.zeros(10**5, np.float32),
        np.zeros(10**5, np.float32), None, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, True, False))
    case("col2im batch mismatch")(lambda: b.col2im(
        np.ones((2, 3, 2, 2, 3, 3), np.float32), (4, 3, 4, 4), (1, 1), (0, 0), (1, 1)))
    case("col2im_cm channel mismatch")(lambda: b.col2im_cm(
        np.ones((2, 2, 2, 1, 3, 3), np.float32), (1, 64, 4, 4), (1, 1), (0, 0), (1, 1)))
    case("im2col zero stride")(lambda: b.im2col(
        np.ones((1, 1, 4, 4), np.float32), 2, 2, (0, 1), (0, 0), (1, 1)))
    case("im2col negative stride")(lambda: b.im2col(
        np.ones((1, 1, 4, 4), np.float32), 2, 2, (1, -2), (0, 0), (1, 1)))

    for name, fn in cases.items():
        try:
            fn()
            out = {"case": name, "error": None, "message": ""}
        except Exception as e:
            out = {"case": name, "error": type(e).__name__, "message": str(e)}
        print(json.dumps(out), flush=True)
    print(json.dumps({"done": True}), flush=True)
""")


def _run_child(mode: str) -> dict[str, dict[str, Any]]:
    env = dict(os.environ, MINITL_KERNELS=mode)
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                          text=True, timeout=600)
    # a negative return code is death by a signal (SIGSEGV, SIGBUS, SIGABRT): the bug itself
    assert proc.returncode == 0, (f"child died (rc={proc.returncode}) after "
                                  f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1] == {"done": True}, proc.stdout[-2000:]
    return {row["case"]: row for row in lines[:-1]}


@pytest.fixture(scope="module", params=["auto", "reference"])
def child_results(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    return _run_child(request.param)


def test_no_case_crashes_and_every_bad_index_raises(child_results: dict[str, Any]) -> None:
    wrong = {}
    for name, row in child_results.items():
        expected = ("ValueError" if "short" in name or "mismatch" in name or "stride" in name
                    else "TypeError" if "float ids" in name else "IndexError")
        if name.endswith("mutated to -100"):  # never tried: -100 is ignore_index
            expected = None
        if row["error"] != expected:
            wrong[name] = row
    assert not wrong, json.dumps(wrong, indent=1)


def test_index_errors_name_the_bad_id_and_the_cause(child_results: dict[str, Any]) -> None:
    msg = child_results["embedding mutated to 7"]["message"]
    assert "index 7 at position 2" in msg and "5 embeddings" in msg and "in place" in msg
    msg = child_results["cross_entropy mutated to -1"]["message"]
    assert "index -1" in msg and "5 classes" in msg and "ignore_index=-100" in msg
    msg = child_results["softmax_xent_fwd [0, 1, 9]"]["message"]
    assert "index 9 at position 2" in msg and "in place" not in msg  # forward: no such hint


# ---- the check itself -------------------------------------------------------------------------


def test_check_indices_accepts_ignore_index_and_the_full_range() -> None:
    guards.check_indices("op", np.array([0, 4, -100, 4, 0]), 5, ignore_index=-100)
    guards.check_indices("op", np.array([], dtype=np.int64), 0)
    guards.check_indices("op", np.array([3], dtype=np.uint8), 4)
    with pytest.raises(IndexError, match="index -100"):
        guards.check_indices("op", np.array([0, -100]), 5)  # no ignore_index given
    with pytest.raises(IndexError, match=r"0 rows \(valid: none"):
        guards.check_indices("op", np.array([0]), 0)
    with pytest.raises(TypeError, match="integer"):
        guards.check_indices("op", np.array([True]), 5)


def test_kernels_get_a_private_copy_of_what_was_checked() -> None:
    ids = np.array([[3, 1], [0, 2]], dtype=np.int32)
    own = guards.checked_indices("op", ids, 4)
    assert own.dtype == np.int64 and own.shape == (4,) and not np.shares_memory(own, ids)
    ids[0, 0] = 99  # a later change to the caller's array is not seen by the kernel
    assert own.tolist() == [3, 1, 0, 2]
    with pytest.raises(IndexError, match="out of range"):
        guards.checked_indices("op", np.array([2**64 - 1], np.uint64), 4)


def test_valid_targets_with_ignore_index_still_match_the_reference() -> None:
    b = backend.get_backend("cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    t = np.array([0, -100, 4, 2, -100, 1])
    got = b.softmax_xent_fwd(x, t, None, -100, 0.1)
    want = reference.softmax_xent_fwd(x, t, None, -100, 0.1)
    for g_, w_ in zip(got, want):
        np.testing.assert_allclose(g_, w_, rtol=1e-5, atol=1e-6)
    grad = np.ones(6, np.float32)
    np.testing.assert_allclose(b.softmax_xent_bwd(x, want[1], t, None, -100, 0.1, grad),
                               reference.softmax_xent_bwd(x, want[1], t, None, -100, 0.1, grad),
                               rtol=1e-5, atol=1e-6)


# ---- dtypes the native kernels do not take -----------------------------------------------------

_Q8 = quantize(np.random.default_rng(2).standard_normal((5, 32)), "Q8_0")  # uint8 blocks (5, 34)


def _kernel_args(name: str, dtype: Any) -> tuple[Any, ...]:
    """Small valid arguments for each backend kernel, with float operands in `dtype`."""
    rng = np.random.default_rng(1)

    def r(*shape: int) -> np.ndarray:
        a = rng.standard_normal(shape)
        return (np.round(a * 3) if np.dtype(dtype).kind in "iu" else a).astype(dtype)

    x2, g2 = r(6, 8), r(6, 8)
    img = r(2, 3, 5, 5)
    conv = ((1, 1), (1, 1), (1, 1))
    target = np.array([0, 3, -100, 7, 1, 2])
    lse = np.log(np.exp(x2.astype(np.float64)).sum(1)).astype(dtype)
    state = [r(10), r(10), r(10), np.abs(r(10)), None]
    table: dict[str, tuple[Any, ...]] = {
        "gemm": (r(4, 6), r(6, 3)),
        "gemm_batched": (r(2, 4, 6), r(2, 6, 3)),
        "lora_linear_fwd": (x2, r(5, 8), r(5), r(2, 8), r(5, 2), 0.5),
        "lora_linear_bwd": (r(6, 5), x2, r(5, 8), r(2, 8), r(5, 2), r(6, 2), 0.5, (True,) * 5),
        "im2col": (img, 3, 3, *conv),
        "im2col_cm": (img, 3, 3, *conv),
        "col2im": (r(2, 3, 3, 3, 5, 5), (2, 3, 5, 5), *conv),
        "col2im_cm": (r(3, 3, 3, 2, 5, 5), (2, 3, 5, 5), *conv),
        "layernorm_fwd": (x2, r(8), r(8), 1e-5),
        "layernorm_bwd": (g2, x2, x2.mean(1, keepdims=True),
                          np.ones((6, 1), dtype), r(8), (True,) * 3),
        "softmax_xent_fwd": (x2, target, None, -100, 0.1),
        "softmax_xent_bwd": (x2, lse, target, None, -100, 0.1, np.ones(6, dtype)),
        "softmax_fwd": (x2, True),
        "softmax_bwd": (g2, x2),
        "gelu_fwd": (x2, "none"),
        "gelu_bwd": (g2, x2, "tanh"),
        "embedding_bwd": (g2, np.array([0, 3, 3, 1, 0, 2]), 4, 1, True),
        "adamw_step": (*state, 2, 1e-2, 0.9, 0.999, 1e-8, 0.1, True, False),
        "quant_linear_fwd": (r(6, 32), _Q8, 8, r(5)),
        "quant_linear_bwd": (r(6, 5), _Q8, 8),
        "quant_lora_linear_fwd": (r(6, 32), _Q8, 8, r(5), r(2, 32), r(5, 2), 0.5),
        "quant_lora_linear_bwd": (r(6, 5), r(6, 32), _Q8, 8, r(2, 32), r(5, 2), r(6, 2), 0.5,
                                  (True,) * 4),
        "dequantize_rows": (_Q8, 8, np.array([0, 4, 2, 4])),
        "erf": (x2,),
    }
    return table[name]


def _call(fn: Callable[..., Any], name: str, args: tuple[Any, ...]) -> Any:
    if name == "adamw_step":  # in place: the result is the updated state
        args = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
        fn(*args)
        return args[:4]
    return fn(*args)


def _as_list(out: Any) -> list[Any]:
    return [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]


@pytest.fixture
def cpu_auto(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("MINITL_KERNELS", raising=False)
    backend.reset_backends()
    yield backend.get_backend("cpu")
    backend.reset_backends()


def test_every_kernel_is_guarded(cpu_auto: Any) -> None:
    assert set(guards.OPERANDS) == set(backend.KERNELS)
    for name in backend.KERNELS:
        if cpu_auto.paths[name] != "reference":
            assert getattr(cpu_auto, name) is not getattr(reference, name)


@pytest.mark.parametrize("name", backend.KERNELS)
def test_float16_runs_the_reference_and_stays_float16(cpu_auto: Any, name: str) -> None:
    args16 = _kernel_args(name, np.float16)
    got = _as_list(_call(getattr(cpu_auto, name), name, args16))
    want = _as_list(_call(getattr(reference, name), name, args16))
    assert len(got) == len(want)
    for g_, w_ in zip(got, want):
        assert g_.dtype == w_.dtype
        np.testing.assert_array_equal(g_, w_)
    # and the float16 answer is the float32 one, to float16 precision
    want32 = _as_list(_call(getattr(reference, name), name, _kernel_args(name, np.float32)))
    for g_, w_ in zip(got, want32):
        if g_.dtype == np.float16:
            np.testing.assert_allclose(g_.astype(np.float32), w_, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", backend.KERNELS)
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_integer_data(cpu_auto: Any, name: str, dtype: Any) -> None:
    args = _kernel_args(name, dtype)
    if name in guards.FLOAT_ONLY:
        for fn in (getattr(cpu_auto, name), getattr(reference, name)):
            with pytest.raises(TypeError, match="floating point"):
                _call(fn, name, args)
        return
    got = _as_list(_call(getattr(cpu_auto, name), name, args))
    want = _as_list(_call(getattr(reference, name), name, args))
    for g_, w_ in zip(got, want):
        assert g_.dtype == w_.dtype
        np.testing.assert_array_equal(g_, w_)


@pytest.mark.parametrize("name", ["softmax_fwd", "gelu_fwd", "layernorm_fwd", "im2col"])
def test_byte_swapped_and_mixed_dtypes_run_the_reference(cpu_auto: Any, name: str) -> None:
    args = _kernel_args(name, np.float32)
    swapped = (args[0].astype(args[0].dtype.newbyteorder()),) + args[1:]
    for g_, w_ in zip(_as_list(getattr(cpu_auto, name)(*swapped)),
                      _as_list(getattr(reference, name)(*args))):
        np.testing.assert_allclose(g_, w_, rtol=1e-6)
    if name == "layernorm_fwd":
        mixed = (args[0], args[1].astype(np.float64)) + args[2:]
        for g_, w_ in zip(cpu_auto.layernorm_fwd(*mixed), reference.layernorm_fwd(*mixed)):
            np.testing.assert_array_equal(g_, w_)


def test_float16_training_step_through_the_public_api(cpu_auto: Any) -> None:
    import minitl as mt
    import minitl.nn.functional as F

    x = mt.tensor(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float16),
                  requires_grad=True)
    w = mt.tensor(np.random.default_rng(1).standard_normal((9, 6)).astype(np.float16),
                  requires_grad=True)
    h = F.layer_norm(F.gelu(x), (6,))
    h = F.softmax(h, dim=-1) + F.embedding(mt.tensor([0, 3, 8, 3]), w)
    loss = F.cross_entropy(h, mt.tensor([1, 5, -100, 0]), label_smoothing=0.1)
    loss.backward()
    assert loss.dtype == mt.float16 and x.grad.dtype == mt.float16
    assert np.isfinite(x.grad.numpy()).all() and np.isfinite(w.grad.numpy()).all()
