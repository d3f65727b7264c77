"""Kernel selection and the numpy reference kernels every native kernel is checked against."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitl as mt
from minitl import backend
from minitl.backend import reference


@pytest.fixture
def kernels_env(monkeypatch: pytest.MonkeyPatch):
    def set_mode(mode: str | None) -> backend.Backend:
        if mode is None:
            monkeypatch.delenv("MINITL_KERNELS", raising=False)
        else:
            monkeypatch.setenv("MINITL_KERNELS", mode)
        backend.reset_backends()
        return backend.get_backend("cpu")

    yield set_mode
    monkeypatch.delenv("MINITL_KERNELS", raising=False)
    backend.reset_backends()


def test_reference_mode_uses_only_references(kernels_env) -> None:
    b = kernels_env("reference")
    assert set(b.paths.values()) == {"reference"}
    assert b.gemm is reference.gemm


@pytest.mark.parametrize("mode", ["fastest", "native"])
def test_unknown_mode_is_rejected(kernels_env, mode: str) -> None:
    with pytest.raises(ValueError, match="MINITL_KERNELS must be auto or reference"):
        kernels_env(mode)


def test_auto_mode_matches_reference(kernels_env) -> None:
    b = kernels_env("auto")
    rng = np.random.default_rng(0)
    a, c = rng.standard_normal((33, 17), dtype=np.float32), rng.standard_normal((17, 9),
                                                                              dtype=np.float32)
    np.testing.assert_allclose(b.gemm(a, c), a @ c, rtol=1e-5, atol=1e-5)
    # float64 and transposed views must still be right, whichever path takes them.
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(b.gemm(a64, a64, trans_b=True), a64 @ a64.T, rtol=1e-12)
    e = rng.standard_normal((5, 33), dtype=np.float32)
    np.testing.assert_allclose(b.gemm(a.T, e.T), a.T @ e.T, rtol=1e-5, atol=1e-5)


def test_unknown_device() -> None:
    with pytest.raises(ValueError, match="unknown device"):
        backend.get_backend("tpu")


def test_cuda_without_cupy_is_a_clear_error() -> None:
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="CuPy"):
        mt.zeros(2).to("cuda")


conv_params = st.tuples(
    st.integers(1, 2), st.integers(1, 3),  # n, c
    st.integers(1, 7), st.integers(1, 7),  # h, w
    st.integers(1, 3), st.integers(1, 3),  # kh, kw
    st.integers(1, 2), st.integers(0, 2), st.integers(1, 2),  # stride, pad, dilation
)


@given(conv_params)
def test_col2im_is_the_adjoint_of_im2col(p: tuple[int, ...]) -> None:
    n, c, h, w, kh, kw, s, pad, d = p
    if h + 2 * pad < d * (kh - 1) + 1 or w + 2 * pad < d * (kw - 1) + 1:
        return  # kernel larger than the padded input: no output positions
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w))
    cols = reference.im2col(x, kh, kw, (s, s), (pad, pad), (d, d))
    y = rng.standard_normal(cols.shape)
    back = reference.col2im(y, x.shape, (s, s), (pad, pad), (d, d))
    # <im2col(x), y> == <x, col2im(y)> for every x, y is the definition of the adjoint.
    np.testing.assert_allclose((cols * y).sum(), (x * back).sum(), rtol=1e-10)


def test_im2col_values() -> None:
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    cols = reference.im2col(x, 2, 2, (2, 2), (0, 0), (1, 1))  # (1, 1, 2, 2, 2, 2)
    np.testing.assert_array_equal(cols[0, 0, :, :, 0, 0], [[0, 1], [4, 5]])
    np.testing.assert_array_equal(cols[0, 0, :, :, 1, 1], [[10, 11], [14, 15]])


@pytest.mark.parametrize("need_bias", [True, False])
def test_lora_reference_matches_the_unfused_formula(need_bias: bool) -> None:
    rng = np.random.default_rng(1)
    n, din, dout, r, s = 7, 5, 6, 2, 0.5
    x, w = rng.standard_normal((n, din)), rng.standard_normal((dout, din))
    b = rng.standard_normal(dout) if need_bias else None
    a, bm = rng.standard_normal((r, din)), rng.standard_normal((dout, r))
    y, xa = reference.lora_linear_fwd(x, w, b, a, bm, s)
    expect = x @ w.T + s * x @ a.T @ bm.T + (b if need_bias else 0)
    np.testing.assert_allclose(y, expect, rtol=1e-12)
    g = rng.standard_normal((n, dout))
    dx, dw, db, da, dbm = reference.lora_linear_bwd(g, x, w, a, bm, xa, s,
                                                    (True, True, need_bias, True, True))
    np.testing.assert_allclose(dx, g @ (w + s * bm @ a), rtol=1e-12)
    np.testing.assert_allclose(dw, g.T @ x, rtol=1e-12)
    np.testing.assert_allclose(da, s * bm.T @ g.T @ x, rtol=1e-12)
    np.testing.assert_allclose(dbm, s * g.T @ x @ a.T, rtol=1e-12)
    assert (db is None) != need_bias
    skipped = reference.lora_linear_bwd(g, x, w, a, bm, xa, s, (False, False, False, True, False))
    assert skipped[0] is None and skipped[1] is None and skipped[4] is None


def test_kernels_load_on_first_use() -> None:
    """A first small op loads no kernel: no native self-check, no numba import; the first
    matrix product runs the self-check and only then is the native GEMM chosen."""
    import subprocess
    import sys

    script = """
import sys
import minitl as mt
from minitl.backend import cpu, get_backend
x = mt.ones(2) + 1
b = get_backend("cpu")
print("after add:", "numba" in sys.modules, cpu._verified is not None, sorted(b._paths))
(mt.randn(8, 8) @ mt.randn(8, 8)).sum()
print("after matmul:", sorted(b._paths))
"""
    env = {k: v for k, v in os.environ.items() if k != "MINITL_KERNELS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "after add: False False []", lines
    assert lines[1] == "after matmul: ['gemm']", lines
