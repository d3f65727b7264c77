"""The C++ GEMM (minitl._C.gemm, csrc/cpu/gemm.cpp) against its numpy reference.

Every size that cuts a block or a micro-tile (1, 7, 129, 1025, K past KC, N past NC), both
ways of cutting C between threads (row blocks; column blocks when M is one tile), every
transpose combination, every micro-kernel path this CPU has (AVX-512 where the CPU has it),
and every argument the binding must refuse. Skipped only when the extension was never built;
with MINITL_REQUIRE_NATIVE=1 (CI) a missing build is a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path
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

from minitl.backend import cpu, reference

needs_native = pytest.mark.skipif(_C is None, reason=f"minitl._C not built ({_IMPORT_ERROR})")

EPS32 = float(np.finfo(np.float32).eps)


def test_native_extension_imports() -> None:
    if os.environ.get("MINITL_REQUIRE_NATIVE") == "1":
        assert _C is not None, f"MINITL_REQUIRE_NATIVE=1 but minitl._C failed: {_IMPORT_ERROR}"
    elif _C is None:
        pytest.skip(f"minitl._C not built ({_IMPORT_ERROR})")
    assert cpu.native_available()


# ---- helpers -------------------------------------------------------------------------------




def _operands(m: int, n: int, k: int, trans_a: bool, trans_b: bool, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    return a, b


def assert_gemm_close(c: np.ndarray, a: np.ndarray, b: np.ndarray, trans_a: bool,
                      trans_b: bool) -> None:
    """c against op(a) @ op(b) accumulated in float64.

    Any float32 summation order errs by at most ~k * eps * (|A| @ |B|) per element
    (Higham, Accuracy and Stability, 3.5), so the tolerance scales with K and with the
    magnitudes actually summed rather than with |C|, which cancellation can make tiny.
    """
    a64 = (a.T if trans_a else a).astype(np.float64)
    b64 = (b.T if trans_b else b).astype(np.float64)
    ref = a64 @ b64
    assert c.dtype == np.float32 and c.shape == ref.shape and c.flags.c_contiguous
    k = a64.shape[1]
    tol = max(k, 1) * EPS32 * (np.abs(a64) @ np.abs(b64)) + 1e-30
    err = np.abs(c.astype(np.float64) - ref)
    worst = float(np.max(err / tol)) if err.size else 0.0
    assert worst <= 1.0, f"gemm error {worst:.3g} x the k*eps bound at shape {c.shape}, k={k}"


TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]

# (M, N, K): unit and odd sizes, single rows/columns, more than one MC block (144),
# K past one KC slice (256 / 192), N past one NC slice (4096); the last three are big enough
# to run on every thread, the first two of them split along N (M is a single micro-tile).
SIZES = [
    (1, 1, 1),
    (7, 7, 7),
    (129, 129, 129),
    (1, 129, 7),
    (129, 1, 7),
    (7, 129, 1),
    (6, 16, 3),
    (145, 33, 257),
    (37, 23, 600),
    (3, 4100, 20),
    (300, 17, 5),
    (1, 4100, 300),
    (5, 1000, 600),
    (301, 250, 70),
]


# ---- correctness -----------------------------------------------------------------------------


@needs_native
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", SIZES)
def test_gemm_matches_reference(path: str, m: int, n: int, k: int, trans_a: bool,
                                trans_b: bool) -> None:
    a, b = _operands(m, n, k, trans_a, trans_b)
    assert_gemm_close(_C.gemm(a, b, trans_a, trans_b), a, b, trans_a, trans_b)


@needs_native
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_gemm_1025_cube(trans_a: bool, trans_b: bool) -> None:
    a, b = _operands(1025, 1025, 1025, trans_a, trans_b, seed=1)
    assert_gemm_close(_C.gemm(a, b, trans_a=trans_a, trans_b=trans_b), a, b, trans_a, trans_b)


@needs_native
@pytest.mark.parametrize("name", gemm_paths())
def test_gemm_1025_every_path(name: str) -> None:
    a, b = _operands(1025, 130, 1025, False, True, seed=2)
    _C.set_gemm_path(name)
    try:
        c = _C.gemm(a, b, trans_b=True)
    finally:
        _C.set_gemm_path("auto")
    assert_gemm_close(c, a, b, False, True)


@needs_native
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n", [(3, 5), (1, 1), (0, 4), (4, 0)])
def test_gemm_empty_inner_dimension_gives_zeros(m: int, n: int, trans_a: bool,
                                                trans_b: bool) -> None:
    a, b = _operands(m, n, 0, trans_a, trans_b)
    c = _C.gemm(a, b, trans_a, trans_b)
    assert c.shape == (m, n) and c.dtype == np.float32
    assert np.all(c == 0.0)


@needs_native
@pytest.mark.parametrize("m,n,k", [(0, 5, 3), (5, 0, 3), (0, 0, 0)])
def test_gemm_empty_output(m: int, n: int, k: int) -> None:
    a, b = _operands(m, n, k, False, False)
    assert _C.gemm(a, b).shape == (m, n)


@needs_native
@given(m=st.integers(0, 70), n=st.integers(0, 70), k=st.integers(0, 300),
       trans_a=st.booleans(), trans_b=st.booleans(), seed=st.integers(0, 2**16),
       path=st.sampled_from(gemm_paths()))
def test_gemm_random_shapes(m: int, n: int, k: int, trans_a: bool, trans_b: bool, seed: int,
                            path: str) -> None:
    a, b = _operands(m, n, k, trans_a, trans_b, seed)
    _C.set_gemm_path(path)
    try:
        c = _C.gemm(a, b, trans_a, trans_b)
    finally:
        _C.set_gemm_path("auto")
    assert_gemm_close(c, a, b, trans_a, trans_b)


@needs_native
def test_gemm_exact_on_small_integers() -> None:
    # Integers below 2**24 and short sums are exact in float32: every path must agree bit for bit.
    rng = np.random.default_rng(3)
    a = rng.integers(-8, 8, size=(67, 300)).astype(np.float32)
    b = rng.integers(-8, 8, size=(300, 45)).astype(np.float32)
    expected = (a.astype(np.int64) @ b.astype(np.int64)).astype(np.float32)
    for name in gemm_paths():
        _C.set_gemm_path(name)
        try:
            np.testing.assert_array_equal(_C.gemm(a, b), expected, err_msg=name)
        finally:
            _C.set_gemm_path("auto")


@needs_native
def test_gemm_releases_gil_and_is_thread_safe() -> None:
    a, b = _operands(300, 200, 260, False, False, seed=4)
    results: list[Any] = [None] * 4

    def work(i: int) -> None:
        results[i] = _C.gemm(a, b)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in results:
        assert_gemm_close(c, a, b, False, False)


@needs_native
def test_gemm_when_openmp_grants_fewer_threads() -> None:
    # The work is cut for the threads asked for; a smaller team (here a thread limit of 1)
    # must still give the right answer, on one thread, rather than skip work or hang.
    code = ("import numpy as np, minitl._C as C; rng = np.random.default_rng(0); "
            "a = rng.standard_normal((300, 200), dtype=np.float32); "
            "b = rng.standard_normal((200, 250), dtype=np.float32); "
            "print(float(np.abs(C.gemm(a, b) - a @ b).max()))")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OMP_THREAD_LIMIT": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1], check=True)
    assert float(out.stdout) < 1e-3


# ---- argument checks: ValueError before any pointer is touched -----------------------------


@needs_native
def test_gemm_rejects_wrong_ndim() -> None:
    a = np.zeros(3, np.float32)
    b = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=re.escape("got shapes (3,) and (3, 2)")):
        _C.gemm(a, b)
    with pytest.raises(ValueError, match="2-D"):
        _C.gemm(np.zeros((2, 3, 4), np.float32), b)


@needs_native
def test_gemm_rejects_mismatched_shapes() -> None:
    a = np.zeros((3, 4), np.float32)
    b = np.zeros((5, 6), np.float32)
    msg = "gemm: shapes (3, 4) and (5, 6) do not align (trans_a=False, trans_b=False)"
    with pytest.raises(ValueError, match=re.escape(msg)):
        _C.gemm(a, b)
    # (4, 3) transposed is (3, 4): still K=4 against 5
    with pytest.raises(ValueError, match=re.escape("(trans_a=True, trans_b=False)")):
        _C.gemm(np.zeros((4, 3), np.float32), b, trans_a=True)
    # b transposed is (6, 5): K=4 against 6
    with pytest.raises(ValueError, match=re.escape("(trans_a=False, trans_b=True)")):
        _C.gemm(a, b, trans_b=True)


@needs_native
@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_gemm_rejects_other_dtypes(dtype: Any) -> None:
    good = np.zeros((3, 3), np.float32)
    bad = np.zeros((3, 3), dtype)
    name = np.dtype(dtype).name
    with pytest.raises(ValueError, match=f"gemm: expected float32, got {name}"):
        _C.gemm(bad, good)
    with pytest.raises(ValueError, match=f"gemm: expected float32, got {name}"):
        _C.gemm(good, bad)


@needs_native
def test_gemm_rejects_byteswapped_float32() -> None:
    a = np.zeros((3, 3), dtype=">f4" if np.little_endian else "<f4")
    with pytest.raises(ValueError, match="expected float32"):
        _C.gemm(a, np.zeros((3, 3), np.float32))


@needs_native
def test_gemm_rejects_non_contiguous() -> None:
    base = np.zeros((4, 6), np.float32)
    b = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=re.escape("a with shape (4, 3) must be C-contiguous")):
        _C.gemm(base[:, ::2], b)
    with pytest.raises(ValueError, match="b with shape .* must be C-contiguous"):
        _C.gemm(np.zeros((2, 6), np.float32), base.T)


@needs_native
def test_set_gemm_path_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown or unsupported path"):
        _C.set_gemm_path("avx9000")
    assert _C.cpu_features()["gemm_path"] in ("avx512f_12x32", "avx2_fma_6x16", "generic_6x16")


@needs_native
def test_set_gemm_path_refuses_what_the_cpu_lacks() -> None:
    f = _C.cpu_features()
    for name, has in (("avx512", f["avx512f"]), ("avx2", f["avx2"] and f["fma"])):
        if has:
            _C.set_gemm_path(name)
            _C.set_gemm_path("auto")
        else:
            with pytest.raises(ValueError, match="unknown or unsupported path"):
                _C.set_gemm_path(name)
    assert _C.cpu_features()["gemm_path"] == (
        "avx512f_12x32" if f["avx512f"] else "avx2_fma_6x16" if f["avx2"] and f["fma"]
        else "generic_6x16")


@needs_native
def test_cpu_features_keys() -> None:
    f = _C.cpu_features()
    assert set(f) == {"avx2", "fma", "avx512f", "openmp_threads", "gemm_path", "quant_path",
                      "isa"}
    assert f["isa"] in ("avx512", "avx2", "generic")
    assert f["openmp_threads"] >= 1


# ---- minitl.backend.cpu: the Python side of the boundary ------------------------------------


@needs_native
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_backend_gemm_accepts_views(trans_a: bool, trans_b: bool) -> None:
    # Transposed views are passed as their contiguous base with the flag flipped; strided
    # views are copied. Either way the result equals the reference.
    a, b = _operands(40, 30, 50, trans_a, trans_b, seed=5)
    a_t = np.ascontiguousarray(a.T).T  # same values, F-contiguous
    b_s = np.repeat(b, 2, axis=1)[:, ::2]  # same values, strided
    assert_gemm_close(cpu.gemm(a_t, b_s, trans_a, trans_b), a, b, trans_a, trans_b)


def test_backend_gemm_float64_uses_reference() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    c = cpu.gemm(a, b, trans_a=True)
    assert c.dtype == np.float64
    np.testing.assert_allclose(c, a.T @ b, rtol=1e-12)


def test_missing_extension_warns_once_and_returns_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise ImportError("no module named 'minitl._C' (simulated)")

    monkeypatch.setattr(cpu, "_module", cpu._UNSET)
    monkeypatch.setattr(cpu, "_import_native", fail)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cpu.native_module() is None
        assert not cpu.native_available()
        a = np.ones((2, 3), np.float32)
        np.testing.assert_array_equal(cpu.gemm(a, a, trans_b=True), np.full((2, 2), 3.0))
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1
    assert "minitl._C" in str(runtime[0].message) and "ImportError" in str(runtime[0].message)


# ---- gemm_batched: one product per thread -----------------------------------------------------


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("batch,m,n,k", [(1, 37, 29, 53), (7, 13, 129, 64), (72, 128, 128, 64)])
def test_gemm_batched_matches_reference(path: str, batch: int, m: int, n: int, k: int,
                                        trans_a: bool, trans_b: bool) -> None:
    rng = np.random.default_rng(batch + m)
    a = rng.standard_normal((batch, k, m) if trans_a else (batch, m, k)).astype(np.float32)
    b = rng.standard_normal((batch, n, k) if trans_b else (batch, k, n)).astype(np.float32)
    np.testing.assert_allclose(_C.gemm_batched(a, b, trans_a, trans_b),
                               reference.gemm_batched(a, b, trans_a, trans_b),
                               rtol=1e-4, atol=1e-4)


def test_gemm_batched_argument_checks() -> None:
    a, b = np.ones((2, 3, 4), np.float32), np.ones((2, 4, 5), np.float32)
    assert _C.gemm_batched(a, b).shape == (2, 3, 5)
    with pytest.raises(ValueError, match="same batch size"):
        _C.gemm_batched(a, b[:1])
    with pytest.raises(ValueError, match="3-D"):
        _C.gemm_batched(a[0], b[0])
    with pytest.raises(ValueError, match="do not align"):
        _C.gemm_batched(a, b, False, True)
    with pytest.raises(ValueError, match="float32"):
        _C.gemm_batched(a.astype(np.float64), b)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.gemm_batched(np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1), b)
