"""The fused LoRA kernels (minitl._C.lora_linear_fwd / _bwd, csrc/cpu/lora.cpp) against their
numpy references (minitl/backend/reference.py), and the backend's choice of them.

Sizes cut every block and micro-tile (1, 7, 129, 1025; Dout past NC = 4096; r = 1, r past
one 16-wide panel), on every GEMM path this CPU has; views and float64 go through the Python
wrapper; every malformed argument raises ValueError naming the shapes. Skipped only when the
extension was never built.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pytest
from helpers import gemm_path, gemm_paths  # noqa: F401  (gemm_path: the `path` fixture)
from hypothesis import given
from hypothesis import strategies as st

try:
    import minitl._C as _C  # noqa: PLR0402 - a submodule mypy cannot see before the build
    _IMPORT_ERROR: ImportError | None = None
except ImportError as err:  # a source tree without a build
    _C = None  # type: ignore[assignment]
    _IMPORT_ERROR = err

import minitl as mt
import minitl.nn.functional as F
from minitl import backend
from minitl.backend import cpu, reference

needs_native = pytest.mark.skipif(_C is None, reason=f"minitl._C not built ({_IMPORT_ERROR})")

EPS32 = float(np.finfo(np.float32).eps)
Needs = tuple[bool, bool, bool, bool, bool]
ALL: Needs = (True, True, True, True, True)
FROZEN_W: Needs = (True, False, False, True, True)  # the usual LoRA case: dx, dA, dB only




def _inputs(n: int, din: int, dout: int, r: int, bias: bool = True, seed: int = 0
            ) -> dict[str, Any]:
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    x, w, a, bm, g = rand(n, din), rand(dout, din), rand(r, din), rand(dout, r), rand(n, dout)
    return {"x": x, "w": w, "b": rand(dout) if bias else None, "a": a, "bm": bm, "g": g,
            "s": 0.75}


def _assert_close(got: Any, ref: Any, mag: Any, k: int, what: str) -> None:
    """got (float32) against a float64 reference: any summation order of k terms errs by at
    most ~k * eps * (the same sums over absolute values), which `mag` holds."""
    if ref is None:
        assert got is None, what
        return
    assert got.dtype == np.float32 and got.shape == ref.shape, what
    err = np.abs(got.astype(np.float64) - ref)
    worst = float(np.max(err / (k * EPS32 * mag + 1e-30))) if err.size else 0.0
    assert worst <= 1.0, f"{what}: error {worst:.3g} x the k*eps bound"


def _f64(v: dict[str, Any], absolute: bool = False) -> dict[str, Any]:
    conv = (lambda t: None if t is None else np.abs(t).astype(np.float64)) if absolute else \
        (lambda t: None if t is None else t.astype(np.float64))
    return {key: (abs(val) if absolute else val) if key == "s" else conv(val)
            for key, val in v.items()}


def check_fwd(v: dict[str, Any], fwd: Any = None) -> tuple[np.ndarray, np.ndarray]:
    fwd = fwd or _C.lora_linear_fwd
    y, xa = fwd(v["x"], v["w"], v["b"], v["a"], v["bm"], v["s"])
    e, m = _f64(v), _f64(v, absolute=True)
    ref = reference.lora_linear_fwd(e["x"], e["w"], e["b"], e["a"], e["bm"], e["s"])
    mag = reference.lora_linear_fwd(m["x"], m["w"], m["b"], m["a"], m["bm"], m["s"])
    k = v["x"].shape[1] + v["a"].shape[0] + 2
    _assert_close(y, ref[0], mag[0], k, "y")
    _assert_close(xa, ref[1], mag[1], k, "xa")
    return y, xa


def check_bwd(v: dict[str, Any], needs: Needs, bwd: Any = None) -> None:
    bwd = bwd or _C.lora_linear_bwd
    xa = v["x"] @ v["a"].T
    got = bwd(v["g"], v["x"], v["w"], v["a"], v["bm"], xa, v["s"], needs)
    e, m = _f64({**v, "xa": xa}), _f64({**v, "xa": xa}, absolute=True)
    ref = reference.lora_linear_bwd(e["g"], e["x"], e["w"], e["a"], e["bm"], e["xa"], e["s"],
                                    needs)
    mag = reference.lora_linear_bwd(m["g"], m["x"], m["w"], m["a"], m["bm"], m["xa"], m["s"],
                                    needs)
    n, din = v["x"].shape
    k = n + din + v["w"].shape[0] + v["a"].shape[0] + 2
    for name, g, r, mg in zip(("dx", "dw", "db", "da", "dbm"), got, ref, mag):
        _assert_close(g, r, mg, k, name)


# (N, Din, Dout, r): unit and odd sizes, r = 1, r past one panel (16), K past one KC slice
# (256), N past one MC block (144), Dout past one NC block (4096).
SIZES = [
    (1, 1, 1, 1),
    (7, 7, 7, 1),
    (129, 129, 129, 16),
    (1025, 33, 70, 5),
    (130, 300, 129, 17),
    (5, 3, 2, 64),
    (40, 20, 4100, 3),
]


# ---- forward and backward against the reference -------------------------------------------


@needs_native
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,din,dout,r", SIZES)
def test_lora_fwd_matches_reference(path: str, n: int, din: int, dout: int, r: int,
                                    bias: bool) -> None:
    check_fwd(_inputs(n, din, dout, r, bias))


@needs_native
@pytest.mark.parametrize("needs", [ALL, FROZEN_W, (False, False, False, True, False),
                                   (False, False, False, False, True),
                                   (False, True, True, False, False)])
@pytest.mark.parametrize("n,din,dout,r", SIZES)
def test_lora_bwd_matches_reference(path: str, n: int, din: int, dout: int, r: int,
                                    needs: Needs) -> None:
    check_bwd(_inputs(n, din, dout, r), needs)


@needs_native
def test_lora_1025() -> None:
    v = _inputs(1025, 1025, 130, 16, seed=1)
    check_fwd(v)
    check_bwd(v, ALL)


@needs_native
@given(n=st.integers(1, 80), din=st.integers(1, 300), dout=st.integers(1, 70),
       r=st.integers(1, 40), bias=st.booleans(), seed=st.integers(0, 2**16),
       path=st.sampled_from(gemm_paths()))
def test_lora_random_shapes(n: int, din: int, dout: int, r: int, bias: bool, seed: int,
                            path: str) -> None:
    v = _inputs(n, din, dout, r, bias, seed)
    _C.set_gemm_path(path)
    try:
        check_fwd(v)
        check_bwd(v, ALL)
    finally:
        _C.set_gemm_path("auto")


@needs_native
def test_lora_zero_up_projection_is_the_base_layer() -> None:
    # LoRA's B starts at zero: the layer must then equal x W^T + b exactly as the GEMM does.
    v = _inputs(50, 40, 30, 8)
    v["bm"][:] = 0.0
    y, _ = _C.lora_linear_fwd(v["x"], v["w"], v["b"], v["a"], v["bm"], v["s"])
    base = _C.gemm(v["x"], v["w"], trans_b=True) + v["b"]
    np.testing.assert_allclose(y, base, rtol=1e-6, atol=1e-5)


@needs_native
@pytest.mark.parametrize("n,din,dout,r", [(0, 4, 5, 2), (3, 0, 5, 2), (3, 4, 0, 2),
                                          (3, 4, 5, 0)])
def test_lora_empty_dimensions(n: int, din: int, dout: int, r: int) -> None:
    v = _inputs(n, din, dout, r)
    y, xa = _C.lora_linear_fwd(v["x"], v["w"], v["b"], v["a"], v["bm"], v["s"])
    assert y.shape == (n, dout) and xa.shape == (n, r)
    np.testing.assert_allclose(y, np.broadcast_to(v["b"], (n, dout)) + v["x"] @ v["w"].T,
                               atol=1e-5)
    assert np.all(xa == 0.0) or din > 0
    check_bwd(v, ALL)


# ---- the Python wrapper: views, dtypes, the fallback ----------------------------------------


@needs_native
def test_wrapper_accepts_views_and_transposes() -> None:
    v = _inputs(37, 29, 23, 4, seed=2)
    views = {
        "x": np.repeat(v["x"], 2, axis=0)[::2],  # strided rows
        "w": np.ascontiguousarray(v["w"].T).T,  # F-contiguous (a transposed weight)
        "b": np.repeat(v["b"], 2)[::2],
        "a": np.asfortranarray(v["a"]),
        "bm": np.ascontiguousarray(v["bm"].T).T,
        "g": np.asfortranarray(v["g"]),
        "s": v["s"],
    }
    assert not views["x"].flags.c_contiguous and not views["w"].flags.c_contiguous
    _, xa = check_fwd(views, cpu.lora_linear_fwd)
    np.testing.assert_array_equal(xa, _C.lora_linear_fwd(v["x"], v["w"], v["b"], v["a"],
                                                         v["bm"], v["s"])[1])
    check_bwd(views, ALL, cpu.lora_linear_bwd)


def test_wrapper_float64_uses_reference() -> None:
    v: dict[str, Any] = {k: (t.astype(np.float64) if isinstance(t, np.ndarray) else t)
         for k, t in _inputs(6, 5, 4, 2).items()}
    y, xa = cpu.lora_linear_fwd(v["x"], v["w"], v["b"], v["a"], v["bm"], v["s"])
    assert y.dtype == np.float64
    ref = reference.lora_linear_fwd(v["x"], v["w"], v["b"], v["a"], v["bm"], v["s"])
    np.testing.assert_allclose(y, ref[0], rtol=1e-12)
    grads = cpu.lora_linear_bwd(v["g"], v["x"], v["w"], v["a"], v["bm"], xa, v["s"], ALL)
    assert all(t is not None and t.dtype == np.float64 for t in grads)


@needs_native
def test_op_lora_linear_native_equals_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # F.lora_linear with 3-D input through the default (native) backend and through the
    # references: same output and same gradients.
    v = _inputs(2 * 9, 24, 20, 4, seed=3)
    results = []
    for mode in ("auto", "reference"):
        monkeypatch.setenv("MINITL_KERNELS", mode)
        backend.reset_backends()
        assert backend.get_backend("cpu").paths["lora_linear_fwd"] == \
            ("native" if mode == "auto" else "reference")
        x = mt.from_numpy(v["x"].reshape(2, 9, 24).copy()).requires_grad_()
        a = mt.from_numpy(v["a"].copy()).requires_grad_()
        bm = mt.from_numpy(v["bm"].copy()).requires_grad_()
        y = F.lora_linear(x, mt.from_numpy(v["w"]), mt.from_numpy(v["b"]), a, bm, v["s"])
        y.backward(mt.from_numpy(v["g"].reshape(2, 9, 20)))
        assert x.grad is not None and a.grad is not None and bm.grad is not None
        results.append([y.numpy(), x.grad.numpy(), a.grad.numpy(), bm.grad.numpy()])
    backend.reset_backends()
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _fresh_cpu_paths(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], list[str]]:
    """The CPU backend's kernel paths chosen anew (MINITL_KERNELS unset), with the warnings the
    choice printed; the backends are rebuilt again afterwards for the tests that follow."""
    monkeypatch.delenv("MINITL_KERNELS", raising=False)
    backend.reset_backends()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            paths = dict(backend.get_backend("cpu").paths)
        return paths, [str(w.message) for w in caught]
    finally:
        backend.reset_backends()


def test_failed_self_check_keeps_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    if not cpu.native_available():
        pytest.skip("minitl._C not built")
    monkeypatch.setattr(cpu, "_verified", None)
    monkeypatch.setattr(cpu, "_self_check", lambda: {"gemm": True, "lora_linear_fwd": False,
                                                     "lora_linear_bwd": True})
    paths, said = _fresh_cpu_paths(monkeypatch)
    assert paths["lora_linear_fwd"] == "reference" and paths["gemm"] == "native"
    assert any("lora_linear_fwd" in m for m in said)


def test_an_extension_older_than_its_wrappers_leaves_their_kernels_to_the_reference(
        monkeypatch: pytest.MonkeyPatch) -> None:
    if not cpu.native_available():
        pytest.skip("minitl._C not built")
    from minitl.backend import cpu_embedding

    def stale() -> dict[str, bool]:
        raise AttributeError("module 'minitl._C' has no attribute 'embedding_bwd'")

    monkeypatch.setattr(cpu_embedding, "self_check", stale)
    monkeypatch.setattr(cpu, "_verified", None)
    paths, said = _fresh_cpu_paths(monkeypatch)
    assert paths["embedding_bwd"] != "native" and paths["gemm"] == "native"
    assert any("embedding_bwd" in m for m in said)


@needs_native
def test_self_check_passes_here() -> None:
    assert set(cpu._self_check().values()) == {True}


# ---- argument checks: ValueError before any pointer is touched -----------------------------


def _good() -> dict[str, Any]:
    return _inputs(6, 5, 4, 3)


@needs_native
def test_fwd_rejects_mismatched_shapes() -> None:
    v = _good()
    msg = ("lora_linear_fwd: shapes do not fit: x (6, 5), w (4, 5), b (4,), a (3, 5), "
           "bm (4, 2)")
    with pytest.raises(ValueError, match=re.escape(msg)):
        _C.lora_linear_fwd(v["x"], v["w"], v["b"], v["a"], v["bm"][:, :2].copy(), 1.0)
    with pytest.raises(ValueError, match=re.escape("b (3,)")):
        _C.lora_linear_fwd(v["x"], v["w"], v["b"][:3].copy(), v["a"], v["bm"], 1.0)
    with pytest.raises(ValueError, match=re.escape("x (6, 4), w (4, 5)")):
        _C.lora_linear_fwd(v["x"][:, :4].copy(), v["w"], None, v["a"], v["bm"], 1.0)


@needs_native
def test_bwd_rejects_mismatched_shapes() -> None:
    v = _good()
    xa = v["x"] @ v["a"].T
    with pytest.raises(ValueError, match=re.escape("g (5, 4), x (6, 5)")):
        _C.lora_linear_bwd(v["g"][:5].copy(), v["x"], v["w"], v["a"], v["bm"], xa, 1.0, ALL)
    with pytest.raises(ValueError, match=re.escape("xa (6, 2)")):
        _C.lora_linear_bwd(v["g"], v["x"], v["w"], v["a"], v["bm"], xa[:, :2].copy(), 1.0,
                           ALL)
    with pytest.raises(ValueError, match="needs must hold 5 flags"):
        _C.lora_linear_bwd(v["g"], v["x"], v["w"], v["a"], v["bm"], xa, 1.0, (True, True))


@needs_native
def test_rejects_wrong_ndim() -> None:
    v = _good()
    with pytest.raises(ValueError, match=re.escape("expected x to be 2-D, got shape (6, 5, 1)")):
        _C.lora_linear_fwd(v["x"][..., None], v["w"], v["b"], v["a"], v["bm"], 1.0)
    with pytest.raises(ValueError, match=re.escape("expected b to be 1-D, got shape (1, 4)")):
        _C.lora_linear_fwd(v["x"], v["w"], v["b"][None], v["a"], v["bm"], 1.0)


@needs_native
@pytest.mark.parametrize("name", ["x", "w", "b", "a", "bm"])
def test_fwd_rejects_float64_and_strided(name: str) -> None:
    v = _good()
    args = [v["x"], v["w"], v["b"], v["a"], v["bm"]]
    i = ["x", "w", "b", "a", "bm"].index(name)
    bad = list(args)
    bad[i] = args[i].astype(np.float64)
    with pytest.raises(ValueError, match=f"lora_linear_fwd: expected float32, got float64 for "
                                         f"{name}"):
        _C.lora_linear_fwd(*bad, 1.0)
    bad[i] = np.repeat(args[i], 2, axis=-1)[..., ::2]
    with pytest.raises(ValueError, match=f"{name} with shape .* must be C-contiguous"):
        _C.lora_linear_fwd(*bad, 1.0)


@needs_native
def test_bwd_rejects_float64_and_strided() -> None:
    v = _good()
    xa = v["x"] @ v["a"].T
    with pytest.raises(ValueError, match="expected float32, got float64 for xa"):
        _C.lora_linear_bwd(v["g"], v["x"], v["w"], v["a"], v["bm"], xa.astype(np.float64), 1.0,
                           ALL)
    with pytest.raises(ValueError, match="g with shape .* must be C-contiguous"):
        _C.lora_linear_bwd(np.asfortranarray(v["g"]), v["x"], v["w"], v["a"], v["bm"], xa, 1.0,
                           ALL)
